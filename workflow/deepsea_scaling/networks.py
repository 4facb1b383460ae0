"""The Q-network (flax) and its ensemble: K members stacked on a leading axis.

DeepSea's observation is a one-hot n x n grid, so the first dense layer is a
row lookup: `RowLookupDense` keeps the kernel and the initialisation of
`nn.Dense` on the one-hot input but computes `kernel[index] + bias`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class RowLookupDense(nn.Module):
    """`nn.Dense(features)` applied to one_hot(index, num_cells), as a gather."""

    num_cells: int
    features: int

    @nn.compact
    def __call__(self, index: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.num_cells, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return jnp.take(kernel, index, axis=0) + bias


class QNetwork(nn.Module):
    """MLP Q-network: observation -> (num_actions,) Q-values; GELU between layers."""

    hidden_sizes: Sequence[int]
    num_actions: int
    num_cells: int = 0  # > 0: observations are cell indices in [0, num_cells)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        first, *rest = self.hidden_sizes
        if self.num_cells:
            x = RowLookupDense(self.num_cells, first)(obs)
        else:
            x = nn.Dense(first)(obs)
        x = nn.gelu(x)
        for width in rest:
            x = nn.gelu(nn.Dense(width)(x))
        return nn.Dense(self.num_actions)(x)


def init_ensemble(network: QNetwork, key: jax.Array, members: int, obs_example: jax.Array):
    """Parameters of `members` independently initialised networks, stacked on axis 0."""
    keys = jax.random.split(key, members)
    return jax.vmap(lambda k: network.init(k, obs_example))(keys)


def init_ensemble_uniform(network: QNetwork, key: jax.Array, members: int, obs_example: jax.Array,
                          first_side: jax.Array | None = None):
    """As `init_ensemble`, but initialised as equinox's `Linear` (the research code's networks):
    every kernel and every bias ~ U(-1/sqrt(fan_in), +1/sqrt(fan_in)), fan_in = the kernel's rows
    (n * n for DeepSea's first layer on its one-hot input).

    `first_side` (traced): DeepSea's n where the first layer has rows for a larger n; its kernel is
    then the one drawn at n (the same bits: threefry's draws follow the flat index), zero beyond."""
    template = jax.eval_shape(lambda: init_ensemble(network, key, members, obs_example))
    layers = template["params"]
    out = {}
    for i, name in enumerate(sorted(layers)):
        kernel, bias = layers[name]["kernel"], layers[name]["bias"]
        lim = 1.0 / float(kernel.shape[1]) ** 0.5
        k_kernel, k_bias = jax.random.split(jax.random.fold_in(key, i))
        if first_side is not None and name == "RowLookupDense_0":
            drawn, lim = _uniform_rows_at(k_kernel, kernel.shape, first_side)
        else:
            drawn = jax.random.uniform(k_kernel, kernel.shape, jnp.float32, -lim, lim)
        out[name] = {
            "kernel": drawn,
            "bias": jax.random.uniform(k_bias, bias.shape, jnp.float32, -lim, lim),
        }
    return {"params": out}


def _uniform_rows_at(key: jax.Array, shape: tuple[int, int, int], side: jax.Array) -> tuple[jax.Array, jax.Array]:
    """U(-1/n, 1/n) of shape (K, n * n, width) for n = `side` (traced), in an array of `shape` (K, rows
    >= n * n, width), zero beyond: each member's block as `jax.random.uniform(key, (K, n * n, width))`
    draws it (partitionable threefry: element i of a draw is the same whatever the draw's size).
    Returns the kernel and its bound 1/n (the layer's bias is drawn with it)."""
    members, rows, width = shape
    largest = int(round(rows ** 0.5))
    # the bound as the unpadded draw computes it, 1 / sqrt(n * n) in float64, rounded to float32
    lims = jnp.asarray(np.array([1.0 / float(max(m * m, 1)) ** 0.5 for m in range(largest + 1)], np.float32))
    lim = lims[side]
    cells = side * side
    flat = jax.random.uniform(key, (members * rows * width,), jnp.float32, -lim, lim)
    k, r, c = jnp.meshgrid(jnp.arange(members), jnp.arange(rows), jnp.arange(width), indexing="ij")
    index = jnp.where(r < cells, (k * cells + r) * width + c, 0)
    return jnp.where(r < cells, flat[index], 0.0), lim


def ensemble_apply(network: QNetwork, params, obs: jax.Array) -> jax.Array:
    """Q-values of every member on its own observations.

    params: stacked (K, ...); obs: (K, B) indices or (K, B, d) vectors -> (K, B, A).
    """
    return jax.vmap(network.apply)(params, obs)


def ensemble_apply_shared(network: QNetwork, params, obs: jax.Array) -> jax.Array:
    """Q-values of every member on the same observations: obs (B,...) -> (K, B, A)."""
    return jax.vmap(network.apply, in_axes=(0, None))(params, obs)
