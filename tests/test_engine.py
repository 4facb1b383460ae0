"""The training engine: environment semantics, agents on probe environments, metrics, invariances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepsea_scaling import agent, kinds
from deepsea_scaling.config import ConfigError, TrainConfig, config_hash
from deepsea_scaling.engine import default_hyper, make_train, run, seed_keys, train, train_seeds
from deepsea_scaling.envs import PerRunMapDeepSea, make_env
from deepsea_scaling.metrics import record_episodes, summarize, tracker_init
from deepsea_scaling.replay import Transition, replay_add, replay_init, replay_sample

from probe_envs import probe_adapter

KINDS = list(kinds.KINDS)  # a new kind is tested on the probes and CartPole by being in the table


# ------------------------------------------------------------------ DEEPSEA
def run_policy(n, seed, policy, episodes):
    """Roll out `policy(obs_index, t) -> action` on one run's env; returns (returns, maps seen)."""
    cfg = TrainConfig(hardness=n)
    env = make_env(cfg)
    params = env.params_for_run(jax.random.key(seed))
    key = jax.random.key(123)
    obs, state = env.reset(key, params)
    step = jax.jit(env.step)
    returns, ret = [], 0.0
    for t in range(episodes * n):
        key, k = jax.random.split(key)
        obs, state, reward, terminated, done, _ = step(k, state, policy(int(obs), t), params)
        ret += float(reward)
        if bool(done):
            returns.append(ret)
            ret = 0.0
    return np.array(returns), np.asarray(params)


def test_action_map_is_random_per_run_and_not_all_ones():
    env = make_env(TrainConfig(hardness=8))
    maps = [np.asarray(env.params_for_run(jax.random.key(s))) for s in range(4)]
    for m in maps:
        assert m.shape == (8, 8) and 0.2 < m.mean() < 0.8  # not the all-ones debug map
    assert all(not np.array_equal(maps[0], m) for m in maps[1:])


def test_fixed_action_map_option_gives_every_run_the_same_map():
    env = make_env(TrainConfig(hardness=8, fixed_action_map=True))
    maps = [np.asarray(env.params_for_run(jax.random.key(s))) for s in range(3)]
    assert all(np.array_equal(maps[0], m) for m in maps)


def test_map_fixed_within_a_run_across_episodes():
    """The optimal policy for this run's map succeeds in every episode: the map never changes."""
    n = 6
    env = make_env(TrainConfig(hardness=n))
    mapping = np.asarray(env.params_for_run(jax.random.key(7)))
    # the diagonal is the path to the treasure: press "right" there
    right_policy = lambda obs, t: int(mapping[obs // n, obs % n])  # noqa: E731
    returns, _ = run_policy(n, 7, right_policy, episodes=5)
    np.testing.assert_allclose(returns, 0.99, atol=1e-6)


@pytest.mark.parametrize("action", [0, 1])
@pytest.mark.parametrize("n", [4, 7])
def test_constant_action_never_discovers(n, action):
    for seed in range(3):
        returns, mapping = run_policy(n, seed, lambda obs, t: action, episodes=3)
        assert returns.max() < 0.95


def test_random_map_differs_from_gymnax_default():
    mine = np.asarray(PerRunMapDeepSea(size=10).draw_action_mapping(jax.random.key(5)))
    assert not np.array_equal(mine, np.asarray(PerRunMapDeepSea(size=10).action_mapping))


# ------------------------------------------------------------------ REPLAY
def test_replay_wraps_around_and_samples_only_stored_slots():
    example = Transition(jnp.int32(0), jnp.int32(0), jnp.float32(0), jnp.int32(0), jnp.float32(0))
    buf = replay_init(5, example)
    for start in (0, 3, 6):
        ids = jnp.arange(start, start + 3, dtype=jnp.int32)
        buf = replay_add(buf, Transition(ids, ids, ids.astype(jnp.float32), ids, jnp.zeros(3)))
    # 9 added into 5 slots: slots hold 5,6,7,8 and 4 (oldest surviving), position 9 % 5 = 4
    assert int(buf.size) == 5 and int(buf.position) == 4
    assert sorted(np.asarray(buf.data.obs).tolist()) == [4, 5, 6, 7, 8]
    sample = replay_sample(buf, jax.random.key(0), (4, 64))
    assert sample.obs.shape == (4, 64)
    assert set(np.asarray(sample.obs).ravel().tolist()) == {4, 5, 6, 7, 8}
    partial = replay_add(replay_init(10, example), Transition(*(jnp.array([1, 2]),) * 2, jnp.ones(2), jnp.array([1, 2]), jnp.zeros(2)))
    assert set(np.asarray(replay_sample(partial, jax.random.key(1), (100,)).obs).tolist()) == {1, 2}


# --------------------------------------------------------------- SCHEDULES
def test_epsilon_schedule_matches_reference():
    hyper = default_hyper(TrainConfig(kind="eps"))
    for progress in [0.0, 0.1, 0.25, 0.45, 0.5, 0.8, 1.0]:
        expected = np.clip(1 - 2 * progress, 0.05, 1)
        assert float(agent.epsilon(jnp.float32(progress), hyper)) == pytest.approx(expected, abs=1e-6)


# ----------------------------------------------------------------- METRICS
def test_metrics_on_hand_made_episodes():
    tr = tracker_init(members=2, num_log_points=4)
    thr = jnp.float32(0.95)
    steps = [  # (done, returns, active) for 3 envs
        ([0, 0, 0], [0.0, 0.0, 0.0], [0, 1, 0]),
        ([1, 1, 0], [0.2, 0.99, 0.0], [0, 1, 0]),  # episodes 1, 2: env 1 (member 1) discovers at episode 2
        ([0, 0, 1], [0.0, 0.0, 0.99], [0, 1, 0]),  # episode 3: member 0 discovers
        ([1, 1, 1], [0.99, 0.0, 0.5], [1, 1, 0]),  # episodes 4-6
    ]
    for i, (done, rets, active) in enumerate(steps):
        tr = record_episodes(tr, jnp.array(done, bool), jnp.array(rets), jnp.array(active), thr, jnp.bool_(i >= 3))
    m = summarize(tr)
    assert bool(m["discovered"]) and float(m["episodes_to_discovery"]) == 2
    assert bool(m["all_members_discovered"]) and float(m["episodes_to_all_members"]) == 3
    assert int(m["total_episodes"]) == 6
    assert float(m["final_return"]) == pytest.approx((0.99 + 0.0 + 0.5) / 3)
    tr_div = tr.replace(diverged=jnp.bool_(True))
    m = summarize(tr_div)
    assert not bool(m["discovered"]) and np.isnan(float(m["episodes_to_discovery"]))


def test_metrics_when_one_member_never_discovers():
    tr = tracker_init(members=3, num_log_points=4)
    tr = record_episodes(tr, jnp.array([True, True]), jnp.array([0.99, 0.99]), jnp.array([0, 2]), jnp.float32(0.95), jnp.bool_(False))
    m = summarize(tr)
    assert bool(m["discovered"]) and float(m["episodes_to_discovery"]) == 1
    assert not bool(m["all_members_discovered"]) and np.isnan(float(m["episodes_to_all_members"]))
    assert np.isnan(float(m["final_return"]))  # no episode in the last 10%



def test_the_host_summary_equals_the_programs_bit_for_bit():
    """The engine summarises a finished run with numpy: the same bits as jax.numpy in a program."""
    rng = np.random.default_rng(0)
    first = np.where(rng.random((64, 3)) < 0.4, np.inf, rng.integers(1, 3000, (64, 3))).astype(np.float32)
    tr = tracker_init(members=3, num_log_points=4).replace(
        episodes=jnp.asarray(rng.integers(0, 3000, 64), jnp.int32),
        member_first_discovery=jnp.asarray(first),
        last_return_sum=jnp.asarray(rng.normal(size=64) * 37, jnp.float32),
        last_return_count=jnp.asarray(rng.integers(0, 7, 64), jnp.int32),  # 0: NaN
        diverged=jnp.asarray(rng.random(64) < 0.1),
        diversity=jnp.asarray(rng.random((64, 4)), jnp.float32),
    )
    in_program = jax.jit(summarize)(tr)
    on_host = summarize(jax.tree.map(np.asarray, tr), xp=np)
    assert set(in_program) == set(on_host)
    for name, value in in_program.items():
        assert on_host[name].dtype == value.dtype, name
        assert on_host[name].tobytes() == np.asarray(value).tobytes(), name


# ------------------------------------------------------- PROBE ENVIRONMENTS
def probe_config(kind, steps):
    return TrainConfig(kind=kind, ensemble_size=3, env_name="probe", num_env_steps=steps, num_envs=8,
                       rb_size=500, learning_starts=200, num_probe_states=16, learning_rate=1e-3,
                       target_period=10, gamma=0.9, discovery_threshold=1.0)


@pytest.fixture(scope="module")
def trained_on_the_chain():
    """kind -> (trainer, hyper, keys, final states) of 2 runs trained on the two-step chain (once per module)."""
    trained = {}

    def get(kind):
        if kind not in trained:
            cfg = probe_config(kind, steps=8 * 600)
            trainer = make_train(cfg, env=probe_adapter(2))
            hyper = default_hyper(cfg)
            keys = seed_keys(cfg, range(2))
            trained[kind] = trainer, hyper, keys, jax.jit(jax.vmap(lambda k: run(trainer, k, hyper)))(keys)
        return trained[kind]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_agents_learn_analytic_q_values(kind, trained_on_the_chain):
    """Two-step chain s0 -> s1 -> end, reward 1 only on leaving s1: Q(s1) = 1 (a one-step reward, the
    terminal case), Q(s0) = gamma (one bootstrapped step)."""
    trainer, hyper, _, state = trained_on_the_chain(kind)
    obs = jnp.eye(2)
    q = jax.vmap(lambda s: trainer.agent.q_shared(s.params, s.prior, obs, hyper))(state)  # (S, K, L, A)
    q = np.asarray(q)
    if kinds.KINDS[kind].explores_by != "epsilon":  # greedy members only ever try their preferred action
        q = q.max(axis=-1, keepdims=True)
    target = np.broadcast_to(np.array([0.9, 1.0])[None, None, :, None], q.shape)
    np.testing.assert_allclose(q, target, atol=0.05)


@pytest.mark.slow
def test_prior_network_is_unchanged_by_training(trained_on_the_chain):
    trainer, hyper, keys, state = trained_on_the_chain("bootrp")
    start = jax.vmap(lambda k: trainer.init(k, hyper))(keys)
    for a, b in zip(jax.tree.leaves(start.prior), jax.tree.leaves(state.prior)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(start.params), jax.tree.leaves(state.params))]
    assert all(moved)  # while the trained networks did move


@pytest.mark.slow
def test_members_resampled_only_at_episode_ends():
    n = 4
    cfg = TrainConfig(kind="boot", ensemble_size=8, hardness=n, num_episodes=24 * 6, rb_size=200, learning_starts=100)
    trainer = make_train(cfg)
    hyper = default_hyper(cfg)
    state = trainer.init(seed_keys(cfg, [0])[0], hyper)
    step = jax.jit(lambda s, t: trainer.learn_step(s, t, hyper))
    actives = [np.asarray(state.active)]
    for t in range(5 * n):
        state = step(state, jnp.int32(t))
        actives.append(np.asarray(state.active))
    changes = [t for t in range(1, len(actives)) if not np.array_equal(actives[t], actives[t - 1])]
    assert changes and all(t % n == 0 for t in changes)  # every episode lasts exactly n steps
    assert any(len(set(a.tolist())) > 1 for a in actives)  # envs act with different members


# ---------------------------------------------------------- INVARIANCES
def small(kind="bootrp", **kw):
    return TrainConfig(**{**dict(kind=kind, ensemble_size=2 if kinds.KINDS[kind].ensemble else 1, hardness=4, num_episodes=480,
                                 rb_size=500, learning_starts=240, num_probe_states=16, num_log_points=10), **kw})


@pytest.mark.slow
def test_shard_invariance_and_determinism():
    cfg = small()
    alone = train_seeds(cfg, range(0, 4)).metrics
    among = train_seeds(cfg, range(0, 8)).metrics
    again = train_seeds(cfg, range(0, 4)).metrics
    for name in alone:
        np.testing.assert_array_equal(alone[name], among[name][:4], err_msg=name)
        np.testing.assert_array_equal(alone[name], again[name], err_msg=name)
    # seeds get different keys, and the key depends on the config hash
    assert len(set(np.asarray(jax.random.key_data(seed_keys(cfg, range(4)))).reshape(4, -1)[:, -1].tolist())) == 4
    assert config_hash(cfg) != config_hash(small(base_seed=1))


@pytest.mark.slow
def test_host_driven_segments_equal_one_jitted_run():
    """Cutting training into host-driven segments changes no outcome.

    The two paths are different XLA programs (the host path compiles at another
    LLVM optimisation level), so float sums (Q-diversity, mean return) may
    differ in the last bits; every discrete outcome must be equal.
    """
    cfg = small("boot")
    a = train_seeds(cfg, range(2)).metrics
    trainer = make_train(cfg)
    b = jax.tree.map(np.asarray, jax.jit(jax.vmap(lambda k: train(trainer, k)))(seed_keys(cfg, range(2))))
    for name in a:
        if name in ("diversity", "final_return"):
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_absurd_learning_rate_is_recorded_as_divergence_not_a_crash():
    m = train_seeds(small("boot", learning_rate=1e30, ensemble_size=2), range(2)).metrics
    assert m["diverged"].all() and not m["discovered"].any()


@pytest.mark.slow
def test_diversity_curve_has_a_point_per_log_point_after_learning_starts():
    m = train_seeds(small("bootrp"), range(2)).metrics
    div = m["diversity"]
    assert div.shape == (2, 10)
    assert np.isfinite(div[:, -5:]).all() and (div[:, -5:] > 0).all()
    m_eps = train_seeds(small("eps"), range(1)).metrics
    assert np.nanmax(m_eps["diversity"]) == 0.0  # one member: nothing to disagree


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_trains_on_cartpole_with_a_step_budget(kind):
    cfg = TrainConfig(kind=kind, ensemble_size=2, env_name="CartPole-v1", num_env_steps=24 * 150,
                      discovery_threshold=30.0, rb_size=1000, learning_starts=500, num_probe_states=16, num_log_points=10)
    m = train_seeds(cfg, range(2)).metrics
    assert (m["total_episodes"] > 24).all()  # episodes of varying length ended
    assert not m["diverged"].any()
    assert np.isfinite(m["final_return"]).all()


def test_invalid_configs_name_the_option():
    with pytest.raises(ConfigError, match="--kind"):
        TrainConfig(kind="dqn").validate()
    with pytest.raises(ConfigError, match="--learning-starts"):
        TrainConfig(rb_size=100, learning_starts=200).validate()
    with pytest.raises(ConfigError, match="--env-name"):
        make_env(TrainConfig(env_name="Pendulum-v1", num_env_steps=10))
    with pytest.raises(ConfigError, match="--env-name"):
        make_env(TrainConfig(env_name="NoSuchEnv-v0", num_env_steps=10))


@pytest.mark.slow
def test_a_runs_row_is_the_same_alone_or_batched_with_other_cells():
    """Batching cells of other hyperparameters (and boot with bootrp) into one program changes no run.

    The batch also holds a cell of other research-code choices, so there the choices are traced, while
    each cell alone makes them alike and they are compile-time constants (`engine._uniform_choices`:
    init then builds only the target networks it keeps): the same runs either way."""
    from deepsea_scaling import engine
    from deepsea_scaling.config import program_signature
    from deepsea_scaling.engine import train_batch

    boot, rp = small("boot"), small("bootrp")
    rp_lr = small("bootrp", learning_rate=5e-4, prior_scale=1.0)
    chosen = small("bootrp", initial_target="independent", loss_reduction="mean", warmup_resample="fixed")
    assert program_signature(boot) == program_signature(rp) == program_signature(rp_lr) == program_signature(chosen)
    hyper, axes = engine._stack_hyper([engine.default_hyper(chosen), engine.default_hyper(rp)])
    assert engine._uniform_choices(hyper, axes) == {}  # they differ: traced
    hyper, axes = engine._stack_hyper([engine.default_hyper(chosen)] * 2)
    assert engine._uniform_choices(hyper, axes) == {
        "fixed_warmup_members": True, "independent_target": True, "mean_loss": True}
    cells = [(boot, range(0, 2)), (rp, range(2, 4)), (rp_lr, range(0, 3)), (chosen, range(0, 2))]
    batched = train_batch(cells)
    alone = [train_seeds(config, seeds) for config, seeds in cells]
    assert not np.array_equal(batched[3].metrics["diversity"], batched[1].metrics["diversity"])
    for a, b in zip(alone, batched):
        for name in a.metrics:
            np.testing.assert_array_equal(a.metrics[name], b.metrics[name], err_msg=name)
    # the hyperparameters really were different: the runs differ
    assert not np.array_equal(batched[1].metrics["diversity"][:2], batched[2].metrics["diversity"][:2])
    with pytest.raises(ValueError, match="program_signature"):
        train_batch([(small("boot"), range(2)), (small("boot", hardness=5), range(2))])


@pytest.mark.slow
def test_boot_alone_builds_no_prior_and_its_runs_are_those_it_has_beside_bootrp():
    """Boot runs the bootrp program with its prior scaled by 0. Alone in a batch that 0 is a constant
    (`engine._uniform_choices`), so no prior is built, evaluated or decayed (`Agent.adds_prior`); beside
    bootrp the scale is traced and the prior computed, then multiplied by 0. Reference mode, where the
    priors are networks and AdamW decays them every step: the same runs either way, bit for bit."""
    from deepsea_scaling import engine
    from deepsea_scaling.engine import train_batch

    boot, rp = small("boot", fidelity="reference"), small("bootrp", fidelity="reference")
    hyper, axes = engine._stack_hyper([engine.default_hyper(boot)] * 2)
    static = engine._uniform_choices(hyper, axes)
    assert static["prior_scale"] == 0.0
    trainer = make_train(boot)
    assert trainer.agent.prior_form.exists and not trainer.agent.adds_prior(hyper.replace(**static))
    state = jax.eval_shape(engine._with_choices(trainer.init, static), jax.random.key(0), hyper)
    assert state.prior is None and state.target[1] is None  # no prior, nor the target's copy of it
    hyper, axes = engine._stack_hyper([engine.default_hyper(boot), engine.default_hyper(rp)])
    assert "prior_scale" not in engine._uniform_choices(hyper, axes)
    alone = train_seeds(boot, range(3)).metrics
    beside = train_batch([(boot, range(3)), (rp, range(2))])[0].metrics
    for name in alone:
        np.testing.assert_array_equal(alone[name], beside[name], err_msg=name)


@pytest.mark.slow
def test_one_program_shared_across_n_trains_each_n_as_its_own_program_does():
    """`train_groups` trains the groups of a K row (DeepSea, n aside the same) with one init and one
    training program compiled for the largest n, n traced: every run's row is bit for bit the row its
    own programs give (n = 4 and 9, default mode, boot beside bootrp; flax's initialisation, whose groups
    init at their own n and are padded; reference mode); groups of other settings keep programs of
    their own."""
    from deepsea_scaling import engine

    row = [[(small("boot", hardness=n), range(2)), (small("bootrp", hardness=n), range(2))] for n in (9, 4)]
    # flax's initialisation (drawn by shape: each n's own init program, its state padded), warm-up inside
    flax = [[(small("bootrp", hardness=n, init="flax", warmup="inside"), range(2))] for n in (6, 5)]
    # the research code's behaviours: prior and target networks decayed as parameters, no tables
    reference = [[(small("bootrp", hardness=n, fidelity="reference"), range(2))] for n in (6, 4)]
    groups = row + flax + reference
    assert len({engine._prepare(g).family for g in groups}) == 3
    finished = []
    shared = engine.train_groups(groups, finished=lambda i, out: finished.append(i))
    assert finished == list(range(len(groups)))
    for group, results in zip(groups, shared):
        alone = engine.train_batch(group)
        for a, b in zip(alone, results):
            for name in a.metrics:
                np.testing.assert_array_equal(a.metrics[name], b.metrics[name], err_msg=name)
    assert shared[1][1].metrics["discovered"].dtype == bool


def test_deepsea_with_a_traced_size_steps_as_gymnax_at_that_size():
    """PerRunMapDeepSea of size 9 with `params.size` traced at 4 or 7 steps, resets and terminates as
    gymnax's DeepSea of that size, from every cell with either action (states, rewards, ends)."""
    from gymnax.environments.bsuite.deep_sea import DeepSea

    from deepsea_scaling.envs import PerRunMapParams

    key = jax.random.key(0)
    for n in (4, 7):
        mapping = jax.random.bernoulli(jax.random.key(n), 0.5, (n, n)).astype(jnp.int32)
        padded = jnp.zeros((9, 9), jnp.int32).at[:n, :n].set(mapping)
        own, wide = PerRunMapDeepSea(size=n), PerRunMapDeepSea(size=9)
        own_params = PerRunMapParams(max_steps_in_episode=n, action_mapping=mapping)

        @jax.jit
        def traced(size, state, action):
            params = PerRunMapParams(max_steps_in_episode=size, action_mapping=padded, size=size)
            return wide.step(key, state, action, params)

        _, start = own.reset(key, own_params)
        gym = DeepSea(size=n)
        gym_params = gym.default_params.replace(max_steps_in_episode=n)
        for row in range(n):
            for column in range(row + 1):
                state = start.replace(row=jnp.int32(row), column=jnp.int32(column), time=jnp.int32(row))
                for action in (0, 1):
                    want = own.step(key, state, jnp.int32(action), own_params)
                    got = traced(jnp.int32(n), state, jnp.int32(action))
                    reference = gym.step_env(key, state.replace(action_mapping=mapping), action, gym_params)
                    for a, b in zip(jax.tree.leaves(want[1:5]), jax.tree.leaves(got[1:5])):  # not the one-hot grids
                        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), (n, row, column, action)
                    assert float(got[2]) == float(reference[2]) and bool(got[3]) == bool(reference[3])
                    assert int(got[1].row) == int(reference[1].row) or bool(got[3])


def test_the_target_table_in_blocks_is_the_one_product_table_up_to_rounding():
    """agent.q_table (engine version 2) computes the target's Q over the cells in blocks of 32 rows: the
    same values as one product over every cell up to float rounding (within 1e-5 relative), for a
    table that fills its last block and one that does not."""
    for n in (8, 13):
        cfg = small("bootrp", hardness=n, ensemble_size=4)
        trainer = make_train(cfg)
        hyper = default_hyper(cfg)
        params, prior, _ = trainer.agent.init_networks(jax.random.key(1), jax.random.key(2), jnp.int32(0), hyper)
        blocked = jax.jit(lambda p, q: agent.q_table(trainer.agent, p, q, hyper))(params, prior)
        whole = jax.jit(lambda p, q: trainer.agent.q_shared(p, q, jnp.arange(n * n), hyper))(params, prior)
        assert blocked.shape == whole.shape == (4, n * n, 2)
        np.testing.assert_allclose(np.asarray(blocked), np.asarray(whole), rtol=1e-5, atol=1e-7)
