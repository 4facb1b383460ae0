"""Environments: gymnax's DeepSea with one action map per run, and any discrete gymnax env.

gymnax's `DeepSea` draws its action map once in the constructor (every instance
gets the map of `key(0)` unless given another key) and `sample_action_map`
redraws it at every reset, i.e. every episode. bsuite draws one map per
environment instance and keeps it. `PerRunMapDeepSea` carries the map in the
environment parameters, which vmap over seeds: each run gets its own map, fixed
for all its episodes.

`EnvAdapter` gives the engine one interface for every environment: observations
are encoded for the network and the replay buffer (DeepSea: the cell index
row * n + column, so nothing stores n x n one-hot arrays).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import types
from dataclasses import dataclass
from typing import Any


def _load_on_first_use(name: str) -> None:
    """Put a stand-in for module `name` in sys.modules that imports the real one on first use.

    gymnax imports seaborn and matplotlib.pyplot at the top of its Pong and
    Rooms environments, for rendering only: about 1.5 s of every training
    process's start-up, deferred here to the first attribute access (never,
    in training). The first access swaps the real module in.
    """
    if name in sys.modules or importlib.util.find_spec(name.partition(".")[0]) is None:
        return
    stand_in = types.ModuleType(name, f"{name}, imported on first use (deepsea_scaling.envs)")

    def __getattr__(attr: str):
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        return getattr(importlib.import_module(name), attr)

    stand_in.__getattr__ = __getattr__
    sys.modules[name] = stand_in


for _name in ("seaborn", "matplotlib.pyplot"):
    _load_on_first_use(_name)

import gymnax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import struct  # noqa: E402
from gymnax.environments import environment, spaces  # noqa: E402
from gymnax.environments.bsuite import deep_sea  # noqa: E402
from gymnax.environments.bsuite.deep_sea import DeepSea, EnvParams as DeepSeaEnvParams  # noqa: E402

from .config import ConfigError, TrainConfig  # noqa: E402


@struct.dataclass
class PerRunMapParams(DeepSeaEnvParams):
    """DeepSea parameters plus the run's action map: (n, n) int32, 1 where action 1 means right."""

    action_mapping: jax.Array | None = None
    size: jax.Array | None = None  # a size below the instance's, traced (`PerRunMapDeepSea`); None: the instance's


class PerRunMapDeepSea(DeepSea):
    """DeepSea whose action map comes from `params.action_mapping` (one per run).

    The state keeps only a scalar placeholder for the map, so the per-step
    reset/select of gymnax's auto-reset does not copy an (n, n) array per env.

    `params.size`, when given, is the grid's size as a traced integer at most
    the instance's `size`, which then only sizes the arrays (the action map
    padded to it): one compiled program steps DeepSeas of several sizes.
    gymnax's step with the size traced (`step_env`; the tests check it equal
    to gymnax's at every size); the reset does not depend on the size beyond
    its arrays' shapes, which the engine does not use (observations are
    encoded from the row and column).
    """

    def __init__(self, size: int = 8, action_mapping_key: jax.Array | None = None):
        # gymnax's constructor draws its fixed map at once, an eager program compiled per size
        # (0.3 s a size in a training job); the engine never uses it, so it is drawn on access
        environment.Environment.__init__(self)
        self.size = size
        self._action_mapping_key = jax.random.key(0) if action_mapping_key is None else action_mapping_key

    @property
    def action_mapping(self) -> jax.Array:
        """gymnax's fixed map of this instance (the map of key(0) unless given another key)."""
        return jax.random.bernoulli(self._action_mapping_key, 0.5, (self.size, self.size)).astype(jnp.int32)

    def draw_action_mapping(self, key: jax.Array) -> jax.Array:
        """A fresh map, as bsuite's `mapping_seed`: each cell's "right" action is a fair coin."""
        return jax.random.bernoulli(key, 0.5, (self.size, self.size)).astype(jnp.int32)

    def params_for_run(self, key: jax.Array, action_map: str = "per_run") -> PerRunMapParams:
        """The run's parameters: its own map (per_run) or the map every run shares (keyN)."""
        mapping = self.draw_action_mapping(key) if action_map == "per_run" else shared_action_map(self.size, action_map)
        return PerRunMapParams(max_steps_in_episode=self.size, action_mapping=mapping)

    def _mapping(self, params: PerRunMapParams) -> jax.Array:
        return jnp.where(params.randomize_actions, params.action_mapping, 1)

    def reset_env(self, key, params):
        obs, state = super().reset_env(key, params)
        return obs, state.replace(action_mapping=jnp.int32(0))

    def step_env(self, key, state, action, params):
        placeholder = state.action_mapping
        state = state.replace(action_mapping=self._mapping(params))
        if params.size is None:
            obs, state, reward, done, info = super().step_env(key, state, action, params)
        else:
            obs, state, reward, done, info = self._step_traced_size(key, state, action, params)
        return obs, state.replace(action_mapping=placeholder), reward, done, info

    def _step_traced_size(self, key, state, action, params):
        """gymnax's `DeepSea.step_env` with the size `params.size` (traced) instead of `self.size`."""
        size = params.size
        key_reward, key_trans = jax.random.split(key)
        rand_reward = jax.random.normal(key_reward, shape=())
        rand_trans_cond = jax.random.uniform(key_trans, shape=(), minval=0, maxval=1) > 1 / size
        action_right = action == state.action_mapping[state.row, state.column]
        right_cond = jnp.logical_and(action_right, jnp.logical_or(rand_trans_cond, params.deterministic))
        reward, denoised_return = deep_sea.step_reward(state, action_right, right_cond, rand_reward, size, params)
        column, row, bad_episode = deep_sea.step_transition(state, action_right, right_cond, size)
        state = state.replace(row=row, column=column, bad_episode=bad_episode, denoised_return=denoised_return,
                              time=state.time + 1)
        done = self.is_terminal(state, params)
        state = state.replace(total_bad_episodes=state.total_bad_episodes + done * state.bad_episode)
        info = {"discount": self.discount(state, params)}
        return (jax.lax.stop_gradient(self.get_obs(state)), jax.lax.stop_gradient(state), reward, done, info)

    def is_terminated(self, state, params) -> jax.Array:
        return state.row == (self.size if params.size is None else params.size)


def shared_action_map(size: int, action_map: str) -> jax.Array:
    """The map `keyN` shared by every run: bernoulli(key(N), 0.5, (n, n)) as int32.

    key42 is the research code's (its gymnax fork draws it in the constructor, the
    same for every instance of a size), key0 gymnax 1.0.1's constructor default.
    """
    return jax.random.bernoulli(jax.random.key(int(action_map[3:])), 0.5, (size, size)).astype(jnp.int32)


def map_at_size(key: jax.Array, largest: int, size: jax.Array) -> jax.Array:
    """The action map `bernoulli(key, 0.5, (size, size))` for a traced `size`, zero-padded to (largest,
    largest): the same bits (partitionable threefry: a draw's element i does not depend on its size)."""
    flat = jax.random.bernoulli(key, 0.5, (largest * largest,)).astype(jnp.int32)
    row, column = jnp.meshgrid(jnp.arange(largest), jnp.arange(largest), indexing="ij")
    inside = (row < size) & (column < size)
    return jnp.where(inside, flat[jnp.where(inside, row * size + column, 0)], 0)


@dataclass(frozen=True)
class EnvAdapter:
    """What the engine needs from an environment, with observations already encoded.

    `obs_is_index`: observations are int32 cell indices in [0, obs_size) (DeepSea);
    otherwise float32 vectors of length obs_size.
    """

    env: Any
    num_actions: int
    obs_is_index: bool
    obs_size: int
    action_map: str = "per_run"  # DeepSea: per_run or keyN (shared_action_map)
    size: Any = None  # DeepSea: the grid's size, traced, when a program serves several (`with_size`); None: env.size

    def with_size(self, size: Any) -> "EnvAdapter":
        """DeepSea of size `size` (a traced int32, at most env.size) in arrays sized for env.size."""
        return dataclasses.replace(self, size=size)

    @property
    def grid(self) -> Any:
        """DeepSea's size as the dynamics see it: traced, or the instance's."""
        return self.env.size if self.size is None else self.size

    def params_for_run(self, key: jax.Array) -> jax.Array:
        """The per-run part of the environment: DeepSea's action map, (n, n) int32; else an empty array.

        Only this is carried in the training state. The other parameters are
        rebuilt as Python constants at every step, so XLA folds them away (the
        noise draws of a deterministic DeepSea are then never computed).
        """
        if self.obs_is_index and self.size is not None:  # the map of a traced size, padded (`map_at_size`)
            if self.action_map != "per_run":
                key = jax.random.key(int(self.action_map[3:]))
            return map_at_size(key, self.env.size, self.size)
        if self.obs_is_index:
            return self.env.params_for_run(key, self.action_map).action_mapping
        return jnp.zeros((0,), jnp.int32)

    def _params(self, run_data: jax.Array):
        if self.obs_is_index:
            return PerRunMapParams(max_steps_in_episode=self.grid, action_mapping=run_data, size=self.size)
        return self.env.default_params

    def encode(self, state, obs) -> jax.Array:
        if self.obs_is_index:
            n = self.grid
            return jnp.clip(state.row, 0, n - 1) * n + state.column
        return jnp.ravel(obs).astype(jnp.float32)

    def reset(self, key, run_data):
        obs, state = self.env.reset(key, self._params(run_data))
        return self.encode(state, obs), state

    def step_keys(self, key: jax.Array, num_envs: int) -> jax.Array:
        """One key per env for a vector step.

        DeepSea as trained here is deterministic: gymnax draws noise it then
        multiplies by zero. A constant key lets XLA fold those draws away at
        compile time; stochastic environments get fresh keys.
        """
        if self.obs_is_index:
            return jnp.broadcast_to(jax.random.key(0), (num_envs,))
        return jax.random.split(key, num_envs)

    def step(self, key, state, action, run_data):
        """One step with auto-reset.

        Returns (next_obs, state, reward, terminated, done, final_obs): `next_obs` is
        the observation to act on (a reset one after `done`); `final_obs` the true
        successor for the replay buffer (for DeepSea only used when not terminated).
        """
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, action, self._params(run_data))
        done = jnp.logical_or(terminated, truncated)
        next_obs = self.encode(state, obs)
        if self.obs_is_index:
            final_obs = next_obs  # DeepSea ends only by termination: the successor is masked out
        else:
            final_obs = jnp.ravel(info["final_observation"]).astype(jnp.float32)
        return next_obs, state, reward.astype(jnp.float32), terminated, done, final_obs


def make_env(config: TrainConfig) -> EnvAdapter:
    """Build the adapter for `config.env_name`; ConfigError (no JAX compile) if it cannot train."""
    if config.is_deepsea:
        env = PerRunMapDeepSea(size=config.hardness)
        return EnvAdapter(env, 2, True, config.hardness**2, config.action_map)
    if config.env_name not in gymnax.registered_envs:
        raise ConfigError(
            f"--env-name={config.env_name} is invalid: not a gymnax environment; "
            f"choose e.g. DeepSea-bsuite, CartPole-v1, Acrobot-v1, MountainCar-v0"
        )
    env, params = gymnax.make(config.env_name)
    space = env.action_space(params)
    if not isinstance(space, spaces.Discrete):
        raise ConfigError(
            f"--env-name={config.env_name} is invalid: its action space is "
            f"{type(space).__name__}, not Discrete; DQN agents need discrete actions "
            f"(e.g. CartPole-v1, Acrobot-v1, MountainCar-v0)"
        )
    obs_shape = env.observation_space(params).shape
    obs_size = 1
    for d in obs_shape:
        obs_size *= int(d)
    return EnvAdapter(env, int(space.n), False, obs_size)
