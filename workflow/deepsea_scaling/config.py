"""Hyperparameters of one training run, their validation and the run's hash.

`TrainConfig` is the single source of truth: its fields, defaults and one-line
docs become the command line of `deepsea_scaling.train`, the columns of the run
table and the input of `config_hash`. Defaults are the research code's
(docs/SCIENCE.md, "Hyperparameter defaults").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .kinds import KINDS, program_kind

DEEPSEA = "DeepSea-bsuite"
DEEPSEA_THRESHOLD = 0.95  # the default discovery threshold: DeepSea's returns lie in [-0.01, 0.99]
DEEPSEA_MAX_RETURN = 0.99
# Returns that count as solving other gymnax environments (gym's `reward_threshold`):
# replace DeepSea's threshold there, which would mean nothing (`for_environment`).
SOLVED_RETURNS = {"CartPole-v1": 475.0, "Acrobot-v1": -100.0, "MountainCar-v0": -110.0}


PRESET = "preset"  # an option's value "from --fidelity"
# The research code's behaviours (docs/RESEARCH_CODE.md) and this project's defaults, per option:
# the defaults are the research code's where the ablation study found that a behaviour
# moves discovery (init, warmup) and this engine's elsewhere (docs/FINDINGS.md, "Which differences matter").
PRESETS = {
    "default": {"init": "uniform", "warmup": "outside", "warmup_resample": "resample", "initial_target": "copy",
                "decay_scope": "online", "action_map": "per_run", "loss_reduction": "sum"},
    "reference": {"init": "uniform", "warmup": "outside", "warmup_resample": "fixed",
                  "initial_target": "independent", "decay_scope": "all", "action_map": "key42",
                  "loss_reduction": "mean"},
}
FIDELITY_OPTIONS = tuple(PRESETS["default"])
# What the engine did before these options existed. The config hash leaves out
# an option at this value, so a run's hash and seeds never depend on which
# preset is called "default": changing the defaults changes the default study's
# runs (as it must) and no other study's.
HASH_BASELINE = {"init": "flax", "warmup": "inside", "warmup_resample": "resample", "initial_target": "copy",
                 "decay_scope": "online", "action_map": "per_run", "loss_reduction": "sum"}


class ConfigError(ValueError):
    """A hyperparameter has a value that cannot be trained; the message names it."""


def hp(help: str, *, traced: bool | str = False, low: float | None = None, high: float | None = None,
       low_open: bool = False, choices: tuple[str, ...] | None = None, note: str = "",
       flag: tuple[str, str] | None = None) -> dict:
    """A TrainConfig field's declaration: CLI help, whether it is traced, its accepted values.

    traced: False for values that shape the program (sizes, kind, environment);
    True for a traced value of `agent.Hyper` (cells differing only there share a
    program and can be vmapped together); "key" for a value that only seeds the
    keys. low/high bound numbers (inclusive; low_open excludes low); floats must
    also be finite; choices lists the accepted strings; note adds what
    `TrainConfig.validate` checks beyond them (bounds that depend on the environment).
    flag: a traced choice is a boolean in `agent.Hyper`, (its name, the value that makes it true),
    e.g. ("mean_loss", "mean"): the engine tests `hyper.mean_loss`, never a position among the choices.
    """
    return {"help": help, "traced": traced, "low": low, "high": high, "low_open": low_open, "choices": choices,
            "note": note, "flag": flag}


@dataclass(frozen=True)
class TrainConfig:
    """One (kind, K, n) cell's hyperparameters. Every field is a CLI option."""

    kind: str = field(default="bootrp", metadata=hp(
        "agent: " + ", ".join(f"{k.name} ({k.description})" for k in KINDS.values()), choices=tuple(KINDS)))
    ensemble_size: int = field(default=10, metadata=hp("K, the number of ensemble members (forced to 1 for a kind that is no ensemble)", low=1))
    hardness: int = field(default=10, metadata=hp("n, the DeepSea grid size (ignored by other environments)", low=2))
    env_name: str = field(default=DEEPSEA, metadata=hp("gymnax environment id with a discrete action space"))
    num_episodes: int = field(default=50_000, metadata=hp("DeepSea budget in episodes (each lasts exactly n steps)", low=1))
    num_env_steps: int = field(default=0, metadata=hp("budget in environment steps for environments other than DeepSea", low=0))
    discovery_threshold: float = field(default=DEEPSEA_THRESHOLD, metadata=hp(
        "an episode with return >= this discovers the reward (DeepSea: in (0, 0.99]; other environments: "
        "their solved return, e.g. 475 for CartPole-v1)", traced=True,
        note=f"on DeepSea in (0, {DEEPSEA_MAX_RETURN}], elsewhere the environment's solved return"))
    fixed_action_map: bool = field(default=False, metadata=hp("DeepSea: one action map for all runs, gymnax 1.0.1's default (the map of key(0), NOT the research code's key(42)); the same as --action-map key0"))
    num_envs: int = field(default=24, metadata=hp("parallel environments per run", low=1))
    hidden_sizes: tuple[int, ...] = field(default=(24, 24), metadata=hp("hidden layer widths of every Q-network, e.g. 24,24", low=1))
    learning_rate: float = field(default=2e-4, metadata=hp("AdamW learning rate per member; the optimiser uses learning_rate * K", traced=True, low=0, low_open=True))
    weight_decay: float = field(default=1e-4, metadata=hp("AdamW weight decay (optax's default)", traced=True, low=0))
    batch_size: int = field(default=64, metadata=hp("minibatch size per member; every member draws its own", low=1))
    gamma: float = field(default=0.99, metadata=hp("discount factor", traced=True, low=0, high=1))
    target_period: int = field(default=50, metadata=hp("gradient steps between hard target-network updates", traced=True, low=1))
    rb_size: int = field(default=10_000, metadata=hp("replay buffer capacity in transitions", low=1))
    learning_starts: int = field(default=10_000, metadata=hp("transitions collected by the acting policy before the first gradient step", low=0))
    prior_scale: float = field(default=3.0, metadata=hp("beta, the scale of the fixed prior network (kinds with a prior only)", traced=True, low=0))
    double_dqn: bool = field(default=False, metadata=hp("Double DQN targets: the online member picks the next action"))
    eps_start: float = field(default=1.0, metadata=hp("eps: epsilon at the start of training", traced=True, low=0, high=1))
    eps_end: float = field(default=0.05, metadata=hp("eps: floor of epsilon (<= eps_start)", traced=True, low=0, high=1))
    eps_decay_fraction: float = field(default=0.5, metadata=hp("eps: fraction of training over which epsilon falls linearly to its floor", traced=True, low=0, low_open=True, high=1))
    num_log_points: int = field(default=100, metadata=hp("points of the Q-diversity curve over training", low=1))
    num_probe_states: int = field(default=128, metadata=hp("transitions from the initial buffer on which Q-diversity is measured", low=1))
    # ------------------------------------------------ research-code fidelity (docs/RESEARCH_CODE.md)
    fidelity: str = field(default="default", metadata=hp(
        "preset of the options below: default (this engine) or reference (every behaviour of the research "
        "code); an option given explicitly overrides the preset", choices=tuple(PRESETS)))
    init: str = field(default=PRESET, metadata=hp(
        "network initialisation: flax (lecun-normal kernels, zero biases) or uniform (equinox's Linear: "
        "kernels and biases ~ U(+-1/sqrt(fan_in)), priors and independent targets too)",
        choices=(PRESET, "flax", "uniform")))
    warmup: str = field(default=PRESET, metadata=hp(
        "DeepSea warm-up: inside (ceil(learning_starts/num_envs) acting steps inside the budget, logged, may "
        "discover) or outside (floor(learning_starts/num_envs) steps before the budget, unlogged; then "
        "num_episodes*n//num_envs learning steps)", choices=(PRESET, "inside", "outside")))
    warmup_resample: str = field(default=PRESET, metadata=hp(
        "members during the warm-up: resample (a new member at every episode end) or fixed (each env keeps "
        "its first member into the learning phase)", traced=True, choices=(PRESET, "resample", "fixed"),
        flag=("fixed_warmup_members", "fixed")))
    initial_target: str = field(default=PRESET, metadata=hp(
        "initial target networks: copy (of the online networks) or independent (own networks and priors, "
        "first overwritten after target_period gradient steps)", traced=True,
        choices=(PRESET, "copy", "independent"), flag=("independent_target", "independent")))
    decay_scope: str = field(default=PRESET, metadata=hp(
        "AdamW weight decay on: online (parameters) or all (also the prior and target networks, which get "
        "zero gradients and so shrink by (1 - lr*K*wd) per gradient step, in float32)",
        choices=(PRESET, "online", "all")))
    action_map: str = field(default=PRESET, metadata=hp(
        "DeepSea action map: per_run (one drawn per run) or keyN (one shared map, bernoulli(key(N), 0.5, "
        "(n, n)); key42 is the research code's, key0 gymnax 1.0.1's default)",
        note="per_run or key<N>, N an integer >= 0"))
    loss_reduction: str = field(default=PRESET, metadata=hp(
        "TD loss over members: sum (of each member's mean) or mean (over members and samples, the research "
        "code's; 1/K of sum)", traced=True, choices=(PRESET, "sum", "mean"), flag=("mean_loss", "mean")))
    base_seed: int = field(default=0, metadata=hp("mixed into the config hash, from which every seed's key derives: another value redraws all runs", traced="key", low=0))

    def __post_init__(self):
        """Options left at "preset" take the value of `fidelity`'s preset: the fields hold effective values."""
        preset = PRESETS.get(self.fidelity, PRESETS["default"])
        for name in FIDELITY_OPTIONS:
            if getattr(self, name) == PRESET:
                value = preset[name]
                if name == "action_map" and self.fixed_action_map:
                    value = "key0"
                object.__setattr__(self, name, value)

    # ----------------------------------------------------------------- derived
    @property
    def warmup_outside(self) -> bool:
        return self.is_deepsea and self.warmup == "outside"

    @property
    def is_deepsea(self) -> bool:
        return self.env_name == DEEPSEA

    @property
    def members(self) -> int:
        """Number of Q-networks actually trained (1 for a kind that is no ensemble)."""
        return self.ensemble_size if KINDS[self.kind].ensemble else 1

    @property
    def effective_learning_rate(self) -> float:
        return self.learning_rate * self.members

    @property
    def num_vector_steps(self) -> int:
        """Steps of the vector environment (all `num_envs` at once) in one run."""
        if self.warmup_outside:  # the warm-up, then num_episodes * n // num_envs learning steps
            return self.warmup_steps + self.num_episodes * self.hardness // self.num_envs
        if self.is_deepsea:
            return -(-self.num_episodes // self.num_envs) * self.hardness
        return -(-self.num_env_steps // self.num_envs)

    @property
    def warmup_steps(self) -> int:
        """Vector steps that only act, until the buffer holds `learning_starts` transitions
        (warm-up outside the budget: floor, as the research code's rb_size // num_envs)."""
        if self.warmup_outside:
            return self.learning_starts // self.num_envs
        return math.ceil(self.learning_starts / self.num_envs)

    # -------------------------------------------------------------- validation
    def validate(self) -> "TrainConfig":
        """Raise ConfigError naming the first bad option; return self if all are fine.

        Each field's type and bounds come from its declaration (`hp`); what
        depends on several fields or on the environment is checked here.
        """
        for name in FIELDS:
            value = getattr(self, name)
            if not field_ok(name, value):
                check_field(name, value, _option(name))

        def bad(name: str, allowed: str) -> ConfigError:
            return ConfigError(f"{_option(name)}={_fmt(getattr(self, name))} is invalid: {allowed}")

        if not (self.action_map == "per_run" or (self.action_map.startswith("key") and self.action_map[3:].isdigit())):
            raise bad("action_map", "give per_run or key<N> (N an integer >= 0), e.g. key42")
        if self.is_deepsea:
            if not 0 < self.discovery_threshold <= DEEPSEA_MAX_RETURN:
                raise bad("discovery_threshold", f"DeepSea's returns are at most {DEEPSEA_MAX_RETURN}: give a "
                          f"threshold in (0, {DEEPSEA_MAX_RETURN}] (at or below 0 every episode would count)")
        else:
            if self.num_env_steps < 1:
                raise bad("num_env_steps", f"must be >= 1 step for {self.env_name} (its episodes vary in length)")
            if self.discovery_threshold == DEEPSEA_THRESHOLD:
                raise bad("discovery_threshold", f"that is DeepSea's threshold, meaningless for {self.env_name}; "
                          "give the return that counts as solving it")
        if self.learning_starts > self.rb_size:
            raise bad("learning_starts", f"must be <= --rb-size ({self.rb_size}): the buffer cannot hold more")
        if self.eps_end > self.eps_start:
            raise bad("eps_end", f"must be <= --eps-start ({_fmt(self.eps_start)})")
        if self.is_deepsea and self.warmup_outside and self.num_vector_steps <= self.warmup_steps:
            raise bad("num_episodes", f"the budget gives no learning step (num_episodes * n // num_envs = "
                      f"{self.num_episodes} * {self.hardness} // {self.num_envs} = 0; the warm-up is outside "
                      f"the budget); give at least {-(-self.num_envs // self.hardness)} episodes")
        if self.warmup_steps >= self.num_vector_steps:
            budget = "num_episodes" if self.is_deepsea else "num_env_steps"
            raise bad(budget, f"the budget is {self.num_vector_steps} vector steps but the warm-up "
                      f"(--learning-starts={self.learning_starts} transitions / --num-envs={self.num_envs}) "
                      f"takes {self.warmup_steps}: learning would never start; raise the budget above "
                      "the warm-up or lower --learning-starts")
        return self

    # ------------------------------------------------------------ serialising
    def to_dict(self) -> dict:
        # Every field holds a scalar or a tuple of ints: no deep copy needed (dataclasses.asdict's
        # copy was most of the time of expanding a study of thousands of cells).
        d = {name: getattr(self, name) for name in FIELDS}
        d["hidden_sizes"] = ",".join(str(h) for h in self.hidden_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "") -> "TrainConfig":
        """The config of `d` (field -> value, as `to_dict` writes it or a user gives it).

        Every value goes through `coerce_field`; the message of a bad one names
        `where` and the field, e.g. '--batch entry 0: ensemble_size='abc' is invalid: ...'.
        """
        unknown = sorted(set(d) - set(FIELDS))
        if unknown:
            raise ConfigError(f"{where}unknown hyperparameter(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
        return cls(**{name: coerce_field(name, value, f"{where}{name}") for name, value in d.items()})


def config_hash(config: TrainConfig) -> str:
    """16 hex digits identifying everything that changes a run's result.

    Seeds are not part of it: the key of seed s is derived from this hash and s
    alone (`seed_keys`), so a seed's result does not depend on its shard.
    """
    payload = json.dumps(hashed_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def hashed_dict(config: TrainConfig) -> dict:
    """`to_dict` as the hash sees it: the effective fidelity options, each only where it differs
    from `HASH_BASELINE` (so configs from before the options keep their hash and seeds);
    `fidelity` itself is no value, only a preset of them."""
    d = config.to_dict()
    del d["fidelity"]
    for name in FIDELITY_OPTIONS:
        default = "key0" if name == "action_map" and config.fixed_action_map else HASH_BASELINE[name]
        if d[name] == default:
            del d[name]
    return d


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# Traced values (`agent.Hyper`) and values that only seed the keys: cells that
# differ in nothing else can share one compiled program.
HYPER_FIELDS = tuple(name for name, f in FIELDS.items() if f.metadata["traced"] is True)
# agent.Hyper's leaves, one per HYPER_FIELDS entry: the field's name, or its flag's for a traced choice
HYPER_LEAVES = tuple((FIELDS[name].metadata["flag"] or (name,))[0] for name in HYPER_FIELDS)
TRACED_FIELDS = tuple(name for name, f in FIELDS.items() if f.metadata["traced"])


def program_signature(config: TrainConfig) -> tuple:
    """Cells with equal signatures can train in one compiled program (`engine.train_batch`).

    On DeepSea a kind without a prior shares the program of its prior twin
    (`kinds.program_kind`: boot with bootrp, its prior scaled by 0).
    """
    static = {k: v for k, v in config.to_dict().items() if k not in TRACED_FIELDS}
    static["kind"] = program_kind(KINDS[config.kind], config.is_deepsea).name
    return tuple(sorted(static.items()))


def program_family(config: TrainConfig) -> tuple:
    """`program_signature` without DeepSea's n: cells one training program serves, each at its own n
    (`engine.train_groups`: the tables padded to the largest n, n traced). Off DeepSea, the signature."""
    signature = program_signature(config)
    return tuple(item for item in signature if item[0] != "hardness") if config.is_deepsea else signature


def accepted(name: str) -> str:
    """The values field `name` accepts, in words: 'an integer >= 1', 'a finite number in [0, 1]'."""
    f = FIELDS[name]
    meta, ftype = f.metadata, f.type
    if meta["choices"]:
        return f"one of {', '.join(meta['choices'])}"
    if ftype == "bool":
        return "true or false"
    if ftype == "str":
        return "a string"
    low, high = meta["low"], meta["high"]
    if low is not None and high is not None:
        bounds = f" in {'(' if meta['low_open'] else '['}{low:g}, {high:g}]"
    elif low is not None:
        bounds = f" {'>' if meta['low_open'] else '>='} {low:g}"
    elif high is not None:
        bounds = f" <= {high:g}"
    else:
        bounds = ""
    if ftype == "int":
        return "an integer" + bounds
    if ftype == "float":
        return "a finite number" + bounds + (f" ({meta['note']})" if meta["note"] else "")
    return f"one or more comma-separated integers{bounds}, e.g. 24,24"


def field_ok(name: str, value: Any) -> bool:
    """Whether `value` is of field `name`'s type (no coercion: "2" is no integer) and within its bounds."""
    f = FIELDS[name]
    meta, ftype = f.metadata, f.type
    if ftype == "bool":
        ok = isinstance(value, bool)
    elif ftype == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif ftype == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif ftype == "str":
        ok = isinstance(value, str) and (not meta["choices"] or value in meta["choices"])
    else:  # a tuple of ints
        ok = (isinstance(value, tuple) and len(value) > 0
              and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
    if ok and ftype in ("int", "float"):
        ok = _within(value, meta)
    elif ok and ftype not in ("bool", "str"):
        ok = all(_within(v, meta) for v in value)
    return ok


def check_field(name: str, value: Any, where: str) -> None:
    """ConfigError '<where>=<value> is invalid: give <accepted>' unless `field_ok(name, value)`."""
    if not field_ok(name, value):
        ftype = FIELDS[name].type
        shown = repr(value) if isinstance(value, str) and ftype != "str" else _fmt(value)
        raise ConfigError(f"{where}={shown} is invalid: give {accepted(name)}")


def coerce_field(name: str, value: Any, where: str) -> Any:
    """A value from config.yaml or a --batch entry as field `name` holds it, checked against
    the field's declaration; ConfigError with a one-line message naming `where` otherwise.

    Only lossless conversions: an integer where a float is expected, a list or a
    "24,24" string for hidden_sizes. A string where a number is expected is refused.
    """
    if name not in FIELDS:
        raise ConfigError(f"{where}: unknown hyperparameter; known: {', '.join(FIELDS)}")
    ftype = FIELDS[name].type
    if ftype == "float" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif ftype.startswith("tuple"):
        if isinstance(value, str):
            parts = [v.strip() for v in value.split(",") if v.strip()]
            value = tuple(int(v) if v.isdigit() else v for v in parts)
        elif isinstance(value, (list, tuple)):
            value = tuple(value)
    check_field(name, value, where)
    return value


def for_environment(config: TrainConfig) -> tuple[TrainConfig, str | None]:
    """`config` with DeepSea's default threshold replaced by the environment's solved return.

    Returns (config, a line saying what was replaced, or None). On DeepSea, or
    with a threshold the user chose, the config is returned unchanged.
    """
    if config.is_deepsea or config.discovery_threshold != DEEPSEA_THRESHOLD:
        return config, None
    solved = SOLVED_RETURNS.get(config.env_name)
    if solved is None:
        return config, None  # validate() refuses it, asking for the environment's solved return
    note = (f"discovery threshold {solved:g}: {config.env_name}'s solved return "
            f"(DeepSea's {DEEPSEA_THRESHOLD} would mean nothing there)")
    return dataclasses.replace(config, discovery_threshold=solved), note


def _within(value, meta) -> bool:
    low, high = meta["low"], meta["high"]
    if low is not None and (value <= low if meta["low_open"] else value < low):
        return False
    return high is None or value <= high


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _fmt(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)
