"""The learning rule and the acting policy of the three agents.

- `td_loss`: squared TD error of every ensemble member on its own minibatch,
  against r + gamma * (1 - terminated) * max_a Q_target(s', a) (or the Double DQN
  target). Each member's Q is f_theta(s) + prior_scale * p(s) where p is the
  fixed prior (zero for boot and eps).
- `act`: boot/bootrp act greedily with the member drawn for each environment at
  the start of its episode; eps acts epsilon-greedily with its single network.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from .networks import QNetwork, ensemble_apply
from .replay import Transition


@struct.dataclass
class Hyper:
    """Hyperparameters that do not change array shapes: traced, so they can be vmapped."""

    learning_rate: jax.Array  # effective AdamW rate (per-member rate * K)
    weight_decay: jax.Array
    gamma: jax.Array
    prior_scale: jax.Array  # 0 for boot and eps
    eps_start: jax.Array
    eps_end: jax.Array
    eps_decay_fraction: jax.Array
    discovery_threshold: jax.Array
    target_period: jax.Array  # int32


def td_loss(
    params,
    network: QNetwork,
    batch: Transition,
    prior_q: jax.Array,
    q_next_target: jax.Array,
    q_next_online: jax.Array | None,
    hyper: Hyper,
):
    """Sum over members of the mean squared TD error on each member's minibatch.

    batch leaves: (K, B[, d]); prior_q: (K, B, A) prior values at s (zero without
    prior); q_next_target: (K, B, A) target-network Q at s' (prior included);
    q_next_online: the online Q at s' for Double DQN (it picks the action the
    target evaluates), or None for the plain max.
    Returns (loss, max |Q(s, a)|) -- the latter is the divergence probe.
    """
    q = ensemble_apply(network, params, batch.obs) + hyper.prior_scale * prior_q  # (K, B, A)
    q_taken = jnp.take_along_axis(q, batch.action[..., None], axis=-1)[..., 0]  # (K, B)
    if q_next_online is not None:
        next_action = jnp.argmax(q_next_online, axis=-1)
        q_next = jnp.take_along_axis(q_next_target, next_action[..., None], axis=-1)[..., 0]
    else:
        q_next = jnp.max(q_next_target, axis=-1)  # (K, B)
    td_target = batch.reward + hyper.gamma * (1.0 - batch.terminated) * jax.lax.stop_gradient(q_next)
    td_error = q_taken - td_target
    loss = jnp.sum(jnp.mean(jnp.square(td_error), axis=-1))
    return loss, jnp.max(jnp.abs(q))


def epsilon(progress: jax.Array, hyper: Hyper) -> jax.Array:
    """clip(eps_start - progress / eps_decay_fraction, eps_end, eps_start); progress in [0, 1].

    With the defaults this is the reference schedule clip(1 - 2 * progress, 0.05, 1).
    """
    return jnp.clip(hyper.eps_start - progress / hyper.eps_decay_fraction, hyper.eps_end, hyper.eps_start)


def act(
    q_acting: jax.Array,
    epsilon_greedy: bool,
    eps: jax.Array,
    explore_uniform: jax.Array | None = None,
    random_action: jax.Array | None = None,
) -> jax.Array:
    """Actions of all E environments from the acting members' Q-values q_acting (E, A).

    Ensembles act greedily with the member drawn for each env at the start of its
    episode (the caller evaluates only that member); the eps agent (K = 1) takes
    `random_action` (E,) where `explore_uniform` (E,) in [0, 1) is below eps.
    """
    greedy = jnp.argmax(q_acting, axis=-1).astype(jnp.int32)
    if not epsilon_greedy:
        return greedy
    return jnp.where(explore_uniform < eps, random_action, greedy)


def uniform_ints(bits: jax.Array, bound: jax.Array) -> jax.Array:
    """Integers in [0, bound) from uniform uint32 bits (modulo: bias below bound / 2^32)."""
    return (bits % jnp.maximum(bound, 1).astype(jnp.uint32)).astype(jnp.int32)


def uniform_floats(bits: jax.Array) -> jax.Array:
    """Floats in [0, 1) from uniform uint32 bits (24 bits of precision)."""
    return (bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)
