"""The reference design end to end: real training, round by round through checkpoints.

The cells trained and skipped are exactly the research code's protocol's on
the outcomes the run produced; the convergence table lists the skipped cells
as not trained, with the P the protocol assumed. (The frontier design's end
to end tests: test_frontier_e2e.py.)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import copy_workflow, run_snakemake, write_study_config

pytestmark = pytest.mark.slow

TINY = {"rb_size": 1000, "learning_starts": 500, "num_log_points": 10}
REFERENCE = dict(
    kinds={"boot": {"ensemble_sizes": [2, 4], "hardness": [4, 6, 10]}},
    seeds_per_cell=4, shard_size=4, num_episodes=400, hyperparameters=TINY,
    design="reference", reference_limit=1,
)
TABLES = ["convergence.csv", "psi_fit.csv", "residuals.csv"]


def _targets(study):
    return [f"results/{study}/{t}" for t in TABLES] + [f"results/{study}/design/decisions.csv"]


def _tables(wf: Path, study: str) -> list[Path]:
    return sorted((wf / "results" / study / "runs").glob("*.parquet"))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, jax_cache_env):
    pytest.importorskip("deepsea_scaling.engine")
    tmp = tmp_path_factory.mktemp("rref")
    wf = copy_workflow(tmp / "wf")
    config = write_study_config(tmp / "rref.yaml", "rref", **REFERENCE)
    result = run_snakemake(wf, *_targets("rref"), "--cores", "2", "--configfile", str(config),
                           env=jax_cache_env, timeout=900)
    assert result.returncode == 0, result.output[-4000:]
    return wf, config, jax_cache_env


def test_reference_design_makes_the_protocols_decisions(reference_run):
    from deepsea_scaling import designs

    wf, _, _ = reference_run
    runs = pd.read_parquet(wf / "results" / "rref" / "runs.parquet")
    outcome = {(r.kind, r.ensemble_size, r.hardness): (int(r.successes), int(r.trials)) for r in (
        runs.assign(ok=runs["discovered"] & ~runs["diverged"])
        .groupby(["kind", "ensemble_size", "hardness"])["ok"].agg(successes="sum", trials="size")
        .reset_index().itertuples())}
    truth = designs.reference_protocol(["boot"], [2, 4], [4, 6, 10], 1, outcome)
    assert truth.done  # every cell the protocol needed was trained
    decisions = pd.read_csv(wf / "results" / "rref" / "design" / "decisions.csv")
    ours = [(r.kind, r.ensemble_size, r.hardness, r.decision) for r in decisions.itertuples()]
    assert ours == [(*d.cell, d.action) for d in truth.decisions]
    cells = pd.read_csv(wf / "results" / "rref" / "convergence.csv")
    assert len(cells) == 6  # every cell of the grid, trained or not
    for d in truth.decisions:
        row = cells[(cells["ensemble_size"] == d.ensemble_size) & (cells["hardness"] == d.hardness)].iloc[0]
        assert row["decision"] == d.action
        if d.action == designs.TRAINED:
            assert row["trials"] == 4 and pd.isna(row["p_assumed"])
        else:
            assert row["trials"] == 0 and row["p_assumed"] == (1.0 if d.action == designs.ASSUMED_SOLVED else 0.0)
    fit = pd.read_csv(wf / "results" / "rref" / "psi_fit.csv").iloc[0]
    assert fit["n_runs"] == 4 * len(truth.cells(designs.TRAINED)), fit  # the fit reads trained cells only
