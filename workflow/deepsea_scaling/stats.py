"""Statistics of a study: convergence table, ψ from a binomial GLM, kind comparison.

The law of the reference study is

    P(discovery | K, n) = 1 − (1 − ψ^n)^K,

one parameter ψ per method. It is a binomial GLM with no intercept, covariate
n, coefficient log ψ and, per row, the link g_K(p) = log(1 − (1 − p)^(1/K)),
since g_K(P) = n·log ψ. The fitting itself (that GLM, the Pearson dispersion,
the intervals) is `fit.py`'s; here it is applied to tidy tables, and
everything is a pure function of them:

- runs  (one row per run, the engine's run table, docs/INTERFACES.md)
- cells (one row per (study, variant, kind, K, n): `convergence_table`)
- fits  (one row per (study, variant, kind): `fit_psi_table`)

Problems in the data (all cells failed, a single cell, diverged runs, ...) are
reported as an `AnalysisWarning` naming the case and a `status` column; the
row is still returned, with NaN where no estimate exists.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .fit import glm, pearson_dispersion, profile_interval, wald_interval
from .kinds import KINDS

CELL_KEYS = ("study", "variant", "kind", "ensemble_size", "hardness")
FIT_KEYS = ("study", "variant", "kind")
COMPARE_KEYS = ("study", "variant")
# Kinds that have nothing but K = 1 (ε-greedy DQN): `fit_psi_table` fits them
# on their K = 1 cells, which gives the baseline law P = ψ^n.
K1_ONLY_KINDS = tuple(name for name, kind in KINDS.items() if not kind.ensemble)


class AnalysisWarning(UserWarning):
    """A problem in the data of an analysis step; the message names the case."""


def warn(message: str) -> None:
    """An AnalysisWarning naming the case, attributed to the caller's caller (the analysis step)."""
    warnings.warn(message, category=AnalysisWarning, stacklevel=3)


def status_ok(status) -> bool:
    """A fit's or test's status says it has a usable estimate: "ok", possibly with notes after it
    ("ok; 419 empty cell(s) left out", "ok; law rejected (...)")."""
    return str(status).split(";")[0].strip() == "ok"


def group_label(name: str, keys: dict | None) -> str:
    """`name[key=value, ...]`: which group of which analysis a message is about."""
    if not keys:
        return name
    inner = ", ".join(f"{k}={v}" for k, v in keys.items())
    return f"{name}[{inner}]"


# ------------------------------------------------------------------ THE LAW
def predicted_probability(psi, K, n) -> np.ndarray:
    """P = 1 − (1 − ψ^n)^K, broadcast over psi, K and n (any shapes that broadcast)."""
    psi, K, n = (np.asarray(a, dtype=float) for a in (psi, K, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.expm1(K * np.log1p(-(psi ** n)))


def frontier_k(psi: float, p_target: float, n) -> np.ndarray:
    """Ensemble size K(n) = log(1 − P) / log(1 − ψ^n) that reaches probability P.

    n: array of hardness values (any shape); returns K of the same shape,
    `inf` where ψ^n underflows to 0 (no finite ensemble reaches P).
    """
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = np.log1p(-(float(psi) ** n))
        k = np.log1p(-float(p_target)) / denom
    return np.where(denom == 0, np.inf, k)


def wilson_interval(successes, trials, level: float = 0.95):
    """Wilson score interval of a binomial proportion, vectorised.

    successes, trials: arrays of the same shape; returns (low, high) of that
    shape, NaN where trials is 0.
    """
    s = np.asarray(successes, dtype=float)
    t = np.asarray(trials, dtype=float)
    z = stats.norm.ppf(0.5 + level / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = s / t
        denom = 1 + z**2 / t
        centre = (p + z**2 / (2 * t)) / denom
        half = z * np.sqrt(p * (1 - p) / t + z**2 / (4 * t**2)) / denom
        # the interval holds p; at p = 0 or 1 rounding could leave an end a hair past it
        low = np.where(t > 0, np.clip(np.minimum(centre - half, p), 0.0, 1.0), np.nan)
        high = np.where(t > 0, np.clip(np.maximum(centre + half, p), 0.0, 1.0), np.nan)
    return low, high


# ------------------------------------------------------------- CONVERGENCE
def convergence_table(runs: pd.DataFrame, by: Sequence[str] = CELL_KEYS) -> pd.DataFrame:
    """One row per cell of a run table.

    runs: the engine's run table (docs/INTERFACES.md), one row per run; needs
    `discovered`, and the keys of `by` that it has (absent keys are skipped,
    so a bare engine table without study/variant works). For `eps` rows the
    ensemble size is `members` (1) where that column exists.

    Returns columns: the keys, trials, successes, p_hat, p_low, p_high (Wilson
    95%), median_episodes_to_discovery, all_members_rate, diverged (runs that
    diverged; they count as failures whatever `discovered` says),
    budget_episodes (the cell's num_episodes, if the column exists). Sorted by
    the keys.
    """
    if "discovered" not in runs.columns:
        raise ValueError("convergence_table: the run table has no 'discovered' column")
    keys = [k for k in by if k in runs.columns]
    df = runs.copy()
    if "members" in df.columns and "kind" in df.columns and "ensemble_size" in df.columns:
        is_k1 = df["kind"].isin(K1_ONLY_KINDS)
        df.loc[is_k1, "ensemble_size"] = df.loc[is_k1, "members"]
    diverged = df["diverged"].fillna(False).astype(bool) if "diverged" in df.columns else pd.Series(False, index=df.index)
    df["_diverged"] = diverged
    df["_success"] = df["discovered"].fillna(False).astype(bool) & ~diverged
    df["_episodes"] = df["episodes_to_discovery"].where(df["_success"]) if "episodes_to_discovery" in df.columns else np.nan
    if "all_members_discovered" in df.columns:
        df["_all"] = df["all_members_discovered"].fillna(False).astype(bool) & ~diverged
    else:
        df["_all"] = np.nan

    grouped = df.groupby(keys, sort=True, dropna=False) if keys else df.groupby(np.zeros(len(df)))
    out = grouped.agg(
        trials=("_success", "size"),
        successes=("_success", "sum"),
        median_episodes_to_discovery=("_episodes", "median"),
        all_members_rate=("_all", "mean"),
        diverged=("_diverged", "sum"),
    )
    if "num_episodes" in df.columns:
        budgets = grouped["num_episodes"].agg(["min", "max"])
        if (budgets["min"] != budgets["max"]).any():
            warn("convergence_table: some cells mix runs of different num_episodes; budget_episodes is their maximum")
        out["budget_episodes"] = budgets["max"]
    out = out.reset_index() if keys else out.reset_index(drop=True)
    out["trials"] = out["trials"].astype(int)
    out["successes"] = out["successes"].astype(int)
    out["diverged"] = out["diverged"].astype(int)
    out["p_hat"] = out["successes"] / out["trials"]
    out["p_low"], out["p_high"] = wilson_interval(out["successes"], out["trials"])
    n_div = int(out["diverged"].sum())
    if n_div:
        warn(f"convergence_table: {n_div} run(s) diverged in {int((out['diverged'] > 0).sum())} cell(s); "
              "counted as not discovered (column 'diverged')")
    cols = keys + ["trials", "successes", "p_hat", "p_low", "p_high", "median_episodes_to_discovery",
                   "all_members_rate", "diverged"] + (["budget_episodes"] if "budget_episodes" in out else [])
    return out[cols].sort_values(keys, kind="stable").reset_index(drop=True) if keys else out[cols]


# ---------------------------------------------------------------- FIT ψ
_FIT_COLUMNS = ["psi", "psi_wald_low", "psi_wald_high", "psi_profile_low", "psi_profile_high",
                "psi_quasi_low", "psi_quasi_high", "log_psi", "log_psi_se", "deviance", "pearson_chi2",
                "dispersion", "dispersion_quasi", "r2", "aic", "n_cells", "n_runs", "k_min", "k_max", "n_min", "n_max", "status"]


def usable_cells(cells: pd.DataFrame, include_k1: bool, label: str) -> tuple[pd.DataFrame, list[str]]:
    """Cells the fit uses, and notes on what was left out."""
    missing = {"ensemble_size", "hardness", "successes", "trials"} - set(cells.columns)
    if missing:
        raise ValueError(f"{label}: cells lack column(s) {', '.join(sorted(missing))}")
    notes = []
    c = cells[["ensemble_size", "hardness", "successes", "trials"]].astype(float)
    c = c[c["trials"].notna() & c["successes"].notna()]
    empty = c["trials"] <= 0
    if empty.any():
        warn(f"{label}: {int(empty.sum())} cell(s) with zero trials left out")
        notes.append(f"{int(empty.sum())} empty cell(s) left out")
        c = c[~empty]
    if not include_k1:
        c = c[c["ensemble_size"] > 1]
    return c, notes


def fit_psi(cells: pd.DataFrame, include_k1: bool = False, *, label: str | None = None,
            min_cells: int = 1, level: float = 0.95) -> pd.DataFrame:
    """Fit ψ of P = 1 − (1 − ψ^n)^K by a binomial GLM on the cells (`fit.glm`, statsmodels).

    cells: one row per cell with columns ensemble_size (K), hardness (n),
    successes, trials; K = 1 is left out unless `include_k1`.

    Returns one row with columns psi; the intervals psi_{wald,profile,quasi}_
    {low,high} (Wald on log ψ; profile likelihood; Wald scaled by the Pearson
    dispersion, i.e. quasi-binomial); log_psi and log_psi_se; deviance,
    pearson_chi2, dispersion (χ²/df, the published statistic),
    dispersion_quasi (χ²/df over the cells with t·p(1 − p) ≥ 1, which scales
    the quasi interval: see `fit.pearson_dispersion`), r2 (of the cell
    proportions), aic;
    n_cells, n_runs, k_min, k_max, n_min, n_max; status ("ok" or the case).
    """
    label = label or "fit_psi"
    row = dict.fromkeys(_FIT_COLUMNS, np.nan)
    c, notes = usable_cells(cells, include_k1, label)
    s, t, K, n = (c[col].to_numpy() for col in ("successes", "trials", "ensemble_size", "hardness"))
    row.update(n_cells=len(c), n_runs=int(t.sum()))
    if len(c):
        row.update(k_min=K.min(), k_max=K.max(), n_min=n.min(), n_max=n.max())

    def give_up(case: str) -> pd.DataFrame:
        warn(f"{label}: {case}")
        row["status"] = "; ".join([case] + notes)
        return pd.DataFrame([row], columns=_FIT_COLUMNS)

    if len(c) == 0:
        k1 = "" if include_k1 else " with K > 1 (pass include_k1=True to use K = 1)"
        return give_up(f"no cells{k1}; no estimate")
    if len(c) < min_cells:
        return give_up(f"too few cells to fit ({len(c)} < {min_cells}); no estimate")
    if s.sum() == 0:
        return give_up(f"all {len(c)} cells failed; psi is at the boundary 0, no estimate")
    if (s == t).all():
        return give_up(f"all {len(c)} cells succeeded; psi is at the boundary 1, no estimate")

    res = glm(s, t, K, n)
    theta, se = float(res.params[0]), float(res.bse[0])
    if not np.isfinite(theta) or theta >= 0:
        return give_up("the GLM did not converge; no estimate")
    df_resid = len(c) - 1
    p_fit = predicted_probability(np.exp(theta), K, n)
    p_obs = s / t
    pearson = pearson_dispersion(s, t, p_fit, 1)
    ss_tot = np.sum((p_obs - p_obs.mean()) ** 2)
    row.update(
        psi=np.exp(theta), log_psi=theta, log_psi_se=se,
        deviance=float(res.deviance), pearson_chi2=float(pearson.chi2), dispersion=float(pearson.dispersion),
        dispersion_quasi=float(pearson.quasi),
        r2=1 - np.sum((p_obs - p_fit) ** 2) / ss_tot if ss_tot > 0 and df_resid > 0 else np.nan,
        aic=float(res.aic),
    )
    row["psi_wald_low"], row["psi_wald_high"] = wald_interval(theta, se, level, log_scale=True)
    row["psi_profile_low"], row["psi_profile_high"] = profile_interval(theta, s, t, K, n, level)
    if df_resid > 0:
        qse = se * np.sqrt(row["dispersion_quasi"])
        row["psi_quasi_low"], row["psi_quasi_high"] = wald_interval(theta, qse, level, log_scale=True)
        row["status"] = "; ".join(["ok"] + notes)
    else:
        warn(f"{label}: a single cell; psi fits it exactly, no dispersion, quasi interval or R²")
        row["status"] = "; ".join(["single cell: no dispersion"] + notes)
    return pd.DataFrame([row], columns=_FIT_COLUMNS)


def groups_by(cells: pd.DataFrame, by: Iterable[str]):
    """(keys, group) per group of the columns `by` that `cells` has (one group, keys {}, if it has none)."""
    keys = [k for k in by if k in cells.columns]
    if not keys:
        yield {}, cells
        return
    for values, group in cells.groupby(keys, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        yield dict(zip(keys, values)), group


def fit_psi_table(cells: pd.DataFrame, by: Sequence[str] = FIT_KEYS, include_k1: bool = False,
                  *, min_cells: int = 1) -> pd.DataFrame:
    """`fit_psi` per group of `by` (keys absent from `cells` are skipped).

    Kinds with K = 1 only (`eps`) are fitted on their K = 1 cells whatever
    `include_k1` says (their law is P = ψ^n, the baseline). Returns one row per
    group: the keys, then the columns of `fit_psi`.
    """
    rows = []
    for keys, group in groups_by(cells, by):
        k1 = include_k1 or (keys.get("kind") in K1_ONLY_KINDS)
        fit = fit_psi(group, include_k1=k1, label=group_label("fit_psi", keys), min_cells=min_cells)
        rows.append(pd.concat([pd.DataFrame([keys]), fit], axis=1) if keys else fit)
    if not rows:
        keys = [k for k in by if k in cells.columns]
        return pd.DataFrame(columns=keys + _FIT_COLUMNS)
    return pd.concat(rows, ignore_index=True)


# -------------------------------------------------------- COMPARING KINDS
_COMPARE_COLUMNS = ["kind_a", "kind_b", "psi_a", "psi_b", "psi_pooled", "n_cells_a", "n_cells_b",
                    "lr_stat", "df", "p_value", "f_stat", "f_df_denom", "f_p_value", "dispersion", "status"]


def _compare_pair(c: pd.DataFrame, a: str, b: str, include_k1: bool, label: str) -> dict:
    row = dict.fromkeys(_COMPARE_COLUMNS, np.nan)
    row.update(kind_a=a, kind_b=b, df=1)
    parts = {}
    for kind in (a, b):
        part, _ = usable_cells(c[c["kind"] == kind], include_k1, label)
        parts[kind] = part
        row["n_cells_a" if kind == a else "n_cells_b"] = len(part)
    problems = []
    for kind, part in parts.items():
        if len(part) == 0:
            problems.append(f"kind {kind} has no cells" + ("" if include_k1 else " with K > 1"))
        elif part["successes"].sum() == 0:
            problems.append(f"kind {kind}: all cells failed (psi at the boundary 0)")
        elif (part["successes"] == part["trials"]).all():
            problems.append(f"kind {kind}: all cells succeeded (psi at the boundary 1)")
    if problems:
        case = "; ".join(problems) + "; no test"
        warn(f"{label}: {case}")
        row["status"] = case
        return row

    both = pd.concat([parts[a], parts[b]])
    s, t, K, n = (both[col].to_numpy() for col in ("successes", "trials", "ensemble_size", "hardness"))
    full = glm(s, t, K, n, group=np.repeat([0, 1], [len(parts[a]), len(parts[b])]))  # ψ of a, ψ of b
    pooled = glm(s, t, K, n)
    if not (np.all(np.isfinite(full.params)) and np.all(full.params < 0) and np.isfinite(pooled.params[0])
            and pooled.params[0] < 0):
        case = "the GLM did not converge; no test"
        warn(f"{label}: {case}")
        row["status"] = case
        return row
    n_obs, n_par = len(both), 2
    dispersion = float(pearson_dispersion(s, t, full.mu, 2).quasi)
    lr = max(float(pooled.deviance - full.deviance), 0.0)
    row.update(psi_a=float(np.exp(full.params[0])), psi_b=float(np.exp(full.params[1])),
               psi_pooled=float(np.exp(pooled.params[0])), lr_stat=lr,
               p_value=float(stats.chi2.sf(lr, 1)), status="ok")
    if n_obs > n_par:
        f_stat = lr / dispersion
        row.update(dispersion=dispersion, f_stat=f_stat, f_df_denom=n_obs - n_par,
                   f_p_value=float(stats.f.sf(f_stat, 1, n_obs - n_par)))
    else:
        warn(f"{label}: only {n_obs} cells for 2 parameters; no dispersion, no F test")
        row["status"] = "no residual degrees of freedom: no F test"
    return row


def compare_kinds(cells: pd.DataFrame, kinds: Sequence[str] | None = None, by: Sequence[str] = COMPARE_KEYS,
                  include_k1: bool = False) -> pd.DataFrame:
    """Likelihood-ratio test of equal ψ between kinds, per group of `by`.

    Fits one joint GLM with a ψ per kind (columns n·[kind = a], n·[kind = b])
    and the pooled GLM with one ψ; the deviance difference is χ²₁ under equal
    ψ. Under overdispersion the quasi-likelihood F = (LR / 1) / φ with φ the
    Pearson dispersion of the joint model (over its informative cells, see
    `fit.pearson_dispersion`), on (1, cells − 2) df.

    cells: as for `fit_psi`, plus `kind`. kinds: the kinds to compare (all
    pairs); by default those with cells with K > 1 (boot and bootrp; `eps`
    has K = 1 only). Returns one row per group and pair: the keys, kind_a,
    kind_b, psi_a, psi_b, psi_pooled, n_cells_a, n_cells_b, lr_stat, df,
    p_value, f_stat, f_df_denom, f_p_value, dispersion, status, and
    cmh_p_value: the same question without the law (`cmh_p_value`, cell by
    cell over the cells both kinds trained, all K), which a misfitting law
    cannot sway.
    """
    if "kind" not in cells.columns:
        raise ValueError("compare_kinds: cells lack column 'kind'")
    rows = []
    for keys, group in groups_by(cells, by):
        label = group_label("compare_kinds", keys)
        if kinds is None:
            eligible = group if include_k1 else group[group["ensemble_size"] > 1]
            eligible = eligible[eligible["trials"] > 0]
            group_kinds = sorted(eligible["kind"].unique())
        else:
            group_kinds = list(kinds)
        if len(group_kinds) < 2:
            case = f"fewer than two kinds to compare ({', '.join(group_kinds) or 'none'}); no test"
            warn(f"{label}: {case}")
            row = dict.fromkeys(_COMPARE_COLUMNS, np.nan)
            row.update(kind_a=group_kinds[0] if group_kinds else None, status=case)
            rows.append({**keys, **row})
            continue
        for a, b in itertools.combinations(group_kinds, 2):
            row = _compare_pair(group, a, b, include_k1, label)
            row["cmh_p_value"] = cmh_p_value(group[group["kind"] == a], group[group["kind"] == b])
            rows.append({**keys, **row})
    keys = [k for k in by if k in cells.columns]
    return pd.DataFrame(rows, columns=keys + _COMPARE_COLUMNS + ["cmh_p_value"])


def compare_variants(cells: pd.DataFrame, baseline: str = "default", include_k1: bool = False) -> pd.DataFrame:
    """Each sweep variant against `baseline`, per study and kind: is its ψ the baseline's?

    The same likelihood-ratio and quasi-F tests as `compare_kinds`, with the
    variants of one kind in the place of the kinds of one variant. Returns one
    row per (study, kind, variant ≠ baseline): study, kind, variant_a (the
    baseline), variant_b, then psi_a, psi_b, psi_pooled, n_cells_a, n_cells_b,
    lr_stat, df, p_value, f_stat, f_df_denom, f_p_value, dispersion, status,
    and cmh_p_value (`cmh_p_value`: the same question without the law, cell
    by cell, all K).
    """
    columns = ["study", "kind", "variant_a", "variant_b"] + _COMPARE_COLUMNS[2:] + ["cmh_p_value"]
    if "variant" not in cells.columns:
        return pd.DataFrame(columns=columns)
    rows = []
    for keys, group in groups_by(cells, ("study", "kind")):
        variants = [v for v in dict.fromkeys(group["variant"]) if v != baseline]
        if baseline not in set(group["variant"]):
            continue
        as_kinds = group.assign(kind=group["variant"])
        for variant in variants:
            row = _compare_pair(as_kinds, baseline, variant, include_k1, group_label("compare_variants", keys))
            row["variant_a"], row["variant_b"] = row.pop("kind_a"), row.pop("kind_b")
            row["cmh_p_value"] = cmh_p_value(group[group["variant"] == baseline], group[group["variant"] == variant])
            rows.append({**keys, **row})
    return pd.DataFrame(rows, columns=[c for c in columns if c in set(columns)])


def cmh_p_value(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Cochran-Mantel-Haenszel test (continuity-corrected) that two sets of cells discover equally often.

    a, b: convergence-table rows; strata are their common (K, n) cells, all K.
    Law-free: it asks whether b discovers more or less often than a in the
    same cells, whatever the law's misfit (its dispersion). NaN when no cell
    is informative (a stratum where every run of both discovered, or none did,
    carries no information).
    """
    from statsmodels.stats.contingency_tables import StratifiedTable

    on = ["ensemble_size", "hardness"]
    m = a[on + ["successes", "trials"]].merge(b[on + ["successes", "trials"]], on=on, suffixes=("_a", "_b"))
    tables = [np.array([[r.successes_a, r.trials_a - r.successes_a], [r.successes_b, r.trials_b - r.successes_b]],
                       dtype=float) for r in m.itertuples()]
    tables = [x for x in tables if x.sum(axis=0).all() and x.sum(axis=1).all()]
    if not tables:
        return float("nan")
    return float(StratifiedTable(tables).test_null_odds(correction=True).pvalue)


def variant_table(cells: pd.DataFrame, fits: pd.DataFrame, comparison: pd.DataFrame,
                  baseline: str = "default") -> pd.DataFrame:
    """One row per (study, kind, variant): its runs, ψ with intervals, and its test against `baseline`.

    cells: a convergence table with a `variant` column; fits: `fit_psi_table`
    of it; comparison: `compare_variants` of it. Columns: study, kind,
    variant, runs and discoveries (all K, K = 1 included), psi,
    psi_quasi_low/high, dispersion, delta_psi (ψ − the baseline's), lr_stat,
    p_value, f_p_value and cmh_p_value of the tests against the baseline (NaN
    on its own row). The baseline comes first per kind, then the variants by
    p_value (smallest first).
    """
    columns = ["study", "kind", "variant", "runs", "discoveries", "psi", "psi_quasi_low", "psi_quasi_high",
               "dispersion", "delta_psi", "lr_stat", "p_value", "f_p_value", "cmh_p_value"]
    if "variant" not in cells.columns or cells.empty:
        return pd.DataFrame(columns=columns)
    keys = [k for k in FIT_KEYS if k in cells.columns]
    counts = (cells.groupby(keys, sort=False)[["trials", "successes"]].sum()
              .rename(columns={"trials": "runs", "successes": "discoveries"}).reset_index())
    out = counts.merge(fits[keys + ["psi", "psi_quasi_low", "psi_quasi_high", "dispersion"]], on=keys, how="left")
    side = [k for k in keys if k != "variant"]
    if not comparison.empty:
        tests = comparison.rename(columns={"variant_b": "variant"})[
            side + ["variant", "lr_stat", "p_value", "f_p_value", "cmh_p_value"]]
        out = out.merge(tests, on=side + ["variant"], how="left")
    else:
        out = out.assign(lr_stat=np.nan, p_value=np.nan, f_p_value=np.nan, cmh_p_value=np.nan)
    base = out[out["variant"] == baseline].set_index(side)["psi"]
    out["delta_psi"] = out["psi"] - out.set_index(side).index.map(base).to_numpy(dtype=float)
    out["_order"] = np.where(out["variant"] == baseline, -1.0, out["p_value"].fillna(2.0))
    out = out.sort_values(side + ["_order", "variant"], kind="stable").drop(columns="_order")
    return out[[c for c in columns if c in out.columns]].reset_index(drop=True)


def variant_table_markdown(table: pd.DataFrame, baseline: str = "default") -> str:
    """`variant_table` as a Markdown table (one line per row; p-values in scientific notation)."""
    def num(x, fmt):
        return "" if pd.isna(x) else format(x, fmt)

    lines = ["| kind | variant | discovered / runs | psi | 95% quasi | psi - " + baseline
             + "'s | LR chi^2 | p | quasi-F p | CMH p |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in table.itertuples(index=False):
        lines.append(
            f"| {r.kind} | {r.variant} | {int(r.discoveries):,} / {int(r.runs):,} | {num(r.psi, '.3f')} "
            f"| {num(r.psi_quasi_low, '.3f')} - {num(r.psi_quasi_high, '.3f')} | {num(r.delta_psi, '+.3f')} "
            f"| {num(r.lr_stat, '.1f')} | {num(r.p_value, '.2g')} | {num(r.f_p_value, '.2g')} "
            f"| {num(r.cmh_p_value, '.2g')} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- RESIDUALS
def _match_fits(cells: pd.DataFrame, fits: pd.DataFrame) -> pd.DataFrame:
    """cells with the ψ of their (study, variant, kind) fit as column `psi`."""
    keys = [k for k in FIT_KEYS if k in cells.columns and k in fits.columns]
    if not keys:
        if len(fits) != 1:
            raise ValueError("cells and fits share no key (study/variant/kind) and fits has several rows")
        return cells.assign(psi=float(fits["psi"].iloc[0]))
    return cells.merge(fits[keys + ["psi"]], on=keys, how="left")


def residuals_by_k(cells: pd.DataFrame, fits: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd of (predicted − observed) P per kind (and study, variant) and K.

    cells: a convergence table; fits: `fit_psi_table` output sharing its keys.
    All K are included (also K = 1, where the law over-predicts). Returns
    columns: the keys, ensemble_size, mean_residual, sd_residual, n_cells.
    Cells whose fit has no ψ are left out.
    """
    c = _match_fits(cells[cells["trials"] > 0], fits)
    c = c[c["psi"].notna()].copy()
    c["residual"] = predicted_probability(c["psi"], c["ensemble_size"], c["hardness"]) - c["successes"] / c["trials"]
    keys = [k for k in FIT_KEYS if k in c.columns] + ["ensemble_size"]
    out = (c.groupby(keys, sort=True)["residual"]
           .agg(mean_residual="mean", sd_residual="std", n_cells="size").reset_index())
    return out


# ------------------------------------------------------ DESIGN DECISIONS
ASSUMED_P = {"assumed_solved": 1.0, "assumed_unsolved": 0.0}


def with_decisions(cells: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """A convergence table with a sequential design's decision for every cell of its grid.

    decisions: one row per cell of the grid (study, variant, kind,
    ensemble_size, hardness, decision, round), `rounds.plan_round`'s. Adds
    columns `decision` (trained, assumed_solved, assumed_unsolved,
    not_trained), `p_assumed` (the P the research code's protocol assumed for
    a cell it skipped: 1 or 0; NaN otherwise) and `round` (the design round
    that first trained the cell). A skipped cell gets trials = 0, so no fit,
    test or residual reads it (as the research code's analysis did not), and
    p_hat NaN; one the reference design trained speculatively and then skipped
    keeps what it observed in `speculative_successes` / `speculative_trials`.
    """
    keys = [k for k in CELL_KEYS if k in cells.columns and k in decisions.columns]
    extra_cols = ["decision"] + (["round"] if "round" in decisions.columns else [])
    out = cells.merge(decisions[keys + extra_cols], on=keys, how="outer", indicator=True)
    out["decision"] = out["decision"].fillna("trained")  # a trained cell the plan does not list: keep it
    skipped = out["decision"] != "trained"
    out["speculative_successes"] = out["successes"].where(skipped & (out["_merge"] == "both"))
    out["speculative_trials"] = out["trials"].where(skipped & (out["_merge"] == "both"))
    for col in ("trials", "successes", "diverged"):
        if col in out.columns:
            out[col] = out[col].where(~skipped, 0).fillna(0).astype(int)
    for col in ("p_hat", "p_low", "p_high", "median_episodes_to_discovery", "all_members_rate"):
        if col in out.columns:
            out[col] = out[col].where(~skipped)
    out["p_assumed"] = out["decision"].map(ASSUMED_P)
    out = out.drop(columns="_merge")
    return out.sort_values(keys, kind="stable").reset_index(drop=True)
