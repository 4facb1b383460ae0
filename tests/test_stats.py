"""Tests of deepsea_scaling.stats on cells simulated from the law."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import optimize
from statsmodels.stats.proportion import proportion_confint

from deepsea_scaling.fit import PowerLawLink, beta_of, loglik
from deepsea_scaling.simulate import PAPER_KS, PAPER_NS, simulate_cells, simulate_runs
from deepsea_scaling.stats import (
    AnalysisWarning,
    compare_kinds,
    convergence_table,
    fit_psi,
    fit_psi_table,
    frontier_k,
    predicted_probability,
    residuals_by_k,
    wilson_interval,
)

REPLICATES = 200


def direct_ml_psi(cells: pd.DataFrame) -> float:
    """One-parameter binomial maximum likelihood by scipy, K > 1 only."""
    c = cells[cells["ensemble_size"] > 1]
    s, t, K, n = (c[col].to_numpy(float) for col in ("successes", "trials", "ensemble_size", "hardness"))
    res = optimize.minimize_scalar(lambda th: -loglik(beta_of(np.exp(th)), s, t, K, n),
                                   bounds=(-10, -1e-12), method="bounded", options={"xatol": 1e-12})
    return float(np.exp(res.x))


def fits_by_replicate(cells: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([fit_psi(g) for _, g in cells.groupby("replicate")], ignore_index=True)


def covers(fits: pd.DataFrame, truth: float, which: str) -> float:
    return float(((fits[f"psi_{which}_low"] <= truth) & (truth <= fits[f"psi_{which}_high"])).mean())


# ------------------------------------------------------------------ THE LAW
def test_wilson_matches_statsmodels():
    s = np.array([0, 1, 5, 16, 31, 32])
    t = np.full(6, 32)
    low, high = wilson_interval(s, t)
    ref_low, ref_high = proportion_confint(s, t, alpha=0.05, method="wilson")
    np.testing.assert_allclose(low, ref_low, atol=1e-12)
    np.testing.assert_allclose(high, ref_high, atol=1e-12)
    low0, high0 = wilson_interval([0], [0])
    assert np.isnan(low0[0]) and np.isnan(high0[0])


def test_wilson_interval_holds_the_proportion_at_zero_and_one():
    """At s = 0 or s = t the end is p exactly (rounding left 0 < low at 12 trials, which made the
    probability-vs-n figure's error bars negative and the default study fail)."""
    t = np.arange(1, 201)
    low, high = wilson_interval(np.zeros_like(t), t)
    assert (low == 0).all() and (high > 0).all()
    low, high = wilson_interval(t, t)
    assert (high == 1).all() and (low < 1).all()


def test_frontier_reaches_its_probability():
    n = np.array([3.0, 10.0, 30.0])
    for p in (0.05, 0.5, 0.95):
        k = frontier_k(0.85, p, n)
        np.testing.assert_allclose(predicted_probability(0.85, k, n), p, rtol=1e-10)
    assert np.isinf(frontier_k(0.5, 0.5, [5000.0])[0])


def test_link_is_the_law_and_its_derivatives_agree():
    K = np.array([1.0, 2.0, 10.0, 40.0])
    link = PowerLawLink(K)
    eta = np.log(0.85) * np.array([3.0, 10.0, 20.0, 50.0])
    p = link.inverse(eta)
    np.testing.assert_allclose(p, predicted_probability(0.85, K, eta / np.log(0.85)), rtol=1e-12)
    np.testing.assert_allclose(link(p), eta, rtol=1e-10)
    h = 1e-7
    np.testing.assert_allclose(link.deriv(p), (link(p + h * p) - link(p - h * p)) / (2 * h * p), rtol=1e-5)
    np.testing.assert_allclose(link.inverse_deriv(eta), 1 / link.deriv(p), rtol=1e-8)
    np.testing.assert_allclose(link.deriv2(p), (link.deriv(p + h * p) - link.deriv(p - h * p)) / (2 * h * p),
                               rtol=1e-4)


# --------------------------------------------------------- RECOVERY OF ψ
@pytest.mark.parametrize("psi", [0.70, 0.80, 0.87, 0.95])
def test_recovers_psi_and_equals_direct_ml(psi):
    cells = simulate_cells({"boot": psi}, PAPER_KS, PAPER_NS, trials=32, seed=11)
    fit = fit_psi(cells).iloc[0]
    assert fit["status"] == "ok"
    assert abs(fit["psi"] - psi) < 0.01
    assert abs(fit["psi"] - direct_ml_psi(cells)) < 1e-5
    for which in ("wald", "profile", "quasi"):
        assert fit[f"psi_{which}_low"] < fit["psi"] < fit[f"psi_{which}_high"]
    assert fit["k_min"] == 2 and fit["k_max"] == 40 and fit["n_min"] == 3 and fit["n_max"] == 96
    assert fit["n_cells"] == 12 * len(PAPER_NS) and fit["n_runs"] == 32 * fit["n_cells"]
    assert 0.9 < fit["r2"] <= 1 and np.isfinite(fit["aic"]) and fit["deviance"] > 0


def test_include_k1_uses_the_k1_cells():
    cells = simulate_cells({"boot": 0.8}, (1, 2, 4), (3, 5, 8), trials=32, seed=2)
    assert fit_psi(cells)["n_cells"].iloc[0] == 6
    assert fit_psi(cells, include_k1=True)["n_cells"].iloc[0] == 9


def test_wald_interval_coverage():
    cells = simulate_cells({"boot": 0.80}, PAPER_KS, PAPER_NS, trials=32, seed=2024, replicates=REPLICATES)
    fits = fits_by_replicate(cells)
    wald, profile = covers(fits, 0.80, "wald"), covers(fits, 0.80, "profile")
    print(f"coverage at psi=0.80: wald {wald:.3f}, profile {profile:.3f}, quasi {covers(fits, 0.80, 'quasi'):.3f}")
    assert 0.92 <= wald <= 0.98
    assert 0.92 <= profile <= 0.98


def test_quasi_interval_keeps_coverage_under_overdispersion():
    # Beta-binomial cells with intra-cell correlation 0.1: dispersion 1 + 31·0.1 ≈ 4.1, as published for BDQN.
    cells = simulate_cells({"boot": 0.80}, PAPER_KS, PAPER_NS, trials=32, seed=7, overdispersion=0.1,
                           replicates=REPLICATES)
    fits = fits_by_replicate(cells)
    wald, quasi = covers(fits, 0.80, "wald"), covers(fits, 0.80, "quasi")
    print(f"overdispersed coverage: wald {wald:.3f}, quasi {quasi:.3f}, "
          f"median dispersion_quasi {fits['dispersion_quasi'].median():.2f}")
    assert wald < 0.80
    assert 0.90 <= quasi <= 0.99
    assert 3.0 < fits["dispersion_quasi"].median() < 5.5


# ------------------------------------------------------ COMPARING KINDS
def test_lrt_rejects_different_psi():
    cells = simulate_cells({"boot": 0.80, "bootrp": 0.87}, PAPER_KS, PAPER_NS, trials=32, seed=5, replicates=50)
    out = compare_kinds(cells, by=("replicate",))
    assert len(out) == 50 and set(out["kind_a"]) == {"boot"} and set(out["kind_b"]) == {"bootrp"}
    assert (out["p_value"] < 0.05).all() and (out["f_p_value"] < 0.05).all()
    assert (out["cmh_p_value"] < 0.05).all()  # the law-free test over the same cells sees it too
    assert (out["psi_a"] < out["psi_pooled"]).all() and (out["psi_pooled"] < out["psi_b"]).all()


def test_lrt_holds_its_size():
    cells = simulate_cells({"boot": 0.85, "bootrp": 0.85}, PAPER_KS, PAPER_NS, trials=32, seed=3,
                           replicates=REPLICATES)
    out = compare_kinds(cells, by=("replicate",))
    size = float((out["p_value"] < 0.05).mean())
    cmh_size = float((out["cmh_p_value"] < 0.05).mean())
    print(f"LRT size at psi 0.85 vs 0.85: {size:.3f}; CMH {cmh_size:.3f}")
    assert 0.02 <= size <= 0.09
    assert cmh_size <= 0.09  # continuity-corrected: at most its level, give or take sampling


def test_quasi_f_test_holds_its_size_under_overdispersion():
    cells = simulate_cells({"boot": 0.85, "bootrp": 0.85}, PAPER_KS, PAPER_NS, trials=32, seed=3,
                           overdispersion=0.1, replicates=REPLICATES)
    out = compare_kinds(cells, by=("replicate",))
    lr_size, f_size = float((out["p_value"] < 0.05).mean()), float((out["f_p_value"] < 0.05).mean())
    print(f"overdispersed size: LR {lr_size:.3f}, quasi F {f_size:.3f}")
    assert lr_size > 0.2
    assert f_size <= 0.10


def test_compare_kinds_skips_eps_by_default_and_reports_absent_kind():
    cells = simulate_cells({"boot": 0.8, "bootrp": 0.87, "eps": 0.6}, (1, 2, 4, 8), (3, 6, 10, 14), seed=1)
    out = compare_kinds(cells)
    assert len(out) == 1 and (out["kind_a"].iloc[0], out["kind_b"].iloc[0]) == ("boot", "bootrp")
    with pytest.warns(AnalysisWarning, match="kind ghost has no cells"):
        out = compare_kinds(cells, kinds=["boot", "ghost"])
    assert np.isnan(out["p_value"].iloc[0]) and "ghost" in out["status"].iloc[0]
    with pytest.warns(AnalysisWarning, match="fewer than two kinds"):
        out = compare_kinds(cells[cells["kind"] == "boot"])
    assert np.isnan(out["lr_stat"].iloc[0])


# ----------------------------------------------------- CONVERGENCE TABLE
def test_convergence_table_counts_and_diverged_runs():
    runs = simulate_runs({"boot": 0.8, "eps": 0.6}, ks=(1, 3), ns=(4, 8), trials=16, seed=0,
                         num_log_points=10, diverged_rate=0.2)
    runs.loc[runs["diverged"], "discovered"] = True  # the table must not trust it
    runs.loc[runs["kind"] == "eps", "ensemble_size"] = 10  # the engine keeps the option; members is 1
    with pytest.warns(AnalysisWarning, match=r"diverged.*counted as not discovered"):
        cells = convergence_table(runs)
    assert list(cells.columns[:3]) == ["kind", "ensemble_size", "hardness"]  # absent study/variant skipped
    assert len(cells) == 2 * 2 + 2 and (cells["trials"] == 16).all()
    assert set(cells.loc[cells["kind"] == "eps", "ensemble_size"]) == {1}
    ok = runs["discovered"] & ~runs["diverged"]
    expected = ok.groupby([runs["kind"], runs["members"], runs["hardness"]]).sum().to_numpy()
    np.testing.assert_array_equal(cells["successes"].to_numpy(), expected)
    assert cells["diverged"].sum() == runs["diverged"].sum()
    assert (cells["p_low"] <= cells["p_hat"]).all() and (cells["p_hat"] <= cells["p_high"]).all()
    assert (cells["budget_episodes"] == 3000).all()
    assert cells["all_members_rate"].between(0, 1).all()


def test_fit_psi_table_groups_and_fits_eps_on_k1():
    cells = simulate_cells({"boot": 0.8, "bootrp": 0.87, "eps": 0.6}, (1, 2, 4, 8, 16), PAPER_NS[:20], seed=4)
    cells["variant"] = "default"
    fits = fit_psi_table(cells)
    assert list(fits["kind"]) == ["boot", "bootrp", "eps"] and (fits["variant"] == "default").all()
    assert (fits["status"] == "ok").all()
    truth = np.array([0.8, 0.87, 0.6])
    assert ((fits["psi_wald_low"] <= truth) & (truth <= fits["psi_wald_high"])).all()
    res = residuals_by_k(cells, fits)
    assert set(res.columns) >= {"kind", "ensemble_size", "mean_residual", "sd_residual", "n_cells"}
    assert res["mean_residual"].abs().max() < 0.1


# ------------------------------------------------------------ EDGE CASES
def _cells(rows):
    return pd.DataFrame(rows, columns=["ensemble_size", "hardness", "successes", "trials"])


@pytest.mark.parametrize("rows, case", [
    ([(2, 10, 0, 32), (4, 20, 0, 32)], "all 2 cells failed; psi is at the boundary 0"),
    ([(2, 3, 32, 32), (4, 5, 32, 32)], "all 2 cells succeeded; psi is at the boundary 1"),
    ([(1, 3, 10, 32), (1, 5, 3, 32)], "no cells with K > 1"),
    ([], "no cells"),
])
def test_fit_psi_without_estimate_warns_and_returns_nan(rows, case):
    with pytest.warns(AnalysisWarning, match=case):
        fit = fit_psi(_cells(rows), label="fit_psi[kind=boot, variant=default]")
    assert len(fit) == 1 and np.isnan(fit["psi"].iloc[0]) and np.isnan(fit["psi_wald_low"].iloc[0])
    assert fit["status"].iloc[0].startswith(case.split(";")[0])


def test_single_cell_fits_exactly_without_dispersion():
    with pytest.warns(AnalysisWarning, match="single cell"):
        fit = fit_psi(_cells([(4, 10, 12, 32)])).iloc[0]
    np.testing.assert_allclose(predicted_probability(fit["psi"], 4, 10), 12 / 32, rtol=1e-6)
    assert np.isnan(fit["dispersion"]) and np.isnan(fit["psi_quasi_low"]) and np.isfinite(fit["psi_profile_low"])


def test_zero_trial_cells_and_too_few_cells():
    cells = _cells([(2, 3, 20, 32), (4, 8, 10, 32), (8, 12, 0, 0)])
    with pytest.warns(AnalysisWarning, match="1 cell\\(s\\) with zero trials"):
        fit = fit_psi(cells).iloc[0]
    assert fit["n_cells"] == 2 and "empty cell" in fit["status"] and np.isfinite(fit["psi"])
    with pytest.warns(AnalysisWarning, match="too few cells"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "fit_psi: 1 cell", AnalysisWarning)
        fit = fit_psi(cells, min_cells=3).iloc[0]
    assert np.isnan(fit["psi"])


def test_fit_psi_table_names_the_group_in_its_warning():
    cells = simulate_cells({"boot": 0.8}, (2, 4), (40, 60, 80), seed=0)
    cells["successes"] = 0
    cells["variant"] = "lr=1e-3"
    with pytest.warns(AnalysisWarning, match=r"fit_psi\[variant=lr=1e-3, kind=boot\]: all 6 cells failed"):
        fits = fit_psi_table(cells)
    assert len(fits) == 1 and fits["status"].iloc[0].startswith("all 6 cells failed")


def test_no_warning_on_clean_data():
    cells = simulate_cells({"boot": 0.8, "bootrp": 0.87}, PAPER_KS, PAPER_NS[:20], seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_psi_table(cells)
        compare_kinds(cells)


def test_with_decisions_keeps_what_a_design_skipped_out_of_every_fit():
    """A reference design's skipped cells: not trained (trials 0) with the P assumed; a speculative extra's data kept aside."""
    from deepsea_scaling.stats import fit_psi_table, with_decisions

    cells = pd.DataFrame({"study": "s", "variant": "default", "kind": "boot", "ensemble_size": [2, 2, 4],
                          "hardness": [4, 6, 4], "trials": 4, "successes": [3, 0, 4], "diverged": 0})
    cells["p_hat"] = cells["successes"] / cells["trials"]
    decisions = pd.DataFrame({"study": "s", "variant": "default", "kind": "boot", "ensemble_size": [2, 2, 2, 4],
                              "hardness": [4, 6, 8, 4],
                              "decision": ["trained", "assumed_unsolved", "assumed_unsolved", "trained"],
                              "round": [0, 1, None, 0]})
    out = with_decisions(cells, decisions).set_index(["ensemble_size", "hardness"])
    assert list(out.index) == [(2, 4), (2, 6), (2, 8), (4, 4)]
    assert list(out["decision"]) == ["trained", "assumed_unsolved", "assumed_unsolved", "trained"]
    assert list(out["trials"]) == [4, 0, 0, 4] and out["p_hat"].isna().tolist() == [False, True, True, False]
    assert out.loc[(2, 6), "speculative_trials"] == 4 and pd.isna(out.loc[(2, 8), "speculative_trials"])
    assert out["p_assumed"].tolist()[1:3] == [0.0, 0.0] and out["p_assumed"].isna().tolist()[::3] == [True, True]
    with pytest.warns(Warning):  # the two skipped cells are left out of the fit, which says so
        fit = fit_psi_table(out.reset_index()).iloc[0]
    assert fit["n_cells"] == 2 and fit["n_runs"] == 8


def test_compare_variants_finds_the_variant_that_moves_psi():
    """Simulated: one variant with the baseline's psi, one with another; only the second is rejected."""
    from deepsea_scaling.simulate import simulate_cells
    from deepsea_scaling.stats import compare_variants

    parts = []
    for i, (variant, psi) in enumerate({"default": 0.80, "same": 0.80, "lower": 0.74}.items()):
        c = simulate_cells({"boot": psi}, (2, 4, 8, 16), (3, 5, 8, 12, 16, 24), trials=32, seed=10 + i)
        parts.append(c.assign(variant=variant, study="s"))
    out = compare_variants(pd.concat(parts, ignore_index=True)).set_index("variant_b")
    assert set(out.index) == {"same", "lower"} and (out["variant_a"] == "default").all()
    assert out.loc["same", "p_value"] > 0.01 and out.loc["lower", "p_value"] < 1e-6
    assert out.loc["lower", "psi_b"] == pytest.approx(0.74, abs=0.02)


def test_variant_table_puts_each_variants_psi_beside_its_test_against_the_baseline():
    """Simulated sweep: the table's psi are fit_psi_table's, its tests compare_variants', the baseline first."""
    from deepsea_scaling.simulate import simulate_cells
    from deepsea_scaling.stats import compare_variants, fit_psi_table, variant_table, variant_table_markdown

    parts = []
    for i, (variant, psi) in enumerate({"default": 0.80, "same": 0.80, "lower": 0.72}.items()):
        for kind in ("boot", "bootrp"):
            c = simulate_cells({kind: psi}, (1, 2, 4, 8), (3, 5, 8, 12, 16), trials=32, seed=20 + i)
            parts.append(c.assign(variant=variant, study="s"))
    cells = pd.concat(parts, ignore_index=True)
    fits, comparison = fit_psi_table(cells), compare_variants(cells)
    table = variant_table(cells, fits, comparison)
    assert len(table) == 6 and table.groupby("kind")["variant"].first().eq("default").all()
    for kind in ("boot", "bootrp"):
        rows = table[table["kind"] == kind].set_index("variant")
        assert list(rows.index) == ["default", "lower", "same"]  # baseline, then the most significant first
        assert rows.loc["default", "runs"] == 4 * 5 * 32  # all K, K = 1 included
        assert rows["discoveries"].to_dict() == cells[cells["kind"] == kind].groupby("variant")["successes"].sum().to_dict()
        fit = fits[fits["kind"] == kind].set_index("variant")
        assert rows.loc["lower", "psi"] == fit.loc["lower", "psi"]
        assert rows.loc["lower", "delta_psi"] == pytest.approx(fit.loc["lower", "psi"] - fit.loc["default", "psi"])
        assert np.isnan(rows.loc["default", "p_value"]) and rows.loc["lower", "p_value"] < 1e-6 < rows.loc["same", "p_value"]
        assert rows.loc["lower", "cmh_p_value"] < 1e-3 and rows.loc["same", "cmh_p_value"] > 0.01
    md = variant_table_markdown(table)
    assert md.count("\n") == 2 + 6 and "| boot | lower |" in md


def test_fit_and_comparison_converge_where_irls_from_single_cell_starts_ran_away():
    """The ablation's bootrp action_map=per_run cells: K = 8 nearly all discover, K = 2 rarely; IRLS
    started at the median single-cell psi (0.63) ran off to theta = 1e98 and reported no estimate."""
    from scipy import optimize

    from deepsea_scaling.stats import compare_variants, fit_psi, predicted_probability

    cells = pd.DataFrame(dict(ensemble_size=[2] * 4 + [8] * 4, hardness=[4, 6, 10, 14] * 2,
                              successes=[8, 4, 0, 0, 32, 32, 32, 28], trials=[32] * 8))
    s, t, K, n = (cells[c].to_numpy() for c in ("successes", "trials", "ensemble_size", "hardness"))

    def nll(psi):  # the law's binomial likelihood, maximised independently of the package
        p = predicted_probability(psi, K, n)
        return -np.sum(s * np.log(p) + (t - s) * np.log1p(-p))

    direct = optimize.minimize_scalar(nll, bounds=(0.5, 0.99), method="bounded", options={"xatol": 1e-9}).x
    fit = fit_psi(cells).iloc[0]
    assert fit["status"] == "ok" and fit["psi"] == pytest.approx(direct, abs=1e-5)
    both = pd.concat([cells.assign(variant="default"), cells.assign(variant="same")]).assign(study="s", kind="bootrp")
    row = compare_variants(both).iloc[0]
    assert row["status"] == "ok" and row["psi_b"] == pytest.approx(direct, abs=1e-5)
    assert row["lr_stat"] == pytest.approx(0.0, abs=1e-6) and row["p_value"] == pytest.approx(1.0, abs=1e-4)


def test_cmh_p_value_equals_statsmodels_on_the_informative_cells():
    """Strata where both variants all discover (or none do) are dropped; the rest is one StratifiedTable."""
    from statsmodels.stats.contingency_tables import StratifiedTable

    from deepsea_scaling.stats import cmh_p_value

    a = pd.DataFrame(dict(ensemble_size=[2, 2, 8, 8], hardness=[4, 10, 4, 10], successes=[10, 2, 32, 20], trials=[32] * 4))
    b = a.assign(successes=[20, 6, 32, 28])
    tables = [np.array([[10, 22], [20, 12]]), np.array([[2, 30], [6, 26]]), np.array([[20, 12], [28, 4]])]
    expected = StratifiedTable(tables).test_null_odds(correction=True).pvalue
    assert cmh_p_value(a, b) == pytest.approx(expected) and cmh_p_value(a, b) < 0.01
    assert np.isnan(cmh_p_value(a.iloc[[2]], b.iloc[[2]]))  # 32/32 against 32/32: no information
