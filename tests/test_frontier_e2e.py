"""The frontier design end to end: real training, round by round through checkpoints.

- frontier: a pilot and at most `max_rounds` rounds, each cell trained once,
  the convergence table marking exactly the cells trained and their round;
- a run killed between two rounds, rerun with the same command, retrains
  nothing and ends with the tables of the uninterrupted run; its finished
  tables, committed (what `.gitignore` lets in) and cloned, resume in the
  clone too: the same command trains only what is missing (one test: the
  killed checkout is the stopped study the clone is made from).

One frontier study (named `paper_check`, so that `.gitignore` lets its tables
in) is trained once for the module; the interrupted and cloned runs train the
same programs again, from the session's compilation cache. (The reference
design's end to end test is test_reference_e2e.py, a module of its own so
that pytest-xdist runs it beside this one.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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
TABLES = ["convergence.csv", "psi_fit.csv", "residuals.csv"]


def _targets(study):
    return [f"results/{study}/{t}" for t in TABLES] + [f"results/{study}/design/decisions.csv"]


def _tables(wf: Path, study: str) -> list[Path]:
    return sorted((wf / "results" / study / "runs").glob("*.parquet"))


FRONTIER = "paper_check"
FRONTIER_SPEC = dict(
    kinds={"bootrp": {"ensemble_sizes": [2, 4], "hardness": [4, 6, 8, 10]}},
    seeds_per_cell=4, shard_size=4, num_episodes=400, hyperparameters=TINY, design="frontier",
    # round 0: K = 2 at n = 4 and 8; the target cannot be met, so round 1 trains and round 2 says done
    frontier={"pilot_ks": [2], "pilot_ns": [4, 8], "pilot_seeds": 4, "seeds": 4, "boundary_seeds": 4,
              "max_rounds": 1, "target_half_width": 0.001},
)


@pytest.fixture(scope="module")
def frontier_run(tmp_path_factory, jax_cache_env):
    """The frontier study, uninterrupted: (checkout, config, env)."""
    pytest.importorskip("deepsea_scaling.engine")
    tmp = tmp_path_factory.mktemp("frontier")
    wf = copy_workflow(tmp / "wf")
    config = write_study_config(tmp / "frontier.yaml", FRONTIER, **FRONTIER_SPEC)
    result = run_snakemake(wf, *_targets(FRONTIER), "--cores", "2", "--configfile", str(config),
                           env=jax_cache_env, timeout=900)
    assert result.returncode == 0, result.output[-4000:]
    return wf, config, jax_cache_env


def _plans(wf: Path, study: str) -> list[dict]:
    design = wf / "results" / study / "design"
    return [json.loads((design / f"round_{r}.json").read_text()) for r in range(len(list(design.glob("round_*.json"))))]


def test_frontier_design_pilot_then_rounds(frontier_run):
    wf, _, _ = frontier_run
    plans = _plans(wf, FRONTIER)
    assert len(plans) == 3 and plans[1]["units"] and plans[2]["done"]  # pilot, one round, the plan that says done
    assert len(plans[0]["units"]) == 2  # K = 2 at n = 4 and 8, one shard of 4 seeds each
    units = [tuple(u) for p in plans for u in p["units"]]
    assert len(units) == len(set(units)) == len(_tables(wf, FRONTIER))
    # the convergence table marks exactly the cells the plans trained, each with the round that first placed it
    runs = pd.read_parquet(wf / "results" / FRONTIER / "runs.parquet")
    cell_of = dict(zip(runs["config_hash"], zip(runs["ensemble_size"], runs["hardness"])))
    first_round = {}
    for r, plan in enumerate(plans):
        for h, _, _ in plan["units"]:
            first_round.setdefault(cell_of[h], r)
    cells = pd.read_csv(wf / "results" / FRONTIER / "convergence.csv")
    assert len(cells) == 8
    trained = cells[cells["decision"] == "trained"]
    assert set(cells["decision"]) - {"trained"} <= {"not_trained"}
    assert {(int(c.ensemble_size), int(c.hardness)): int(c.round) for c in trained.itertuples()} == first_round
    assert cells.loc[cells["decision"] != "trained", "round"].isna().all()
    assert (trained["trials"] > 0).all() and (cells.loc[cells["decision"] != "trained", "trials"] == 0).all()


def _same_tables(wf: Path, reference: Path, study: str):
    assert {p.name for p in _tables(wf, study)} == {p.name for p in _tables(reference, study)}
    for table in TABLES:
        assert (wf / "results" / study / table).read_text() == (reference / "results" / study / table).read_text()


# ------------------------------------------- committed tables, resumed in a clone
def _git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}
    proc = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _digests(wf: Path, study: str) -> dict[str, str]:
    """Relative path -> sha256 of every result file of the study that .gitignore lets into git."""
    root = wf / "results" / study
    files = [*(root / "runs").glob("*.parquet"), *(root / "runs").glob("*.json"), *(root / "design").glob("round_*.json")]
    return {str(p.relative_to(wf)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _group_tables(config_path: Path, study: str) -> dict[tuple, str]:
    """(config hash, start, stop) -> the group table that trains that unit."""
    import yaml

    from conftest import REPO
    from deepsea_scaling import groups as groups_lib
    from deepsea_scaling import study as study_lib

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["studies"][study] = yaml.safe_load(config_path.read_text())["studies"][study]
    loaded = study_lib.load_study(config, study)
    return {(g.cells[0].hash, g.start, g.stop): g.table for g in groups_lib.train_groups(loaded)}


def test_run_killed_between_rounds_resumes_there_and_in_a_clone(frontier_run, tmp_path):
    """The whole run (Snakemake and its jobs, as when a node dies) is killed the moment round 1 is
    planned: round 0's tables are kept, round 1's work is left. One unit of round 1 is then trained
    alone, and the finished tables committed (what .gitignore lets in) and cloned (checkout times, no
    .snakemake/). There, the dry run lists only the missing units and the run trains only those,
    leaving the committed files' bytes and times; here, the same command plans round 0 no more,
    retrains nothing and trains what was left. Both end with the uninterrupted run's tables."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    from conftest import REPO

    wf_ref, config, env = frontier_run
    plans_ref = _plans(wf_ref, FRONTIER)
    tables_of = _group_tables(config, FRONTIER)
    wf = copy_workflow(tmp_path / "wf")
    shutil.copy(REPO / ".gitignore", wf / ".gitignore")
    log = open(tmp_path / "run.out", "w")
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", *_targets(FRONTIER), "--cores", "2",
                             "--configfile", str(config)], cwd=wf, env={**os.environ, "MPLBACKEND": "Agg", **env},
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    design = wf / "results" / FRONTIER / "design"
    deadline = time.monotonic() + 600
    while not (design / "round_1.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (design / "round_1.json").exists(), (tmp_path / "run.out").read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=300)
    log.close()
    for _ in range(600):  # a job in a process group of its own would outlive the kill: wait for it
        if not subprocess.run(["pgrep", "-f", str(wf)], capture_output=True).stdout:
            break
        time.sleep(0.2)

    killed = {p.name for p in _tables(wf, FRONTIER)}
    round0_mtime = (design / "round_0.json").stat().st_mtime_ns
    assert len(killed) == len(plans_ref[0]["units"]), "round 0's tables, and only they, exist when round 1 is planned"
    assert _plans(wf, FRONTIER)[1] == plans_ref[1]
    assert len(plans_ref[1]["units"]) >= 2, plans_ref[1]

    # one unit of round 1 alone, then commit what .gitignore lets in, and clone
    one = tables_of[tuple(plans_ref[1]["units"][0])]
    result = run_snakemake(wf, one, "--cores", "2", "--configfile", str(config), env=env, timeout=900)
    assert result.returncode == 0, result.output[-4000:]
    assert result.job_counts().get("train_group", 0) == 1, result.output[-4000:]
    before = {p.name: p.stat().st_mtime_ns for p in _tables(wf, FRONTIER)}
    left = {p.name for p in _tables(wf_ref, FRONTIER)} - set(before)
    assert left and len(left) == len(plans_ref[1]["units"]) - 1, "round 1's work is left to do"
    finished = {tables_of[tuple(u)] for u in plans_ref[0]["units"]} | {one}
    missing = {tables_of[tuple(u)] for u in plans_ref[1]["units"][1:]}
    _git(wf, "init", "-q")
    _git(wf, "add", "-A")
    _git(wf, "commit", "-q", "-m", "round 0 and part of round 1")
    committed = set(_git(wf, "ls-files", "results").split())
    assert committed == set(_digests(wf, FRONTIER)), committed
    assert {p for p in committed if p.endswith(".parquet")} == finished
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(wf), str(clone))
    assert not (clone / ".snakemake").exists() and not (clone / "logs").exists()
    committed_digests = _digests(clone, FRONTIER)
    assert committed_digests == _digests(wf, FRONTIER)
    times = {p: (clone / p).stat().st_mtime_ns for p in committed_digests}

    # here: the same command, after the kill
    rerun = run_snakemake(wf, *_targets(FRONTIER), "--cores", "2", "--configfile", str(config), env=env,
                          timeout=900)
    assert rerun.returncode == 0, rerun.output[-4000:]
    # round 0 finished before the kill and is not planned again (round 1's plan may be: Snakemake never
    # recorded that job's end); every plan is the uninterrupted run's
    assert (design / "round_0.json").stat().st_mtime_ns == round0_mtime
    assert _plans(wf, FRONTIER) == plans_ref
    assert rerun.job_counts().get("train_group", 0) == len(left), rerun.output[-4000:]
    for name, mtime in before.items():  # nothing trained is trained again
        assert (wf / "results" / FRONTIER / "runs" / name).stat().st_mtime_ns == mtime, name
    _same_tables(wf, wf_ref, FRONTIER)

    # in the clone
    dry = run_snakemake(clone, *_targets(FRONTIER), "--cores", "2", "--configfile", str(config), "-n", env=env)
    assert dry.returncode == 0, dry.output[-4000:]
    counts = dry.job_counts()
    assert counts.get("train_group", 0) == len(missing), dry.output[-4000:]
    assert counts.get("plan_round", 0) == 1, dry.output[-4000:]  # round 2, once round 1 is trained
    assert all(table in dry.output for table in missing)
    assert not any(f"output: {table}" in dry.output for table in finished)
    run = run_snakemake(clone, *_targets(FRONTIER), "--cores", "2", "--configfile", str(config), env=env,
                        timeout=900)
    assert run.returncode == 0, run.output[-4000:]
    assert run.job_counts().get("train_group", 0) == len(missing), run.output[-4000:]
    after = _digests(clone, FRONTIER)
    for path, digest in committed_digests.items():
        assert after[path] == digest and (clone / path).stat().st_mtime_ns == times[path], f"{path} rewritten"
    _same_tables(clone, wf_ref, FRONTIER)


def test_gitignore_lets_in_only_the_paper_check_tables_and_plans(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    from conftest import REPO

    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    wanted = ["results/paper_check/runs/K2_n4_s0-2_abc.parquet", "results/paper_check/runs/K2_n4_s0-2_abc.json",
              "results/paper_check/design/round_0.json"]
    ignored = ["results/paper_check/runs/.K2_n4_s0-2_abc.parquet.tmp-x1", "results/paper_check/runs.parquet",
               "results/paper_check/convergence.csv", "results/paper_check/design/decisions.csv",
               "results/default/runs/K2_n4_s0-2_abc.parquet", "results/default/design/round_0.json",
               "logs/paper_check/train/K2_n4_s0-2_abc.log", "plots/paper_check/residuals.png"]
    for name in wanted + ignored:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("x")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    assert sorted(_git(repo, "ls-files").split()) == sorted([".gitignore", *wanted])


# ------------------------------------------- a round's cells grouped by program
def test_a_rounds_boot_and_bootrp_of_one_shape_train_in_one_job(tmp_path, jax_cache_env):
    """With train_grouping: shape, a sequential design's round trains the boot and bootrp units of
    one (K, n) shard in one job: the pilot's 4 units are 2 jobs, each table holds both kinds, and
    the design's tables (convergence, decisions) read them as they read tables of one cell."""
    pytest.importorskip("deepsea_scaling.engine")
    wf = copy_workflow(tmp_path / "wf")
    spec = {**FRONTIER_SPEC, "kinds": {"boot": {"ensemble_sizes": [2], "hardness": [4, 8]},
                                       "bootrp": {"ensemble_sizes": [2], "hardness": [4, 8]}},
            "train_grouping": "shape", "frontier": {**FRONTIER_SPEC["frontier"], "max_rounds": 0}}
    config = write_study_config(tmp_path / "shape.yaml", "shape_rounds", **spec)
    targets = ["results/shape_rounds/convergence.csv", "results/shape_rounds/design/decisions.csv"]
    result = run_snakemake(wf, *targets, "--cores", "2", "--configfile", str(config), env=jax_cache_env, timeout=900)
    assert result.returncode == 0, result.output[-4000:]
    assert result.output.count("rule train_group:") == 2, result.output[-4000:]
    plans = _plans(wf, "shape_rounds")
    assert len(plans[0]["units"]) == 4 and plans[-1]["done"]
    tables = _tables(wf, "shape_rounds")
    assert len(tables) == 2
    for table in tables:
        rows = pd.read_parquet(table)
        assert sorted(rows["kind"].unique()) == ["boot", "bootrp"] and len(rows) == 2 * 4
        assert rows.groupby("kind")["hardness"].nunique().eq(1).all()
    cells = pd.read_csv(wf / "results" / "shape_rounds" / "convergence.csv")
    assert len(cells) == 4 and (cells["decision"] == "trained").all() and (cells["trials"] == 4).all()
    again = run_snakemake(wf, *targets, "--cores", "2", "--configfile", str(config), "-n", env=jax_cache_env)
    assert again.returncode == 0 and "train_group" not in again.job_counts(), again.output[-3000:]
