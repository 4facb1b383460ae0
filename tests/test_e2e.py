"""End to end: the tiny study trained for real, every table and figure, and the report."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from conftest import run_snakemake
from deepsea_scaling.stats import status_ok

pytestmark = pytest.mark.slow

FIGURES = ["frontier_and_heatmaps", "residuals", "collapse", "probability_vs_n", "law_tests"]


@pytest.fixture(scope="module")
def tiny_run(tiny_study):
    """The tiny study built with --cores 2 (conftest.tiny_study: trained once per session)."""
    return tiny_study


def test_every_table_and_figure(tiny_run):
    for table in ["runs.parquet", "convergence.csv", "psi_fit.csv", "kind_comparison.csv", "residuals.csv",
                  "law_tests.csv"]:
        assert (tiny_run / "results" / "tiny" / table).stat().st_size > 0, table
    from PIL import Image

    for figure in FIGURES:
        png = tiny_run / "plots" / "tiny" / f"{figure}.png"
        with Image.open(png) as image:  # a real picture, not an empty canvas
            assert image.size[0] > 300 and image.size[1] > 200, (figure, image.size)
            assert len(image.convert("L").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20, figure
        assert (tiny_run / "plots" / "tiny" / f"{figure}.pdf").read_bytes().startswith(b"%PDF"), figure
    # one table and one sidecar per training group (tiny trains cell by cell: 10 cells, one shard each)
    tables = sorted((tiny_run / "results" / "tiny" / "runs").glob("*.parquet"))
    assert len(tables) == 10 and all(t.with_suffix(".json").exists() for t in tables)


def test_table_rows(tiny_run):
    runs = pd.read_parquet(tiny_run / "results" / "tiny" / "runs.parquet")
    assert len(runs) == 10 * 4  # cells x seeds per cell
    assert set(runs["study"]) == {"tiny"} and set(runs["variant"]) == {"default"}
    seeds = runs.groupby(["kind", "ensemble_size", "hardness"])["seed"].apply(lambda s: sorted(s.tolist()))
    assert len(seeds) == 10 and all(s == [0, 1, 2, 3] for s in seeds), seeds
    assert (runs["num_episodes"] == 400).all()
    # The warm-up is outside the budget, then 400 * n // 24 learning steps (the research code's count): each of
    # the 24 environments completes its share of the 400 episodes but at most one
    assert (runs["total_episodes"] > runs["num_episodes"] - runs["num_envs"]).all(), runs["total_episodes"]
    found = runs["discovered"].astype(bool)
    assert (runs.loc[found, "episodes_to_discovery"] <= runs.loc[found, "total_episodes"]).all()
    assert runs.loc[~found, "episodes_to_discovery"].isna().all()
    assert runs["diversity"].map(len).eq(10).all()  # num_log_points of the tiny study


def test_convergence_table_is_the_runs_arithmetic(tiny_run):
    """Each cell's counts and Wilson interval, recomputed from the run table by hand."""
    runs = pd.read_parquet(tiny_run / "results" / "tiny" / "runs.parquet")
    cells = pd.read_csv(tiny_run / "results" / "tiny" / "convergence.csv")
    assert len(cells) == 10 and (cells["trials"] == 4).all()
    runs = runs.assign(ensemble_size=np.where(runs["kind"] == "eps", runs["members"], runs["ensemble_size"]))
    by_hand = (runs.assign(ok=runs["discovered"] & ~runs["diverged"])
               .groupby(["kind", "ensemble_size", "hardness"])["ok"].sum())
    z = 1.959963984540054
    for cell in cells.itertuples():
        s, t = by_hand[(cell.kind, cell.ensemble_size, cell.hardness)], 4
        assert cell.successes == s and cell.p_hat == s / t
        centre = (s + z * z / 2) / (t + z * z)
        half = z * np.sqrt(s * (t - s) / t + z * z / 4) / (t + z * z)
        assert cell.p_low == pytest.approx(max(0.0, centre - half), abs=1e-12)
        assert cell.p_high == pytest.approx(min(1.0, centre + half), abs=1e-12)


def _log_likelihood(psi, s, t, K, n):
    p = np.clip(1 - (1 - psi ** n) ** K, 1e-300, 1 - 1e-16)
    return float(np.sum(s * np.log(p) + (t - s) * np.log1p(-p)))


def test_psi_and_kind_comparison_equal_a_direct_maximum_likelihood(tiny_run):
    """psi_fit.csv and kind_comparison.csv against scipy's maximisation of the law's likelihood."""
    from scipy import optimize

    cells = pd.read_csv(tiny_run / "results" / "tiny" / "convergence.csv")
    fits = pd.read_csv(tiny_run / "results" / "tiny" / "psi_fit.csv").set_index("kind")
    best = {}
    for kind in ("boot", "bootrp"):
        c = cells[(cells["kind"] == kind) & (cells["ensemble_size"] > 1)]
        args = tuple(c[col].to_numpy(float) for col in ("successes", "trials", "ensemble_size", "hardness"))
        if not 0 < args[0].sum() < args[1].sum():
            assert np.isnan(fits.loc[kind, "psi"]), fits.loc[kind]  # at a boundary: no estimate
            continue
        opt = optimize.minimize_scalar(lambda x: -_log_likelihood(x, *args), bounds=(1e-6, 1 - 1e-9),
                                       method="bounded", options={"xatol": 1e-10})
        assert fits.loc[kind, "psi"] == pytest.approx(opt.x, abs=1e-4), kind
        assert fits.loc[kind, "psi_quasi_low"] <= fits.loc[kind, "psi"] <= fits.loc[kind, "psi_quasi_high"]
        assert fits.loc[kind, "n_cells"] == len(c) and fits.loc[kind, "n_runs"] == 4 * len(c)
        best[kind] = (opt.x, -opt.fun, args)
    comparison = pd.read_csv(tiny_run / "results" / "tiny" / "kind_comparison.csv")
    assert len(comparison) == 1
    row = comparison.iloc[0]
    if len(best) < 2:
        assert row["status"] != "ok" and np.isnan(row["lr_stat"]), row
        return
    both = tuple(np.concatenate([best["boot"][2][i], best["bootrp"][2][i]]) for i in range(4))
    pooled = optimize.minimize_scalar(lambda x: -_log_likelihood(x, *both), bounds=(1e-6, 1 - 1e-9),
                                      method="bounded", options={"xatol": 1e-10})
    lr = 2 * (best["boot"][1] + best["bootrp"][1] + pooled.fun)
    assert row["lr_stat"] == pytest.approx(max(lr, 0.0), abs=1e-3)
    assert row["psi_pooled"] == pytest.approx(pooled.x, abs=1e-4)


def test_residuals_table_is_predicted_minus_observed(tiny_run):
    cells = pd.read_csv(tiny_run / "results" / "tiny" / "convergence.csv")
    fits = pd.read_csv(tiny_run / "results" / "tiny" / "psi_fit.csv").set_index("kind")
    residuals = pd.read_csv(tiny_run / "results" / "tiny" / "residuals.csv")
    fitted = [k for k in fits.index if np.isfinite(fits.loc[k, "psi"])]
    assert sorted(residuals["kind"].unique()) == sorted(fitted)
    for row in residuals.itertuples():
        c = cells[(cells["kind"] == row.kind) & (cells["ensemble_size"] == row.ensemble_size)]
        r = 1 - (1 - fits.loc[row.kind, "psi"] ** c["hardness"]) ** c["ensemble_size"] - c["p_hat"]
        assert row.n_cells == len(c)
        assert row.mean_residual == pytest.approx(r.mean(), abs=1e-9)


def test_then_nothing_to_do(tiny_run):
    result = run_snakemake(tiny_run, "-n", "--config", "study=tiny")
    assert "Nothing to be done" in result.output, result.output[-3000:]


def test_results_page_quotes_the_tables_and_copies_the_figures(tiny_run):
    result = run_snakemake(tiny_run, "--cores", "1", "docs/results/tiny/README.md", "--config", "study=tiny",
                           timeout=300)
    assert result.returncode == 0, result.output[-3000:]
    page_dir = tiny_run / "docs" / "results" / "tiny"
    page = (page_dir / "README.md").read_text()
    fits = pd.read_csv(tiny_run / "results" / "tiny" / "psi_fit.csv")
    for row in fits.itertuples():
        if status_ok(row.status):
            assert f"ψ = {row.psi:.3f} [{row.psi_quasi_low:.3f}, {row.psi_quasi_high:.3f}]" in page
    assert "10 training jobs" in page  # one per group table, all of them
    for figure in FIGURES + ["psi_by_budget"]:
        assert (page_dir / f"{figure}.png").read_bytes() == (tiny_run / "plots" / "tiny" / f"{figure}.png").read_bytes()
        assert f"]({figure}.png)" in page
    assert pd.read_parquet(page_dir / "runs.parquet").equals(pd.read_parquet(tiny_run / "results" / "tiny" / "runs.parquet"))


def test_report_is_self_contained(tiny_run):
    result = run_snakemake(tiny_run, "--config", "study=tiny", "--report", "report.html", timeout=300)
    assert result.returncode == 0, result.output[-3000:]
    html = (tiny_run / "report.html").read_text()
    assert len(html) > 100_000
    # nothing fetched from the network when it opens
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']https?://""", html)
    for name in ["convergence.csv", "psi_fit.csv", "kind_comparison.csv", "residuals.csv",
                  "law_tests.csv"] + [
        f"{f}.png" for f in FIGURES
    ]:
        assert name in html, name
