"""A study of `config.yaml`, validated and expanded into cells with their config hashes.

Pure functions for the Snakefile (no snakemake import). A *study* names kinds,
ensemble sizes K and hardness values n, seeds per cell, the shard size, the
episode budget, hyperparameter overrides and an optional one-at-a-time sweep.
A *cell* is one (kind, variant, K, n) with its full `TrainConfig` and that
config's hash; a *shard* is a half-open range of seed indices. Which cells'
shards train together is `groups.py`'s job; what they cost, `cost.py`'s.

The hash covers every field of the configuration, so a changed hyperparameter
can never be mixed with old results; shard boundaries are multiples of the
shard size, so raising seeds per cell adds new shards and keeps the old ones.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .config import ConfigError, TrainConfig, accepted, coerce_field, config_hash
from .kinds import KINDS

DEFAULT_VARIANT = "default"
# Study keys whose values are not TrainConfig overrides but which select cells.
CELL_FIELDS = ("kind", "ensemble_size", "hardness", "num_episodes", "base_seed")
_TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


class StudyError(ValueError):
    """A study of config.yaml cannot be expanded; the one-line message names the key."""


# ------------------------------------------------------------- THE DESIGNS
# The values of a study's `design:` key (the algorithms are in designs.py; the
# table is here so that reading a config never imports them, nor scipy and
# statsmodels with them: the Snakefile reads it at every start).
@dataclass(frozen=True)
class Design:
    name: str
    summary: str
    sequential: bool      # needs checkpoints: later cells depend on earlier outcomes
    fit_cells: str        # which cells the ψ fit reads


DESIGNS = {
    d.name: d for d in (
        Design("grid", "every cell of the grid, all seeds, one round", False, "all trained cells"),
        Design("reference", "the research code's skip protocol (LIMIT zero cells per K row; n below the "
               "largest fully solved n skipped), trained speculatively a few cells per round", True,
               "the cells the protocol trained"),
        Design("frontier", "pilot subgrid, ψ fit, then ≤ max_rounds rounds of the cells with most Fisher "
               "information about ψ per CPU-second, plus coverage and boundary cells", True,
               "all trained cells"),
    )
}



@dataclass(frozen=True)
class Cell:
    """One (kind, variant, K, n) of a study: everything one training run needs but the seed."""

    kind: str
    variant: str
    ensemble_size: int
    hardness: int
    config: TrainConfig = field(repr=False)
    hash: str


@dataclass(frozen=True)
class Study:
    """A named study of config.yaml, validated and expanded."""

    name: str
    description: str
    kinds: tuple[str, ...]
    seeds_per_cell: int
    shard_size: int
    num_episodes: int
    base_seed: int
    variants: tuple[str, ...]
    critical_region: Mapping[str, int]
    _cells: tuple[Cell, ...] = field(repr=False)
    train_grouping: str = "cell"
    design: str = "grid"  # designs.DESIGNS: grid, reference or frontier
    reference_limit: int = 3  # reference design: a K row stops after this many cells without a discovery
    frontier: Mapping[str, Any] = field(default_factory=dict)  # frontier design: FrontierSettings overrides

    def cells(self) -> list[Cell]:
        """Every cell of the study, kinds in config order, then variant, K, n."""
        return list(self._cells)

    def shards(self) -> list[tuple[int, int]]:
        """Seed ranges [start, stop) of every cell: consecutive multiples of the shard size."""
        return [
            (start, min(start + self.shard_size, self.seeds_per_cell))
            for start in range(0, self.seeds_per_cell, self.shard_size)
        ]

    @property
    def is_sweep(self) -> bool:
        return len(self.variants) > 1

    @property
    def sequential(self) -> bool:
        """True when later cells depend on earlier outcomes (trained round by round)."""
        return DESIGNS[self.design].sequential

    def frontier_settings(self, kind: str):
        """The frontier design's settings for `kind`: the study's `frontier:` keys over the defaults.

        `target_half_width`, `prior_psi` and `prior_dispersion` may be one
        value or one per kind ({boot: 0.02, bootrp: 0.03}); a kind not listed
        gets the default (for `prior_psi`: no prior, the pilot).
        """
        from .designs import FrontierSettings

        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in self.frontier.items()}
        for key, value in list(settings.items()):
            if isinstance(value, Mapping):
                settings[key] = value.get(kind, getattr(FrontierSettings, key))
        return FrontierSettings(**{"episodes": self.num_episodes, **settings})

    def caption(self) -> str:
        """A line for figure captions: budget, seeds and number of cells."""
        return (
            f"study {self.name}: {self.num_episodes:,} episodes per run, "
            f"{self.seeds_per_cell} seeds per cell, {len(self._cells)} cells"
        )


# ------------------------------------------------------------------ loading
def validate_config(config: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Check `config` against the JSON schema; StudyError with one line naming the first bad key."""
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(schema)
    errors = list(validator_cls(schema).iter_errors(config))
    if not errors:
        return
    error = min(errors, key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    while error.validator in ("oneOf", "anyOf") and error.context:
        # a value that may take several shapes (a grid block or a list of blocks): report the shape
        # it has, not that it fits none (a branch of another type fails at its root on "type")
        fitting = [e for e in error.context if not (e.validator == "type" and not e.relative_path)]
        error = min(fitting or error.context, key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    raise StudyError(_schema_message(error))


def _schema_message(error) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    where = where or "config"
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind == "additionalProperties":
        allowed = sorted((error.schema.get("properties") or {}))
        unknown = sorted(set(value) - set(allowed)) if isinstance(value, Mapping) else []
        return f"{where}.{unknown[0] if unknown else '?'}: unknown key; allowed: {', '.join(allowed)}"
    if kind == "required":
        missing = [k for k in expected if k not in value]
        return f"{where}.{missing[0]}: missing; required: {', '.join(expected)}"
    if kind == "type":
        return f"{where}: {value!r} is invalid; give a value of type {expected}"
    if kind in ("minimum", "exclusiveMinimum"):
        return f"{where}: {value!r} is invalid; must be >= {expected}"
    if kind == "maximum":
        return f"{where}: {value!r} is invalid; must be <= {expected}"
    if kind in ("minItems", "minProperties"):
        return f"{where}: empty grid; give at least {expected} value(s)"
    if kind == "enum":
        return f"{where}: {value!r} is invalid; choose one of {', '.join(map(str, expected))}"
    if kind == "uniqueItems":
        return f"{where}: {value!r} has duplicates"
    if kind == "pattern":
        return f"{where}: {value!r} is invalid; must match {expected}"
    return f"{where}: {error.message}"


def replace_studies_whole(config: dict, configfiles: Sequence[Mapping | None],
                          command_line: Mapping | None = None) -> dict:
    """Let a study defined in a `--configfile` replace config.yaml's study of that name whole.

    Snakemake merges config files key by key, so a user's `studies.default`
    with only `boot` would silently keep config.yaml's `bootrp` and `eps`.
    `command_line` (`--config` values) still wins over both. Edits `config` in
    place and returns it.
    """
    studies = config.setdefault("studies", {})
    for user in configfiles:
        for name, spec in ((user or {}).get("studies") or {}).items():
            studies[name] = copy.deepcopy(spec)
    for key, value in (command_line or {}).items():
        if key == "studies" and isinstance(value, Mapping):
            studies.update(copy.deepcopy(dict(value)))
        else:
            config[key] = value
    return config


def load_workflow_config(config: dict, configfiles: Sequence[Mapping | None], command_line: Mapping | None,
                         schema: Mapping[str, Any]) -> dict[str, Study]:
    """What the Snakefile does with its config before planning anything: a
    `--configfile` study replaces config.yaml's of that name whole, then the
    schema, then every study's semantics. Returns every study by name; raises
    StudyError with one line naming the first bad key. `config` is Snakemake's
    merged config (config.yaml, the config files, `--config`), edited in place.
    """
    replace_studies_whole(config, configfiles, command_line)
    validate_config(config, schema)
    return load_all_studies(config)


def load_study(config: Mapping[str, Any], name: str) -> Study:
    """Validate and expand `config["studies"][name]`; StudyError naming the key on bad input."""
    studies = config.get("studies") or {}
    if name not in studies:
        raise StudyError(
            f"study: {name!r} is not defined; choose one of {', '.join(sorted(studies)) or '(none)'}"
        )
    spec = studies[name]
    where = f"studies.{name}"
    if not isinstance(spec, Mapping):
        raise StudyError(f"{where}: must be a mapping with kinds, seeds_per_cell, ...")

    seeds = _positive_int(spec, "seeds_per_cell", where)
    shard_size = _positive_int(spec, "shard_size", where)
    if seeds % shard_size:
        divisors = [d for d in range(1, seeds + 1) if seeds % d == 0]
        raise StudyError(
            f"{where}.shard_size: {shard_size} does not divide seeds_per_cell={seeds} (a short last shard "
            f"would be orphaned when seeds grow); choose one of {', '.join(map(str, divisors))}"
        )
    episodes = _positive_int(spec, "num_episodes", where)
    base_seed = spec.get("base_seed", 0)
    if not _is_int(base_seed) or base_seed < 0:
        raise StudyError(f"{where}.base_seed: {base_seed!r} is invalid; give an integer >= 0")

    hyper = spec.get("hyperparameters") or {}
    overrides = _overrides(hyper, f"{where}.hyperparameters")

    kinds_spec = spec.get("kinds") or {}
    if not isinstance(kinds_spec, Mapping) or not kinds_spec:
        raise StudyError(f"{where}.kinds: empty; give at least one of {', '.join(KINDS)}")
    grids = {kind: _grid(kind, kinds_spec[kind], f"{where}.kinds.{kind}") for kind in kinds_spec}

    variants = [(DEFAULT_VARIANT, {}, tuple(grids))]
    for param, sweep in (spec.get("sweep") or {}).items():
        variants.extend(_sweep_variants(param, sweep, tuple(grids), f"{where}.sweep.{param}"))

    design = str(spec.get("design", "grid"))
    blocks = [kind for kind in kinds_spec if isinstance(kinds_spec[kind], list)]
    if blocks and design != "grid":
        raise StudyError(f"{where}.kinds.{blocks[0]}: a list of blocks needs design: grid (the {design} design "
                         "walks whole K rows and n columns); give one block of ensemble_sizes and hardness")
    cells = []
    for variant, variant_overrides, variant_kinds in variants:
        for kind in variant_kinds:
            for K, n in grids[kind]:
                values = {**overrides, **variant_overrides}
                values.update(kind=kind, ensemble_size=K, hardness=n,
                              num_episodes=episodes, base_seed=base_seed)
                config = _train_config(values, where, variant)
                cells.append(Cell(kind, variant, K, n, config, config_hash(config)))

    region = dict(spec.get("critical_region") or {})
    if not region:  # the whole grid
        all_n = [n for pairs in grids.values() for _, n in pairs]
        all_k = [k for pairs in grids.values() for k, _ in pairs]
        region = dict(hardness_min=min(all_n), hardness_max=max(all_n),
                      ensemble_min=min(all_k), ensemble_max=max(all_k))
    for low, high in (("hardness_min", "hardness_max"), ("ensemble_min", "ensemble_max")):
        if region.get(low, 0) > region.get(high, 0):
            raise StudyError(f"{where}.critical_region.{low}: {region[low]} is above {high}={region[high]}")
    return Study(
        name=name,
        description=str(spec.get("description", "")),
        kinds=tuple(grids),
        seeds_per_cell=seeds,
        shard_size=shard_size,
        num_episodes=episodes,
        base_seed=int(base_seed),
        variants=tuple(v[0] for v in variants),
        critical_region=region,
        _cells=tuple(cells),
        train_grouping=str(spec.get("train_grouping", "cell")),
        design=design,
        reference_limit=int(spec.get("reference_limit", 3)),
        frontier=_frontier(spec.get("frontier") or {}, seeds, shard_size, f"{where}.frontier"),
    )


def _frontier(settings: Mapping, seeds: int, shard_size: int, where: str) -> dict:
    """The frontier keys, checked against the seeds and shards they ask for."""
    for key in ("pilot_seeds", "seeds", "boundary_seeds"):
        value = settings.get(key)
        if value is not None and (value > seeds or value % shard_size):
            raise StudyError(f"{where}.{key}: {value} is invalid; give a multiple of shard_size={shard_size} "
                             f"that is at most seeds_per_cell={seeds}")
    return dict(settings)


def load_all_studies(config: Mapping[str, Any]) -> dict[str, Study]:
    """Every study of the config, validated; also checks that `study` names one of them."""
    studies = {name: load_study(config, name) for name in (config.get("studies") or {})}
    active = config.get("study")
    if active not in studies:
        raise StudyError(
            f"study: {active!r} is not defined; choose one of {', '.join(sorted(studies)) or '(none)'}"
        )
    return studies


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(spec: Mapping, key: str, where: str) -> int:
    value = spec.get(key)
    if not _is_int(value) or value < 1:
        raise StudyError(f"{where}.{key}: {value!r} is invalid; give an integer >= 1")
    return value


def _grid(kind: str, spec: Any, where: str) -> tuple[tuple[int, int], ...]:
    """A kind's (K, n) cells, in order: one block (ensemble_sizes x hardness), or the union of a list of
    blocks (cells along a frontier: a few n per K), each cell once."""
    if kind not in KINDS:
        raise StudyError(f"{where}: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    if isinstance(spec, list):
        if not spec:
            raise StudyError(f"{where}: empty list of blocks; give at least one block of ensemble_sizes and hardness")
        pairs = [kn for i, block in enumerate(spec) for kn in _grid(kind, block, f"{where}[{i}]")]
        return tuple(dict.fromkeys(pairs))
    spec = spec or {}
    if not isinstance(spec, Mapping):
        raise StudyError(f"{where}: must be a mapping with ensemble_sizes and hardness")
    if not KINDS[kind].ensemble:
        if "ensemble_sizes" in spec:
            raise StudyError(f"{where}.ensemble_sizes: {kind} trains one network (K = 1); list only hardness")
        sizes = (1,)
    else:
        sizes = _int_list(spec.get("ensemble_sizes"), f"{where}.ensemble_sizes", 1, "K")
    hardness = _int_list(spec.get("hardness"), f"{where}.hardness", 2, "n")
    unknown = sorted(set(spec) - {"ensemble_sizes", "hardness"})
    if unknown:
        raise StudyError(f"{where}.{unknown[0]}: unknown key; allowed: ensemble_sizes, hardness")
    return tuple((K, n) for K in sizes for n in hardness)


def _int_list(values: Any, where: str, minimum: int, symbol: str) -> tuple[int, ...]:
    if not values:
        raise StudyError(f"{where}: empty grid; give at least one {symbol} >= {minimum}")
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise StudyError(f"{where}: {values!r} is invalid; give a list of integers {symbol} >= {minimum}")
    for i, value in enumerate(values):
        if not _is_int(value) or value < minimum:
            raise StudyError(f"{where}[{i}]: {value!r} is invalid; give an integer {symbol} >= {minimum}")
    if len(set(values)) != len(values):
        raise StudyError(f"{where}: {list(values)} has duplicates")
    return tuple(sorted(values))


def _overrides(hyper: Any, where: str) -> dict:
    if not isinstance(hyper, Mapping):
        raise StudyError(f"{where}: must be a mapping of TrainConfig fields to values")
    return {key: _coerce(key, value, f"{where}.{key}") for key, value in hyper.items()}


def _coerce(name: str, value: Any, where: str) -> Any:
    """A config value as the TrainConfig field `name` holds it, within the bounds its declaration gives."""
    if name not in _TRAIN_FIELDS:
        raise StudyError(f"{where}: unknown hyperparameter; known: {', '.join(sorted(_TRAIN_FIELDS))}")
    if name in CELL_FIELDS:
        raise StudyError(f"{where}: set by the study's grid, not as a hyperparameter")
    try:
        return coerce_field(name, value, where)
    except ConfigError:
        raise StudyError(f"{where}: {value!r} is invalid; give {accepted(name)}") from None


def _sweep_variants(param: str, sweep: Any, kinds: tuple[str, ...], where: str):
    if not isinstance(sweep, Mapping) or not sweep.get("values"):
        raise StudyError(f"{where}.values: empty; give at least one value of {param}")
    unknown = sorted(set(sweep) - {"values", "kinds", "tied"})
    if unknown:
        raise StudyError(f"{where}.{unknown[0]}: unknown key; allowed: values, kinds, tied")
    tied = list(sweep.get("tied") or [])
    sweep_kinds = tuple(sweep.get("kinds") or kinds)
    for i, kind in enumerate(sweep_kinds):
        if kind not in kinds:
            raise StudyError(
                f"{where}.kinds[{i}]: {kind!r} is not a kind of this study; choose from {', '.join(kinds)}"
            )
    variants = []
    for i, raw in enumerate(sweep["values"]):
        value = _coerce(param, raw, f"{where}.values[{i}]")
        overrides = {param: value}
        for j, other in enumerate(tied):  # e.g. learning_starts follows rb_size: fill the buffer first
            overrides[other] = _coerce(other, value, f"{where}.tied[{j}]")
        variants.append((variant_name(param, value), overrides, sweep_kinds))
    names = [v[0] for v in variants]
    if len(set(names)) != len(names):
        raise StudyError(f"{where}.values: duplicate values {list(sweep['values'])}")
    return variants


def variant_name(param: str, value: Any) -> str:
    """`learning_rate=0.0005`, `hidden_sizes=32x32`: the path component of a sweep value."""
    if isinstance(value, tuple):  # "x", not ",": the name is a path component and a wildcard value
        value = "x".join(str(v) for v in value)
    elif isinstance(value, bool):
        value = str(value).lower()
    return f"{param}={value!r}" if isinstance(value, float) else f"{param}={value}"


def _train_config(values: dict, where: str, variant: str) -> TrainConfig:
    config = TrainConfig(**values)
    if not KINDS[config.kind].ensemble:
        config = dataclasses.replace(config, ensemble_size=1)
    try:
        return config.validate()
    except ConfigError as err:
        key = str(err).split("=", 1)[0].lstrip("-").replace("-", "_")
        section = "sweep" if variant != DEFAULT_VARIANT and key == variant.split("=")[0] else "hyperparameters"
        if key in ("ensemble_size", "hardness", "kind"):
            section = f"kinds.{config.kind}"
        if key in ("num_episodes", "base_seed"):
            raise StudyError(f"{where}.{key}: {err}") from None
        raise StudyError(f"{where}.{section}.{key}: {err}") from None
