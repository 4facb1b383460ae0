"""Read a results tree of the original research code into this project's run table.

The original code (`schedule_runs` of its main.py) writes one folder per cell,

    <tree>/<experiment>/<run>/config.yaml   its Config: batch_size, lr, num_envs,
                                            ensemble_size, prior_scale, env_name,
                                            kind, hardness, randomize_actions,
                                            num_episodes, rb_size
    <tree>/<experiment>/<run>/results.csv   one row per seed: weak_convergence,
                                            time_to_weak, strong_convergence,
                                            time_to_strong, collapse_metric (a
                                            JSON list of 100 floats)

(and a `.version` file). `read_tree` turns it into the run table of
docs/INTERFACES.md, so every table and figure of a study runs on it. Its
conventions, read from that code, and how they map:

- `time_to_weak` is the 0-based index of the first learning-phase episode with
  return >= 0.95 (episodes in the order they end); this project counts
  episodes up to and including it, so episodes_to_discovery = time_to_weak + 1
  (likewise time_to_strong, the last member's first such episode).
- Without a discovery `time_to_weak` is the number of learning-phase episodes,
  which is total_episodes (checked).
- The config maps to a `TrainConfig` with `fidelity="reference"`: every
  behaviour of the research code (docs/RESEARCH_CODE.md), among them the
  shared key(42) action map and the warm-up of rb_size // num_envs vector
  steps outside the budget (`learning_starts` = rb_size, `warmup="outside"`);
  lr -> learning_rate. Fields the original does not record (final return,
  divergence) are NaN / False.
- `collapse_metric` (Q-diversity interpolated to 100 points over learning)
  becomes `diversity`.

A tree that cannot be read (a missing file, an unknown kind or field, missing
columns) raises `OriginalTreeError`, one line naming the path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .config import DEEPSEA, ConfigError, TrainConfig, check_field, config_hash
from .kinds import KINDS
from .study import DEFAULT_VARIANT, variant_name

# The original's Config: field -> default (its main.py); "lr" is our learning_rate.
ORIGINAL_FIELDS = {
    "batch_size": 64, "lr": 2e-4, "num_envs": 24, "ensemble_size": 4, "prior_scale": 3,
    "env_name": DEEPSEA, "kind": "boot", "hardness": 24, "randomize_actions": True,
    "num_episodes": 10_000, "rb_size": 10_000,
}
_RENAMED = {"lr": "learning_rate"}
# Fields that are not the cell (kind, K, n, budget) and, off their default, name a variant.
_VARIANT_FIELDS = ("lr", "prior_scale", "rb_size", "batch_size", "num_envs")
_VARIANT_DEFAULTS = {"lr": 2e-4, "prior_scale": 3, "rb_size": 10_000, "batch_size": 64, "num_envs": 24}
RESULT_COLUMNS = ("weak_convergence", "time_to_weak", "strong_convergence", "time_to_strong", "collapse_metric")
THRESHOLD = 0.95


class OriginalTreeError(ValueError):
    """A results tree of the original code that cannot be read; the message names the path."""


def run_dirs(tree: str | Path) -> list[Path]:
    """Every `<experiment>/<run>` folder of the tree (one holding config.yaml or results.csv), sorted."""
    tree = Path(tree)
    if not tree.is_dir():
        raise OriginalTreeError(f"{tree}: not a directory")
    found = {p.parent for name in ("config.yaml", "results.csv") for p in tree.glob(f"*/*/{name}")}
    if not found:
        raise OriginalTreeError(f"{tree}: no runs found (expected <experiment>/<run>/config.yaml and results.csv)")
    return sorted(found)


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise OriginalTreeError(f"{path}: missing")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise OriginalTreeError(f"{path}: not YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise OriginalTreeError(f"{path}: not a mapping of Config fields")
    unknown = sorted(set(cfg) - set(ORIGINAL_FIELDS))
    if unknown:
        raise OriginalTreeError(f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(ORIGINAL_FIELDS)}")
    cfg = {**ORIGINAL_FIELDS, **cfg}
    if cfg["kind"] not in KINDS:
        raise OriginalTreeError(f"{path}: unknown kind {cfg['kind']!r}; known: {', '.join(KINDS)}")
    if cfg["env_name"] != DEEPSEA:
        raise OriginalTreeError(f"{path}: env_name {cfg['env_name']!r} is not {DEEPSEA}")
    if cfg["randomize_actions"] is not True:
        raise OriginalTreeError(f"{path}: randomize_actions is {cfg['randomize_actions']!r}, the debug mode (not DeepSea)")
    return cfg


def train_config(cfg: dict, where: str = "config.yaml") -> TrainConfig:
    """The TrainConfig of an original Config (a dict of its fields) with its behaviour switched on."""
    values = {_RENAMED.get(k, k): v for k, v in cfg.items() if k != "randomize_actions"}
    values["ensemble_size"] = 1 if values["kind"] == "eps" else values["ensemble_size"]
    values["fidelity"] = "reference"  # the research code's behaviours, its warm-up outside the budget
    values["learning_starts"] = int(values["rb_size"])
    values = {k: (float(v) if k in ("learning_rate", "prior_scale") else v) for k, v in values.items()}
    try:
        for name, value in values.items():
            check_field(name, value, f"--{name.replace('_', '-')}")
        return TrainConfig(**values).validate()
    except (ConfigError, TypeError) as err:
        raise OriginalTreeError(f"{where}: {err}") from None


def learning_episodes(config: TrainConfig) -> int:
    """Episodes that end in the original's learning phase (the ones it logs).

    All envs step in lockstep and every episode lasts n steps; the warm-up
    takes rb_size // num_envs vector steps and learning num_episodes·n // num_envs.
    """
    warm = config.rb_size // config.num_envs
    steps = config.num_episodes * config.hardness // config.num_envs
    assert (config.warmup_steps, config.num_vector_steps) == (warm, warm + steps)  # reference mode's accounting
    return ((warm + steps) // config.hardness - warm // config.hardness) * config.num_envs


def variant_of(cfg: dict) -> str:
    """"default", or e.g. "learning_rate=0.0005" for the fields off the original's defaults."""
    names = [variant_name(_RENAMED.get(k, k), float(cfg[k]) if k in ("lr", "prior_scale") else cfg[k])
             for k in _VARIANT_FIELDS if cfg[k] != _VARIANT_DEFAULTS[k]]
    return "+".join(names) if names else DEFAULT_VARIANT


def _read_results(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise OriginalTreeError(f"{path}: missing")
    try:
        df = pd.read_csv(path)
    except Exception as err:  # pandas raises several types for empty or malformed files
        raise OriginalTreeError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
    missing = [c for c in RESULT_COLUMNS if c not in df.columns]
    if missing:
        raise OriginalTreeError(f"{path}: missing column(s) {', '.join(missing)}")
    if len(df) == 0:
        raise OriginalTreeError(f"{path}: no rows")
    return df


def _bools(series: pd.Series, path: Path, column: str) -> np.ndarray:
    values = series.astype(str).str.strip().str.lower()
    bad = ~values.isin(["true", "false"])
    if bad.any():
        raise OriginalTreeError(f"{path}: column {column} has non-boolean value {series[bad].iloc[0]!r}")
    return (values == "true").to_numpy()


def read_run(run_dir: str | Path, experiment: str | None = None) -> pd.DataFrame:
    """The run table rows of one `<experiment>/<run>` folder (one row per seed)."""
    run_dir = Path(run_dir)
    cfg = _read_config(run_dir / "config.yaml")
    results_path = run_dir / "results.csv"
    df = _read_results(results_path)
    config = train_config(cfg, str(run_dir / "config.yaml"))
    weak = _bools(df["weak_convergence"], results_path, "weak_convergence")
    strong = _bools(df["strong_convergence"], results_path, "strong_convergence")
    try:
        diversity = [np.asarray(json.loads(v), dtype=float) for v in df["collapse_metric"]]
        to_weak = df["time_to_weak"].astype(float).to_numpy()
        to_strong = df["time_to_strong"].astype(float).to_numpy()
    except (ValueError, TypeError) as err:
        raise OriginalTreeError(f"{results_path}: unreadable values ({err})") from None
    total = learning_episodes(config)
    if np.any(to_weak[~weak] != total):
        raise OriginalTreeError(f"{results_path}: time_to_weak of a run without discovery is not the "
                                f"{total} learning-phase episodes of its config; not this code's layout")
    row = config.to_dict()
    n = len(df)
    out = pd.DataFrame({k: [v] * n for k, v in row.items()})
    out["seed"] = np.arange(n)
    out["config_hash"] = config_hash(config)
    out["members"] = config.members
    out["discovered"] = weak
    out["episodes_to_discovery"] = np.where(weak, to_weak + 1, np.nan)
    out["all_members_discovered"] = strong
    out["episodes_to_all_members"] = np.where(strong, to_strong + 1, np.nan)
    out["final_return"] = np.nan
    out["diverged"] = False
    out["total_episodes"] = total
    out["diversity"] = diversity
    out["variant"] = variant_of(cfg)
    out["experiment"] = experiment if experiment is not None else run_dir.parent.name
    out["source"] = run_dir.name
    return out


def read_tree(tree: str | Path, study: str = "original", experiments: list[str] | None = None) -> pd.DataFrame:
    """The run table of every run of a results tree: `study`, `variant`, the run columns, `experiment`, `source`.

    experiments: only these `<experiment>` folders (default all). The same
    configuration in two folders (so the same seeds twice) is refused.
    """
    dirs = run_dirs(tree)
    if experiments is not None:
        unknown = sorted(set(experiments) - {d.parent.name for d in dirs})
        if unknown:
            raise OriginalTreeError(f"{tree}: no experiment folder(s) {', '.join(unknown)}")
        dirs = [d for d in dirs if d.parent.name in experiments]
    frames, seen = [], {}
    for d in dirs:
        frame = read_run(d)
        h = frame["config_hash"].iloc[0]
        if h in seen:
            raise OriginalTreeError(f"{d}: the same configuration as {seen[h]} (the same seeds twice); "
                                    "pick one experiment with --experiment")
        seen[h] = d
        frames.append(frame)
    runs = pd.concat(frames, ignore_index=True)
    runs.insert(0, "variant", runs.pop("variant"))
    runs.insert(0, "study", study)
    return runs
