"""Hyperparameters of one training run, their validation and the run's hash.

`TrainConfig` is the single source of truth: its fields, defaults and one-line
docs become the command line of `deepsea_scaling.train`, the columns of the run
table and the input of `config_hash`. Defaults are those of REFERENCE.md (the
research code).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

KINDS = ("boot", "bootrp", "eps")
DEEPSEA = "DeepSea-bsuite"


class ConfigError(ValueError):
    """A hyperparameter has a value that cannot be trained; the message names it."""


@dataclass(frozen=True)
class TrainConfig:
    """One (kind, K, n) cell's hyperparameters. Every field is a CLI option."""

    kind: str = field(default="bootrp", metadata={"help": "agent: boot (BDQN), bootrp (BDQN with randomized priors) or eps (epsilon-greedy DQN)"})
    ensemble_size: int = field(default=10, metadata={"help": "K, the number of ensemble members (forced to 1 for eps)"})
    hardness: int = field(default=10, metadata={"help": "n, the DeepSea grid size (ignored by other environments)"})
    env_name: str = field(default=DEEPSEA, metadata={"help": "gymnax environment id with a discrete action space"})
    num_episodes: int = field(default=50_000, metadata={"help": "DeepSea budget in episodes (each lasts exactly n steps)"})
    num_env_steps: int = field(default=0, metadata={"help": "budget in environment steps for environments other than DeepSea"})
    discovery_threshold: float = field(default=0.95, metadata={"help": "an episode with return >= this discovers the reward"})
    fixed_action_map: bool = field(default=False, metadata={"help": "DeepSea: one action map for all runs (the research code's behaviour) instead of one per run"})
    num_envs: int = field(default=24, metadata={"help": "parallel environments per run"})
    hidden_sizes: tuple[int, ...] = field(default=(24, 24), metadata={"help": "hidden layer widths of every Q-network, e.g. 24,24"})
    learning_rate: float = field(default=2e-4, metadata={"help": "AdamW learning rate per member; the optimiser uses learning_rate * K"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay (optax's default)"})
    batch_size: int = field(default=64, metadata={"help": "minibatch size per member; every member draws its own"})
    gamma: float = field(default=0.99, metadata={"help": "discount factor"})
    target_period: int = field(default=50, metadata={"help": "gradient steps between hard target-network updates"})
    rb_size: int = field(default=10_000, metadata={"help": "replay buffer capacity in transitions"})
    learning_starts: int = field(default=10_000, metadata={"help": "transitions collected by the acting policy before the first gradient step"})
    prior_scale: float = field(default=3.0, metadata={"help": "beta, the scale of the fixed prior network (bootrp only)"})
    double_dqn: bool = field(default=False, metadata={"help": "Double DQN targets: the online member picks the next action"})
    eps_start: float = field(default=1.0, metadata={"help": "eps: epsilon at the start of training"})
    eps_end: float = field(default=0.05, metadata={"help": "eps: floor of epsilon"})
    eps_decay_fraction: float = field(default=0.5, metadata={"help": "eps: fraction of training over which epsilon falls linearly to its floor"})
    num_log_points: int = field(default=100, metadata={"help": "points of the Q-diversity curve over training"})
    num_probe_states: int = field(default=128, metadata={"help": "transitions from the initial buffer on which Q-diversity is measured"})
    base_seed: int = field(default=0, metadata={"help": "mixed into the config hash, from which every seed's key derives: another value redraws all runs"})

    # ----------------------------------------------------------------- derived
    @property
    def is_deepsea(self) -> bool:
        return self.env_name == DEEPSEA

    @property
    def members(self) -> int:
        """Number of Q-networks actually trained (1 for eps)."""
        return 1 if self.kind == "eps" else self.ensemble_size

    @property
    def effective_learning_rate(self) -> float:
        return self.learning_rate * self.members

    @property
    def num_vector_steps(self) -> int:
        """Steps of the vector environment (all `num_envs` at once) in one run."""
        if self.is_deepsea:
            return -(-self.num_episodes // self.num_envs) * self.hardness
        return -(-self.num_env_steps // self.num_envs)

    # -------------------------------------------------------------- validation
    def validate(self) -> "TrainConfig":
        """Raise ConfigError naming the first bad option; return self if all are fine."""
        def bad(name: str, allowed: str) -> ConfigError:
            value = getattr(self, name)
            return ConfigError(f"--{name.replace('_', '-')}={_fmt(value)} is invalid: {allowed}")

        if self.kind not in KINDS:
            raise bad("kind", f"choose one of {', '.join(KINDS)}")
        positive_ints = ["ensemble_size", "num_envs", "batch_size", "target_period", "rb_size",
                         "num_log_points", "num_probe_states"]
        for name in positive_ints:
            if int(getattr(self, name)) < 1:
                raise bad(name, "must be an integer >= 1")
        if self.is_deepsea:
            if self.hardness < 2:
                raise bad("hardness", "DeepSea needs n >= 2")
            if self.num_episodes < 1:
                raise bad("num_episodes", "must be >= 1 episode")
        elif self.num_env_steps < 1:
            raise bad("num_env_steps", f"must be >= 1 step for {self.env_name} (its episodes vary in length)")
        if self.learning_starts < 0:
            raise bad("learning_starts", "must be >= 0")
        if self.learning_starts > self.rb_size:
            raise bad("learning_starts", f"must be <= --rb-size ({self.rb_size}): the buffer cannot hold more")
        if not self.learning_rate > 0:
            raise bad("learning_rate", "must be > 0")
        if self.weight_decay < 0:
            raise bad("weight_decay", "must be >= 0")
        if not 0 <= self.gamma <= 1:
            raise bad("gamma", "must lie in [0, 1]")
        if self.prior_scale < 0:
            raise bad("prior_scale", "must be >= 0")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise bad("hidden_sizes", "give one or more widths >= 1, e.g. 24,24")
        if not 0 <= self.eps_end <= self.eps_start <= 1:
            raise bad("eps_end", "need 0 <= eps_end <= eps_start <= 1")
        if not 0 < self.eps_decay_fraction <= 1:
            raise bad("eps_decay_fraction", "must lie in (0, 1]")
        return self

    # ------------------------------------------------------------ serialising
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = ",".join(str(h) for h in self.hidden_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        if isinstance(d.get("hidden_sizes"), str):
            d["hidden_sizes"] = tuple(int(h) for h in d["hidden_sizes"].split(",") if h)
        elif "hidden_sizes" in d:
            d["hidden_sizes"] = tuple(int(h) for h in d["hidden_sizes"])
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown hyperparameter(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**d)


def config_hash(config: TrainConfig) -> str:
    """16 hex digits identifying everything that changes a run's result.

    Seeds are not part of it: the key of seed s is derived from this hash and s
    alone (`seed_keys`), so a seed's result does not depend on its shard.
    """
    payload = json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# Fields of TrainConfig that are traced values (`agent.Hyper`) or only seed the
# keys: cells that differ in nothing else can share one compiled program.
TRACED_FIELDS = (
    "learning_rate", "weight_decay", "gamma", "prior_scale", "eps_start", "eps_end",
    "eps_decay_fraction", "discovery_threshold", "target_period", "base_seed",
)


def program_signature(config: TrainConfig) -> tuple:
    """Cells with equal signatures can train in one compiled program (`engine.train_batch`).

    DeepSea boot and bootrp share programs (boot's prior is scaled by 0).
    """
    static = {k: v for k, v in config.to_dict().items() if k not in TRACED_FIELDS}
    if config.is_deepsea and config.kind == "boot":
        static["kind"] = "bootrp"
    return tuple(sorted(static.items()))


def _fmt(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)
