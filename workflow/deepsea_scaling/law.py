"""Does the law hold? Nested alternatives to P = 1 − (1 − ψ^n)^K, fitted and tested.

The law assumes the K members discover independently, each with probability
ψ^n. One family holds it and its alternatives:

    log(1 − P) = K^α · log(1 − ψ(n)^n),   log ψ(n) = θ0 + θ1·log(n / n_ref)

- `law`          α = 1, θ1 = 0 (one parameter, the ψ of `stats.fit_psi`)
- `effective_k`  α free: an effective ensemble size K^α (α < 1: members that
                 discover together, as correlated members would; α > 1: more
                 than independent)
- `psi_drift`    θ1 free: ψ drifts with hardness (the per-step probability
                 is not constant in n)
- `both`         α and θ1 free: whether each departure survives the other

n_ref is the geometric mean of the fitted cells' n, so θ0 is log ψ at n_ref
(the law's log ψ when θ1 = 0) and reparametrising changes no test.

The family, its likelihood (successes out of trials per cell) and its fit
are `fit.py`'s: every model is fitted by `fit.fit_batch`, vectorised over a
batch of studies with the same cells (so a test can fit hundreds of simulated
studies at once). The law's fit equals `stats.fit_psi`'s GLM. Each alternative
is tested against the law by the likelihood-ratio test (χ² on the extra
parameters) and, because cells are overdispersed (Pearson χ²/df of 4 to 8),
by its quasi-likelihood F version F = (ΔD / Δp) / φ, with φ the alternative's
Pearson dispersion over its informative cells (t·P(1 − P) ≥ 1,
`fit.pearson_dispersion`) on (Δp, informative cells − p) degrees of freedom.
Intervals are Wald intervals scaled by √φ (quasi-binomial, `fit.intervals`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import stats
from .fit import PARAMS, BatchFit, beta_of, fit_batch, intervals, predict

# (name, free parameters besides θ0, one-line meaning): one table every stage reads.
MODELS = (
    ("law", (), "P = 1 - (1 - psi^n)^K"),
    ("effective_k", ("alpha",), "P = 1 - (1 - psi^n)^(K^alpha)"),
    ("psi_drift", ("theta1",), "log psi = theta0 + theta1 log(n / n_ref)"),
    ("both", ("alpha", "theta1"), "effective_k and psi_drift together"),
)
MODEL_NAMES = tuple(m[0] for m in MODELS)
_FREE = {name: free for name, free, _ in MODELS}
_DESCRIPTION = {name: text for name, _, text in MODELS}

LAW_TEST_COLUMNS = [
    "model", "description", "n_params", "n_ref",
    "psi", "psi_low", "psi_high",
    "alpha", "alpha_low", "alpha_high",
    "theta1", "theta1_low", "theta1_high",
    "loglik", "deviance", "aic", "delta_aic",
    "lr_stat", "df", "p_value", "f_stat", "f_df_denom", "f_p_value",
    "dispersion", "n_cells", "n_runs", "status",
]


# -------------------------------------------------------- FITS AND TESTS
def fit_models(successes, trials, K, n, models=MODEL_NAMES, n_ref: float | None = None) -> dict:
    """Every model of `models` fitted to B studies by `fit.fit_batch`, each started from the law's fit.

    successes: (B, cells) or (cells,); trials: broadcastable to it; K, n: (cells,). Returns {model: BatchFit}.
    """
    n_ref = float(np.exp(np.mean(np.log(np.asarray(n, float))))) if n_ref is None else n_ref
    law = fit_batch(successes, trials, K, n, _FREE["law"], n_ref=n_ref)
    fits = {"law": law}
    for model in models:
        if model != "law":
            fits[model] = fit_batch(successes, trials, K, n, _FREE[model], n_ref=n_ref, start=law.beta)
    return fits


def lr_tests(null: BatchFit, alt: BatchFit) -> dict:
    """LRT and quasi-likelihood F test of `alt` against the nested `null`, per study (B,).

    Returns lr_stat, df, p_value (χ²), f_stat, f_df_denom, f_p_value: the
    F uses the alternative's dispersion over its informative cells.
    """
    df = alt.n_params - null.n_params
    lr = np.maximum(null.deviance - alt.deviance, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        f_stat = lr / df / alt.dispersion
        f_p = np.where(alt.df_resid > 0, sps.f.sf(f_stat, df, np.maximum(alt.df_resid, 1)), np.nan)
    return dict(lr_stat=lr, df=df, p_value=sps.chi2.sf(lr, df), f_stat=f_stat,
                f_df_denom=alt.df_resid, f_p_value=f_p)


# ------------------------------------------------------------- SIMULATION
def simulate_cells(rng: np.random.Generator, beta, K, n, trials, n_studies: int,
                   dispersion: float = 1.0, n_ref: float = 1.0) -> np.ndarray:
    """Successes (n_studies, cells) drawn from the family at beta (3,).

    dispersion φ > 1: beta-binomial with intra-cell correlation
    ρ = (φ − 1)/(t − 1), whose variance is φ·t·P(1 − P) in every cell.
    """
    P = predict(np.asarray(beta, float), K, n, n_ref)
    t = np.broadcast_to(np.asarray(trials), P.shape).astype(int)
    shape = (n_studies, P.shape[-1])
    if dispersion <= 1:
        return rng.binomial(t, P, size=shape).astype(float)
    rho = (dispersion - 1) / (t - 1)
    a = np.clip(P * (1 - rho) / rho, 1e-12, None)
    b = np.clip((1 - P) * (1 - rho) / rho, 1e-12, None)
    p = rng.beta(np.broadcast_to(a, shape), np.broadcast_to(b, shape))
    return rng.binomial(t, p).astype(float)


# --------------------------------------------------------- TIDY TABLES
def _identified(fit: BatchFit, model: str, study: int = 0) -> bool:
    """Every free parameter has a finite, non-zero variance (not a separated, boundary fit)."""
    idx = [PARAMS.index(p) for p in ("theta0",) + _FREE[model]]
    var = np.diagonal(fit.cov[study])[idx]
    return bool(np.all(np.isfinite(var)) and np.all(var > 1e-12))


def _fit_group(cells: pd.DataFrame, include_k1: bool, label: str, level: float) -> pd.DataFrame:
    rows = [dict.fromkeys(LAW_TEST_COLUMNS, np.nan) | {"model": m, "description": _DESCRIPTION[m],
                                                         "n_params": 1 + len(_FREE[m])} for m in MODEL_NAMES]
    c, notes = stats.usable_cells(cells, include_k1, label)
    s, t, K, n = (c[col].to_numpy() for col in ("successes", "trials", "ensemble_size", "hardness"))
    for row in rows:
        row.update(n_cells=len(c), n_runs=int(t.sum()))

    def give_up(case):
        stats.warn(f"{label}: {case}")
        for row in rows:
            row["status"] = "; ".join([case] + notes)
        return pd.DataFrame(rows, columns=LAW_TEST_COLUMNS)

    if len(c) == 0:
        return give_up("no cells" + ("" if include_k1 else " with K > 1") + "; no fit")
    if s.sum() == 0 or (s == t).all():
        return give_up("all cells " + ("failed" if s.sum() == 0 else "succeeded") + "; psi at the boundary, no fit")
    n_ref = float(np.exp(np.mean(np.log(n))))
    fits = fit_models(s[None], t, K, n, n_ref=n_ref)
    law_aic = None
    for row in rows:
        m = row["model"]
        fit = fits[m]
        ci = intervals(fit, level)
        status = ["ok"] + notes
        if m != "law" and len(np.unique(K)) < 2 and "alpha" in _FREE[m]:
            status[0] = "one K only: alpha not identified; no test"
        elif m != "law" and len(np.unique(n)) < 2 and "theta1" in _FREE[m]:
            status[0] = "one n only: theta1 not identified; no test"
        elif m != "law" and len(c) <= fit.n_params:
            status[0] = f"{len(c)} cells for {fit.n_params} parameters; no test"
        elif not fit.converged[0]:
            status[0] = "did not converge; no test"
        elif m != "law" and not _identified(fit, m):
            status[0] = "a parameter at the boundary (no information: cells all 0 or all 1 where it acts); no test"
        usable = stats.status_ok(status[0])
        aic = float(-2 * fit.loglik[0] + 2 * fit.n_params)
        law_aic = aic if m == "law" else law_aic
        row.update(n_ref=n_ref, loglik=float(fit.loglik[0]), deviance=float(fit.deviance[0]), aic=aic,
                   delta_aic=aic - law_aic, dispersion=float(fit.dispersion[0]), status="; ".join(status))
        for name in ("psi", "alpha", "theta1"):
            est, lo, hi = (float(v[0]) for v in ci[name])
            no_interval = not usable or (name != "psi" and name not in _FREE[m])
            if m != "law" and not usable:  # no estimate to read (nor to draw) where the status says why
                est = np.nan
            row.update({name: est, f"{name}_low": np.nan if no_interval else lo,
                        f"{name}_high": np.nan if no_interval else hi})
        if m != "law" and usable:
            row.update({k: float(np.asarray(v).ravel()[0]) for k, v in lr_tests(fits["law"], fit).items()})
    return pd.DataFrame(rows, columns=LAW_TEST_COLUMNS)


def law_tests(cells: pd.DataFrame, by=stats.FIT_KEYS, include_k1: bool = False, level: float = 0.95) -> pd.DataFrame:
    """The law and its alternatives per group of `by` (study, variant, kind): one row per model.

    cells: a convergence table (ensemble_size, hardness, successes, trials and
    the keys); K = 1 is left out unless include_k1, as in `stats.fit_psi`, so
    the law's row is psi_fit.csv's ψ. Columns: the keys, then
    LAW_TEST_COLUMNS: estimates of ψ (at n_ref), α, θ1 with quasi-Wald
    intervals (NaN where fixed), loglik, deviance, aic, delta_aic (model −
    law), and for each alternative its LRT (lr_stat, df, p_value) and quasi F
    test (f_stat, f_df_denom, f_p_value) against the law; dispersion is the
    model's informative-cell Pearson χ²/df.
    """
    parts = []
    for keys, group in stats.groups_by(cells, by):
        k1 = include_k1 or keys.get("kind") in stats.K1_ONLY_KINDS
        part = _fit_group(group, k1, stats.group_label("law_tests", keys), level)
        parts.append(pd.concat([pd.DataFrame([keys] * len(part)), part], axis=1) if keys else part)
    keys = [k for k in by if k in cells.columns]
    if not parts:
        return pd.DataFrame(columns=keys + LAW_TEST_COLUMNS)
    return pd.concat(parts, ignore_index=True)


def rejections(tests: pd.DataFrame, by=stats.FIT_KEYS, level: float = 0.05) -> pd.DataFrame:
    """Whether the law is rejected, per group of `by` (study, variant, kind) of a `law_tests` table.

    Rejected: some alternative's quasi-F test against the law has p < `level`
    (the alternative with the smallest p is named). Columns: the keys, then
    law_rejected (True, False, or NA where no alternative could be tested),
    law_alternative, law_alpha (its α, NaN where fixed), law_f_p_value, and
    law_note: the text `flag_fits` adds to psi's status.
    """
    keys = [k for k in by if k in tests.columns]
    out = []
    for group_keys, rows in stats.groups_by(tests, keys):
        alt = rows[(rows["model"] != "law") & rows["status"].map(stats.status_ok) & rows["f_p_value"].notna()]
        row = dict(group_keys, law_rejected=pd.NA, law_alternative=None, law_alpha=np.nan,
                   law_f_p_value=np.nan, law_note="law not tested (no alternative could be fitted)")
        if len(alt):
            best = alt.loc[alt["f_p_value"].idxmin()]
            rejected = bool(best["f_p_value"] < level)
            alpha = float(best.get("alpha", np.nan)) if "alpha" in _FREE[best["model"]] else np.nan
            what = best["model"] + (f", alpha {alpha:.2f}" if np.isfinite(alpha) else "")
            p = float(best["f_p_value"])
            row.update(law_rejected=rejected, law_alternative=best["model"], law_alpha=alpha, law_f_p_value=p,
                       law_note=(f"law rejected ({what}, quasi-F p {p:.2g})" if rejected
                                 else f"law not rejected (best alternative {best['model']}, quasi-F p {p:.2g})"))
        out.append(row)
    cols = keys + ["law_rejected", "law_alternative", "law_alpha", "law_f_p_value", "law_note"]
    return pd.DataFrame(out, columns=cols)


def rejected(value) -> bool:
    """One `law_rejected` value as a plain boolean: NA (not tested) is not rejected."""
    return (not pd.isna(value)) and bool(value)


def is_rejected(values: pd.Series) -> pd.Series:
    """A `law_rejected` column as plain booleans (`rejected` of each value)."""
    return values.map(rejected).astype(bool)


def flag_fits(fits: pd.DataFrame, tests: pd.DataFrame, by=stats.FIT_KEYS, level: float = 0.05) -> pd.DataFrame:
    """psi_fit rows with the law's verdict beside psi: the `rejections` columns joined on the keys, and
    "law rejected (...)" added to the status of every fit whose law an alternative beats (psi is then
    the best one-parameter summary of cells the law does not describe)."""
    verdicts = rejections(tests, by, level)
    keys = [k for k in by if k in fits.columns and k in verdicts.columns]
    flagged = fits.merge(verdicts, on=keys, how="left") if keys else fits.assign(**verdicts.iloc[0].to_dict())
    rejected = is_rejected(flagged["law_rejected"])
    flagged.loc[rejected, "status"] = flagged.loc[rejected, "status"] + "; " + flagged.loc[rejected, "law_note"]
    return flagged


def law_residuals(cells: pd.DataFrame, tests: pd.DataFrame, by=stats.FIT_KEYS) -> pd.DataFrame:
    """Residuals of the law by K and by n, and what each alternative predicts of them.

    For each cell, residual = P_law − P_observed (as `stats.residuals_by_k`)
    and, per alternative, P_law − P_model: if an alternative explains the
    law's misfit, its curve follows the observed residuals. Returns columns:
    the keys, model ("observed" or a model name), axis ("ensemble_size" or
    "hardness"), value, mean_residual, sd_residual, n_cells. Only cells the
    fits used (K > 1 unless the test table includes K = 1) with a fit.
    """
    keys = [k for k in by if k in cells.columns and k in tests.columns]
    out = []
    for group_keys, group in stats.groups_by(cells[cells["trials"] > 0], keys):
        sel = np.ones(len(tests), bool)
        for k, v in group_keys.items():
            sel &= (tests[k] == v).to_numpy()
        fit_rows = tests[sel].set_index("model")
        if "law" not in fit_rows.index or not np.isfinite(fit_rows.loc["law", "psi"]):
            continue
        k_min = 1 if group_keys.get("kind") in stats.K1_ONLY_KINDS else 2
        g = group[group["ensemble_size"] >= k_min]
        K, n = g["ensemble_size"].to_numpy(float), g["hardness"].to_numpy(float)
        n_ref = float(fit_rows.loc["law", "n_ref"])
        law_p = predict(beta_of(fit_rows.loc["law", "psi"]), K, n, n_ref)
        curves = {"observed": law_p - g["successes"].to_numpy() / g["trials"].to_numpy()}
        for m in MODEL_NAMES[1:]:
            if m in fit_rows.index and np.isfinite(fit_rows.loc[m, "psi"]):
                r = fit_rows.loc[m]
                curves[m] = law_p - predict(beta_of(r["psi"], r["alpha"], r["theta1"]), K, n, n_ref)
        for m, resid in curves.items():
            for axis, values in (("ensemble_size", K), ("hardness", n)):
                frame = pd.DataFrame({"value": values, "r": resid})
                agg = frame.groupby("value")["r"].agg(mean_residual="mean", sd_residual="std", n_cells="size")
                out.append(agg.reset_index().assign(**group_keys, model=m, axis=axis))
    cols = keys + ["model", "axis", "value", "mean_residual", "sd_residual", "n_cells"]
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)
