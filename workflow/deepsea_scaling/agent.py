"""The agent: Bootstrapped DQN (with randomized priors: RP-BDQN) and epsilon-greedy DQN, as pure functions.

Read `Agent.update` and `td_loss` first: one learning step of every member,
top to bottom (online Q with the prior, target Q, TD loss, AdamW step, hard
target update).

- Q-values: each member's Q is f_theta(s) + prior_scale * p(s), p the fixed
  prior network of a kind with a prior (`Agent.q_values`, `Agent.q_shared`,
  `Agent.q_acting`).
- Acting (`Agent.act`): a kind exploring by member acts greedily with the
  member drawn for each environment at the start of its episode
  (`Agent.new_members`); a kind exploring by epsilon acts epsilon-greedily.
- Learning (`Agent.update`, `td_loss`): squared TD error of every member on its
  own minibatch, against r + gamma * (1 - terminated) * max_a Q_target(s', a)
  (or the Double DQN target), minimised by AdamW (`Agent.optimizer`); the
  target is the online networks' hard copy every target_period gradient steps.

How the prior and the target are held is chosen once, by `make_agent`, from
the helpers below the algorithm: the prior as networks or (DeepSea) a table
over the cells (`PriorNetworks`, `PriorTable`, `NoPrior`); the target as
networks (`TargetNetworks`), as a Q-table over the cells (`TargetTable`, a
speed-up), or, as the research code has it, as networks and priors that
AdamW decays like parameters (`DecayedTarget`). The research code's other
variants are named helpers too: `initial_target` (copy or independent),
`reduce_over_members` (sum or mean).

The engine (engine.py) owns the loops, the replay buffer and the bookkeeping.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

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

    `prior_form` and `target_form` say how the prior and the target are held
    (the helpers below `td_loss`); `make_agent` chooses them once.
    """

    kind: Kind
    network: QNetwork
    members: int
    num_actions: int
    obs_is_index: bool  # observations are DeepSea cell indices in [0, cells)
    cells: int  # DeepSea: n * n; else the observation length
    prior_form: PriorNetworks | PriorTable | NoPrior  # how the fixed prior is held
    target_form: TargetNetworks | TargetTable | DecayedTarget  # how the target is held
    double_dqn: bool = False  # the online member picks the next action, the target evaluates it
    uniform_init: bool = False  # init=uniform: equinox's Linear initialisation (static: flax's draws stay as they were)
    side: jax.Array | None = None  # DeepSea's n, traced, where `cells` is a larger n's (`with_side`); None: cells's

    def with_side(self, side: jax.Array) -> "Agent":
        """This agent for DeepSea of size `side` (traced) in tables sized for `cells`: its networks and
        tables drawn and computed as at that size, zero beyond its side * side cells (`engine.Trainer.with_dims`)."""
        return dataclasses.replace(self, side=side)

    # ------------------------------------------------------------- NETWORKS
    def new_networks(self, key: jax.Array, obs_example: jax.Array):
        """K independently initialised networks, stacked on axis 0 (`uniform_init`: equinox's
        initialisation, from a key of its own, so flax's draws are unchanged)."""
        if self.uniform_init:
            return init_ensemble_uniform(self.network, jax.random.fold_in(key, 1), self.members, obs_example,
                                         first_side=self.side)
        if self.side is not None:
            raise ValueError("a traced DeepSea size needs init=uniform (flax's initialisation draws by shape)")
        return init_ensemble(self.network, key, self.members, obs_example)

    def init_networks(self, rng_net: jax.Array, rng_prior: jax.Array, obs_example: jax.Array, hyper: Hyper):
        """(online params, prior, target): K independently initialised members, their priors,
        and the target state (`initial_target`)."""
        params, prior = self.new_networks(rng_net, obs_example), self.new_prior(rng_prior, obs_example, hyper)
        return params, prior, initial_target(self, params, prior, rng_net, rng_prior, obs_example, hyper)

    def adds_prior(self, hyper: Hyper) -> bool:
        """Whether the Q-values add a prior (static): a kind with one, unless the whole batch scales
        it by a constant 0 (boot alone on DeepSea; `engine._uniform_choices` makes it a Python 0.0).
        Then no prior is built, evaluated or decayed: q + 0 * p is q, the same bits."""
        return self.prior_form.exists and not (isinstance(hyper.prior_scale, float) and hyper.prior_scale == 0.0)

    def new_prior(self, key: jax.Array, obs_example: jax.Array, hyper: Hyper):
        """The K members' fixed priors, or None where the Q-values add none (`adds_prior`)."""
        return self.prior_form.make(self, key, obs_example) if self.adds_prior(hyper) else None

    def optimizer(self, hyper: Hyper) -> optax.GradientTransformation:
        return optax.adamw(hyper.learning_rate, weight_decay=hyper.weight_decay)

    # ------------------------------------------------------------- Q-VALUES
    def q_values(self, params, prior, obs: jax.Array, hyper: Hyper) -> jax.Array:
        """Total Q of each member on its own observations: obs (K, B[, d]) -> (K, B, A)."""
        q = ensemble_apply(self.network, params, obs)
        if self.adds_prior(hyper):
            q = q + hyper.prior_scale * self.prior_form.values(self, prior, obs)
        return q

    def q_shared(self, params, prior, obs: jax.Array, hyper: Hyper) -> jax.Array:
        """Every member's total Q on the same observations: obs (B[, d]) -> (K, B, A)."""
        q = ensemble_apply_shared(self.network, params, obs)
        if self.adds_prior(hyper):
            prior_q = self.prior_form.values(self, prior, jnp.broadcast_to(obs, (q.shape[0], *obs.shape)))
            q = q + hyper.prior_scale * prior_q
        return q

    def q_acting(self, params, prior, obs: jax.Array, active: jax.Array, hyper: Hyper) -> jax.Array:
        """Total Q of each env's acting member on that env's observation: (E,[d]), (E,) -> (E, A)."""
        q = self.acting_member_q(params, active, obs)
        if self.adds_prior(hyper):
            q = q + hyper.prior_scale * self.prior_form.acting(self, prior, active, obs)
        return q

    def acting_member_q(self, params, active: jax.Array, obs: jax.Array) -> jax.Array:
        """Q of the networks `params` of each env's acting member on that env's observation (E, A).

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

        return jax.vmap(member_q, in_axes=(None, 0, 0))(params, active, obs)

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

    # ------------------------------------------------------ THE LEARNING STEP
    def td_inputs(self, params, prior, target, batch: Transition, hyper: Hyper):
        """What `td_loss` takes besides the online networks: (prior_q, q_next_target, q_next_online)."""
        # online Q at s: f_theta(s) + beta * p(s), the prior's part fixed (td_loss adds f_theta)
        prior_q = self.prior_form.values(self, prior, batch.obs) if self.adds_prior(hyper) else None
        # target Q at s' (prior included); Double DQN: the online Q at s' picks the action
        q_next_target = self.target_form.values(self, target, prior, batch.next_obs, hyper)
        q_next_online = self.q_values(params, prior, batch.next_obs, hyper) if self.double_dqn else None
        return prior_q, q_next_target, q_next_online

    def update(self, params, opt_state, prior, target, batch: Transition, step: jax.Array, hyper: Hyper):
        """Gradient step `step` (0, 1, ... over the learning phase) of every member on its own
        minibatch (leaves (K, B, ...)): the TD loss, one AdamW step, the hard target update.

        Returns (params, opt_state, prior, target, TD loss, max |Q|).
        """
        # the TD loss and its gradient in the online parameters
        (loss, q_max), grads = jax.value_and_grad(td_loss, has_aux=True)(
            params, self.network, batch, *self.td_inputs(params, prior, target, batch, hyper), hyper
        )
        # one AdamW step
        updates, opt_state = self.optimizer(hyper).update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        # the hard target update: the target becomes the online networks every target_period steps
        due = (step + 1) % hyper.target_period == 0
        prior, target = self.target_form.update(self, params, prior, target, due, hyper)
        return params, opt_state, prior, target, loss, q_max


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

    batch leaves: (K, B[, d]); prior_q: (K, B, A) prior values at s, or None where
    the Q-values add no prior; q_next_target: (K, B, A) target-network Q at s' (prior included);
    q_next_online: the online Q at s' for Double DQN (it picks the action the
    target evaluates), or None for the plain max.
    Returns (loss, max |Q(s, a)|) -- the latter is the divergence probe.
    """
    q = ensemble_apply(network, params, batch.obs)  # (K, B, A)
    if prior_q is not None:
        q = q + hyper.prior_scale * prior_q
    q_taken = jnp.take_along_axis(q, batch.action[..., None], axis=-1)[..., 0]  # (K, B)
    if q_next_online is not None:
        next_action = jnp.argmax(q_next_online, axis=-1)
        q_next = jnp.take_along_axis(q_next_target, next_action[..., None], axis=-1)[..., 0]
    else:
        q_next = jnp.max(q_next_target, axis=-1)  # (K, B)
    td_target = batch.reward + hyper.gamma * (1.0 - batch.terminated) * jax.lax.stop_gradient(q_next)
    td_error = q_taken - td_target
    loss = jnp.sum(jnp.mean(jnp.square(td_error), axis=-1))
    return reduce_over_members(loss, q.shape[0], hyper), jnp.max(jnp.abs(q))


def make_agent(config: TrainConfig, network: QNetwork, num_actions: int, obs_is_index: bool, cells: int) -> Agent:
    """The agent of `config` on an environment with these facts; how it holds its prior and target.

    The prior: none for a kind without one (off DeepSea; on DeepSea such a kind
    runs with a zero-scaled prior, `program_kind`); a table over the cells on
    DeepSea, where it is fixed; networks where it changes (decay_scope=all) or
    observations are vectors.
    The target: with decay_scope=all the research code's decayed networks and
    priors; on DeepSea a Q-table over the cells while cells <= target_period x
    batch_size: it changes only every target_period steps, so tabulating it
    then (cells forward passes) is cheaper than evaluating it on every
    minibatch (members x batch_size passes per step); true up to n = 56 by
    default; otherwise networks.
    """
    kind = KINDS[config.kind]
    decays = config.decay_scope == "all"
    if not program_kind(kind, obs_is_index).has_prior:
        prior = NoPrior()
    elif obs_is_index and not decays:
        prior = PriorTable()
    else:
        prior = PriorNetworks()
    if decays:
        target = DecayedTarget()
    elif obs_is_index and cells <= config.target_period * config.batch_size:
        target = TargetTable()
    else:
        target = TargetNetworks()
    return Agent(kind, network, config.members, num_actions, obs_is_index, cells, prior, target,
                 config.double_dqn, config.init == "uniform")


# ------------------------------------------------------------------ THE PRIOR
# How the fixed prior p is held. `make(agent, key, obs_example)`: the prior of K
# members; `values(agent, prior, obs)`: each member's p on its own observations,
# (K, B[, d]) -> (K, B, A); `acting(agent, prior, active, obs)`: p of each env's
# acting member, (E[, d]), (E,) -> (E, A).
@dataclass(frozen=True)
class PriorNetworks:
    """K random networks of the online networks' shape, one per member."""

    exists = True

    def make(self, agent: Agent, key: jax.Array, obs_example: jax.Array):
        return agent.new_networks(key, obs_example)

    def values(self, agent: Agent, prior, obs: jax.Array) -> jax.Array:
        return ensemble_apply(agent.network, prior, obs)

    def acting(self, agent: Agent, prior, active: jax.Array, obs: jax.Array) -> jax.Array:
        return agent.acting_member_q(prior, active, obs)


@dataclass(frozen=True)
class PriorTable(PriorNetworks):
    """DeepSea: the fixed prior networks tabulated once over all cells, (K, cells, A)."""

    def make(self, agent: Agent, key: jax.Array, obs_example: jax.Array):
        networks = super().make(agent, key, obs_example)
        return _cell_table(agent, lambda rows: ensemble_apply_shared(agent.network, networks, rows))

    def values(self, agent: Agent, prior, obs: jax.Array) -> jax.Array:
        return _lookup(prior, obs)

    def acting(self, agent: Agent, prior, active: jax.Array, obs: jax.Array) -> jax.Array:
        return prior[active, obs]


@dataclass(frozen=True)
class NoPrior:
    """A kind without a prior: nothing to hold; its values are zeros (the Q-values skip it)."""

    exists = False

    def make(self, agent: Agent, key: jax.Array, obs_example: jax.Array):
        return None

    def values(self, agent: Agent, prior, obs: jax.Array) -> jax.Array:
        return jnp.zeros((*obs.shape[:2], agent.num_actions), jnp.float32)


# ----------------------------------------------------------------- THE TARGET
# How the target is held. `make(agent, params, prior, hyper)`: the target as a
# copy of the online networks; `values(agent, target, prior, obs, hyper)`: its
# total Q (prior included) on each member's own observations, (K, B[, d]) ->
# (K, B, A); `update(agent, params, prior, target, due, hyper)` -> (prior,
# target) after a gradient step: the hard copy where `due`.
@dataclass(frozen=True)
class TargetNetworks:
    """DQN's target networks: a copy of the online parameters, with the online networks' prior."""

    def make(self, agent: Agent, params, prior, hyper: Hyper):
        return params

    def values(self, agent: Agent, target, prior, obs: jax.Array, hyper: Hyper) -> jax.Array:
        return agent.q_values(target, prior, obs, hyper)

    def update(self, agent: Agent, params, prior, target, due: jax.Array, hyper: Hyper):
        # a select XLA fuses into the optimiser's pass over the parameters
        return prior, _select(due, params, target)


@dataclass(frozen=True)
class TargetTable:
    """A speed-up on DeepSea: the target's total Q on every cell, (K, cells, A), recomputed
    (a branch) only when the target changes."""

    def make(self, agent: Agent, params, prior, hyper: Hyper):
        return q_table(agent, params, prior, hyper)

    def values(self, agent: Agent, target, prior, obs: jax.Array, hyper: Hyper) -> jax.Array:
        return _lookup(target, obs)

    def update(self, agent: Agent, params, prior, target, due: jax.Array, hyper: Hyper):
        return prior, jax.lax.cond(due, lambda: self.make(agent, params, prior, hyper), lambda: target)


@dataclass(frozen=True)
class DecayedTarget:
    """decay_scope=all, the research code's: the target is (networks, prior), a copy of the online
    networks with their prior. Its optimiser sees the prior and the targets as parameters with zero
    gradients, so AdamW's weight decay shrinks them at every gradient step, in float32, before the copy."""

    def make(self, agent: Agent, params, prior, hyper: Hyper):
        return (params, prior)

    def values(self, agent: Agent, target, prior, obs: jax.Array, hyper: Hyper) -> jax.Array:
        target_params, target_prior = target  # the target's own (decayed) prior
        return agent.q_values(target_params, target_prior, obs, hyper)

    def update(self, agent: Agent, params, prior, target, due: jax.Array, hyper: Hyper):
        def decay(p):
            return p + (-hyper.learning_rate) * (hyper.weight_decay * p)

        prior = jax.tree.map(decay, prior)
        target = jax.tree.map(decay, target)
        return prior, _select(due, self.make(agent, params, prior, hyper), target)


TABLE_BLOCK = 32  # rows of the Q-table computed together (`q_table`)


def q_table(agent: Agent, params, prior, hyper: Hyper) -> jax.Array:
    """Every member's total Q on every cell, (K, cells, A), computed in a loop over blocks of
    `TABLE_BLOCK` rows.

    XLA:CPU rounds a (rows x width) product differently depending on the row
    count (benchmarks/README.md, "Padding to a common n"). In blocks of a fixed
    size, each row's Q has the same bits whatever the number of cells: a table
    padded to a larger n (one program shared by several n) equals the unpadded
    one on its rows. A loop (`lax.map`), not a vmap, which XLA would merge
    back into one product. The last block repeats the last cell; its extra
    rows are cut off.
    """
    return _cell_table(agent, lambda rows: agent.q_shared(params, prior, rows, hyper))


def _cell_table(agent: Agent, q: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """(K, cells, A) from q(rows) -> (K, rows, A), in blocks of TABLE_BLOCK rows (see `q_table`);
    zero beyond a traced side's cells (`Agent.with_side`), as a table padded from that side's."""
    cells = agent.cells
    count = -(-cells // TABLE_BLOCK)
    index = jnp.minimum(jnp.arange(count * TABLE_BLOCK), cells - 1).reshape(count, TABLE_BLOCK)
    blocks = jax.lax.map(q, index)  # (blocks, K, rows, A)
    members, actions = blocks.shape[1], blocks.shape[-1]
    table = jnp.moveaxis(blocks, 0, 1).reshape(members, count * TABLE_BLOCK, actions)[:, :cells]
    if agent.side is not None:
        table = jnp.where((jnp.arange(cells) < agent.side * agent.side)[None, :, None], table, 0.0)
    return table


def _lookup(tables: jax.Array, obs: jax.Array) -> jax.Array:
    """Rows of each member's (cells, A) table at its own cells: (K, cells, A), (K, B) -> (K, B, A)."""
    return jax.vmap(lambda table, o: table[o])(tables, obs)


def _select(due: jax.Array, new, old):
    """`new` where `due`, else `old`, leaf by leaf."""
    return jax.tree.map(lambda n, o: jnp.where(due, n, o), new, old)


# --------------------------------------------------- THE RESEARCH CODE'S VARIANTS
def initial_target(agent: Agent, params, prior, rng_net: jax.Array, rng_prior: jax.Array, obs_example: jax.Array,
                   hyper: Hyper):
    """The target at init: a copy of the online networks (DQN's), or with initial_target=independent
    (the research code's) networks and priors of their own, from keys of their own (the default
    draws are unchanged). A traced choice: a batch that mixes them builds both and selects."""
    def copy():
        return agent.target_form.make(agent, params, prior, hyper)

    def independent():
        return agent.target_form.make(agent, agent.new_networks(jax.random.fold_in(rng_net, 2), obs_example),
                                 agent.new_prior(jax.random.fold_in(rng_prior, 2), obs_example, hyper), hyper)

    if isinstance(hyper.independent_target, bool):  # the same for the whole batch: only that one is built
        return independent() if hyper.independent_target else copy()
    return jax.tree.map(lambda c, i: jnp.where(hyper.independent_target, i, c), copy(), independent())


def reduce_over_members(loss: jax.Array, members: int, hyper: Hyper) -> jax.Array:
    """The TD loss summed over members, or with loss_reduction=mean (the research code's) their
    mean, 1/K of the sum (a traced choice)."""
    return jnp.where(hyper.mean_loss, loss / members, loss)


# ------------------------------------------------------------------ HELPERS
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
