"""Training: `make_train(config)` builds the pure per-run functions; seeds are vmapped.

One run is a pure function of (config, key). The vector step threads a named
`RunState` through `lax.scan`; the host drives the scan in chunks only to print
progress, and the chunking does not change the result. Branches that depend on
the step index alone (learning started? target update? logging point?) are
`lax.cond` on an unbatched predicate, so under `vmap` they stay real branches:
the Q-diversity probe runs only at its logging points.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from . import agent
from .agent import Hyper
from .config import TrainConfig, config_hash
from .envs import EnvAdapter, make_env
from .metrics import Tracker, record_episodes, summarize, tracker_init
from .networks import QNetwork, ensemble_apply, ensemble_apply_shared, init_ensemble
from .replay import ReplayBuffer, Transition, replay_add, replay_init, replay_sample


@struct.dataclass
class RunState:
    params: Any  # online Q-networks, (K, ...) stacked
    target_params: Any
    opt_state: Any
    prior: Any  # bootrp: DeepSea (K, cells, A) prior Q table, else prior params; None otherwise
    env_params: Any  # per run: DeepSea's action map
    env_state: Any  # (E, ...)
    obs: jax.Array  # (E,) cell indices or (E, d)
    active: jax.Array  # (E,) int32, acting member of each env for its current episode
    episode_return: jax.Array  # (E,) float32
    buffer: ReplayBuffer
    probe_obs: jax.Array  # (P,) or (P, d): observations on which Q-diversity is measured
    tracker: Tracker
    rng: jax.Array


def default_hyper(config: TrainConfig) -> Hyper:
    """The traced hyperparameters of `config` as float32/int32 scalars."""
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return Hyper(
        learning_rate=f32(config.effective_learning_rate),
        weight_decay=f32(config.weight_decay),
        gamma=f32(config.gamma),
        prior_scale=f32(config.prior_scale if config.kind == "bootrp" else 0.0),
        eps_start=f32(config.eps_start),
        eps_end=f32(config.eps_end),
        eps_decay_fraction=f32(config.eps_decay_fraction),
        discovery_threshold=f32(config.discovery_threshold),
        target_period=jnp.asarray(config.target_period, jnp.int32),
    )


def seed_keys(config: TrainConfig, seeds) -> jax.Array:
    """Key of seed s = fold_in(key(hash of the config), s): independent of shard and batch."""
    base = jax.random.key(int(config_hash(config)[:8], 16))
    return jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.asarray(list(seeds), jnp.uint32))


@dataclass(frozen=True)
class Trainer:
    """The pure functions of one run; `train(key, hyper)` = init, every chunk, summary."""

    config: TrainConfig
    env: EnvAdapter
    network: QNetwork
    num_steps: int  # vector steps per run
    learn_start: int  # first vector step with a gradient step
    chunk_len: int  # vector steps per host-side chunk
    num_chunks: int

    # ------------------------------------------------------------- Q-VALUES
    @property
    def use_prior(self) -> bool:
        return self.config.kind == "bootrp"

    def prior_values(self, prior, obs: jax.Array) -> jax.Array:
        """Prior Q of each member on its own observations: obs (K, B[, d]) -> (K, B, A)."""
        if not self.use_prior:
            return jnp.zeros((*obs.shape[:2], self.env.num_actions), jnp.float32)
        if self.env.obs_is_index:
            return jax.vmap(lambda table, o: table[o])(prior, obs)
        return ensemble_apply(self.network, prior, obs)

    def q_shared(self, params, prior, obs: jax.Array, hyper: Hyper) -> jax.Array:
        """Every member's total Q on the same observations: obs (B[, d]) -> (K, B, A)."""
        q = ensemble_apply_shared(self.network, params, obs)
        if self.use_prior:
            members = q.shape[0]
            prior_q = self.prior_values(prior, jnp.broadcast_to(obs, (members, *obs.shape)))
            q = q + hyper.prior_scale * prior_q
        return q

    def optimizer(self, hyper: Hyper) -> optax.GradientTransformation:
        return optax.adamw(hyper.learning_rate, weight_decay=hyper.weight_decay)

    # ------------------------------------------------------------------ INIT
    def init(self, key: jax.Array, hyper: Hyper) -> RunState:
        cfg, env = self.config, self.env
        members, num_envs = cfg.members, cfg.num_envs
        rng, rng_map, rng_net, rng_prior, rng_reset, rng_member = jax.random.split(key, 6)
        env_params = env.params_for_run(rng_map)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(rng_reset, num_envs), env_params)
        params = init_ensemble(self.network, rng_net, members, obs[0])
        prior = None
        if self.use_prior:
            prior = init_ensemble(self.network, rng_prior, members, obs[0])
            if env.obs_is_index:  # the prior is fixed: tabulate it once over all cells
                prior = ensemble_apply_shared(self.network, prior, jnp.arange(env.obs_size))
        example = Transition(obs[0], jnp.int32(0), jnp.float32(0), obs[0], jnp.float32(0))
        return RunState(
            params=params,
            target_params=params,
            opt_state=self.optimizer(hyper).init(params),
            prior=prior,
            env_params=env_params,
            env_state=env_state,
            obs=obs,
            active=jax.random.randint(rng_member, (num_envs,), 0, members, dtype=jnp.int32),
            episode_return=jnp.zeros((num_envs,), jnp.float32),
            buffer=replay_init(cfg.rb_size, example),
            probe_obs=jnp.zeros((cfg.num_probe_states, *obs.shape[1:]), obs.dtype),
            tracker=tracker_init(members, cfg.num_log_points),
            rng=rng,
        )

    # ------------------------------------------------------------ ONE STEP
    def step(self, state: RunState, t: jax.Array, hyper: Hyper) -> RunState:
        cfg, env = self.config, self.env
        rng, rng_act, rng_env, rng_member, rng_sample, rng_probe = jax.random.split(state.rng, 6)

        # ACT AND STEP THE ENVIRONMENTS
        q_all = self.q_shared(state.params, state.prior, state.obs, hyper)  # (K, E, A)
        eps = agent.epsilon(t.astype(jnp.float32) / self.num_steps, hyper)
        action = agent.act(rng_act, q_all, state.active, cfg.kind == "eps", eps)
        env_keys = jax.random.split(rng_env, cfg.num_envs)
        next_obs, env_state, reward, terminated, done, final_obs = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            env_keys, state.env_state, action, state.env_params
        )
        buffer = replay_add(
            state.buffer, Transition(state.obs, action, reward, final_obs, terminated.astype(jnp.float32))
        )

        # EPISODE BOOKKEEPING
        episode_return = state.episode_return + reward
        in_last_tenth = t >= (self.num_steps * 9) // 10
        tracker = record_episodes(
            state.tracker, done, episode_return, state.active, hyper.discovery_threshold, in_last_tenth
        )
        tracker = tracker.replace(diverged=tracker.diverged | ~jnp.all(jnp.isfinite(q_all)))
        new_member = jax.random.randint(rng_member, (cfg.num_envs,), 0, cfg.members, dtype=jnp.int32)
        state = state.replace(
            env_state=env_state,
            obs=next_obs,
            active=jnp.where(done, new_member, state.active),
            episode_return=jnp.where(done, 0.0, episode_return),
            buffer=buffer,
            tracker=tracker,
            rng=rng,
        )

        # LEARN
        state = jax.lax.cond(
            t == self.learn_start,
            lambda s: s.replace(probe_obs=replay_sample(s.buffer, rng_probe, (cfg.num_probe_states,)).obs),
            lambda s: s,
            state,
        )
        grad_step = t - self.learn_start + 1
        state = jax.lax.cond(
            t >= self.learn_start, lambda s: self.learn(s, rng_sample, grad_step, hyper), lambda s: s, state
        )

        # LOG Q-DIVERSITY at the end of every 1/L of training
        num_points = cfg.num_log_points
        point = ((t + 1) * num_points) // self.num_steps - 1
        is_log_point = point > (t * num_points) // self.num_steps - 1
        return jax.lax.cond(
            is_log_point & (t >= self.learn_start),
            lambda s: s.replace(
                tracker=s.tracker.replace(
                    diversity=s.tracker.diversity.at[point].set(self.q_diversity(s, hyper))
                )
            ),
            lambda s: s,
            state,
        )

    def learn(self, state: RunState, key: jax.Array, grad_step: jax.Array, hyper: Hyper) -> RunState:
        """One AdamW step on every member's own minibatch, then the periodic hard target update."""
        cfg = self.config
        batch = replay_sample(state.buffer, key, (cfg.members, cfg.batch_size))  # leaves (K, B, ...)
        prior_q = self.prior_values(state.prior, batch.obs)
        prior_q_next = self.prior_values(state.prior, batch.next_obs)
        (loss, q_max), grads = jax.value_and_grad(agent.td_loss, has_aux=True)(
            state.params, state.target_params, self.network, batch, prior_q, prior_q_next, hyper, cfg.double_dqn
        )
        updates, opt_state = self.optimizer(hyper).update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        target_params = jax.lax.cond(
            grad_step % hyper.target_period == 0, lambda: params, lambda: state.target_params
        )
        finite = jnp.isfinite(loss) & jnp.isfinite(q_max)
        return state.replace(
            params=params,
            target_params=target_params,
            opt_state=opt_state,
            tracker=state.tracker.replace(diverged=state.tracker.diverged | ~finite),
        )

    def q_diversity(self, state: RunState, hyper: Hyper) -> jax.Array:
        """Std across members of Q on the probe set, averaged over probes and actions."""
        q = self.q_shared(state.params, state.prior, state.probe_obs, hyper)  # (K, P, A)
        return jnp.mean(jnp.std(q, axis=0))

    # ---------------------------------------------------------------- CHUNKS
    def run_chunk(self, state: RunState, t0: jax.Array, hyper: Hyper) -> RunState:
        """`chunk_len` vector steps from step t0; steps past the budget are skipped."""

        def body(state, t):
            state = jax.lax.cond(t < self.num_steps, lambda s: self.step(s, t, hyper), lambda s: s, state)
            return state, None

        state, _ = jax.lax.scan(body, state, t0 + jnp.arange(self.chunk_len, dtype=jnp.int32))
        return state

    def summary(self, state: RunState) -> dict[str, jax.Array]:
        return summarize(state.tracker)

    def run(self, key: jax.Array, hyper: Hyper | None = None) -> RunState:
        """The whole run as one pure function of the key; returns the final state."""
        hyper = default_hyper(self.config) if hyper is None else hyper
        state = self.init(key, hyper)
        for chunk in range(self.num_chunks):
            state = self.run_chunk(state, jnp.int32(chunk * self.chunk_len), hyper)
        return state

    def train(self, key: jax.Array, hyper: Hyper | None = None) -> dict[str, jax.Array]:
        """The per-run metrics of `run` (tests, notebooks: `jax.jit(jax.vmap(trainer.train))(keys)`)."""
        return self.summary(self.run(key, hyper))


def make_train(config: TrainConfig, num_chunks: int = 20, env: EnvAdapter | None = None) -> Trainer:
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
    num_steps = config.num_vector_steps
    learn_start = max(math.ceil(config.learning_starts / config.num_envs) - 1, 0)
    num_chunks = max(1, min(num_chunks, num_steps))
    chunk_len = math.ceil(num_steps / num_chunks)
    return Trainer(config, env, network, num_steps, learn_start, chunk_len, math.ceil(num_steps / chunk_len))


# ------------------------------------------------------------------ HOST SIDE
@dataclass
class ShardResult:
    metrics: dict[str, np.ndarray]  # each (S, ...) for the S seeds
    compile_seconds: float
    run_seconds: float
    devices: list[str]


def _seed_sharding(num_seeds: int):
    """Shard the seed axis over all devices when there are several (and it divides)."""
    devices = jax.devices()
    if len(devices) < 2 or num_seeds % len(devices):
        return None
    mesh = jax.sharding.Mesh(np.array(devices), ("seeds",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds"))


def train_seeds(
    config: TrainConfig,
    seeds: range | list[int],
    progress: Callable[[str], None] | None = None,
    num_chunks: int = 20,
) -> ShardResult:
    """Train every seed of `seeds` in one vmapped, jitted program; per-seed metrics as numpy."""
    trainer = make_train(config, num_chunks=num_chunks)
    seeds = list(seeds)
    hyper = default_hyper(config)
    keys = seed_keys(config, seeds)
    sharding = _seed_sharding(len(seeds))
    if sharding is not None:
        keys = jax.device_put(keys, sharding)

    t_start = time.perf_counter()
    init = jax.jit(jax.vmap(trainer.init, in_axes=(0, None))).lower(keys, hyper).compile()
    state_shape = jax.eval_shape(jax.vmap(trainer.init, in_axes=(0, None)), keys, hyper)
    run_chunk = (
        jax.jit(jax.vmap(trainer.run_chunk, in_axes=(0, None, None)), donate_argnums=0)
        .lower(state_shape, jnp.int32(0), hyper)
        .compile()
    )
    summary = jax.jit(jax.vmap(trainer.summary)).lower(state_shape).compile()
    compile_seconds = time.perf_counter() - t_start

    t_run = time.perf_counter()
    state = init(keys, hyper)
    report_every = max(1, trainer.num_chunks // 10)
    for chunk in range(trainer.num_chunks):
        state = run_chunk(state, jnp.int32(chunk * trainer.chunk_len), hyper)
        if progress is not None and ((chunk + 1) % report_every == 0 or chunk + 1 == trainer.num_chunks):
            jax.block_until_ready(state.tracker.episodes)
            elapsed = time.perf_counter() - t_run
            done = min((chunk + 1) * trainer.chunk_len, trainer.num_steps)
            left = elapsed / done * (trainer.num_steps - done)
            progress(
                f"{done / trainer.num_steps:6.1%}  step {done:,}/{trainer.num_steps:,}  "
                f"elapsed {_hms(elapsed)}  left ~{_hms(left)}"
            )
    metrics = jax.tree.map(np.asarray, summary(state))
    run_seconds = time.perf_counter() - t_run
    return ShardResult(metrics, compile_seconds, run_seconds, [str(d) for d in jax.devices()])


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
