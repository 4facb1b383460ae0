"""The agent: its Q-values, member selection, acting policy and TD loss, as pure functions.

- Q-values: each member's Q is f_theta(s) + prior_scale * p(s), p the fixed
  prior network of a kind with a prior (`Agent.q_shared`, `Agent.q_acting`,
  `Agent.target_values`).
- Acting (`Agent.act`): a kind exploring by member acts greedily with the
  member drawn for each environment at the start of its episode
  (`Agent.new_members`); a kind exploring by epsilon acts epsilon-greedily.
- Learning (`td_loss`): squared TD error of every member on its own minibatch,
  against r + gamma * (1 - terminated) * max_a Q_target(s', a) (or the Double
  DQN target), minimised by AdamW (`Agent.optimizer`).

The engine (engine.py) owns the loops, the replay buffer and the bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import struct

from .config import FIELDS, HYPER_FIELDS, HYPER_LEAVES, TrainConfig
from .kinds import KINDS, Kind, program_kind
from .networks import QNetwork, ensemble_apply, ensemble_apply_shared, init_ensemble, init_ensemble_uniform
from .replay import Transition

# The traced hyperparameters, one scalar leaf per TrainConfig field declared
# `traced=True` (config.HYPER_FIELDS): vmapped like seeds, so cells that differ
# only there share one compiled program. A new traced field is a new leaf; a
# traced choice is a boolean leaf named by its `flag` (e.g. `mean_loss`).
Hyper = struct.dataclass(type("Hyper", (), {
    "__annotations__": {name: "jax.Array" for name in HYPER_LEAVES},
    "__doc__": "Hyperparameters that do not change array shapes: traced scalars (config.HYPER_FIELDS).",
    "__module__": __name__,
}))


def hyper_of(config: TrainConfig) -> Hyper:
    """The traced hyperparameters of `config` as float32/int32/bool scalars.

    learning_rate is the optimiser's (per-member rate times K); prior_scale is
    0 for a kind without a prior (which may still carry a zero-scaled one); a
    traced choice is its flag: True where the field has the flag's value.
    """
    values = {name: getattr(config, name) for name in HYPER_FIELDS}
    values["learning_rate"] = config.effective_learning_rate
    if not KINDS[config.kind].has_prior:
        values["prior_scale"] = 0.0
    dtypes = {"int": jnp.int32, "float": jnp.float32}
    leaves = {}
    for name, leaf in zip(HYPER_FIELDS, HYPER_LEAVES):
        flag = FIELDS[name].metadata["flag"]
        leaves[leaf] = jnp.asarray(values[name] == flag[1]) if flag else jnp.asarray(values[name], dtypes[FIELDS[name].type])
    return Hyper(**leaves)


@dataclass(frozen=True)
class Agent:
    """The static part of one run's agent; its methods are pure functions of arrays.

    prior: a kind with a prior (or a zero-scaled one, `program_kind`) carries
    it as a (K, cells, A) table on DeepSea, as network parameters elsewhere.
    """

    kind: Kind
    network: QNetwork
    members: int
    num_actions: int
    obs_is_index: bool  # observations are DeepSea cell indices in [0, cells)
    cells: int  # DeepSea: n * n; else the observation length
    target_table: bool  # keep the target as a Q-table over all cells (`make_agent`)
    full_params: bool = False  # decay_scope=all: prior and targets are parameters, weight-decayed every step
    uniform_init: bool = False  # init=uniform: equinox's Linear initialisation (static: flax's draws stay as they were)

    @property
    def prior_table(self) -> bool:
        """DeepSea's fixed prior is tabulated over the cells (not when it decays)."""
        return self.obs_is_index and not self.full_params

    @property
    def use_prior(self) -> bool:
        return program_kind(self.kind, self.obs_is_index).has_prior

    # ------------------------------------------------------------- NETWORKS
    def init_networks(self, rng_net: jax.Array, rng_prior: jax.Array, obs_example: jax.Array, hyper: Hyper):
        """(online params, prior, target): K independently initialised members, their priors, and
        the target state (a copy of them, or independent networks with priors of their own).

        `uniform_init` selects the uniform (equinox) initialisation, hyper.independent_target the
        copy or the independent targets; the alternatives use keys of their own, so the
        engine's default draws are unchanged.
        """
        def networks(key):
            if self.uniform_init:
                return init_ensemble_uniform(self.network, jax.random.fold_in(key, 1), self.members, obs_example)
            return init_ensemble(self.network, key, self.members, obs_example)

        def prior_of(key):
            if not self.use_prior:
                return None
            prior = networks(key)
            if self.prior_table:  # the prior is fixed: tabulate it once over all cells
                prior = ensemble_apply_shared(self.network, prior, jnp.arange(self.cells))
            return prior

        params, prior = networks(rng_net), prior_of(rng_prior)

        def copy():
            return self.target_of(params, prior, hyper)

        def independent():
            return self.target_of(networks(jax.random.fold_in(rng_net, 2)),
                                  prior_of(jax.random.fold_in(rng_prior, 2)), hyper)

        if isinstance(hyper.independent_target, bool):  # the same for the whole batch: only that one is built
            return params, prior, independent() if hyper.independent_target else copy()
        target = jax.tree.map(lambda c, i: jnp.where(hyper.independent_target, i, c), copy(), independent())
        return params, prior, target

    def optimizer(self, hyper: Hyper) -> optax.GradientTransformation:
        return optax.adamw(hyper.learning_rate, weight_decay=hyper.weight_decay)

    # ------------------------------------------------------------- Q-VALUES
    def prior_values(self, prior, obs: jax.Array) -> jax.Array:
        """Prior Q of each member on its own observations: obs (K, B[, d]) -> (K, B, A)."""
        if not self.use_prior:
            return jnp.zeros((*obs.shape[:2], self.num_actions), jnp.float32)
        if self.prior_table:
            return jax.vmap(lambda table, o: table[o])(prior, obs)
        return ensemble_apply(self.network, prior, obs)

    def q_shared(self, params, prior, obs: jax.Array, hyper: Hyper) -> jax.Array:
        """Every member's total Q on the same observations: obs (B[, d]) -> (K, B, A)."""
        q = ensemble_apply_shared(self.network, params, obs)
        if self.use_prior:
            prior_q = self.prior_values(prior, jnp.broadcast_to(obs, (q.shape[0], *obs.shape)))
            q = q + hyper.prior_scale * prior_q
        return q

    def q_acting(self, params, prior, obs: jax.Array, active: jax.Array, hyper: Hyper) -> jax.Array:
        """Total Q of each env's acting member on that env's observation: (E,[d]), (E,) -> (E, A).

        Only the acting member is evaluated. For DeepSea its first layer is
        sliced to the one row it needs, so no env copies a member's (cells, width)
        table.
        """
        network = self.network.clone(num_cells=1) if self.obs_is_index else self.network

        def member_q(params, member, o):
            member_params = jax.tree.map(lambda leaf: leaf[member], params)
            if self.obs_is_index:  # the one row of the first layer this env needs
                first = member_params["params"]["RowLookupDense_0"]
                first = {**first, "kernel": first["kernel"][o][None]}
                member_params = {"params": {**member_params["params"], "RowLookupDense_0": first}}
                o = jnp.zeros_like(o)
            return network.apply(member_params, o)

        q = jax.vmap(member_q, in_axes=(None, 0, 0))(params, active, obs)
        if self.use_prior:
            if self.prior_table:
                prior_q = prior[active, obs]
            else:
                prior_q = jax.vmap(member_q, in_axes=(None, 0, 0))(prior, active, obs)
            q = q + hyper.prior_scale * prior_q
        return q

    def target_of(self, params, prior, hyper: Hyper):
        """The target state made from the current online parameters (full_params: and prior)."""
        if self.target_table:
            return self.q_shared(params, prior, jnp.arange(self.cells), hyper)
        if self.full_params:
            return (params, prior)
        return params

    def target_values(self, target, prior, obs: jax.Array, hyper: Hyper) -> jax.Array:
        """Target Q (prior included) of each member on its own observations: (K, B[, d]) -> (K, B, A)."""
        if self.target_table:
            return jax.vmap(lambda table, o: table[o])(target, obs)
        if self.full_params:  # the target's own (decayed) prior
            target, prior = target
        return ensemble_apply(self.network, target, obs) + hyper.prior_scale * self.prior_values(prior, obs)

    # --------------------------------------------------------------- ACTING
    def draws_per_env(self) -> int:
        """uint32 draws per env and vector step: a new member, and for epsilon a coin and an action."""
        return 3 if self.kind.explores_by == "epsilon" else 1

    def act(self, q_acting: jax.Array, eps: jax.Array, bits: jax.Array) -> jax.Array:
        """Actions (E,) from the acting members' Q (E, A) and this step's acting bits (E * draws,).

        Greedy in the acting member's Q; a kind exploring by epsilon takes a
        uniform random action where a uniform coin falls below eps.
        """
        greedy = jnp.argmax(q_acting, axis=-1).astype(jnp.int32)
        if self.kind.explores_by != "epsilon":
            return greedy
        num_envs = q_acting.shape[0]
        explore = uniform_floats(bits[num_envs:2 * num_envs]) < eps
        return jnp.where(explore, uniform_ints(bits[2 * num_envs:3 * num_envs], self.num_actions), greedy)

    def new_members(self, bits: jax.Array, num_envs: int) -> jax.Array:
        """The member each env acts with in its next episode (E,), uniform over the K: member
        selection happens at episode ends only (the caller keeps it where no episode ended)."""
        return uniform_ints(bits[:num_envs], self.members)

    # ------------------------------------------------------------- LEARNING
    def loss_and_grads(self, params, prior, target, batch: Transition, double_dqn: bool, hyper: Hyper):
        """((TD loss, max |Q|), gradients) of every member on its own minibatch (leaves (K, B, ...))."""
        prior_q = self.prior_values(prior, batch.obs)
        q_next_target = self.target_values(target, prior, batch.next_obs, hyper)
        q_next_online = None
        if double_dqn:
            q_next_online = ensemble_apply(self.network, params, batch.next_obs)
            q_next_online = q_next_online + hyper.prior_scale * self.prior_values(prior, batch.next_obs)
        return jax.value_and_grad(td_loss, has_aux=True)(
            params, self.network, batch, prior_q, q_next_target, q_next_online, hyper
        )


def make_agent(config: TrainConfig, network: QNetwork, num_actions: int, obs_is_index: bool, cells: int) -> Agent:
    """The agent of `config` on an environment with these facts.

    The target is tabulated on DeepSea while cells <= target_period x
    batch_size: it changes only every target_period steps, so tabulating it
    then (cells forward passes) is cheaper than evaluating it on every
    minibatch (members x batch_size passes per step); true up to n = 56 by default.
    """
    full_params = config.decay_scope == "all"
    target_table = obs_is_index and cells <= config.target_period * config.batch_size and not full_params
    return Agent(KINDS[config.kind], network, config.members, num_actions, obs_is_index, cells, target_table,
                 full_params, config.init == "uniform")


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
    # loss_reduction=mean: the mean over members too (the research code's), 1/K of the sum
    loss = jnp.where(hyper.mean_loss, loss / q.shape[0], loss)
    return loss, jnp.max(jnp.abs(q))


def epsilon(progress: jax.Array, hyper: Hyper) -> jax.Array:
    """clip(eps_start - progress / eps_decay_fraction, eps_end, eps_start); progress in [0, 1].

    With the defaults this is the reference schedule clip(1 - 2 * progress, 0.05, 1).
    """
    return jnp.clip(hyper.eps_start - progress / hyper.eps_decay_fraction, hyper.eps_end, hyper.eps_start)


def uniform_ints(bits: jax.Array, bound: jax.Array) -> jax.Array:
    """Integers in [0, bound) from uniform uint32 bits (modulo: bias below bound / 2^32)."""
    return (bits % jnp.maximum(bound, 1).astype(jnp.uint32)).astype(jnp.int32)


def uniform_floats(bits: jax.Array) -> jax.Array:
    """Floats in [0, 1) from uniform uint32 bits (24 bits of precision)."""
    return (bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)
