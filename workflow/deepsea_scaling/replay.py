"""The replay buffer: a circular array of transitions, sampled uniformly.

DeepSea observations are stored as int32 cell indices (4 bytes, not n*n floats).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Transition:
    obs: jax.Array  # (..., ) int32 cell index or (..., d) float32
    action: jax.Array  # (...,) int32
    reward: jax.Array  # (...,) float32
    next_obs: jax.Array  # like obs
    terminated: jax.Array  # (...,) float32, 1.0 where the episode ended in a terminal state


@struct.dataclass
class ReplayBuffer:
    data: Transition  # every leaf has a leading (capacity,) axis
    position: jax.Array  # int32 scalar, where the next transition goes
    size: jax.Array  # int32 scalar, transitions stored so far (<= capacity)

    @property
    def capacity(self) -> int:
        return self.data.action.shape[0]


def replay_init(capacity: int, example: Transition) -> ReplayBuffer:
    """An empty buffer whose slots have the shapes and dtypes of one `example` transition."""
    data = jax.tree.map(lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.asarray(x).dtype), example)
    return ReplayBuffer(data=data, position=jnp.int32(0), size=jnp.int32(0))


def replay_add(buffer: ReplayBuffer, batch: Transition) -> ReplayBuffer:
    """Append a batch of E transitions (leading axis E), overwriting the oldest when full."""
    count = batch.action.shape[0]
    slots = (buffer.position + jnp.arange(count)) % buffer.capacity
    data = jax.tree.map(lambda store, new: store.at[slots].set(new), buffer.data, batch)
    return ReplayBuffer(
        data=data,
        position=(buffer.position + count) % buffer.capacity,
        size=jnp.minimum(buffer.size + count, buffer.capacity),
    )


def replay_sample(buffer: ReplayBuffer, key: jax.Array, shape: tuple[int, ...]) -> Transition:
    """Transitions at uniform random stored slots, with replacement; leaves get `shape` in front."""
    return replay_sample_bits(buffer, jax.random.bits(key, shape, jnp.uint32))


def replay_sample_bits(buffer: ReplayBuffer, bits: jax.Array) -> Transition:
    """Transitions at stored slots drawn from uniform uint32 `bits` (any shape), with replacement.

    Slot = bits mod size: its bias is below capacity / 2^32 (under 1e-5 for a
    40,000-transition buffer), for one random draw per sample instead of two.
    """
    slots = (bits % jnp.maximum(buffer.size, 1).astype(jnp.uint32)).astype(jnp.int32)
    return jax.tree.map(lambda store: store[slots], buffer.data)
