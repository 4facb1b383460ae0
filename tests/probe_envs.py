"""Probe environments with an analytic Q-function (rejax/Andy Jones style).

- OneStep: one state, every action gives reward 1 and ends the episode: Q(s, a) = 1.
- TwoStep: s0 -> s1 -> end, reward 1 only on leaving s1: Q(s1, .) = 1, Q(s0, .) = gamma.
Observations are one-hot vectors, so the networks see a vector input (the
non-DeepSea path of the engine).
"""

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from deepsea_scaling.envs import EnvAdapter


@struct.dataclass
class ProbeState(environment.EnvState):
    position: jax.Array


class ChainProbe(environment.Environment):
    def __init__(self, length: int):
        super().__init__()
        self.length = length

    @property
    def default_params(self):
        return environment.EnvParams(max_steps_in_episode=100)

    def step_env(self, key, state, action, params):
        position = state.position + 1
        done = position >= self.length
        reward = jnp.where(done, 1.0, 0.0)
        state = ProbeState(time=state.time + 1, position=position)
        return self.get_obs(state), state, reward, done, {}

    def reset_env(self, key, params):
        state = ProbeState(time=0, position=jnp.int32(0))
        return self.get_obs(state), state

    def get_obs(self, state, params=None, key=None):
        return jax.nn.one_hot(jnp.clip(state.position, 0, self.length - 1), self.length)

    def is_terminal(self, state, params):
        return state.position >= self.length

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(0, 1, (self.length,), jnp.float32)

    @property
    def num_actions(self):
        return 2


def probe_adapter(length: int) -> EnvAdapter:
    return EnvAdapter(ChainProbe(length), num_actions=2, obs_is_index=False, obs_size=length)
