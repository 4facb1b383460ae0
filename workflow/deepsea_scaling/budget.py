"""ψ as a function of the training budget, from the runs a study already has.

For a kind that explores by its members (`kinds.Kind.explores_by == "member"`:
boot, bootrp) nothing in training depends on the total budget: the warm-up,
the acting, the learning steps, the target updates and the random draws of a
step are the same whatever `num_episodes` is (the budget only says when the
loop stops; the logging points and the last tenth of training, which depend
on it, change no discovery). So the first episodes of a run of budget B2 are a
run of budget B < B2: it discovered within budget B exactly when it discovered
within the episodes a run of budget B records (`recorded_episodes`), and then
at the same episode. tests/test_budget.py checks this on the engine, for both
kinds, with the default and the reference behaviours.

In the workflow a run of budget B and the first B episodes of a run of budget
B2 are not the same run: the key of a seed derives from the config hash, which
includes `num_episodes` (`engine.seed_keys`). They are draws of the same
distribution, which is all a fit of ψ needs.

`eps` is left out: its epsilon falls over the fraction of training done
(`engine.Trainer.act`: progress = t / num_steps), so its first B episodes in a
longer run explore more than a run of budget B would.

Everything here is a pure function of the run table (docs/INTERFACES.md).
"""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import stats
from .config import DEEPSEA, TrainConfig
from .kinds import KINDS
from .published import PUBLISHED as _PAPER, PUBLISHED_EPISODES

# Budget-independent kinds: those whose training does not depend on the total budget.
BUDGET_FREE_KINDS = tuple(name for name, kind in KINDS.items() if kind.explores_by == "member")

# The published fits (Knyazhitskiy's paper, docs/SCIENCE.md): ψ ± the half-width of its 95% interval, at 50,000 episodes per run.
PUBLISHED_BUDGET = PUBLISHED_EPISODES
PUBLISHED = {kind: (p.psi, p.psi_pm) for kind, p in _PAPER.items()}

BUDGET_COLUMNS = ["budget", "study_budget", "psi", "psi_quasi_low", "psi_quasi_high", "dispersion",
                  "dispersion_quasi", "n_cells", "n_runs", "discoveries", "status"]

# Run-table columns the truncation needs; a table without num_envs, learning_starts,
# warmup or env_name (e.g. simulated runs) is taken to have TrainConfig's default there.
_REQUIRED = ("kind", "hardness", "num_episodes", "discovered", "episodes_to_discovery")


def budget_ladder(num_episodes: int, points: int = 10, span: float = 32.0) -> list[int]:
    """A geometric ladder of about `points` budgets from num_episodes / span up to num_episodes.

    Rounded to two significant digits, except the top, which is num_episodes
    itself (so the study's own budget is always on the ladder); duplicates
    (small budgets) are merged. Returns increasing integers >= 1.
    """
    top = int(num_episodes)
    if top < 1:
        raise ValueError(f"budget_ladder: num_episodes must be >= 1, got {num_episodes}")
    raw = top / float(span) ** np.linspace(1.0, 0.0, int(points))[:-1]
    rounded = [max(1, int(float(f"{b:.2g}"))) for b in raw]  # two significant digits
    return sorted({b for b in rounded if b < top} | {top})


def recorded_episodes(budget, hardness, num_envs, learning_starts, warmup_outside) -> np.ndarray:
    """Episodes a DeepSea run of `budget` episodes records (its `total_episodes`), vectorised.

    All arguments broadcast. Every episode lasts n steps and the E envs step in
    lockstep. Warm-up outside the budget: W = learning_starts // E unlogged
    acting steps, then L = budget·n // E learning steps; every env is W mod n
    steps into an episode when learning starts, so each completes
    floor((W mod n + L) / n) logged episodes. Warm-up inside the budget:
    ceil(budget / E)·n steps, all logged: ceil(budget / E) episodes per env.
    """
    b, n, e, ls = (np.asarray(a, dtype=np.int64) for a in (budget, hardness, num_envs, learning_starts))
    outside = np.asarray(warmup_outside, dtype=bool)
    warm = ls // e
    learning = b * n // e
    per_env_outside = (warm % n + learning) // n
    per_env_inside = -(-b // e)
    return e * np.where(outside, per_env_outside, per_env_inside)


def _config_column(runs: pd.DataFrame, name: str) -> pd.Series:
    if name in runs.columns:
        return runs[name]
    default = getattr(TrainConfig(), name)
    return pd.Series([default] * len(runs), index=runs.index)


def truncate_runs(runs: pd.DataFrame, budget: int) -> pd.DataFrame:
    """The run table as runs of `budget` episodes would have written it (budget-independent kinds).

    runs: run table rows of kinds in `BUDGET_FREE_KINDS` on DeepSea, each of
    its own `num_episodes` >= budget (rows of a smaller budget are dropped: a
    run says nothing about episodes it never trained). A row of budget B2 >
    budget keeps its discovery if `episodes_to_discovery` <= the episodes a
    run of `budget` records (`recorded_episodes`; within n_envs of the
    budget); `all_members_discovered` likewise; `num_episodes` and
    `total_episodes` become the shorter run's. A run that diverged stays a
    failure at every budget: the table does not say when it diverged.
    """
    missing = [c for c in _REQUIRED if c not in runs.columns]
    if missing:
        raise ValueError(f"truncate_runs: the run table lacks column(s) {', '.join(missing)}")
    out = runs[runs["num_episodes"] >= budget].copy()
    shorter = out["num_episodes"] > budget
    outside = (_config_column(out, "warmup") == "outside") & (_config_column(out, "env_name") == DEEPSEA)
    recorded = recorded_episodes(budget, out["hardness"], _config_column(out, "num_envs"),
                                 _config_column(out, "learning_starts"), outside)
    recorded = pd.Series(recorded, index=out.index)
    found = out["discovered"].fillna(False).astype(bool)
    within = found & (out["episodes_to_discovery"] <= recorded)
    out["discovered"] = np.where(shorter, within, found)
    out["episodes_to_discovery"] = out["episodes_to_discovery"].where(out["discovered"].astype(bool))
    if "all_members_discovered" in out.columns and "episodes_to_all_members" in out.columns:
        all_found = out["all_members_discovered"].fillna(False).astype(bool)
        all_within = all_found & (out["episodes_to_all_members"] <= recorded)
        out["all_members_discovered"] = np.where(shorter, all_within, all_found)
        out["episodes_to_all_members"] = out["episodes_to_all_members"].where(
            out["all_members_discovered"].astype(bool))
    if "total_episodes" in out.columns:
        out["total_episodes"] = np.where(shorter, recorded, out["total_episodes"])
    out["num_episodes"] = np.where(shorter, budget, out["num_episodes"])
    return out


def psi_by_budget(runs: pd.DataFrame, budgets: Sequence[int] | None = None,
                  decisions: pd.DataFrame | None = None, *, points: int = 10, span: float = 32.0) -> pd.DataFrame:
    """ψ of every (study, variant, kind) at each budget of a ladder, from the same runs.

    runs: a study's run table (docs/INTERFACES.md; the workflow's runs.parquet,
    which holds only trained runs). budgets: the ladder; by default
    `budget_ladder(points, span)` of each group's own budget (its largest
    `num_episodes`), which is always on it; budgets above a group's own are
    skipped (its runs say nothing about episodes they never trained). decisions: a sequential design's
    decisions table (`stats.with_decisions`), so its skipped cells are left out
    as they are from psi_fit.csv.

    At each budget the runs are cut to it (`truncate_runs`), their cells
    counted (`stats.convergence_table`) and ψ fitted by `stats.fit_psi` with
    K = 1 excluded: the routine of psi_fit.csv, so the row at a group's own
    budget equals its psi_fit.csv row. Rows of `eps` (its training depends on
    the budget: module docstring) and of environments other than DeepSea (their
    budget is in steps) are left out.

    Returns one row per (study, variant, kind, budget), the keys present in
    `runs`, then budget, study_budget (True at the group's own budget), psi,
    psi_quasi_low, psi_quasi_high (quasi-binomial 95%), dispersion (Pearson
    χ²/df), dispersion_quasi (which scales the interval), n_cells, n_runs,
    discoveries (runs that discovered within the budget, in the fitted cells),
    status (fit_psi's: "ok", or why there is no estimate).
    """
    keys = [k for k in stats.FIT_KEYS if k in runs.columns]
    columns = keys + BUDGET_COLUMNS
    if "kind" not in runs.columns:
        raise ValueError("psi_by_budget: the run table has no 'kind' column")
    use = runs[runs["kind"].isin(BUDGET_FREE_KINDS)].drop(columns=["diversity"], errors="ignore")
    if "env_name" in use.columns:
        other = use["env_name"] != DEEPSEA
        if other.any():
            warnings.warn(f"psi_by_budget: {int(other.sum())} run(s) not on DeepSea left out (their budget is in "
                          "steps)", stats.AnalysisWarning, stacklevel=2)
            use = use[~other]
    rows = []
    for group_keys, group in stats.groups_by(use, keys):  # keys hold 'kind': no rows, no groups
        own = int(group["num_episodes"].max())
        ladder = budget_ladder(own, points, span) if budgets is None else sorted({int(b) for b in budgets})
        group_decisions = _decisions_of(decisions, group_keys)
        for budget in ladder:
            if budget > own:
                continue
            label = "psi_by_budget[" + ", ".join(f"{k}={v}" for k, v in {**group_keys, "budget": budget}.items()) + "]"
            cells = stats.convergence_table(truncate_runs(group, budget), by=stats.CELL_KEYS)
            if group_decisions is not None:
                cells = stats.with_decisions(cells, group_decisions)
            fit = stats.fit_psi(cells, include_k1=False, label=label).iloc[0]
            fitted = cells[(cells["ensemble_size"] > 1) & (cells["trials"] > 0)]
            rows.append({**group_keys, "budget": budget, "study_budget": budget == own,
                         **{c: fit[c] for c in ("psi", "psi_quasi_low", "psi_quasi_high", "dispersion",
                                                "dispersion_quasi", "n_cells", "n_runs", "status")},
                         "discoveries": int(fitted["successes"].sum())})
    return pd.DataFrame(rows, columns=columns)


def _decisions_of(decisions: pd.DataFrame | None, group_keys: Mapping[str, object]) -> pd.DataFrame | None:
    """The decisions of one (study, variant, kind) group (on the keys both tables have)."""
    if decisions is None:
        return None
    d = decisions
    for key, value in group_keys.items():
        if key in d.columns:
            d = d[d[key] == value]
    return d
