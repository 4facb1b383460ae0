"""Helpers for tests that run on the one-node SLURM cluster of .ci/start_slurm.sh.

Nothing here needs SLURM accounting (`sacct`/slurmdbd), which the test cluster
does not have. Evidence that a job really went through `sbatch` comes from:

- snakemake's own log line "Job <id> has been submitted with SLURM jobid <N>"
  (:func:`snakemake_submitted_job_ids`);
- the controller's log, line "_slurm_rpc_submit_batch_job: JobId=<N>", written
  for every accepted `sbatch` (:func:`submitted_job_ids_since`);
- `scontrol show job <N>`, which keeps a finished job for MinJobAge seconds
  (300 on the test cluster) with its state, exit code, comment and TRES
  (:func:`show_job`); :func:`run_snakemake_on_slurm` takes these records while
  a run goes, so a long run's first jobs are not lost.

:func:`ensure_slurm` starts the cluster (`.ci/start_slurm.sh`) when it is not
up and this user may (root or password-less sudo), so the SLURM tests run
wherever slurmctld can start, not only under CI.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

# States in which a node accepts jobs (`sinfo -o %t`; a trailing "*" means the
# controller lost contact with the node, so "idle*" does not count).
USABLE_NODE_STATES = {"idle", "mix", "alloc", "comp"}
# The executor plugin polls with squeue only if MinJobAge >= 3 x its
# init-seconds-before-status-checks (40 s by default); else it falls back to
# sacct, which fails without accounting and the run hangs.
MIN_JOB_AGE_NEEDED = 120

_SUBMIT_RE = re.compile(
    r"^\[(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)\]\s+"
    r"_slurm_rpc_submit_batch_job: JobId=(?P<id>\d+)\b"
)
_SNAKEMAKE_SUBMIT_RE = re.compile(
    r"Job (?P<job>\S+) has been submitted with SLURM jobid (?P<id>\d+)"
)


def _run(cmd: list[str], timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False
    )


REPO = Path(__file__).resolve().parents[1]
START_SCRIPT = REPO / ".ci" / "start_slurm.sh"
# Installing the packages (first time only) and starting the daemons takes
# about 25 s on the test machine; this bounds a slow mirror or a hung daemon.
START_TIMEOUT_S = 300

# One start attempt per test session: (its return code, its one-line message).
_start_result: tuple[int, str] | None = None


def ensure_slurm(start: bool = True) -> str | None:
    """None when a SLURM node takes jobs here, else the reason why not.

    Checks the client commands, that `sinfo` answers with a node that is idle,
    mixed or allocated, and that MinJobAge is long enough for the executor
    plugin's `squeue` status checks. When that fails and `start` is true, runs
    `.ci/start_slurm.sh` once per session (as root, or with password-less
    sudo; at most START_TIMEOUT_S seconds) and checks again, so the SLURM tests
    run wherever slurmctld can start, not only under CI. Not retried when
    .ci/run already tried and failed (DEEPSEA_SLURM_START_ERROR, appended to
    the reason) or when DEEPSEA_SLURM_AUTOSTART=0.
    """
    reason = _slurm_problem()
    if reason is None:
        return None
    start_error = os.environ.get("DEEPSEA_SLURM_START_ERROR", "").strip()
    if start_error:
        return reason + f" [.ci/start_slurm.sh: {start_error}]"
    if not start or os.environ.get("DEEPSEA_SLURM_AUTOSTART", "1").strip() == "0":
        return reason
    rc, message = start_cluster()
    if rc != 0:
        return reason + f" [.ci/start_slurm.sh, run by the tests: {message}]"
    # The script ends by waiting for the node to be idle; check as the tests do.
    after = _slurm_problem()
    if after is not None:
        return after + f" [.ci/start_slurm.sh succeeded: {message}]"
    return None


def start_cluster(timeout: float = START_TIMEOUT_S) -> tuple[int, str]:
    """Run `.ci/start_slurm.sh` once per session; (exit code, one-line message).

    As root directly, else through `sudo -n` when sudo needs no password; the
    code is 1 (without running anything) when neither works, 124 after a
    timeout. The script's output goes to a file, not a pipe: the daemons it
    starts outlive it and must not hold the test's pipe open.
    """
    global _start_result
    if _start_result is not None:
        return _start_result
    if not START_SCRIPT.is_file():
        _start_result = (1, f"{START_SCRIPT.name} not found")
        return _start_result
    if os.geteuid() == 0:
        cmd = ["bash", str(START_SCRIPT)]
    elif shutil.which("sudo") and _run(["sudo", "-n", "true"]).returncode == 0:
        cmd = ["sudo", "-n", "bash", str(START_SCRIPT)]
    else:
        _start_result = (1, "not root and no password-less sudo: cannot install or start SLURM")
        return _start_result
    with tempfile.TemporaryFile("w+") as out:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as err:
            _start_result = (1, f"cannot run {' '.join(cmd[:-1])}: {err}")
            return _start_result
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # The script's own process group only: the daemons it started
            # detach into sessions of their own (setsid) and are left alone.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = 124
        out.seek(0)
        lines = [line.strip() for line in out.read().splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line]
    if rc == 124:
        message = f"timed out after {timeout:.0f} s" + (f"; {errors[0]}" if errors else "")
    elif rc != 0:
        message = errors[0] if errors else (lines[-1] if lines else f"exit {rc}")
    else:
        message = lines[-1] if lines else "exit 0"
    _start_result = (rc, message)
    return _start_result


def _slurm_problem() -> str | None:
    hint = " (start it with: sudo bash .ci/start_slurm.sh)"
    for cmd in ("sinfo", "sbatch", "squeue", "scontrol", "srun"):
        if shutil.which(cmd) is None:
            return f"SLURM command '{cmd}' not found{hint}"
    try:
        res = _run(["sinfo", "-h", "-N", "-o", "%N %t"])
    except subprocess.TimeoutExpired:
        return f"'sinfo' did not answer within 15 s (slurmctld not running?){hint}"
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().splitlines()
        return f"'sinfo' failed: {msg[-1] if msg else 'exit ' + str(res.returncode)}{hint}"
    states = [line.split() for line in res.stdout.splitlines() if line.strip()]
    if not states:
        return f"'sinfo' lists no nodes{hint}"
    if not any(len(s) == 2 and s[1] in USABLE_NODE_STATES for s in states):
        shown = ", ".join(" ".join(s) for s in states)
        return f"no SLURM node is idle or mixed (sinfo: {shown}){hint}"
    age = min_job_age()
    if age is None:
        return "could not read MinJobAge from 'scontrol show config'"
    if age < MIN_JOB_AGE_NEEDED:
        return (
            f"SLURM MinJobAge is {age} s; the snakemake SLURM plugin needs "
            f">= {MIN_JOB_AGE_NEEDED} s to poll with squeue{hint}"
        )
    return None


def slurm_config() -> dict[str, str]:
    """`scontrol show config` as a dict (values as printed, stripped)."""
    res = _run(["scontrol", "show", "config"])
    res.check_returncode()
    conf: dict[str, str] = {}
    for line in res.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            conf[key.strip()] = value.strip()
    return conf


def min_job_age() -> int | None:
    """MinJobAge in seconds, or None when it cannot be read."""
    try:
        value = slurm_config().get("MinJobAge", "")
    except (subprocess.SubprocessError, OSError):
        return None
    m = re.match(r"(\d+)", value)
    return int(m.group(1)) if m else None


def slurmctld_log_path() -> Path | None:
    """Where slurmctld logs (SlurmctldLogFile), or None if it logs elsewhere."""
    try:
        value = slurm_config().get("SlurmctldLogFile", "")
    except (subprocess.SubprocessError, OSError):
        return None
    if not value or value == "(null)":
        return None
    return Path(value)


def _to_epoch(since: float | datetime) -> float:
    return since.timestamp() if isinstance(since, datetime) else float(since)


def submitted_ids_from_ctld_log(since: float | datetime) -> set[int] | None:
    """Job ids slurmctld logged as submitted by sbatch at or after `since`.

    `since` is a `time.time()` value or a datetime. The log's time stamps are
    local time, like `datetime.fromtimestamp`. None when the log cannot be read.
    """
    path = slurmctld_log_path()
    if path is None:
        return None
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    t0 = _to_epoch(since)
    ids = set()
    for line in text.splitlines():
        m = _SUBMIT_RE.match(line)
        if m and datetime.fromisoformat(m["ts"]).timestamp() >= t0:
            ids.add(int(m["id"]))
    return ids


def submitted_ids_from_squeue(since: float | datetime) -> set[int]:
    """Job ids with a submit time at or after `since` that squeue still knows
    (finished jobs stay for MinJobAge seconds). Whole-second resolution."""
    res = _run(["squeue", "--states=all", "-h", "-o", "%i|%V"])
    res.check_returncode()
    t0 = int(_to_epoch(since))
    ids = set()
    for line in res.stdout.splitlines():
        jobid, _, submitted = line.strip().partition("|")
        if not jobid.isdigit():
            continue  # array tasks etc.
        try:
            ts = datetime.fromisoformat(submitted).timestamp()
        except ValueError:
            continue
        if ts >= t0:
            ids.add(int(jobid))
    return ids


def submitted_job_ids_since(since: float | datetime) -> set[int]:
    """The set of job ids SLURM recorded as submitted (sbatch) since `since`.

    Read from the slurmctld log when it is readable (complete: every accepted
    submission), else from squeue (jobs finished more than MinJobAge ago are
    missing there).
    """
    ids = submitted_ids_from_ctld_log(since)
    if ids is None:
        ids = submitted_ids_from_squeue(since)
    return ids


def show_job(jobid: int | str) -> dict[str, str] | None:
    """`scontrol show job` as a dict (JobState, ExitCode, Comment, TresPerJob,
    WorkDir, ...), or None when SLURM no longer (or never) knew the job."""
    res = _run(["scontrol", "-o", "show", "job", str(jobid)])
    if res.returncode != 0 or not res.stdout.strip():
        return None
    line = res.stdout.strip().splitlines()[0]
    # key=value pairs separated by spaces; a value may itself contain spaces,
    # so a pair ends where the next " Key=" begins.
    pairs = re.findall(r"(\w[\w/:]*)=(.*?)(?=\s+\w[\w/:]*=|\s*$)", line)
    return {k: v.strip() for k, v in pairs}


def snakemake_submitted_job_ids(log_text: str) -> dict[str, int]:
    """snakemake job id -> SLURM job id, from snakemake's "... has been
    submitted with SLURM jobid N" lines (a retried job appears twice; the
    last submission wins here, see :func:`snakemake_slurm_ids`)."""
    return {m["job"]: int(m["id"]) for m in _SNAKEMAKE_SUBMIT_RE.finditer(log_text)}


def snakemake_slurm_ids(log_text: str) -> list[int]:
    """Every SLURM job id snakemake reported submitting, in order."""
    return [int(m["id"]) for m in _SNAKEMAKE_SUBMIT_RE.finditer(log_text)]


def snakemake_run_uuid(log_text: str) -> str | None:
    """The plugin's run id (the job name of all its sbatch jobs)."""
    m = re.search(r"SLURM run ID: (\S+)", log_text)
    return m.group(1) if m else None


def cancel_run(run_uuid: str) -> None:
    """Cancel every job of one snakemake run (they share the job name)."""
    if run_uuid and shutil.which("scancel"):
        _run(["scancel", "--name", run_uuid])


# States after which `scontrol show job` no longer changes.
FINAL_JOB_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY",
                    "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def record_jobs(log_text: str, records: dict[int, dict[str, str]]) -> None:
    """Add to `records` the `scontrol show job` record of every SLURM job the
    snakemake output reports, refreshing those not yet in a final state (a
    record SLURM has dropped already stays as last seen)."""
    for jid in snakemake_slurm_ids(log_text):
        known = records.get(jid)
        if known is not None and known.get("JobState", "").split()[0] in FINAL_JOB_STATES:
            continue
        rec = show_job(jid)
        if rec is not None:
            records[jid] = rec


def run_snakemake_on_slurm(cmd: list[str], cwd: Path, logfile: Path, timeout: float,
                           env: dict[str, str] | None = None,
                           records: dict[int, dict[str, str]] | None = None,
                           poll_s: float = 5.0) -> tuple[int | None, str]:
    """Run a snakemake command that submits to SLURM, under a hard timeout.

    SLURM_* variables of the caller are dropped. Returns (exit code, its output);
    the code is None after a timeout, when the run was interrupted (SIGINT lets
    snakemake scancel its jobs, SIGKILL follows) and its jobs cancelled.

    `records`, when given, is filled while the run goes (every `poll_s` s) and
    once at its end with the `scontrol show job` record of each job it
    submitted (see :func:`record_jobs`): a long run's early jobs are kept even
    after SLURM forgets them (MinJobAge after they end).
    """
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}, **(env or {})}
    deadline = time.monotonic() + timeout
    with open(logfile, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        rc = None
        while True:
            try:
                rc = proc.wait(timeout=max(0.1, min(poll_s, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() >= deadline:
                break
            if records is not None:
                try:
                    record_jobs(logfile.read_text(errors="replace"), records)
                except (subprocess.SubprocessError, OSError):
                    pass  # a slow scontrol: try again at the next poll
        if rc is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    log = logfile.read_text(errors="replace")
    if rc is None:
        cancel_run(snakemake_run_uuid(log) or "")
    if records is not None:
        record_jobs(log, records)
    return rc, log


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.5) -> bool:
    """Poll `predicate()` until true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def in_ci() -> bool:
    """True when running under CI (CI=true), where SLURM tests must not skip."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}
