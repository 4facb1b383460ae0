"""Tests of deepsea_scaling.law: the alternatives to the law, their fits and their tests.

Simulated studies use the reference grid (K > 1 as the ψ fit, n ≤ 40, 32
trials per cell) and the published (ψ, dispersion) pairs; each test fits
hundreds of studies at once (vectorised), a second or two each.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

from deepsea_scaling import fit, law, plots, stats
from deepsea_scaling.simulate import PAPER_KS, PAPER_NS

KS = np.array([k for k in PAPER_KS if k > 1], float)
NS = np.array([n for n in PAPER_NS if n <= 40], float)
K_GRID, N_GRID = (a.ravel() for a in np.meshgrid(KS, NS, indexing="ij"))
N_REF = float(np.exp(np.mean(np.log(N_GRID))))
TRIALS = 32
STUDIES = 400
# The published law fits: BDQN ψ = 0.80 with dispersion 4.1, RP-BDQN ψ = 0.87 with 8.1.
PUBLISHED = [(0.80, 4.1), (0.87, 8.1)]


def simulate(beta, studies=STUDIES, dispersion=4.1, seed=0):
    rng = np.random.default_rng(seed)
    return law.simulate_cells(rng, beta, K_GRID, N_GRID, TRIALS, studies, dispersion=dispersion, n_ref=N_REF)


def cells_frame(successes, kind="boot"):
    return pd.DataFrame({"kind": kind, "ensemble_size": K_GRID.astype(int), "hardness": N_GRID.astype(int),
                         "successes": successes.astype(int), "trials": TRIALS})


# ------------------------------------------------------------ THE FAMILY
def test_family_at_the_null_is_the_law():
    p = law.predict(law.beta_of(0.83), K_GRID, N_GRID, N_REF)
    np.testing.assert_allclose(p, stats.predicted_probability(0.83, K_GRID, N_GRID), rtol=1e-12)
    # α scales K; θ1 tilts ψ with n around n_ref
    np.testing.assert_allclose(law.predict(law.beta_of(0.83, alpha=2.0), K_GRID, N_GRID, N_REF),
                               stats.predicted_probability(0.83, K_GRID**2, N_GRID), rtol=1e-12)
    psi_n = 0.83 * (N_GRID / N_REF) ** 0.05
    np.testing.assert_allclose(law.predict(law.beta_of(0.83, theta1=0.05), K_GRID, N_GRID, N_REF),
                               stats.predicted_probability(psi_n, K_GRID, N_GRID), rtol=1e-10)


def test_score_matches_numerical_gradient():
    s = simulate(law.beta_of(0.8, alpha=1.2, theta1=0.02), studies=2)
    beta = np.array([[np.log(0.79), 0.01, 1.1], [np.log(0.82), -0.02, 0.9]])
    free = ("theta0", "theta1", "alpha")
    score, _ = fit.score_info(beta, s, TRIALS, K_GRID, N_GRID, N_REF, free)
    for j in range(3):
        h = np.zeros(3)
        h[j] = 1e-6
        num = (fit.loglik(beta + h, s, TRIALS, K_GRID, N_GRID, N_REF)
               - fit.loglik(beta - h, s, TRIALS, K_GRID, N_GRID, N_REF)) / 2e-6
        np.testing.assert_allclose(score[:, j], num, rtol=1e-5)


def test_law_fit_equals_fit_psi():
    """The law's row is the GLM of stats.fit_psi: same ψ, deviance, AIC and dispersion."""
    cells = cells_frame(simulate(law.beta_of(0.8), studies=1)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tests = law.law_tests(cells)
    glm = stats.fit_psi(cells).iloc[0]
    row = tests[tests["model"] == "law"].iloc[0]
    assert row["psi"] == pytest.approx(glm["psi"], rel=1e-9)
    assert row["deviance"] == pytest.approx(glm["deviance"], rel=1e-9)
    assert row["aic"] == pytest.approx(glm["aic"], rel=1e-9)
    assert row["dispersion"] == pytest.approx(glm["dispersion_quasi"], rel=1e-8)
    assert (row["psi_low"], row["psi_high"]) == pytest.approx((glm["psi_quasi_low"], glm["psi_quasi_high"]), rel=1e-8)


# ----------------------------------------------- SIZE UNDER OVERDISPERSION
@pytest.mark.parametrize("psi,dispersion", PUBLISHED)
def test_f_test_holds_its_size_under_published_overdispersion(psi, dispersion):
    """Data from the law, beta-binomial with the published dispersion: the F tests reject 5% ± 2%.

    The plain χ² LRT ignores the dispersion and rejects far too often: that is
    why the table reports the F version.
    """
    s = simulate(law.beta_of(psi), studies=1000, dispersion=dispersion, seed=int(dispersion * 10))
    fits = law.fit_models(s, TRIALS, K_GRID, N_GRID, n_ref=N_REF)
    assert all(f.converged.all() for f in fits.values())
    assert np.median(fits["law"].dispersion) == pytest.approx(dispersion, rel=0.1)
    for model in law.MODEL_NAMES[1:]:
        tests = law.lr_tests(fits["law"], fits[model])
        rate = np.mean(tests["f_p_value"] < 0.05)
        assert 0.03 <= rate <= 0.07, f"{model}: F test rejects the true law in {rate:.1%} of studies"
        assert np.mean(tests["p_value"] < 0.05) > 0.2, f"{model}: the χ² LRT should over-reject here"


# --------------------------------------------------------- RECOVERY
RECOVERY = [
    ("effective_k", dict(alpha=0.7)),  # members that discover together
    ("effective_k", dict(alpha=1.3)),
    ("psi_drift", dict(theta1=0.03)),
    ("psi_drift", dict(theta1=-0.03)),
    ("both", dict(alpha=0.8, theta1=0.04)),
]


@pytest.mark.parametrize("model,truth", RECOVERY, ids=[f"{m}-{t}" for m, t in RECOVERY])
def test_alternative_recovered_within_its_interval(model, truth):
    """Data from an alternative (dispersion 4.1): its quasi intervals cover the truth ~95%
    of the time, exclude the law's value, and the F test rejects the law."""
    s = simulate(law.beta_of(0.8, **truth), dispersion=4.1, seed=len(str(truth)))
    fits = law.fit_models(s, TRIALS, K_GRID, N_GRID, models=("law", model), n_ref=N_REF)
    ci = law.intervals(fits[model])
    for name, value in {"psi": 0.8, **truth}.items():
        est, low, high = ci[name]
        coverage = np.mean((low <= value) & (value <= high))
        assert 0.915 <= coverage <= 0.985, f"{name} = {value}: covered in {coverage:.1%} of studies"
        null = {"alpha": 1.0, "theta1": 0.0}.get(name)
        if null is not None:
            assert np.mean((low > null) | (high < null)) > 0.9, f"{name}: interval rarely excludes the law's {null}"
    assert np.mean(law.lr_tests(fits["law"], fits[model])["f_p_value"] < 0.05) > 0.9


def test_alpha_two_is_not_mistaken_for_the_law():
    """A test that data from α = 2 would also pass is no test: α = 2 is rejected, α = 1 is not taken for 2."""
    s2 = simulate(law.beta_of(0.8, alpha=2.0), studies=200, dispersion=8.1, seed=2)
    fits2 = law.fit_models(s2, TRIALS, K_GRID, N_GRID, models=("law", "effective_k"), n_ref=N_REF)
    assert np.all(law.lr_tests(fits2["law"], fits2["effective_k"])["f_p_value"] < 0.05)
    _, low2, high2 = law.intervals(fits2["effective_k"])["alpha"]
    assert np.mean((low2 <= 2) & (2 <= high2)) > 0.9 and np.all(low2 > 1)
    s1 = simulate(law.beta_of(0.8), studies=200, dispersion=8.1, seed=1)
    fits1 = law.fit_models(s1, TRIALS, K_GRID, N_GRID, models=("law", "effective_k"), n_ref=N_REF)
    _, low1, high1 = law.intervals(fits1["effective_k"])["alpha"]
    assert np.all(high1 < 2)


# ---------------------------------------------------------- TIDY TABLE
def test_law_tests_table_per_kind():
    boot = cells_frame(simulate(law.beta_of(0.8, alpha=0.7), studies=1, seed=3)[0], "boot")
    rp = cells_frame(simulate(law.beta_of(0.87), studies=1, dispersion=8.1, seed=4)[0], "bootrp")
    k1 = pd.DataFrame({"kind": "boot", "ensemble_size": 1, "hardness": [4, 6], "successes": [0, 32], "trials": 32})
    cells = pd.concat([boot, rp, k1], ignore_index=True).assign(study="s", variant="default")
    tests = law.law_tests(cells)
    assert list(tests.columns) == ["study", "variant", "kind"] + law.LAW_TEST_COLUMNS
    assert len(tests) == 2 * len(law.MODEL_NAMES)
    assert (tests["status"] == "ok").all()
    assert (tests["n_cells"] == len(K_GRID)).all()  # K = 1 left out, as in fit_psi
    law_rows = tests[tests["model"] == "law"]
    assert law_rows[["lr_stat", "f_p_value", "alpha_low", "theta1_low"]].isna().all().all()
    assert (law_rows["delta_aic"] == 0).all()
    eff = tests[tests["model"] == "effective_k"].set_index("kind")
    assert eff.loc["boot", "alpha_high"] < 1 and eff.loc["boot", "f_p_value"] < 1e-3
    assert eff.loc["boot", "delta_aic"] < -10
    assert eff.loc["bootrp", "alpha_low"] < 1 < eff.loc["bootrp", "alpha_high"]
    assert eff["df"].eq(1).all() and tests[tests["model"] == "both"]["df"].eq(2).all()


def test_psi_fit_says_where_the_law_is_rejected():
    """flag_fits: the law's verdict beside psi, from the law tests of the same cells; psi itself unchanged."""
    boot = cells_frame(simulate(law.beta_of(0.8, alpha=0.7), studies=1, seed=3)[0], "boot")
    rp = cells_frame(simulate(law.beta_of(0.87), studies=1, dispersion=8.1, seed=4)[0], "bootrp")
    cells = pd.concat([boot, rp], ignore_index=True).assign(study="s", variant="default")
    tests = law.law_tests(cells)
    fits = stats.fit_psi_table(cells, by=stats.FIT_KEYS, include_k1=False)
    flagged = law.flag_fits(fits, tests).set_index("kind")
    pd.testing.assert_series_equal(flagged["psi"], fits.set_index("kind")["psi"])
    best = tests[(tests["kind"] == "boot") & (tests["model"] != "law")].sort_values("f_p_value").iloc[0]
    assert law.is_rejected(flagged["law_rejected"]).to_dict() == {"boot": True, "bootrp": False}
    assert flagged.loc["boot", "law_alternative"] == best["model"]
    assert flagged.loc["boot", "law_f_p_value"] == best["f_p_value"] < 1e-3
    assert flagged.loc["boot", "status"].startswith("ok; law rejected (")
    assert stats.status_ok(flagged.loc["boot", "status"])
    assert not pd.isna(flagged.loc["bootrp", "law_rejected"]) and flagged.loc["bootrp", "status"] == "ok"
    assert "law not rejected" in flagged.loc["bootrp", "law_note"]
    # where no alternative can be tested, the verdict is missing, not "holds"
    two = pd.DataFrame({"kind": "boot", "ensemble_size": [2, 4], "hardness": 8, "successes": [9, 15], "trials": 32})
    lone = law.flag_fits(stats.fit_psi_table(two, include_k1=False), law.law_tests(two)).iloc[0]
    assert pd.isna(lone["law_rejected"]) and lone["status"] == "ok" and "not tested" in lone["law_note"]


def test_law_tests_reports_what_it_cannot_fit():
    failed = pd.DataFrame({"kind": "boot", "ensemble_size": [2, 4], "hardness": [30, 40], "successes": 0, "trials": 32})
    one_k = pd.DataFrame({"kind": "bootrp", "ensemble_size": 4, "hardness": [4, 8, 12], "successes": [30, 12, 2],
                          "trials": 32})
    with pytest.warns(stats.AnalysisWarning, match="all cells failed"):
        tests = law.law_tests(pd.concat([failed, one_k], ignore_index=True))
    boot = tests[tests["kind"] == "boot"]
    assert boot["psi"].isna().all() and boot["status"].str.contains("all cells failed").all()
    rp = tests[tests["kind"] == "bootrp"].set_index("model")
    assert rp.loc["law", "status"] == "ok" and np.isfinite(rp.loc["law", "psi"])
    assert rp.loc["effective_k", "status"].startswith("one K only")
    assert rp.loc[["effective_k", "both"], ["f_p_value", "alpha_low"]].isna().all().all()
    few = pd.DataFrame({"kind": "boot", "ensemble_size": [2, 4, 8], "hardness": [4, 8, 12],
                        "successes": [20, 12, 9], "trials": 32})
    both = law.law_tests(few).set_index("model").loc["both"]
    assert both["status"].startswith("3 cells for 3 parameters") and both[["f_p_value", "alpha"]].isna().all()


def test_law_residuals_and_figure():
    cells = cells_frame(simulate(law.beta_of(0.8, alpha=0.7), studies=1, dispersion=1.0, seed=5)[0])
    tests = law.law_tests(cells)
    res = law.law_residuals(cells, tests)
    assert set(res["model"]) == {"observed", *law.MODEL_NAMES[1:]}
    assert set(res["axis"]) == {"ensemble_size", "hardness"}
    by_k = res[(res["model"] == "observed") & (res["axis"] == "ensemble_size")].set_index("value")
    ref = stats.residuals_by_k(cells, stats.fit_psi_table(cells)).set_index("ensemble_size")
    np.testing.assert_allclose(by_k["mean_residual"], ref.loc[by_k.index, "mean_residual"], rtol=1e-6, atol=1e-9)
    # the effective-K alternative follows the law's misfit where data come from it
    eff = res[(res["model"] == "effective_k") & (res["axis"] == "ensemble_size")].set_index("value")
    obs = by_k.loc[eff.index, "mean_residual"]
    assert np.sum((obs - eff["mean_residual"]) ** 2) < 0.6 * np.sum(obs**2)
    assert eff["mean_residual"].iloc[0] < 0 < eff["mean_residual"].iloc[-1]  # α < 1: the law under-predicts small K, over-predicts large K
    fig = plots.plot_law_tests(res, tests, caption="test")
    assert len(fig.axes) == 2
    empty = plots.plot_law_tests(law.law_residuals(cells.iloc[:0], tests.iloc[:0]), None)
    assert len(empty.axes) == 2
