"""Training: `make_train(config)` builds the pure per-run functions; seeds are vmapped.

One run is a pure function of (config, key). The vector step threads a named
`RunState` through `lax.fori_loop`. Training is cut into `num_log_points`
segments: each is one call of the same compiled program (traced loop bounds),
ends with the Q-diversity measurement, and lets the host print progress between
calls; the cutting does not change the result. Warm-up steps (acting only) and
learning steps are separate loops, so no branch carries the whole state.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from . import agent
from .agent import Agent, Hyper, make_agent
from .config import TrainConfig, config_hash, program_family, program_signature
from .envs import EnvAdapter, make_env
from .kinds import KINDS
from .metrics import Tracker, record_episodes, summarize, tracker_init
from .networks import QNetwork
from .replay import ReplayBuffer, Transition, replay_add, replay_init, replay_sample, replay_sample_bits


def _use_threefry_lowering(unrolled: bool) -> None:
    """Lower threefry (JAX's PRNG) on CPU unrolled, as on GPU, or rolled, JAX's CPU default.

    The rolled lowering is a small XLA while loop, quick to compile; inside a
    training step its rounds run as separate tiny kernels and cost more than
    all the acting. The unrolled one computes the same bits in one fused
    kernel but compiles slower. So the hot loop is lowered unrolled (the
    default here) and the programs run once (init) rolled, saving 1-2 s of
    compile per job; results are the same either way (the tests check run
    tables bit for bit). A JAX without these internals keeps its default.
    """
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as tf
    except ImportError:
        return
    rule = getattr(tf, "_threefry2x32_lowering_rule" if unrolled else "_threefry2x32_cpu_lowering_rule", None)
    if rule is not None:
        mlir.register_lowering(tf.threefry2x32_p, rule, platform="cpu")


@contextmanager
def _rolled_threefry():
    """Lower threefry rolled (one-off programs: faster compile) within the block, unrolled after."""
    _use_threefry_lowering(unrolled=False)
    try:
        yield
    finally:
        _use_threefry_lowering(unrolled=True)


_use_threefry_lowering(unrolled=True)


@struct.dataclass
class Dims:
    """What differs between the n of one program shared across n (`train_groups`): DeepSea's size and
    the run's step counts, as int32 scalars (`dims_of`)."""

    hardness: jax.Array
    num_steps: jax.Array
    learn_start: jax.Array


def dims_of(trainer: "Trainer") -> Dims:
    return Dims(*(jnp.int32(v) for v in (trainer.config.hardness, trainer.num_steps, trainer.learn_start)))


@struct.dataclass
class RunState:
    params: Any  # online Q-networks, (K, ...) stacked
    target: Any  # as the agent's target form holds it (agent.py: TargetNetworks, TargetTable, DecayedTarget)
    opt_state: Any
    prior: Any  # as the agent's prior form holds it (agent.py: PriorTable (K, cells, A), PriorNetworks, NoPrior)
    env_params: Any  # per run: DeepSea's action map
    env_state: Any  # (E, ...)
    obs: jax.Array  # (E,) cell indices or (E, d)
    active: jax.Array  # (E,) int32, acting member of each env for its current episode
    episode_return: jax.Array  # (E,) float32
    buffer: ReplayBuffer
    probe_obs: jax.Array  # (P,) or (P, d): observations on which Q-diversity is measured
    tracker: Tracker
    rng: jax.Array


# The engine's numerics: a change that moves a run's float bits is a new version, recorded in every
# table's provenance. 2: DeepSea's target and prior tables (default mode) computed in blocks of 32
# rows (`agent.q_table`), so one program serves several n; default-mode ensembles at n >= 9 moved by
# rounding (docs/ENGINE.md, "Engine versions"); reference mode and other environments unchanged.
ENGINE_VERSION = 2


def numerics_version(config: TrainConfig) -> int:
    """The engine version whose numerics a run of `config` has: the last version that changed the
    arithmetic of its program (a table of another version is stale: `runs.merge_group_tables`).
    Version 2 changed how the cell tables are computed: programs that hold a prior or target table."""
    the_agent = make_train(config).agent
    tables = isinstance(the_agent.target_form, agent.TargetTable) or isinstance(the_agent.prior_form, agent.PriorTable)
    return 2 if tables else 1


default_hyper = agent.hyper_of  # the traced hyperparameters of a config (agent.Hyper)


def seed_keys(config: TrainConfig, seeds) -> jax.Array:
    """Key of seed s = fold_in(key(hash of the config), s): independent of shard and batch."""
    base = jax.random.key(int(config_hash(config)[:8], 16))
    return jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.asarray(list(seeds), jnp.uint32))


# ------------------------------------------------------------- BOOKKEEPING
# A phase's bookkeeping of its vector steps: `account(trainer, state, t, reward, done, hyper)`
# -> (episode returns, tracker) after the step's rewards and episode ends, and
# `resample(done, hyper)` -> where an env draws a new member for its next episode.
def log_episodes(trainer: "Trainer", state: RunState, t: jax.Array, reward: jax.Array, done: jax.Array,
                 hyper: Hyper) -> tuple[jax.Array, Tracker]:
    """Accumulate each env's return and record the episodes that ended (metrics.record_episodes)."""
    episode_return = state.episode_return + reward
    in_last_tenth = t >= (trainer.num_steps * 9) // 10
    tracker = record_episodes(
        state.tracker, done, episode_return, state.active, hyper.discovery_threshold, in_last_tenth
    )
    return jnp.where(done, 0.0, episode_return), tracker


def log_nothing(trainer: "Trainer", state: RunState, t: jax.Array, reward: jax.Array, done: jax.Array,
                hyper: Hyper) -> tuple[jax.Array, Tracker]:
    """warmup=outside (the research code's): a warm-up outside the budget records no episode and
    accumulates no return, so the first learning-phase episode counts only its learning-phase rewards."""
    return state.episode_return, state.tracker


def at_episode_end(done: jax.Array, hyper: Hyper) -> jax.Array:
    """A new member at every episode end."""
    return done


def at_episode_end_unless_fixed(done: jax.Array, hyper: Hyper) -> jax.Array:
    """warmup_resample=fixed (the research code's) keeps each env's first member through the
    warm-up (a traced choice); resample draws one at every episode end."""
    return done & jnp.logical_not(hyper.fixed_warmup_members)


@dataclass(frozen=True)
class Phase:
    """The bookkeeping of one phase's vector steps (see `log_episodes`, `at_episode_end`)."""

    account: Callable
    resample: Callable


LEARNING = Phase(log_episodes, at_episode_end)
WARMUP_INSIDE = Phase(log_episodes, at_episode_end_unless_fixed)
WARMUP_OUTSIDE = Phase(log_nothing, at_episode_end_unless_fixed)


@dataclass(frozen=True)
class Trainer:
    """The pure functions of one run: init, the warm-up and learning steps, the logging
    segments; `train(key, hyper)` = init, every segment, summary. The agent's own
    functions (Q-values, acting, the learning step `Agent.update`) are `agent`'s."""

    config: TrainConfig
    env: EnvAdapter
    agent: Agent
    num_steps: int  # vector steps per run (traced where one program serves several n: `with_dims`)
    learn_start: int  # first vector step with a gradient step (idem)

    def with_dims(self, dims: "Dims") -> "Trainer":
        """This trainer's functions for DeepSea of size `dims.hardness` and its step counts, all traced,
        in arrays sized for this trainer's n (one program serves every n up to it: `train_groups`)."""
        return dataclasses.replace(self, env=self.env.with_size(dims.hardness), num_steps=dims.num_steps,
                                   learn_start=dims.learn_start, agent=self.agent.with_side(dims.hardness))

    # ------------------------------------------------------------------ INIT
    def init(self, key: jax.Array, hyper: Hyper) -> RunState:
        cfg, env = self.config, self.env
        num_envs = cfg.num_envs
        rng, rng_map, rng_net, rng_prior, rng_reset, rng_member = jax.random.split(key, 6)
        env_params = env.params_for_run(rng_map)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(rng_reset, num_envs), env_params)
        params, prior, target = self.agent.init_networks(rng_net, rng_prior, obs[0], hyper)
        example = Transition(obs[0], jnp.int32(0), jnp.float32(0), obs[0], jnp.float32(0))
        return RunState(
            params=params,
            target=target,
            opt_state=self.agent.optimizer(hyper).init(params),
            prior=prior,
            env_params=env_params,
            env_state=env_state,
            obs=obs,
            active=jax.random.randint(rng_member, (num_envs,), 0, self.agent.members, dtype=jnp.int32),
            episode_return=jnp.zeros((num_envs,), jnp.float32),
            buffer=replay_init(cfg.rb_size, example),
            probe_obs=jnp.zeros((cfg.num_probe_states, *obs.shape[1:]), obs.dtype),
            tracker=tracker_init(self.agent.members, cfg.num_log_points),
            rng=rng,
        )

    # ------------------------------------------------------------ ONE STEP
    def draw(self, rng: jax.Array, learning: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
        """A vector step's randomness from one draw: (next rng, env key, uint32 bits).

        bits: acting (`agent.draws_per_env` per env), then, when learning, the
        K x B minibatch slots.
        """
        cfg = self.config
        rng, rng_env, rng_bits = jax.random.split(rng, 3)
        count = self.act_draws + (self.agent.members * cfg.batch_size if learning else 0)
        return rng, rng_env, jax.random.bits(rng_bits, (count,), jnp.uint32)

    @property
    def act_draws(self) -> int:
        return self.config.num_envs * self.agent.draws_per_env()

    def act_step(self, state: RunState, t: jax.Array, hyper: Hyper) -> RunState:
        """A warm-up vector step: act, store, account (no learning)."""
        rng, rng_env, bits = self.draw(state.rng, learning=False)
        return self.act(state.replace(rng=rng), t, hyper, rng_env, bits, self.warmup)

    def learn_step(self, state: RunState, t: jax.Array, hyper: Hyper) -> RunState:
        """A vector step followed by the agent's learning step (`Agent.update`: one AdamW step on
        every member's own minibatch, the hard target update every `target_period` gradient steps)."""
        cfg, ag = self.config, self.agent
        rng, rng_env, bits = self.draw(state.rng, learning=True)
        state = self.act(state.replace(rng=rng), t, hyper, rng_env, bits, LEARNING)
        slot_bits = bits[self.act_draws:].reshape(ag.members, cfg.batch_size)
        batch = replay_sample_bits(state.buffer, slot_bits)  # leaves (K, B, ...)
        params, opt_state, prior, target, loss, q_max = ag.update(
            state.params, state.opt_state, state.prior, state.target, batch, t - self.learn_start, hyper
        )
        finite = jnp.isfinite(loss) & jnp.isfinite(q_max)
        return state.replace(
            params=params,
            target=target,
            prior=prior,
            opt_state=opt_state,
            tracker=state.tracker.replace(diverged=state.tracker.diverged | ~finite),
        )

    def act(self, state: RunState, t: jax.Array, hyper: Hyper, rng_env: jax.Array, bits: jax.Array,
            phase: Phase) -> RunState:
        """Act in all envs, store the transitions, account for the episodes that ended as `phase` says."""
        env, num_envs = self.env, self.config.num_envs
        q_acting = self.agent.q_acting(state.params, state.prior, state.obs, state.active, hyper)  # (E, A)
        eps = agent.epsilon(self.progress(t), hyper)
        action = self.agent.act(q_acting, eps, bits)
        next_obs, env_state, reward, terminated, done, final_obs = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            env.step_keys(rng_env, num_envs), state.env_state, action, state.env_params
        )
        buffer = replay_add(
            state.buffer, Transition(state.obs, action, reward, final_obs, terminated.astype(jnp.float32))
        )
        episode_return, tracker = phase.account(self, state, t, reward, done, hyper)
        tracker = tracker.replace(diverged=tracker.diverged | ~jnp.all(jnp.isfinite(q_acting)))
        return state.replace(
            env_state=env_state,
            obs=next_obs,
            active=jnp.where(phase.resample(done, hyper), self.agent.new_members(bits, num_envs), state.active),
            episode_return=episode_return,
            buffer=buffer,
            tracker=tracker,
        )

    # ------------------------------------------------- BOOKKEEPING VARIANTS
    @property
    def warmup(self) -> Phase:
        """How warm-up steps keep their books: inside the budget, or outside it (`warmup=outside`)."""
        return WARMUP_OUTSIDE if self.config.warmup_outside else WARMUP_INSIDE

    def progress(self, t: jax.Array) -> jax.Array:
        """Epsilon's clock at vector step t: the fraction of all steps, or with the warm-up outside
        the budget the fraction of the learning steps (epsilon = eps_start through the warm-up)."""
        if self.config.warmup_outside:
            learning_steps = self.num_steps - self.learn_start
            learning_steps = max(learning_steps, 1) if isinstance(learning_steps, int) else jnp.maximum(learning_steps, 1)
            return (t - self.learn_start).astype(jnp.float32) / learning_steps
        return t.astype(jnp.float32) / self.num_steps

    def q_diversity(self, state: RunState, hyper: Hyper) -> jax.Array:
        """Std across members of Q on the probe set, averaged over probes and actions."""
        q = self.agent.q_shared(state.params, state.prior, state.probe_obs, hyper)  # (K, P, A)
        return jnp.mean(jnp.std(q, axis=0))


# ------------------------------------------------------------------ SEGMENTS
def segment_bounds(trainer: Trainer, point: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Vector steps [t0, t1) of logging segment `point` (of num_log_points)."""
    total, points = trainer.num_steps, trainer.config.num_log_points
    return (point * total) // points, ((point + 1) * total) // points


def run_segment(trainer: Trainer, state: RunState, point: jax.Array, hyper: Hyper) -> RunState:
    """Train through logging segment `point`, then record Q-diversity for it.

    Steps before `learn_start` only act (warm-up: the buffer fills with the
    acting policy's transitions); the probe set is drawn from that initial
    buffer just before the first gradient step. Loop bounds are traced, so
    one compiled program serves every segment.
    """
    t0, t1 = segment_bounds(trainer, point)
    s0 = trainer.learn_start
    state = jax.lax.fori_loop(t0, jnp.minimum(t1, s0), lambda t, s: trainer.act_step(s, t, hyper), state)
    take_probe = (t0 <= s0) & (s0 < t1)
    probe_key = jax.random.fold_in(state.rng, 1)
    probe_obs = jax.lax.cond(
        take_probe,
        lambda: replay_sample(state.buffer, probe_key, (trainer.config.num_probe_states,)).obs,
        lambda: state.probe_obs,
    )
    state = state.replace(probe_obs=probe_obs)
    state = jax.lax.fori_loop(jnp.maximum(t0, s0), t1, lambda t, s: trainer.learn_step(s, t, hyper), state)
    diversity = jax.lax.cond(t1 > s0, lambda: trainer.q_diversity(state, hyper), lambda: jnp.float32(jnp.nan))
    return state.replace(tracker=state.tracker.replace(diversity=state.tracker.diversity.at[point].set(diversity)))


def run(trainer: Trainer, key: jax.Array, hyper: Hyper | None = None) -> RunState:
    """The whole run as one pure function of the key; returns the final state."""
    hyper = default_hyper(trainer.config) if hyper is None else hyper
    state = trainer.init(key, hyper)
    return jax.lax.fori_loop(
        0, trainer.config.num_log_points, lambda point, s: run_segment(trainer, s, point, hyper), state
    )


def train(trainer: Trainer, key: jax.Array, hyper: Hyper | None = None) -> dict[str, jax.Array]:
    """The per-run metrics of `run` (tests, notebooks: `jax.jit(jax.vmap(partial(train, trainer)))(keys)`)."""
    return summarize(run(trainer, key, hyper).tracker)


def make_train(config: TrainConfig, env: EnvAdapter | None = None) -> Trainer:
    """Validate `config` (ConfigError before anything compiles) and build its Trainer.

    `env` replaces the environment named by the config (probe environments in tests).
    """
    config.validate()
    env = make_env(config) if env is None else env
    network = QNetwork(
        hidden_sizes=tuple(config.hidden_sizes),
        num_actions=env.num_actions,
        num_cells=env.obs_size if env.obs_is_index else 0,
    )
    the_agent = make_agent(config, network, env.num_actions, env.obs_is_index, env.obs_size)
    # learning starts once the buffer holds learning_starts transitions
    learn_start = min(config.warmup_steps, config.num_vector_steps)
    return Trainer(config, env, the_agent, config.num_vector_steps, learn_start)


# ------------------------------------------------------------------ HOST SIDE
@dataclass
class ShardResult:
    metrics: dict[str, np.ndarray]  # each (S, ...) for the S seeds
    compile_seconds: float
    run_seconds: float
    devices: list[str]
    segment_seconds: list[float]  # wall seconds of each logging segment (all runs of the batch together)


def compile_options(hot_loop: bool) -> dict | None:
    """XLA options for a program: LLVM's optimiser is most of XLA:CPU's compile time.

    A program run once (init) gains nothing from it; the training loop
    runs as fast at level 2 as at the default 3 and compiles in about half the
    time (measured: benchmarks/README.md). Other backends keep their defaults.
    """
    if jax.default_backend() != "cpu":
        return None
    if not hot_loop:
        return {"xla_backend_optimization_level": 0}
    # Copy insertion with region analysis: without it XLA copies the loop-carried prior, target
    # and weight leaves at the top of every learning step (their in-place updates were scheduled
    # before their last reads); the same program otherwise, the same bits.
    return {"xla_backend_optimization_level": 2, "xla_cpu_copy_insertion_use_region_analysis": True}


def _seed_sharding(num_runs: int):
    """Split the run axis over the most devices that divide it evenly (None: one device).

    On a CPU, `--cpu-devices N` (XLA's host device count) gives N devices that
    each run their share of the runs on a core of their own.
    """
    devices = jax.devices()
    count = max(d for d in range(1, len(devices) + 1) if num_runs % d == 0)
    if count < 2:
        return None
    mesh = jax.sharding.Mesh(np.array(devices[:count]), ("seeds",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds"))


def train_seeds(
    config: TrainConfig,
    seeds: range | list[int],
    progress: Callable[[str], None] | None = None,
) -> ShardResult:
    """Train every seed of `seeds` of one cell in one vmapped, jitted program."""
    return train_batch([(config, seeds)], progress)[0]


def train_batch(
    cells: list[tuple[TrainConfig, range | list[int]]],
    progress: Callable[[str], None] | None = None,
) -> list[ShardResult]:
    """Train several cells' seeds in ONE compiled program, vmapped over all their runs.

    The cells must share `program_signature` (shapes and static structure); they
    may differ in the traced hyperparameters (`Hyper`: learning rate, prior
    scale, gamma, ...), in boot vs bootrp on DeepSea, and in base_seed. A run's
    result does not depend on what it is batched with: its key comes from its
    own config and seed, and every traced value is its own. Hyperparameters
    equal across the batch stay unbatched, so step-index branches stay branches.
    The host calls the compiled segment once per logging point and prints a
    progress line about every 10% of training, between calls.
    """
    return train_groups([cells], progress)[0]


def train_groups(
    groups: list[list[tuple[TrainConfig, range | list[int]]]],
    progress: Callable[[str], None] | None = None,
    finished: Callable[[int, list[ShardResult]], None] | None = None,
) -> list[list[ShardResult]]:
    """Train several batches (groups, each as `train_batch` takes it) one after the other in this
    process; `finished(i, results)` is called as group i ends (its tables can be written then).

    DeepSea groups that differ only in n (`program_family`) share one init and one training
    program: compiled once for the largest n of them, called per group with n and the step counts
    traced (`Dims`, `Trainer.with_dims`). The cell tables (first layer, its AdamW moments, prior and
    target tables, action maps) have the largest n's rows, zero beyond a group's own; its draws are
    those of its own n (threefry's draws do not depend on an array's size; with `init: flax`, which
    draws by shape, each group has its own init program and its state is padded). The padded rows
    are never read and stay zero, and the tables are computed in blocks (`agent.q_table`), so each
    run's result is bit for bit what its own programs give (tests/test_engine.py checks it). Saves
    tracing and compiling two programs per n.
    """
    prepared = [_prepare(cells) for cells in groups]
    largest: dict[tuple, int] = {}
    for batch in prepared:
        if batch.family is not None:
            largest[batch.family] = max(largest.get(batch.family, 0), batch.trainer.config.hardness)
    shared_by = {}  # family -> how many groups share its program
    for batch in prepared:
        shared_by[batch.family] = shared_by.get(batch.family, 0) + 1
    programs: dict = {}
    results = []
    for i, batch in enumerate(prepared):
        shared = batch.family is not None and shared_by[batch.family] > 1
        size = largest[batch.family] if shared else None
        out = _train_prepared(batch, size, programs, progress)
        results.append(out)
        if finished is not None:
            finished(i, out)
    return results


@dataclass
class _Batch:
    """One group's runs, ready to compile and train (`_prepare`)."""

    trainer: Trainer
    configs: list[TrainConfig]
    seed_lists: list[list[int]]
    keys: jax.Array
    hyper: Hyper
    hyper_axes: Hyper
    static: dict
    family: tuple | None  # groups with equal families can share a program (DeepSea, n aside); None: never


def _prepare(cells: list[tuple[TrainConfig, range | list[int]]]) -> _Batch:
    configs = [config for config, _ in cells]
    signatures = {program_signature(c) for c in configs}
    if len(signatures) != 1:
        raise ValueError("train_batch: the cells differ in shapes or static settings; group them by program_signature")
    representative = next((c for c in configs if KINDS[c.kind].has_prior), configs[0])
    trainer = make_train(representative)
    for config in configs:
        config.validate()
    seed_lists = [list(seeds) for _, seeds in cells]
    keys = jnp.concatenate([seed_keys(c, s) for c, s in zip(configs, seed_lists)])
    hypers = [default_hyper(c) for c, s in zip(configs, seed_lists) for _ in s]
    hyper, hyper_axes = _stack_hyper(hypers)
    # A traced choice that every run of the batch makes alike is a constant of the programs: XLA drops
    # the branch not taken before code generation (init: the target networks not used), same bits.
    static = _uniform_choices(hyper, hyper_axes)
    family = None
    if representative.is_deepsea:
        forms = (type(trainer.agent.prior_form).__name__, type(trainer.agent.target_form).__name__)
        axes = tuple(sorted((k, v) for k, v in vars(hyper_axes).items()))
        family = (program_family(representative), len(keys), axes, tuple(sorted(static.items())), forms)
    return _Batch(trainer, configs, seed_lists, keys, hyper, hyper_axes, static, family)


def _train_prepared(batch: _Batch, size: int | None, programs: dict,
                    progress: Callable[[str], None] | None) -> list[ShardResult]:
    """Compile (or reuse from `programs`) and run one group; `size`: the n of a shared program, None: its own."""
    trainer, keys, hyper, hyper_axes, static = batch.trainer, batch.keys, batch.hyper, batch.hyper_axes, batch.static
    sharding = _seed_sharding(len(keys))
    init_shardings = segment_shardings = {}
    if sharding is not None:  # every state leaf starts with the run axis: keep it split over the devices throughout
        replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
        hyper_shardings = jax.tree.map(lambda axis: replicated if axis is None else sharding, hyper_axes,
                                       is_leaf=lambda x: x is None)
        hyper = jax.device_put(hyper, hyper_shardings)  # once, not at every segment call
        init_shardings = {"in_shardings": (sharding, hyper_shardings), "out_shardings": sharding}
        segment_shardings = {"in_shardings": (sharding, replicated, hyper_shardings, replicated),
                             "out_shardings": sharding}

    t_start = time.perf_counter()
    wide = trainer if size is None else make_train(dataclasses.replace(trainer.config, hardness=size))
    dims = dims_of(trainer)
    program_key = (batch.family, size) if size is not None else None
    if size is None:  # its own program: n and the step counts are constants
        init_fn = jax.vmap(_with_choices(trainer.init, static), in_axes=(0, hyper_axes))
    elif trainer.agent.uniform_init:  # one init program for every n, n traced; cached with the segment's
        def init_fn(keys, hyper, dims):
            return jax.vmap(_with_choices(wide.with_dims(dims).init, static), in_axes=(0, hyper_axes))(keys, hyper)
    else:  # flax's initialisers draw by shape: its own init at its n, the tables then padded
        padded_shape = jax.eval_shape(jax.vmap(_with_choices(wide.init, static), in_axes=(0, hyper_axes)), keys, hyper)
        init_fn = _padded(jax.vmap(_with_choices(trainer.init, static), in_axes=(0, hyper_axes)), padded_shape)
    init_args = (keys, hyper, dims) if size is not None and trainer.agent.uniform_init else (keys, hyper)
    init_key = ("init", *program_key) if len(init_args) == 3 else None
    if init_key in programs:
        init, state_shape = programs[init_key]
    else:
        if len(init_args) == 3 and init_shardings:
            init_shardings = {**init_shardings, "in_shardings": (*init_shardings["in_shardings"], replicated)}
        with _rolled_threefry():
            init_lowered = jax.jit(init_fn, **init_shardings).lower(*init_args)
        state_shape = init_lowered.out_info
        init = init_lowered.compile(compile_options(hot_loop=False))
        if init_key is not None:
            programs[init_key] = (init, state_shape)
    segment = programs.get(program_key) if program_key is not None else None
    if segment is None:
        if size is None:
            def segment_fn(state, point, hyper, dims):
                return run_segment(trainer, state, point, hyper)
        else:
            def segment_fn(state, point, hyper, dims):
                return run_segment(wide.with_dims(dims), state, point, hyper)
        segment = (
            jax.jit(jax.vmap(_with_choices(segment_fn, static, 2), in_axes=(0, None, hyper_axes, None)),
                    donate_argnums=0, **segment_shardings)
            .lower(state_shape, jnp.int32(0), hyper, dims)
            .compile(compile_options(hot_loop=True))
        )
        if program_key is not None:
            programs[program_key] = segment
    compile_seconds = time.perf_counter() - t_start

    t_run = time.perf_counter()
    state = init(*init_args)
    points = trainer.config.num_log_points
    report_every = max(1, points // 10)
    segment_seconds = []
    for point in range(points):
        t_segment = time.perf_counter()
        state = segment(state, jnp.int32(point), hyper, dims)
        jax.block_until_ready(state.tracker.episodes)  # each segment timed (a sync per log point: negligible)
        segment_seconds.append(time.perf_counter() - t_segment)
        if progress is not None and ((point + 1) % report_every == 0 or point + 1 == points):
            elapsed = time.perf_counter() - t_run
            done = ((point + 1) * trainer.num_steps) // points
            left = elapsed / max(done, 1) * (trainer.num_steps - done)
            progress(
                f"{(point + 1) / points:6.1%}  step {done:,}/{trainer.num_steps:,}  "
                f"elapsed {_hms(elapsed)}  left ~{_hms(left)}"
            )
    metrics = summarize(jax.tree.map(np.asarray, state.tracker), xp=np)  # on the host: no program to compile
    run_seconds = time.perf_counter() - t_run
    used = jax.devices()[:1] if sharding is None else list(sharding.mesh.devices.flat)
    devices = [str(d) for d in used]
    results, offset = [], 0
    for seeds in batch.seed_lists:
        part = {name: values[offset:offset + len(seeds)] for name, values in metrics.items()}
        results.append(ShardResult(part, compile_seconds, run_seconds, devices, segment_seconds))
        offset += len(seeds)
    return results


def _padded(fn: Callable, shape) -> Callable:
    """`fn` with every output leaf zero-padded at the end of each axis to the leaf's size in `shape`."""
    def wrapped(*args):
        def pad(leaf, target):
            widths = [(0, t - s) for s, t in zip(leaf.shape, target.shape)]
            return jnp.pad(leaf, widths) if any(w for _, w in widths) else leaf
        return jax.tree.map(pad, fn(*args), shape)
    return wrapped


def _stack_hyper(hypers: list[Hyper]) -> tuple[Hyper, Hyper]:
    """One Hyper for a batch of runs, and its vmap axes: batched only where values differ."""
    fields = {}
    axes = {}
    for name in Hyper.__dataclass_fields__:
        values = [getattr(h, name) for h in hypers]
        if all(bool(v == values[0]) for v in values):
            fields[name], axes[name] = values[0], None
        else:
            fields[name], axes[name] = jnp.stack(values), 0
    return Hyper(**fields), Hyper(**axes)


def _uniform_choices(hyper: Hyper, axes: Hyper) -> dict[str, bool | float]:
    """The traced choices (boolean leaves, config's `flag`s) that are the same for every run of a batch,
    and a prior scale of 0 for the whole batch (boot alone: `Agent.adds_prior`, no prior built)."""
    static = {name: bool(getattr(hyper, name)) for name in Hyper.__dataclass_fields__
              if getattr(axes, name) is None and jnp.asarray(getattr(hyper, name)).dtype == jnp.bool_}
    if axes.prior_scale is None and float(hyper.prior_scale) == 0.0:
        static["prior_scale"] = 0.0
    return static


def _with_choices(fn: Callable, static: dict[str, bool | float], hyper_arg: int = 1) -> Callable:
    """`fn` with its Hyper argument's `static` choices replaced by Python constants."""
    if not static:
        return fn

    def wrapped(*args):
        args = list(args)
        args[hyper_arg] = args[hyper_arg].replace(**static)
        return fn(*args)

    return wrapped


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
