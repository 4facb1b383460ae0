"""Smoke test of profiles/slurm on a real one-node SLURM cluster.

A toy workflow (tiny shell rules) runs with `snakemake --profile profiles/slurm`
on the cluster that `.ci/start_slurm.sh` starts. Checked from SLURM's own
records (controller log, `scontrol show job`), not just snakemake's word:
every job went through sbatch; `train_group` asked for the (fake) GPU; the
profile's group ran `merge_runs` + `fit_psi` as ONE cluster job; a job failing
on its first attempt was resubmitted by the profile's `retries` and succeeded.

The cluster is started when it is not up and this user may (root or
password-less sudo; see slurm_cluster.ensure_slurm). Skipped with the reason
when it cannot start, except under CI=true, where a missing cluster is a
failure. One snakemake run serves the toy tests (~1 min).
"""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slurm_cluster as sc  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
RUN_TIMEOUT_S = 240

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


@pytest.fixture(scope="module")
def cluster():
    reason = sc.ensure_slurm()
    if reason is not None:
        if sc.in_ci():
            pytest.fail(f"CI=true but no usable SLURM cluster: {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the install
        msg = f"snakemake-executor-plugin-slurm not importable: {e}"
        if sc.in_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


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


@pytest.fixture(scope="module")
def toy_run(cluster, tmp_path_factory) -> ToyRun:
    workdir = tmp_path_factory.mktemp("slurm_toy")
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
    rc, log = sc.run_snakemake_on_slurm(cmd, workdir, logfile, RUN_TIMEOUT_S, records=records)
    sc.cancel_run(sc.snakemake_run_uuid(log) or "")  # nothing of the run outlives it
    print(f"\nSLURM toy workflow: {time.time() - t0:.0f} s")
    return ToyRun(workdir, rc, log, t0, time.time() - t0, records)


@pytest.mark.slurm
def test_toy_workflow_runs_through_sbatch(toy_run):
    assert toy_run.returncode is not None, (
        f"snakemake did not finish within {RUN_TIMEOUT_S} s:\n{toy_run.tail()}"
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


def test_profile_keys_are_snakemake_options():
    """Each profile key is a command-line option of this snakemake + plugin
    (a misspelt key is otherwise an error only when the profile is used)."""
    from snakemake.cli import get_argument_parser

    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    options = {o for a in get_argument_parser()._actions for o in a.option_strings}
    unknown = sorted(k for k in profile if f"--{k}" not in options)
    assert not unknown, f"profile keys that snakemake does not know: {unknown}"
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"
    assert profile["retries"] >= 1
    # the one training rule asks for a GPU whatever the planning machine has
    assert set(profile["set-resources"]) == {"train_group"}, profile["set-resources"]
    assert profile["set-resources"]["train_group"]["gpu"] == 1
    # runtime/mem of train_group come from the workflow's functions of attempt.
    assert not {"runtime", "mem_mb"} & set(profile["set-resources"]["train_group"])
    assert profile["groups"]["merge_runs"] == profile["groups"]["fit_psi"]
