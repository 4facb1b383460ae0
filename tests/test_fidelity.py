"""Research-code fidelity (issue 13, docs/RESEARCH_CODE.md): every option against an independent computation.

The expected values are computed here from the research code's rules, not
from the engine: 1/sqrt(fan_in) from the layer sizes, the learning-phase episode
count from ⌊(W + S)/n⌋ − ⌊W/n⌋, the decay factor exp(−lr·K·wd·steps), the shared
maps' check values (docs/RESEARCH_CODE.md, "1. Action map"), the target copy after the 50th gradient step.
"""

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepsea_scaling.config import PRESETS, ConfigError, TrainConfig, config_hash, program_signature
from deepsea_scaling.engine import default_hyper, make_train
from deepsea_scaling.envs import shared_action_map

# A small reference cell: warm-up W = 480 // 24 = 20 vector steps, S = 200 * 4 // 24 = 33 learning steps.
REF = dict(fidelity="reference", kind="bootrp", ensemble_size=4, hardness=4, num_episodes=200,
           rb_size=480, learning_starts=480, num_log_points=4)


def advance(trainer, key, hyper, steps):
    """(state after init, after the warm-up, after `steps` learning steps) of one run."""
    state0 = trainer.init(key, hyper)
    warm = jax.lax.fori_loop(0, trainer.learn_start, lambda t, s: trainer.act_step(s, t, hyper), state0)
    end = jax.lax.fori_loop(trainer.learn_start, trainer.learn_start + steps,
                            lambda t, s: trainer.learn_step(s, t, hyper), warm)
    return state0, warm, end


@pytest.fixture(scope="module")
def reference_run():
    """One compiled program of the reference cell, callable for any number of learning steps and hyper."""
    config = TrainConfig(**REF)
    trainer = make_train(config)
    fn = jax.jit(partial(advance, trainer))
    return config, trainer, fn


def leaves_equal(a, b) -> bool:
    return all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ------------------------------------------------------------------ CONFIG
def test_preset_resolves_every_option_and_explicit_options_override_it():
    ref = TrainConfig(fidelity="reference")
    assert {name: getattr(ref, name) for name in PRESETS["reference"]} == PRESETS["reference"]
    assert TrainConfig().init == "uniform" and TrainConfig().warmup == "outside" and TrainConfig().action_map == "per_run"
    assert TrainConfig(fidelity="reference", init="flax").init == "flax"
    assert TrainConfig(fidelity="reference", init="flax").warmup == "outside"
    assert TrainConfig(fixed_action_map=True).action_map == "key0"
    assert TrainConfig.from_dict(ref.to_dict()) == ref
    with pytest.raises(ConfigError, match="action-map"):
        TrainConfig(action_map="key4x").validate()


def test_hash_covers_the_effective_values_and_keeps_the_defaults():
    default = TrainConfig()
    spelled_out = TrainConfig(fidelity="reference", **PRESETS["default"])
    assert config_hash(spelled_out) == config_hash(default)  # the effective values are the engine's
    ref = TrainConfig(fidelity="reference")
    assert config_hash(ref) != config_hash(default)
    assert config_hash(TrainConfig(fidelity="default", **PRESETS["reference"])) == config_hash(ref)
    assert config_hash(dataclasses.replace(ref, init="flax")) != config_hash(ref)
    assert config_hash(TrainConfig(fixed_action_map=True)) != config_hash(default)


def test_hash_of_a_reference_run_does_not_depend_on_which_preset_is_the_default(monkeypatch):
    """The hash leaves out options at HASH_BASELINE, not at the default preset: moving the defaults moves no seeds."""
    from deepsea_scaling import config as config_module

    ref = TrainConfig(fidelity="reference")
    assert config_hash(ref) == "68871e614eb762c0"  # recorded when the options were introduced
    monkeypatch.setitem(config_module.PRESETS, "default", dict(PRESETS["reference"]))
    assert TrainConfig().init == "uniform"  # the default preset is now the research code's
    assert config_hash(TrainConfig(fidelity="reference")) == "68871e614eb762c0"
    assert config_hash(TrainConfig()) == "68871e614eb762c0"  # same effective values, same runs


def test_traced_options_share_a_program_and_static_ones_do_not():
    ref = TrainConfig(fidelity="reference")
    for name, value in [("warmup_resample", "resample"), ("initial_target", "copy"), ("loss_reduction", "sum")]:
        assert program_signature(TrainConfig(fidelity="reference", **{name: value})) == program_signature(ref), name
    for name, value in [("init", "flax"), ("warmup", "inside"), ("decay_scope", "online"), ("action_map", "per_run")]:
        assert program_signature(TrainConfig(fidelity="reference", **{name: value})) != program_signature(ref), name


def test_outside_warmup_counts_steps_as_the_research_code():
    c = TrainConfig(fidelity="reference", hardness=14, num_episodes=5000)
    assert c.warmup_steps == 10_000 // 24 == 416
    assert c.num_vector_steps - c.warmup_steps == 5000 * 14 // 24 == 2916
    inside = TrainConfig(hardness=14, num_episodes=5000, warmup="inside")
    assert inside.warmup_steps == 417 and inside.num_vector_steps == math.ceil(5000 / 24) * 14


# ----------------------------------------------------------------- ACTION MAP
def test_shared_maps_equal_the_research_codes_check_values():
    n4 = [1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0]
    n6 = [1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 1, 1, 0,
          1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 1]
    assert np.asarray(shared_action_map(4, "key42")).ravel().tolist() == n4
    assert np.asarray(shared_action_map(6, "key42")).ravel().tolist() == n6
    # key0 is gymnax 1.0.1's constructor map (what --fixed-action-map always used), not the research code's
    assert np.asarray(shared_action_map(4, "key0")).ravel().tolist() == [0, 0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0]


def test_every_run_gets_the_shared_map_in_reference_mode():
    trainer = make_train(TrainConfig(**REF))
    keys = jax.random.split(jax.random.key(3), 3)
    maps = jax.vmap(trainer.env.params_for_run)(keys)
    assert all(np.asarray(m).ravel().tolist() == [1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0] for m in maps)
    default = make_train(TrainConfig(**{**REF, "action_map": "per_run"}))
    maps = np.asarray(jax.vmap(default.env.params_for_run)(jax.random.split(jax.random.key(3), 8)))
    assert len({m.tobytes() for m in maps}) > 1


# ------------------------------------------------------------- INITIALISATION
@pytest.mark.slow
def test_uniform_initialisation_bounds_weights_and_biases_by_fan_in(reference_run):
    config, trainer, fn = reference_run
    n, width = config.hardness, config.hidden_sizes[0]
    state0, _, _ = fn(jax.random.key(1), default_hyper(config), 0)
    params, prior, target = state0.params, state0.prior, state0.target
    fan_in = {"RowLookupDense_0": n * n, "Dense_0": width, "Dense_1": width}  # layers [n*n, 24, 24, 2]
    for tree in (params, prior, target[0], target[1]):
        for layer, fan in fan_in.items():
            lim = 1 / math.sqrt(fan)
            for name in ("kernel", "bias"):
                values = np.asarray(tree["params"][layer][name])
                assert np.all(np.abs(values) <= lim), (layer, name)
                assert np.max(np.abs(values)) > 0.8 * lim, (layer, name)  # spread over the interval
            assert np.any(np.asarray(tree["params"][layer]["bias"]) != 0), layer
    # independent targets: neither the online networks nor their priors
    assert not leaves_equal(target[0], params) and not leaves_equal(target[1], prior)
    # flax's default: zero biases
    flax_config = dataclasses.replace(config, init="flax")
    flax_params, _, _ = make_train(flax_config).agent.init_networks(jax.random.key(1), jax.random.key(2), jnp.int32(0),
                                                                    default_hyper(flax_config))
    assert np.all(np.asarray(flax_params["params"]["Dense_0"]["bias"]) == 0)


# ------------------------------------------------------------------- WARM-UP
@pytest.mark.slow
def test_warmup_is_unlogged_members_fixed_and_budget_counts_learning_episodes(reference_run):
    config, trainer, fn = reference_run
    hyper = default_hyper(config)
    W, n, E = 480 // 24, config.hardness, config.num_envs
    S = config.num_episodes * n // E
    assert (trainer.learn_start, trainer.num_steps) == (W, W + S)
    state0, warm, end = fn(jax.random.key(0), hyper, S)
    # W = 20 steps of n = 4: 5 episodes per env ended in the warm-up, none recorded
    assert int(warm.tracker.episodes) == 0
    assert np.all(np.isinf(np.asarray(warm.tracker.member_first_discovery)))
    assert np.all(np.asarray(warm.episode_return) == 0)
    assert np.array_equal(np.asarray(warm.active), np.asarray(state0.active))  # no resampling
    # learning-phase episodes only: E * (floor((W + S) / n) - floor(W / n)) = 24 * (13 - 5) = 192
    assert int(end.tracker.episodes) == E * ((W + S) // n - W // n) == 192
    # the same warm-up with resampling changes members
    resampled = fn(jax.random.key(0), default_hyper(dataclasses.replace(config, warmup_resample="resample")), 0)[1]
    assert not np.array_equal(np.asarray(resampled.active), np.asarray(state0.active))
    # inside the budget (this engine's former default) the warm-up is logged: its W = 20 steps end
    # W // n = 5 episodes in each of the E environments, and they count
    inside = dataclasses.replace(config, warmup="inside")
    inside_trainer = make_train(inside)
    assert inside_trainer.learn_start == W
    warm_inside = jax.jit(partial(advance, inside_trainer))(jax.random.key(0), default_hyper(inside), 0)[1]
    assert int(warm_inside.tracker.episodes) == E * (W // n) == 120


# ---------------------------------------------------------------- WEIGHT DECAY
def test_prior_decays_by_exp_lr_k_wd_steps_when_decay_covers_it(reference_run):
    config, trainer, fn = reference_run
    lr, wd, steps = 1e-2, 1e-2, 100  # per step 4e-4: float32 rounding is negligible against it
    c = dataclasses.replace(config, learning_rate=lr, weight_decay=wd)
    state0, _, end = fn(jax.random.key(0), default_hyper(c), steps)
    norm = lambda tree: math.sqrt(sum(float(jnp.sum(jnp.square(x))) for x in jax.tree.leaves(tree)))
    expected = math.exp(-lr * config.ensemble_size * wd * steps)
    assert norm(end.prior) / norm(state0.prior) == pytest.approx(expected, rel=1e-4)
    assert 1 - expected > 0.03


@pytest.mark.slow
def test_prior_stays_fixed_when_decay_covers_only_the_online_networks():
    config = TrainConfig(**{**REF, "decay_scope": "online", "learning_rate": 1e-2, "weight_decay": 1e-2})
    trainer = make_train(config)
    state0, _, end = jax.jit(partial(advance, trainer))(jax.random.key(0), default_hyper(config), 30)
    assert leaves_equal(end.prior, state0.prior)
    assert not leaves_equal(end.params, state0.params)


# --------------------------------------------------------------------- TARGETS
def test_targets_are_independent_until_the_50th_step_then_the_online_networks(reference_run):
    config, trainer, fn = reference_run
    hyper = default_hyper(config)
    key = jax.random.key(5)
    for steps in (0, 1, 49):
        _, _, s = fn(key, hyper, steps)
        online, prior = s.params, s.prior
        assert not leaves_equal(s.target[0], online) and not leaves_equal(s.target[1], prior), steps
    _, _, s50 = fn(key, hyper, 50)
    assert leaves_equal(s50.target, (s50.params, s50.prior))
    # one step later the online networks moved; the target is the step-50 copy, decayed once
    _, _, s51 = fn(key, hyper, 51)
    c = np.float32(1) - np.float32(config.effective_learning_rate) * np.float32(config.weight_decay)
    assert not leaves_equal(s51.target[0], s51.params)
    np.testing.assert_allclose(np.asarray(s51.target[0]["params"]["Dense_1"]["kernel"]),
                               c * np.asarray(s50.params["params"]["Dense_1"]["kernel"]), rtol=1e-6)
    # with initial_target=copy the targets start as the online networks
    _, _, s0 = fn(key, default_hyper(dataclasses.replace(config, initial_target="copy")), 0)
    assert leaves_equal(s0.target, (s0.params, s0.prior))


@pytest.mark.slow
def test_mean_loss_reduction_is_one_kth_of_the_sum(reference_run):
    from deepsea_scaling.replay import replay_sample
    config, trainer, fn = reference_run
    _, warm, _ = fn(jax.random.key(0), default_hyper(config), 0)
    batch = replay_sample(warm.buffer, jax.random.key(9), (config.members, config.batch_size))
    losses = {}
    for reduction in ("sum", "mean"):
        h = default_hyper(dataclasses.replace(config, loss_reduction=reduction))
        loss = trainer.agent.update(warm.params, warm.opt_state, warm.prior, warm.target, batch, jnp.int32(0), h)[4]
        losses[reduction] = float(loss)
    assert losses["mean"] == pytest.approx(losses["sum"] / config.members, rel=1e-6)
