"""Sequential designs end to end: real training, round by round through checkpoints.

- reference: the cells trained and skipped are exactly the research code's
  protocol's on the outcomes the run produced; the convergence table lists the
  skipped cells as not trained, with the P the protocol assumed; a run killed
  between two rounds, rerun with the same command, retrains nothing and ends
  with the tables of an uninterrupted run;
- frontier: a pilot and at most `max_rounds` rounds, each cell trained once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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


@pytest.mark.parametrize("kill", ["SIGINT", "SIGKILL"])
def test_run_killed_between_rounds_resumes_without_retraining(reference_run, tmp_path, kill):
    wf_ref, config, env = reference_run
    wf = copy_workflow(tmp_path / "wf")
    log = open(tmp_path / "run.out", "w")
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", *_targets("rref"), "--cores", "2",
                             "--configfile", str(config)], cwd=wf, env={**os.environ, "MPLBACKEND": "Agg", **env},
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                            # SIGINT's default even when this suite was started with it ignored (`cmd &`)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    round1 = wf / "results" / "rref" / "design" / "round_1.json"
    deadline = time.monotonic() + 600
    while not round1.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert round1.exists(), (tmp_path / "run.out").read_text()[-3000:]
    if kill == "SIGINT":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=300)
    log.close()
    for _ in range(600):  # orphaned jobs of a killed Snakemake finish on their own
        if not subprocess.run(["pgrep", "-f", str(wf)], capture_output=True).stdout:
            break
        time.sleep(0.2)
    before = {p.name: p.stat().st_mtime_ns for p in _tables(wf, "rref")}
    round0 = json.loads((wf / "results" / "rref" / "design" / "round_0.json").read_text())
    assert len(before) >= len(round0["units"]), "round 0's groups should be trained before round 1 is planned"

    rerun = run_snakemake(wf, *_targets("rref"), "--cores", "2", "--configfile", str(config), env=env,
                          timeout=900)
    assert rerun.returncode == 0, rerun.output[-4000:]
    assert rerun.job_counts().get("plan_round", 0) <= 2  # finished rounds are not planned again...
    for name, mtime in before.items():  # ...and nothing trained is trained again
        assert (wf / "results" / "rref" / "runs" / name).stat().st_mtime_ns == mtime, name
    assert sorted(p.name for p in _tables(wf, "rref")) == sorted(p.name for p in _tables(wf_ref, "rref"))
    for table in TABLES:
        assert (wf / "results" / "rref" / table).read_text() == (wf_ref / "results" / "rref" / table).read_text()


def test_frontier_design_pilot_then_rounds(tmp_path, jax_cache_env):
    wf = copy_workflow(tmp_path / "wf")
    config = write_study_config(
        tmp_path / "rfront.yaml", "rfront",
        kinds={"bootrp": {"ensemble_sizes": [2, 4], "hardness": [4, 6, 8, 10]}},
        seeds_per_cell=4, shard_size=2, num_episodes=400, hyperparameters=TINY, design="frontier",
        frontier={"pilot_ks": [2], "pilot_ns": [4, 8], "pilot_seeds": 2, "seeds": 4, "boundary_seeds": 2,
                  "max_rounds": 1, "target_half_width": 0.001},
    )
    result = run_snakemake(wf, *_targets("rfront"), "--cores", "2", "--configfile", str(config),
                           env=jax_cache_env, timeout=900)
    assert result.returncode == 0, result.output[-4000:]
    plans = sorted((wf / "results" / "rfront" / "design").glob("round_*.json"))
    assert 2 <= len(plans) <= 3  # pilot, one round, and the plan that says done
    pilot = json.loads(plans[0].read_text())
    assert len(pilot["units"]) == 2  # K = 2 at n = 4 and 8, one shard of 2 seeds each
    units = [tuple(u) for p in plans for u in json.loads(p.read_text())["units"]]
    assert len(units) == len(set(units)) == len(_tables(wf, "rfront"))
    cells = pd.read_csv(wf / "results" / "rfront" / "convergence.csv")
    assert len(cells) == 8 and set(cells["decision"]) <= {"trained", "not_trained"}
    assert (cells.loc[cells["decision"] == "trained", "round"].dropna() >= 0).all()
