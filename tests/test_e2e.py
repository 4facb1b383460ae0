"""End to end: the tiny study trained for real, every table and figure, and the report."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from conftest import run_snakemake

pytestmark = pytest.mark.slow

FIGURES = ["frontier_and_heatmaps", "residuals", "collapse", "probability_vs_n", "law_tests"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny study built with --cores 2 in a copy of the workflow (about 2-4 min on a CPU)."""
    pytest.importorskip("deepsea_scaling.engine")
    from conftest import copy_workflow

    wf = copy_workflow(tmp_path_factory.mktemp("e2e"))
    # gpu=2: two training shards at once on the CPU (the profile's gpu=1 is for one GPU)
    result = run_snakemake(wf, "--cores", "2", "--resources", "gpu=2", "--config", "study=tiny",
                           timeout=1500)
    assert result.returncode == 0, result.output[-5000:]
    return wf


def test_every_table_and_figure(tiny_run):
    for table in ["runs.parquet", "convergence.csv", "psi_fit.csv", "kind_comparison.csv", "law_tests.csv"]:
        assert (tiny_run / "results" / "tiny" / table).stat().st_size > 0, table
    for figure in FIGURES:
        for suffix in (".png", ".pdf"):
            assert (tiny_run / "plots" / "tiny" / f"{figure}{suffix}").stat().st_size > 0, figure
    sidecars = list((tiny_run / "results" / "tiny" / "runs").rglob("seeds_*.json"))
    assert len(sidecars) == 20


def test_table_rows(tiny_run):
    runs = pd.read_parquet(tiny_run / "results" / "tiny" / "runs.parquet")
    assert len(runs) == 10 * 4  # cells x seeds per cell
    assert set(runs["study"]) == {"tiny"} and set(runs["variant"]) == {"default"}
    seeds = runs.groupby(["kind", "ensemble_size", "hardness"])["seed"].apply(lambda s: sorted(s.tolist()))
    assert len(seeds) == 10 and all(s == [0, 1, 2, 3] for s in seeds), seeds

    cells = pd.read_csv(tiny_run / "results" / "tiny" / "convergence.csv")
    assert len(cells) == 10  # one row per cell
    assert (cells["trials"] == 4).all()
    for column in ["successes", "p_hat", "p_low", "p_high"]:
        assert column in cells.columns

    fits = pd.read_csv(tiny_run / "results" / "tiny" / "psi_fit.csv")
    assert {"boot", "bootrp"} <= set(fits["kind"])
    assert "psi" in fits.columns
    assert fits.loc[fits["kind"].isin(["boot", "bootrp"]), "psi"].notna().any(), fits

    comparison = pd.read_csv(tiny_run / "results" / "tiny" / "kind_comparison.csv")
    assert len(comparison) >= 1


def test_then_nothing_to_do(tiny_run):
    result = run_snakemake(tiny_run, "-n", "--config", "study=tiny")
    assert "Nothing to be done" in result.output, result.output[-3000:]


def test_report_is_self_contained(tiny_run):
    result = run_snakemake(tiny_run, "--config", "study=tiny", "--report", "report.html", timeout=300)
    assert result.returncode == 0, result.output[-3000:]
    html = (tiny_run / "report.html").read_text()
    assert len(html) > 100_000
    # nothing fetched from the network when it opens
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']https?://""", html)
    for name in ["convergence.csv", "psi_fit.csv", "kind_comparison.csv", "law_tests.csv"] + [f"{f}.png" for f in FIGURES]:
        assert name in html, name


def test_grouped_training_gives_the_same_rows(tiny_run):
    """train_grouping: shape trains boot with bootrp (one program per shape and shard): same rows."""
    import yaml

    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    config["studies"]["tinyshape"] = dict(config["studies"]["tiny"], train_grouping="shape")
    (tiny_run / "grouped.yaml").write_text(yaml.safe_dump(config))
    args = ["results/tinyshape/runs.parquet", "--configfile", "grouped.yaml", "--config", "study=tinyshape"]
    counts = run_snakemake(tiny_run, "-n", *args).job_counts()
    groups = sum(v for k, v in counts.items() if k.startswith("train_group_"))
    assert "train_shard" not in counts and groups == 12, counts  # 20 shards of 10 cells -> 12 jobs
    result = run_snakemake(tiny_run, *args, "--cores", "2", timeout=900)
    assert result.returncode == 0, result.output[-3000:]
    keys = ["kind", "variant", "ensemble_size", "hardness", "seed"]
    alone = pd.read_parquet(tiny_run / "results" / "tiny" / "runs.parquet").drop(columns="study")
    grouped = pd.read_parquet(tiny_run / "results" / "tinyshape" / "runs.parquet").drop(columns="study")
    alone, grouped = (t.sort_values(keys).reset_index(drop=True) for t in (alone, grouped))
    pd.testing.assert_frame_equal(alone, grouped[alone.columns])
