"""The SLURM profile on the real one-node cluster of .ci/start_slurm.sh: a toy workflow and the real one, with faults.

Both runs go through `snakemake --profile profiles/slurm`, at the same time
(the toy run in a thread beside the real workflow's: most of either is
Snakemake waiting between status checks), and are checked from SLURM's own
records (controller log, `scontrol show job`), not just Snakemake's word.

**The toy workflow** (tiny shell rules): every job went through sbatch;
`train_group` asked SLURM for the (fake) GPU from the profile; the profile's
group ran `merge_runs` + `fit_psi` as ONE cluster job; a job failing on its
first attempt was resubmitted by the profile's `retries` and succeeded.

**The real workflow's grouped training path:** a GROUPED study (train_grouping:
shape; kinds boot and bootrp at K=2, n=4, so
each training group holds one kind pair; 6 seeds in shards of 2: three
groups K2_n4_s0-2_*, K2_n4_s2-4_*, K2_n4_s4-6_*), one `train_group` job per group.
Faults are injected from outside the product: a `python` script first on PATH
fails the training command whose `--out` is the group table

- `.../K2_n4_s2-4_*.parquet` on its first attempt only (a marker directory
  remembers it),
- `.../K2_n4_s4-6_*.parquet` on every attempt (each waits, bounded, until the
  flaky group's retry has started: Snakemake submits no new job, retries
  included, once a job has failed for good),

and otherwise execs the real interpreter. Checked from SLURM's own records
(controller log, `scontrol show job`): every job went through sbatch; the
flaky group's first job FAILED and the profile's `retries` resubmitted it with
twice the runtime and memory (TimeLimit, MinMemoryNode), and it COMPLETED with
both kinds' rows; the always-failing group failed twice and stopped the study,
its log path shown in Snakemake's output. Rerun with the same command and the
fault gone, only that group trains and the study finishes (merge, tables)
through SLURM: the runs table holds 2 kinds x 6 seeds, each group table both
kinds of its seed range.

The training jobs run with `--set-resources train_group:gpu=0` (the test node
fakes ONE gpu; CPU jobs let both CPUs train): the toy run checks that the
profile asks SLURM for a GPU. A run is bounded by RUN_TIMEOUT_S; a run
that times out is interrupted and its SLURM jobs cancelled, and every run's
leftover jobs are cancelled when it ends.

The cluster is started when it is not up and this user may (see
slurm_cluster.ensure_slurm); skipped with the reason where it cannot start,
except under CI=true, where a missing cluster is a failure.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slurm_cluster as sc  # noqa: E402
from conftest import copy_workflow, write_study_config  # noqa: E402

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STUDY = "rslurm"
KINDS = ("boot", "bootrp")
SEEDS = 6
TARGETS = [f"results/{STUDY}/{t}" for t in
           ("convergence.csv", "psi_fit.csv", "kind_comparison.csv", "residuals.csv")]
RUN_TIMEOUT_S = 540
PROFILE = Path(__file__).resolve().parents[1] / "profiles" / "slurm"
TOY_RUN_TIMEOUT_S = 240
# Seed ranges of the three groups (group names: K2_n4_s<start>-<stop>_<12 hex>).
OK, FLAKY, BROKEN = "s0-2", "s2-4", "s4-6"
GROUP_RE = re.compile(r"K2_n4_(s\d+-\d+)_[0-9a-f]{12}")


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


# ------------------------------------------------------------ the toy workflow
TOY_SNAKEFILE = textwrap.dedent(
    r"""
    GROUPS = ["K2_n4_s0-2_0123456789ab", "K2_n4_s2-4_0123456789ab"]

    rule all:
        input: "results/summary.txt"

    # Named like the real rule, so the profile's set-resources apply as well;
    # no gpu of its own (the real rule's default, train_gpus: 0): the profile's
    # `set-resources: train_group: gpu: 1` must ask SLURM for it.
    rule train_group:
        output: "results/runs/{group}.txt"
        resources:
            runtime=lambda wc, attempt: 2 * attempt,
            mem_mb=lambda wc, attempt: 200 * attempt,
        shell:
            "echo group={wildcards.group} slurm_job=$SLURM_JOB_ID "
            "gpus=$CUDA_VISIBLE_DEVICES > {output}"

    # Fails on its first attempt only: the profile's `retries` must rerun it.
    rule flaky:
        output: "results/flaky.txt"
        resources:
            attempt_no=lambda wc, attempt: attempt,
        shell:
            "mkdir -p attempts && "
            "echo attempt={resources.attempt_no} slurm_job=$SLURM_JOB_ID >> attempts/flaky.log && "
            "test {resources.attempt_no} -ge 2 && "
            "echo ok attempt={resources.attempt_no} > {output}"

    # merge_runs and fit_psi are in the profile's group "postprocess": one sbatch.
    rule merge_runs:
        input: expand("results/runs/{group}.txt", group=GROUPS), "results/flaky.txt"
        output: "results/merged.txt"
        shell: "cat {input} > {output}"

    rule fit_psi:
        input: "results/merged.txt"
        output: "results/summary.txt"
        shell: "wc -l < {input} > {output}"
    """
)


class ToyRun:
    def __init__(self, workdir: Path, returncode: int | None, log: str, t0: float, wall_s: float,
                 records: dict[int, dict[str, str]]):
        self.workdir = workdir
        self.returncode = returncode
        self.log = log
        self.t0 = t0
        self.wall_s = wall_s
        self.records = records  # taken while the run went: SLURM forgets jobs MinJobAge after they end

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.splitlines()[-n:])

    def jobs(self) -> dict[int, dict[str, str]]:
        """SLURM job id -> `scontrol show job` record, for this run's sbatch jobs."""
        ids = sc.snakemake_slurm_ids(self.log)
        missing = [j for j in ids if j not in self.records]
        assert not missing, f"no `scontrol show job` record of jobs {missing}"
        return {j: self.records[j] for j in ids}


def run_toy(workdir: Path) -> ToyRun:
    """The toy workflow through the profile, in `workdir` (about a minute, nearly all of it waiting)."""
    (workdir / "Snakefile").write_text(TOY_SNAKEFILE)
    logfile = workdir / "snakemake.log"
    cmd = [
        sys.executable, "-m", "snakemake",
        "--profile", str(PROFILE),
        "--executor", "slurm",
        # Poll soon after submitting: toy jobs take seconds. MinJobAge (300 s on
        # the test cluster) must stay >= 3x this, or the plugin uses sacct.
        "--slurm-init-seconds-before-status-checks", "5",
        "--latency-wait", "5",
        "--directory", str(workdir),
    ]
    t0 = time.time()
    records: dict[int, dict[str, str]] = {}
    rc, log = sc.run_snakemake_on_slurm(cmd, workdir, logfile, TOY_RUN_TIMEOUT_S, records=records)
    sc.cancel_run(sc.snakemake_run_uuid(log) or "")  # nothing of the run outlives it
    return ToyRun(workdir, rc, log, t0, time.time() - t0, records)


# ------------------------------------------------- the real workflow, with faults
# str.format template: {marker}, {retried}, {python}; shell braces doubled.
FAULTY_PYTHON = textwrap.dedent(
    """\
    #!/bin/sh
    # Test fault injection (tests/test_slurm.py), first on PATH.
    case "$*" in
      *deepsea_scaling.train*"--out "*/K2_n4_s4-6_*.parquet*)
        # Fail only once the flaky group's retry runs (at most 240 s from now).
        i=0
        while [ ! -e {retried} ] && [ "$i" -lt 240 ]; do sleep 1; i=$((i + 1)); done
        echo "injected fault (every attempt) in SLURM job $SLURM_JOB_ID" >&2
        exit 1 ;;
      *deepsea_scaling.train*"--out "*/K2_n4_s2-4_*.parquet*)
        if mkdir {marker} 2>/dev/null; then
          echo "injected fault (first attempt) in SLURM job $SLURM_JOB_ID" >&2
          exit 1
        fi
        touch {retried} ;;
    esac
    exec {python} "$@"
    """
)


class Run:
    def __init__(self, returncode, log: str, t0: float, wall_s: float, records: dict[int, dict[str, str]]):
        self.returncode, self.log, self.t0, self.wall_s = returncode, log, t0, wall_s
        self.records = records  # taken while the run went: SLURM forgets jobs MinJobAge after they end

    def tail(self, n: int = 80) -> str:
        return "\n".join(self.log.splitlines()[-n:])

    def jobs(self) -> dict[int, dict[str, str]]:
        """SLURM job id -> `scontrol show job` record, for every sbatch of this run."""
        ids = sc.snakemake_slurm_ids(self.log)
        recorded = sc.submitted_job_ids_since(self.t0)
        assert set(ids) <= recorded, f"SLURM recorded {sorted(recorded)}, snakemake {ids}"
        missing = [j for j in ids if j not in self.records]
        assert not missing, f"no `scontrol show job` record of jobs {missing}"
        return {j: self.records[j] for j in ids}

    def group_jobs(self, seeds: str) -> list[tuple[int, dict[str, str]]]:
        """(SLURM id, record) of the train_group jobs of the group of seed range
        `seeds` ("s2-4"), in submission order."""
        jobs = self.jobs()
        return [(j, jobs[j]) for j in sorted(jobs)
                if jobs[j]["Comment"].startswith("rule_train_group_wildcards_")
                and _seed_range(jobs[j]["Comment"]) == seeds]


def _seed_range(text: str) -> str | None:
    m = GROUP_RE.search(text)
    return m[1] if m else None


def run_study(workdir: Path, config: Path, env: dict) -> Run:
    cmd = [
        sys.executable, "-m", "snakemake", *TARGETS,
        "--profile", str(workdir / "profiles" / "slurm"),
        # poll soon after submitting (MinJobAge must stay >= 3x this)
        "--slurm-init-seconds-before-status-checks", "5",
        "--latency-wait", "5",
        # the test node fakes ONE gpu: let both CPUs train (the toy run checks the gpu)
        "--set-resources", "train_group:gpu=0",
        "--configfile", str(config),
    ]
    logfile = workdir / f"snakemake-{time.time_ns()}.out"
    t0 = time.time()
    records: dict[int, dict[str, str]] = {}
    rc, log = sc.run_snakemake_on_slurm(cmd, workdir, logfile, RUN_TIMEOUT_S, env, records=records)
    # nothing of this run may outlive it (a timed-out run was cancelled already)
    sc.cancel_run(sc.snakemake_run_uuid(log) or "")
    if rc is None:
        pytest.fail(f"snakemake did not finish within {RUN_TIMEOUT_S} s:\n{log[-4000:]}")
    return Run(rc, log, t0, time.time() - t0, records)


def _group_tables(wf: Path) -> dict[str, Path]:
    """seed range ("s2-4") -> that group's table, for the tables present."""
    found: dict[str, Path] = {}
    for path in (wf / "results" / STUDY / "runs").glob("*.parquet"):
        seeds = _seed_range(path.name)
        assert seeds is not None and GROUP_RE.fullmatch(path.stem), path
        assert seeds not in found, (found[seeds], path)
        found[seeds] = path
    return found


@pytest.fixture(scope="module")
def slurm_runs(cluster, tmp_path_factory, jax_cache_env):
    """(real workflow's run with the faults, its rerun without them, its checkout, the toy run): a few minutes."""
    tmp = tmp_path_factory.mktemp("slurm_workflow")
    wf = copy_workflow(tmp / "wf")
    cell = {"ensemble_sizes": [2], "hardness": [4]}
    config = write_study_config(
        tmp / f"{STUDY}.yaml", STUDY,
        kinds={kind: dict(cell) for kind in KINDS}, seeds_per_cell=SEEDS, shard_size=2,
        train_grouping="shape",
    )
    bindir = tmp / "bin"
    bindir.mkdir()
    wrapper = bindir / "python"
    wrapper.write_text(FAULTY_PYTHON.format(marker=tmp / "failed_once", retried=tmp / "retried",
                                            python=sys.executable))
    wrapper.chmod(0o755)
    toy_dir = tmp / "toy"
    toy_dir.mkdir()
    with ThreadPoolExecutor(1) as pool:  # the toy run beside this one: both mostly wait on status checks
        toy = pool.submit(run_toy, toy_dir)
        faulty, fixed = _faulty_then_fixed(wf, config, tmp, bindir, jax_cache_env)
        toy = toy.result()
    print(f"\nSLURM: toy workflow {toy.wall_s:.0f} s; grouped study: faulty run {faulty.wall_s:.0f} s, "
          f"rerun {fixed.wall_s:.0f} s")
    return faulty, fixed, wf, toy


def _faulty_then_fixed(wf: Path, config: Path, tmp: Path, bindir: Path, jax_cache_env: dict) -> tuple[Run, Run]:
    faulty = run_study(wf, config, {**jax_cache_env, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"})
    # the job logs and group tables as the faulty run left them (the rerun adds to them)
    faulty.job_logs = {str(p.relative_to(wf)): p.read_text(errors="replace")
                       for p in (wf / "logs" / STUDY / "train").rglob("*.log")}
    faulty.tables = {seeds: p.stat().st_mtime_ns for seeds, p in _group_tables(wf).items()}
    faulty.merged = (wf / "results" / STUDY / "runs.parquet").exists()
    fixed = run_study(wf, config, jax_cache_env)
    return faulty, fixed


@pytest.fixture(scope="module")
def faulty_then_fixed(slurm_runs):
    faulty, fixed, wf, _ = slurm_runs
    return faulty, fixed, wf


@pytest.fixture(scope="module")
def toy_run(slurm_runs) -> ToyRun:
    return slurm_runs[3]


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


def _kinds_and_seeds(table: pd.DataFrame) -> dict[str, list[int]]:
    return {kind: sorted(int(s) for s in rows["seed"]) for kind, rows in table.groupby("kind")}


def test_study_plans_three_groups_of_one_kind_pair(faulty_then_fixed):
    faulty, _, _ = faulty_then_fixed
    comments = [r["Comment"] for r in faulty.jobs().values() if "train_group" in r["Comment"]]
    names = {GROUP_RE.search(c)[0] for c in comments}
    assert sorted(_seed_range(n) for n in names) == [OK, FLAKY, BROKEN], comments
    # one job per group and attempt: ok once, flaky and broken twice
    assert sorted(_seed_range(c) for c in comments) == sorted([OK, FLAKY, FLAKY, BROKEN, BROKEN]), comments


def test_first_attempt_failure_is_retried_with_more_runtime_and_memory(faulty_then_fixed):
    faulty, _, wf = faulty_then_fixed
    (_, first), (_, retry) = faulty.group_jobs(FLAKY)  # exactly two sbatch jobs
    assert first["JobState"] == "FAILED" and first["ExitCode"].startswith("1:"), first
    assert retry["JobState"] == "COMPLETED", retry
    assert _minutes(retry["TimeLimit"]) == 2 * _minutes(first["TimeLimit"]), (first, retry)
    assert _mem_mb(retry["MinMemoryNode"]) == 2 * _mem_mb(first["MinMemoryNode"]), (first, retry)
    # the retry wrote the group's table (kept through the rerun): both kinds, seeds 2 and 3
    assert FLAKY in faulty.tables, faulty.tables
    table = pd.read_parquet(_group_tables(wf)[FLAKY])
    assert _kinds_and_seeds(table) == {kind: [2, 3] for kind in KINDS}
    assert _group_tables(wf)[FLAKY].stat().st_mtime_ns == faulty.tables[FLAKY]
    ((_, ok),) = faulty.group_jobs(OK)
    assert ok["JobState"] == "COMPLETED", ok


def test_always_failing_job_stops_the_study_showing_its_log(faulty_then_fixed):
    faulty, _, _ = faulty_then_fixed
    assert faulty.returncode not in (0, None), faulty.tail()
    attempts = faulty.group_jobs(BROKEN)
    assert [r["JobState"] for _, r in attempts] == ["FAILED", "FAILED"], attempts
    assert BROKEN not in faulty.tables, faulty.tables
    (log_path,) = [p for p in faulty.job_logs if _seed_range(p) == BROKEN]
    assert re.fullmatch(rf"logs/{STUDY}/train/K2_n4_s4-6_[0-9a-f]{{12}}\.log", log_path), log_path
    # shown in Snakemake's output as the failed job's log, for both attempts
    error_logs = [line for line in faulty.log.splitlines()
                  if line.strip().startswith("log:") and "check log file(s) for error" in line]
    assert sum(log_path in line for line in error_logs) == 2, faulty.tail()
    # the log is the job's own: the last attempt's SLURM job wrote it
    last_id = attempts[-1][0]
    assert f"injected fault (every attempt) in SLURM job {last_id}" in faulty.job_logs[log_path]
    # the study stopped: nothing was merged, no post-processing job submitted
    assert not any("postprocess" in r["Comment"] for r in faulty.jobs().values())
    assert not faulty.merged


def test_rerun_trains_only_the_failed_group_and_finishes_through_sbatch(faulty_then_fixed):
    faulty, fixed, wf = faulty_then_fixed
    assert fixed.returncode == 0, fixed.tail()
    jobs = fixed.jobs()  # also: every one of them is in SLURM's submission records
    comments = sorted(r["Comment"] for r in jobs.values())
    assert len(jobs) == 2, comments
    trained = [_seed_range(c) for c in comments if c.startswith("rule_train_group")]
    assert trained == [BROKEN], comments
    assert sum("postprocess" in c for c in comments) == 1, comments
    assert all(r["JobState"] == "COMPLETED" for r in jobs.values()), jobs
    for rec in jobs.values():
        assert Path(rec["WorkDir"]).resolve() == wf.resolve()
    # the groups the faulty run finished were not rewritten
    tables = _group_tables(wf)
    assert sorted(tables) == sorted([OK, FLAKY, BROKEN])
    for seeds in (OK, FLAKY):
        assert tables[seeds].stat().st_mtime_ns == faulty.tables[seeds], seeds
    # each group table: both kinds of its seed range
    for seeds, path in tables.items():
        start, stop = (int(x) for x in seeds[1:].split("-"))
        assert _kinds_and_seeds(pd.read_parquet(path)) == {kind: list(range(start, stop)) for kind in KINDS}, path
    # the study's runs table: 2 kinds x 6 seeds
    runs = pd.read_parquet(wf / "results" / STUDY / "runs.parquet")
    assert len(runs) == len(KINDS) * SEEDS
    assert _kinds_and_seeds(runs) == {kind: list(range(SEEDS)) for kind in KINDS}
    for table in TARGETS:
        assert (wf / table).stat().st_size > 0, table


# ------------------------------------------------------------ toy workflow checks
@pytest.mark.slurm
def test_toy_workflow_runs_through_sbatch(toy_run):
    assert toy_run.returncode is not None, (
        f"snakemake did not finish within {TOY_RUN_TIMEOUT_S} s:\n{toy_run.tail()}"
    )
    assert toy_run.returncode == 0, f"snakemake failed:\n{toy_run.tail()}"
    w = toy_run.workdir
    names = [f"runs/{g}.txt" for g in ("K2_n4_s0-2_0123456789ab", "K2_n4_s2-4_0123456789ab")]
    for name in [*names, "flaky.txt", "merged.txt", "summary.txt"]:
        assert (w / "results" / name).is_file(), f"missing output results/{name}"
    assert (w / "results" / "summary.txt").read_text().strip() == "3"

    # Every job snakemake says it submitted is one SLURM accepted from sbatch.
    ids = sc.snakemake_slurm_ids(toy_run.log)
    # 2 training groups + flaky twice (retry) + 1 postprocess group job; nothing ran locally.
    assert len(ids) == 5, f"expected 5 sbatch submissions, snakemake reported {ids}"
    recorded = sc.submitted_job_ids_since(toy_run.t0)
    assert set(ids) <= recorded, f"SLURM recorded {sorted(recorded)}, snakemake {ids}"

    jobs = toy_run.jobs()
    for jid, rec in jobs.items():
        assert rec["JobState"] in {"COMPLETED", "FAILED"}, (jid, rec)
        assert Path(rec["WorkDir"]).resolve() == w.resolve(), (jid, rec["WorkDir"])
    by_rule: dict[str, list[int]] = {}
    for jid, rec in jobs.items():
        by_rule.setdefault(rec.get("Comment", ""), []).append(jid)
    comments = sorted(by_rule)

    # train_group: one job per group, each asking SLURM for the GPU (from the profile).
    train = [j for j in jobs if jobs[j]["Comment"].startswith("rule_train_group")]
    assert len(train) == 2, comments
    for j in train:
        assert jobs[j]["JobState"] == "COMPLETED"
        assert "gpu:1" in jobs[j].get("TresPerJob", ""), jobs[j]
    # ... and the shell command ran inside those SLURM jobs.
    group_jobs = set()
    for name in names:
        text = (w / "results" / name).read_text()
        fields = dict(kv.split("=", 1) for kv in text.split())
        group_jobs.add(int(fields["slurm_job"]))
    assert group_jobs == set(train), (group_jobs, train)

    # The profile's group: merge_runs and fit_psi in ONE cluster job.
    group = [j for j in jobs if "postprocess" in jobs[j]["Comment"]]
    assert len(group) == 1, comments
    assert jobs[group[0]]["JobState"] == "COMPLETED"
    assert not any(c.startswith(("rule_merge_runs", "rule_fit_psi")) for c in comments), comments


@pytest.mark.slurm
def test_failed_first_attempt_is_retried(toy_run):
    assert toy_run.returncode == 0, f"snakemake failed:\n{toy_run.tail()}"
    jobs = toy_run.jobs()
    flaky = sorted(j for j in jobs if jobs[j]["Comment"] == "rule_flaky")
    assert len(flaky) == 2, f"flaky should be submitted twice: {flaky}"
    first, second = (jobs[j] for j in flaky)
    assert first["JobState"] == "FAILED" and first["ExitCode"].startswith("1:"), first
    assert second["JobState"] == "COMPLETED", second
    attempts = (toy_run.workdir / "attempts" / "flaky.log").read_text().split("\n")
    attempts = [dict(kv.split("=", 1) for kv in a.split()) for a in attempts if a.strip()]
    assert [a["attempt"] for a in attempts] == ["1", "2"]
    assert [int(a["slurm_job"]) for a in attempts] == flaky
    assert (toy_run.workdir / "results" / "flaky.txt").read_text().split() == ["ok", "attempt=2"]
