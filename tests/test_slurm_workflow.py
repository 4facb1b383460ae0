"""The real workflow on the one-node SLURM cluster of .ci/start_slurm.sh, with cluster faults.

A small study (one cell, 3 training shards of 2 seeds) runs with
`snakemake --profile profiles/slurm`. Faults are injected from outside the
product: a `python` script first on PATH fails the training command of

- shard seeds_2-4 on its first attempt only (a marker directory remembers it),
- shard seeds_4-6 on every attempt,

and otherwise execs the real interpreter. Checked from SLURM's own records
(controller log, `scontrol show job`): every job went through sbatch; the
flaky shard's first job FAILED and the profile's `retries` resubmitted it with
twice the runtime and memory (TimeLimit, MinMemoryNode), and it COMPLETED; the
always-failing shard failed twice and stopped the study, its log path shown
in Snakemake's output. Rerun with the same command and the fault gone, only
that shard trains and the study finishes (merge, tables) through SLURM.

Skipped with the reason where no cluster is up, except under CI=true, where a
missing cluster is a failure (as in test_slurm_smoke.py).
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slurm_cluster as sc  # noqa: E402
from conftest import copy_workflow, write_study_config  # noqa: E402

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STUDY = "rslurm"
TARGETS = [f"results/{STUDY}/{t}" for t in ("convergence.csv", "psi_fit.csv", "kind_comparison.csv")]
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def cluster():
    reason = sc.ensure_slurm()
    if reason is None:
        try:
            import snakemake_executor_plugin_slurm  # noqa: F401
        except ImportError as e:  # pragma: no cover - depends on the install
            reason = f"snakemake-executor-plugin-slurm not importable: {e}"
    if reason is not None:
        if sc.in_ci():
            pytest.fail(f"CI=true but no usable SLURM cluster: {reason}", pytrace=False)
        pytest.skip(reason)


FAULTY_PYTHON = textwrap.dedent(
    """\
    #!/bin/sh
    # Test fault injection (tests/test_slurm_workflow.py), first on PATH.
    case "$*" in
      *deepsea_scaling.train*/seeds_4-6.parquet*)
        echo "injected fault (every attempt) in SLURM job $SLURM_JOB_ID" >&2
        exit 1 ;;
      *deepsea_scaling.train*/seeds_2-4.parquet*)
        if mkdir {marker} 2>/dev/null; then
          echo "injected fault (first attempt) in SLURM job $SLURM_JOB_ID" >&2
          exit 1
        fi ;;
    esac
    exec {python} "$@"
    """
)


class Run:
    def __init__(self, returncode, log: str, t0: float):
        self.returncode, self.log, self.t0 = returncode, log, t0

    def tail(self, n: int = 80) -> str:
        return "\n".join(self.log.splitlines()[-n:])

    def jobs(self) -> dict[int, dict[str, str]]:
        """SLURM job id -> `scontrol show job` record, for every sbatch of this run."""
        ids = sc.snakemake_slurm_ids(self.log)
        recorded = sc.submitted_job_ids_since(self.t0)
        assert set(ids) <= recorded, f"SLURM recorded {sorted(recorded)}, snakemake {ids}"
        out = {}
        for jid in ids:
            rec = sc.show_job(jid)
            assert rec is not None, f"SLURM has no record of job {jid} (MinJobAge too short?)"
            out[jid] = rec
        return out

    def shard_jobs(self, seeds: str) -> list[dict[str, str]]:
        """Records of the train_shard jobs of shard `seeds` ("2_4"), in submission order."""
        jobs = self.jobs()
        return [jobs[j] for j in sorted(jobs)
                if jobs[j]["Comment"].startswith("rule_train_shard")
                and jobs[j]["Comment"].endswith(f"_{seeds}")]


def run_study(workdir: Path, config: Path, env: dict) -> Run:
    cmd = [
        sys.executable, "-m", "snakemake", *TARGETS,
        "--profile", str(workdir / "profiles" / "slurm"),
        # poll soon after submitting (MinJobAge must stay >= 3x this)
        "--slurm-init-seconds-before-status-checks", "5",
        "--latency-wait", "5",
        # the test node fakes ONE gpu: let both CPUs train (test_slurm_smoke checks the gpu)
        "--set-resources", "train_shard:gpu=0",
        "--configfile", str(config),
    ]
    logfile = workdir / f"snakemake-{time.time_ns()}.out"
    t0 = time.time()
    rc, log = sc.run_snakemake_on_slurm(cmd, workdir, logfile, RUN_TIMEOUT_S, env)
    if rc is None:
        pytest.fail(f"snakemake did not finish within {RUN_TIMEOUT_S} s:\n{log[-4000:]}")
    return Run(rc, log, t0)


@pytest.fixture(scope="module")
def faulty_then_fixed(cluster, tmp_path_factory, jax_cache_env):
    """(run with the faults, rerun without them, checkout): about 2 min."""
    tmp = tmp_path_factory.mktemp("slurm_workflow")
    wf = copy_workflow(tmp / "wf")
    config = write_study_config(
        tmp / f"{STUDY}.yaml", STUDY,
        kinds={"boot": {"ensemble_sizes": [2], "hardness": [4]}}, seeds_per_cell=6,
    )
    bindir = tmp / "bin"
    bindir.mkdir()
    wrapper = bindir / "python"
    wrapper.write_text(FAULTY_PYTHON.format(marker=tmp / "failed_once", python=sys.executable))
    wrapper.chmod(0o755)
    faulty = run_study(wf, config, {**jax_cache_env, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"})
    # the job logs as the faulty run left them (the rerun rewrites one)
    faulty.job_logs = {str(p.relative_to(wf)): p.read_text(errors="replace")
                       for p in (wf / "logs" / STUDY / "train").rglob("*.log")}
    faulty.merged = (wf / "results" / STUDY / "runs.parquet").exists()
    fixed = run_study(wf, config, jax_cache_env)
    return faulty, fixed, wf


def _minutes(limit: str) -> float:
    """SLURM's TimeLimit ([D-]HH:MM:SS or MM:SS) in minutes."""
    days, _, clock = limit.rpartition("-")
    parts = [int(x) for x in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, s = parts
    return (int(days or 0) * 24 + h) * 60 + m + s / 60


def _mem_mb(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", value)
    assert m, value
    return float(m[1]) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[m[2]]


def test_first_attempt_failure_is_retried_with_more_runtime_and_memory(faulty_then_fixed):
    faulty, _, wf = faulty_then_fixed
    first, retry = faulty.shard_jobs("2_4")  # exactly two sbatch jobs for the flaky shard
    assert first["JobState"] == "FAILED" and first["ExitCode"].startswith("1:"), first
    assert retry["JobState"] == "COMPLETED", retry
    assert _minutes(retry["TimeLimit"]) == 2 * _minutes(first["TimeLimit"]), (first, retry)
    assert _mem_mb(retry["MinMemoryNode"]) == 2 * _mem_mb(first["MinMemoryNode"]), (first, retry)
    shard = next((wf / "results" / STUDY / "runs").rglob("seeds_2-4.parquet"))
    assert sorted(pd.read_parquet(shard)["seed"]) == [2, 3]
    (ok,) = faulty.shard_jobs("0_2")
    assert ok["JobState"] == "COMPLETED", ok


def test_always_failing_job_stops_the_study_showing_its_log(faulty_then_fixed):
    faulty, _, wf = faulty_then_fixed
    assert faulty.returncode not in (0, None), faulty.tail()
    attempts = faulty.shard_jobs("4_6")
    assert [a["JobState"] for a in attempts] == ["FAILED", "FAILED"], attempts
    (log_path,) = [p for p in faulty.job_logs if p.endswith("/seeds_4-6.log")]
    # shown in Snakemake's output as the failed job's log, for both attempts
    error_logs = [line for line in faulty.log.splitlines()
                  if line.strip().startswith("log:") and "check log file(s) for error" in line]
    assert sum(log_path in line for line in error_logs) == 2, faulty.tail()
    # the log is the job's own: the last attempt's SLURM job wrote it
    last_id = max(j for j, r in faulty.jobs().items() if r["Comment"].endswith("_4_6"))
    assert f"injected fault (every attempt) in SLURM job {last_id}" in faulty.job_logs[log_path]
    # the study stopped: nothing was merged, no post-processing job submitted
    assert not any("postprocess" in r["Comment"] for r in faulty.jobs().values())
    assert not faulty.merged


def test_rerun_trains_only_the_failed_shard_and_finishes_through_sbatch(faulty_then_fixed):
    _, fixed, wf = faulty_then_fixed
    assert fixed.returncode == 0, fixed.tail()
    jobs = fixed.jobs()  # also: every one of them is in SLURM's submission records
    comments = sorted(r["Comment"] for r in jobs.values())
    assert len(jobs) == 2, comments
    assert [r["Comment"].endswith("_4_6") for r in jobs.values() if "train_shard" in r["Comment"]] == [True]
    assert sum("postprocess" in c for c in comments) == 1, comments
    assert all(r["JobState"] == "COMPLETED" for r in jobs.values()), jobs
    for rec in jobs.values():
        assert Path(rec["WorkDir"]).resolve() == wf.resolve()
    runs = pd.read_parquet(wf / "results" / STUDY / "runs.parquet")
    assert sorted(runs["seed"]) == list(range(6))
    for table in TARGETS:
        assert (wf / table).stat().st_size > 0, table
