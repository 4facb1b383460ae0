"""Nothing lost: interruptions, corrupt tables, new hyperparameters and copied results.

Each guarantee of the robustness issue, on real (small) runs of the workflow:

1. interrupted runs (SIGINT of the run, SIGKILL of Snakemake, SIGKILL of a
   training job while it writes) rerun with the same command train only the
   unfinished groups and end with the tables of an uninterrupted run (so a
   rerun is also deterministic: every table equals the reference's, exactly);
2. a truncated or foreign group table stops the merge with one line naming the
   file and the command that rebuilds it (and that command works);
3. a changed hyperparameter plans new paths only;
4. results copied to another checkout are up to date: figures build there
   without training.
The grouped path's rows equal the rows of the same cells trained alone
(`test_grouped_rows_equal_the_tiny_studys_rows_of_the_same_cells`).

Elsewhere: bad input (test_workflow.py, test_study.py, test_inputs.py),
divergence (test_engine.py, test_stats.py), cluster faults
(test_slurm.py).

All runs use the study `rmini`, on the grouped path users run
(`train_grouping: shape`): boot and bootrp with K = 2 at n = 4 train together,
eps at n = 4 alone, 4 seeds in shards of 2: 4 training jobs, 3 cells x 4 seeds.
`--cores 2`; one uninterrupted reference run is shared by the module.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from conftest import copy_workflow, run_snakemake, write_study_config

STUDY = "rmini"
TABLES = ["runs.parquet", "convergence.csv", "psi_fit.csv", "kind_comparison.csv"]
TARGETS = [f"results/{STUDY}/{t}" for t in TABLES]
N_GROUPS = 4  # (boot + bootrp, eps) x 2 seed shards
N_RUNS = 3 * 4  # cells x seeds
RMINI = dict(
    kinds={"boot": {"ensemble_sizes": [2], "hardness": [4]}, "bootrp": {"ensemble_sizes": [2], "hardness": [4]},
           "eps": {"hardness": [4]}},
    train_grouping="shape",
)
RUN_TIMEOUT = 300


def study_command(config: Path) -> list[str]:
    """The one command every run of a checkout uses (and reruns unchanged)."""
    return [*TARGETS, "--cores", "2", "--configfile", str(config)]


# ------------------------------------------------------------------ helpers
def group_tables(wf: Path) -> list[Path]:
    return sorted((wf / "results" / STUDY / "runs").glob("*.parquet"))


def group_with(wf: Path, kind: str, seeds: str) -> str:
    """The group table (relative path) that holds `kind`'s runs of seed range `seeds` ("2-4")."""
    for path in group_tables(wf):
        if f"_s{seeds}_" in path.name and kind in set(pd.read_parquet(path, columns=["kind"])["kind"]):
            return str(path.relative_to(wf))
    raise AssertionError(f"no group table of {kind} seeds {seeds} in {wf}")


def train_outputs_by_jobid(log: str) -> dict[str, str]:
    """Snakemake job id -> the group table a `train_group` job writes, from its job blocks."""
    jobs, current, output = {}, False, None
    for line in log.splitlines():
        stripped = line.strip()
        if stripped.endswith(":") and stripped.split()[-1].rstrip(":") and "rule " in stripped:
            current, output = stripped in ("rule train_group:", "localrule train_group:"), None
        elif current and stripped.startswith("output:"):
            output = stripped.split(":", 1)[1].split(",")[0].strip()
        elif current and stripped.startswith("jobid:") and output:
            jobs[stripped.split(":", 1)[1].strip()] = output
            current = False
    return jobs


def finished_groups(log: str) -> set[str]:
    """Group tables whose train_group job Snakemake reported finished."""
    outputs = train_outputs_by_jobid(log)
    done = re.findall(r"Finished jobid: (\d+) \(Rule: train_group\)", log)
    return {outputs[j] for j in done if j in outputs}


def train_pids(wf: Path) -> list[int]:
    """PIDs of `python -m deepsea_scaling.train` processes working in `wf` (pgrep -f)."""
    proc = subprocess.run(["pgrep", "-f", "deepsea_scaling.train"], capture_output=True, text=True)
    pids = []
    for pid in map(int, proc.stdout.split()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue
        if b"-m" in argv and b"deepsea_scaling.train" in argv and cwd.resolve() == wf.resolve():
            pids.append(pid)
    return pids


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Background:
    """`python -m snakemake ARGS` in its own session (like a terminal's job), output to a file."""

    def __init__(self, wf: Path, args: list[str], env: dict[str, str]):
        self.logfile = wf / f"snakemake-{time.monotonic_ns()}.out"
        self._fh = open(self.logfile, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "snakemake", *args], cwd=wf,
            # unbuffered: the test reads Snakemake's progress from this file while it runs
            env={**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", **env},
            stdout=self._fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
            # A shell that starts this suite in the background (`cmd &` without job control) starts it with
            # SIGINT ignored, and children inherit that: restore the default so Ctrl-C reaches Snakemake.
            preexec_fn=_default_sigint,
        )

    def text(self) -> str:
        return self.logfile.read_text(errors="replace")

    def wait(self, timeout: float = RUN_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"snakemake did not end within {timeout} s:\n{self.text()[-3000:]}")
        finally:
            self._fh.close()

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def _cells(value) -> str:
    """A run-table value as exact text (floats by repr, arrays as lists)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    return repr(value)


def assert_same_tables(wf: Path, reference: Path):
    """The study's tables in `wf` equal the reference's: same rows, same values, exactly."""
    ours = pd.read_parquet(wf / "results" / STUDY / "runs.parquet")
    theirs = pd.read_parquet(reference / "results" / STUDY / "runs.parquet")
    assert list(ours.columns) == list(theirs.columns)
    assert len(ours) == len(theirs) == N_RUNS
    assert set(ours["kind"]) == {"boot", "bootrp", "eps"}
    pd.testing.assert_frame_equal(ours.map(_cells), theirs.map(_cells))
    for table in TABLES[1:]:
        ours_text = (wf / "results" / STUDY / table).read_text()
        assert ours_text == (reference / "results" / STUDY / table).read_text(), table


def copy_results(src: Path, dest: Path, keep_times: bool = True) -> Path:
    """A fresh checkout of the workflow holding a copy of `src`'s results (no .snakemake/)."""
    copy_workflow(dest)
    shutil.copytree(src / "results", dest / "results",
                    copy_function=shutil.copy2 if keep_times else shutil.copyfile)
    return dest


@dataclass
class Checkout:
    wf: Path
    config: Path
    env: dict

    def run(self, *extra: str, env: dict | None = None, timeout: float = RUN_TIMEOUT):
        return run_snakemake(self.wf, *study_command(self.config), *extra,
                             env={**self.env, **(env or {})}, timeout=timeout)

    def start(self, env: dict | None = None) -> Background:
        return Background(self.wf, study_command(self.config), {**self.env, **(env or {})})


def new_checkout(tmp: Path, env: dict) -> Checkout:
    wf = copy_workflow(tmp / "wf")
    return Checkout(wf, write_study_config(tmp / "rmini.yaml", STUDY, **RMINI), env)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, jax_cache_env) -> Checkout:
    """The uninterrupted run of the study (about 30 s)."""
    pytest.importorskip("deepsea_scaling.engine")
    checkout = new_checkout(tmp_path_factory.mktemp("reference"), jax_cache_env)
    result = checkout.run()
    assert result.returncode == 0, result.output[-3000:]
    assert result.job_counts().get("train_group") == N_GROUPS, result.output[-3000:]
    for path in group_tables(checkout.wf):  # boot and bootrp really trained in one job
        kinds = set(pd.read_parquet(path, columns=["kind"])["kind"])
        assert kinds in ({"boot", "bootrp"}, {"eps"}), (path, kinds)
    return checkout


def _interrupt_after_a_group(checkout: Checkout, interrupt, left: int = N_GROUPS) -> tuple[Background, set[str], dict]:
    """Start the study, call interrupt(run) once a group is finished, wait for the run to end.

    `left`: the groups still to train when it starts. Returns the run, the
    groups Snakemake reported finished before the interruption, and the
    mtimes of those tables.
    """
    run = checkout.start()
    wait_until(lambda: finished_groups(run.text()), 120, "a finished training group")
    done = finished_groups(run.text())
    assert run.proc.poll() is None, "the run ended before it could be interrupted:\n" + run.text()[-3000:]
    interrupt(run)
    run.wait()
    # nothing of the interrupted run is still training (orphans of a killed
    # Snakemake finish on their own first, as they would on a real machine)
    wait_until(lambda: not train_pids(checkout.wf), 120, "orphaned training jobs to end")
    assert 0 < len(done) < left, f"interrupted too late to test anything: {done}"
    mtimes = {p: (checkout.wf / p).stat().st_mtime_ns for p in done}
    return run, done, mtimes


def _rerun_and_check(checkout: Checkout, done: set[str], mtimes: dict, reference: Checkout):
    present = {str(p.relative_to(checkout.wf)) for p in group_tables(checkout.wf)}
    rerun = checkout.run()  # the same command, unchanged
    assert rerun.returncode == 0, rerun.output[-4000:]
    retrained = rerun.job_counts().get("train_group", 0)
    # Only unfinished groups train again: never one Snakemake had finished;
    # at least every missing one (a table written while the run was being
    # killed is unfinished for Snakemake and may train again).
    assert N_GROUPS - len(present) <= retrained <= N_GROUPS - len(done), rerun.output[-4000:]
    for path in done:
        assert (checkout.wf / path).stat().st_mtime_ns == mtimes[path], f"{path} was retrained"
    assert_same_tables(checkout.wf, reference.wf)


# ------------------------------------------------------ 1. interrupted runs
@pytest.mark.slow
def test_sigint_then_sigkill_then_same_command_trains_only_unfinished_groups(reference, tmp_path):
    """Ctrl-C (SIGINT to the whole foreground process group) once a group is finished; the same
    command again, its Snakemake alone SIGKILLed once another group is finished (its lock and
    incomplete-markers stay behind, its running jobs finish as orphans); the same command a third
    time: the workflow profile (nolock, rerun-incomplete) lets it finish, training only groups no
    run finished, and the tables are the uninterrupted run's, exactly."""
    checkout = new_checkout(tmp_path, reference.env)
    run, done, mtimes = _interrupt_after_a_group(checkout, lambda run: os.killpg(run.proc.pid, signal.SIGINT))
    assert run.proc.returncode != 0
    assert not (checkout.wf / "results" / STUDY / "runs.parquet").exists()

    again, done_again, mtimes_again = _interrupt_after_a_group(
        checkout, lambda run: os.kill(run.proc.pid, signal.SIGKILL), left=N_GROUPS - len(done))  # Snakemake only
    assert again.proc.returncode == -signal.SIGKILL
    assert not done & done_again, f"groups the first run finished were trained again: {done & done_again}"
    for path in done:
        assert (checkout.wf / path).stat().st_mtime_ns == mtimes[path], f"{path} was retrained"
    _rerun_and_check(checkout, done | done_again, {**mtimes, **mtimes_again}, reference)


# Test-only fault, loaded by every Python started with this folder on
# PYTHONPATH: in a training process, writing the table whose temporary path
# contains HANG_WRITE writes half of it, tells the test its PID, and hangs
# until killed. Product code is untouched.
SITECUSTOMIZE = textwrap.dedent('''
    import os, sys
    _folder, _name = os.environ.get("HANG_WRITE", "|").split("|")
    if _folder and "deepsea_scaling.train" in sys.orig_argv:
        import pyarrow.parquet as _pq
        _write_table = _pq.write_table

        def write_table(table, where, *args, **kwargs):
            _write_table(table, where, *args, **kwargs)
            if _folder in str(where) and _name in str(where):
                with open(where, "rb+") as f:
                    f.truncate(os.path.getsize(where) // 2)
                with open(os.environ["HANG_MARKER"], "w") as f:
                    f.write(f"{os.getpid()} {where}")
                import time
                time.sleep(3600)

        _pq.write_table = write_table
''')


@pytest.mark.slow
def test_training_job_killed_while_writing(reference, tmp_path):
    """SIGKILL of one training job (the boot + bootrp group) in the middle of
    writing its table: no file under the final name, the other groups finish,
    the same command then trains that group alone and the tables equal the
    uninterrupted run's."""
    checkout = new_checkout(tmp_path, reference.env)
    target = group_with(reference.wf, "bootrp", "2-4")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    marker = tmp_path / "hanging"
    run = checkout.start(env={
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
        "HANG_WRITE": f"{Path(target).parent}/|{Path(target).name}",
        "HANG_MARKER": str(marker),
    })
    wait_until(marker.exists, 120, "the training job to hang while writing")
    pid = int(marker.read_text().split()[0])
    assert pid in train_pids(checkout.wf)  # what `pgrep -f deepsea_scaling.train` finds
    partial = checkout.wf / marker.read_text().split(maxsplit=1)[1]  # relative or absolute
    final = checkout.wf / target
    assert partial.stat().st_size > 0
    # while the job writes, nothing is under the final name (only a hidden temporary)
    assert not final.exists(), "a job writes its table under the final name"
    assert partial.name.startswith(f".{final.name}.tmp-"), partial
    os.kill(pid, signal.SIGKILL)
    rc = run.wait()
    log = run.text()

    assert rc != 0, log[-3000:]
    assert not final.exists(), "a killed job left a file under the final name"
    assert not final.with_suffix(".json").exists()
    assert all(".tmp-" not in p.name for p in group_tables(checkout.wf))
    # it really died mid-write: the half-written temporary file is still there, hidden
    assert partial.exists() and partial.name.startswith(f".{final.name}.tmp-")
    job_log = f"logs/{STUDY}/train/" + target.split("/runs/", 1)[1].replace(".parquet", ".log")
    assert "Error in rule train_group" in log and job_log in log, log[-3000:]
    assert len(group_tables(checkout.wf)) == N_GROUPS - 1  # keep-going: the others finished
    done = finished_groups(log)
    assert target not in done and len(done) == N_GROUPS - 1
    mtimes = {p: (checkout.wf / p).stat().st_mtime_ns for p in done}

    rerun = checkout.run()
    assert rerun.returncode == 0, rerun.output[-4000:]
    assert rerun.job_counts().get("train_group") == 1, rerun.output[-4000:]
    assert f"output: {target}" in rerun.output
    for path in done:
        assert (checkout.wf / path).stat().st_mtime_ns == mtimes[path], f"{path} was retrained"
    assert_same_tables(checkout.wf, reference.wf)


# ----------------------------------------- 2./3. bad tables at merge time
@pytest.mark.slow
def test_corrupt_or_foreign_table_stops_merge_and_hint_rebuilds(reference, tmp_path):
    checkout = Checkout(copy_results(reference.wf, tmp_path / "wf"), reference.config, reference.env)
    wf = checkout.wf
    boot = group_with(wf, "boot", "0-2")
    eps = group_with(wf, "eps", "0-2")
    original = (wf / boot).read_bytes()

    def merge_error(result) -> str:
        assert result.returncode != 0, result.output[-3000:]
        assert result.job_counts().get("train_group", 0) == 0, result.output[-3000:]
        lines = [line for line in result.output.splitlines() if line.startswith("merge_runs: error:")]
        assert len(lines) == 1, result.output[-3000:]
        return lines[0]

    # A table of another configuration (same seeds, other cell) under this path.
    shutil.copy(wf / eps, wf / boot)
    line = merge_error(checkout.run())
    assert f"{boot}: rows (config hash, seed) differ from the plan" in line, line
    assert f"--forcerun {boot}" in line, line

    # A truncated table (e.g. a copy cut short).
    (wf / boot).write_bytes(original[: len(original) // 2])
    line = merge_error(checkout.run())
    assert f"{boot} is unreadable" in line and f"--forcerun {boot}" in line, line
    assert not (wf / "results" / STUDY / "runs.parquet").exists()

    # The hint's command rebuilds exactly that group, identical to the first time.
    rebuilt = checkout.run("--forcerun", boot)
    assert rebuilt.returncode == 0, rebuilt.output[-3000:]
    assert rebuilt.job_counts().get("train_group") == 1, rebuilt.output[-3000:]
    assert (wf / boot).read_bytes() == original
    assert_same_tables(wf, reference.wf)


# ------------------------------------------- 3. new hyperparameters, new paths
@pytest.mark.slow
def test_changed_hyperparameter_plans_only_new_paths(reference, tmp_path):
    """With the reference's tables present, a changed learning rate plans every
    group anew under new names, and the merge reads none of the old ones."""
    old = {str(p.relative_to(reference.wf)) for p in group_tables(reference.wf)}
    old_digests = {Path(p).stem.rsplit("_", 1)[1] for p in old}
    hyper = dict(reference_hyperparameters(reference.config), learning_rate=1e-3)
    changed = write_study_config(tmp_path / "changed.yaml", STUDY, hyperparameters=hyper, **RMINI)
    result = run_snakemake(reference.wf, *TARGETS, "-n", "--configfile", str(changed))
    assert result.returncode == 0, result.output[-3000:]
    assert result.job_counts().get("train_group") == N_GROUPS, result.output[-3000:]
    planned = set(train_outputs_by_jobid(result.output).values())
    assert len(planned) == N_GROUPS and not planned & old
    merge_inputs = re.search(r"rule merge_runs:\n\s+input: (.*)\n", result.output)[1].split(", ")
    assert set(merge_inputs) == planned
    assert not {Path(p).stem.rsplit("_", 1)[1] for p in merge_inputs} & old_digests


def reference_hyperparameters(config: Path) -> dict:
    import yaml

    return yaml.safe_load(config.read_text())["studies"][STUDY]["hyperparameters"]


# ------------------------------------------- 4. resume across machines
@pytest.mark.slow
def test_copied_results_build_figures_without_training(reference, tmp_path):
    """Results copied (timestamps kept, as rsync -a / cp -a do) into another
    checkout without .snakemake/: the tables are up to date and a figure is
    built from them alone. Copied with new timestamps, nothing trains either."""
    other = Checkout(copy_results(reference.wf, tmp_path / "kept"), reference.config, reference.env)
    up_to_date = other.run("-n")
    assert up_to_date.returncode == 0 and "Nothing to be done" in up_to_date.output, up_to_date.output[-3000:]
    figure = f"plots/{STUDY}/probability_vs_n.png"
    built = run_snakemake(other.wf, figure, "--cores", "2", "--configfile", str(other.config),
                          env=other.env)
    assert built.returncode == 0, built.output[-3000:]
    assert built.job_counts() == {"plot_probability_vs_n": 1, "total": 1}, built.output[-3000:]
    assert (other.wf / figure).stat().st_size > 0

    fresh = Checkout(copy_results(reference.wf, tmp_path / "fresh", keep_times=False),
                     reference.config, reference.env)
    plan = fresh.run("-n")
    assert plan.returncode == 0, plan.output[-3000:]
    assert "train_group" not in plan.job_counts(), plan.output[-3000:]


# ------------------------------------------- 5. grouped rows, the same as alone
# Last in the module: under pytest-xdist another worker is likely to have trained the tiny study by then.
@pytest.mark.slow
def test_grouped_rows_equal_the_tiny_studys_rows_of_the_same_cells(reference, tiny_study):
    """rmini trains boot with bootrp in one program per seed shard (train_grouping: shape); the tiny
    study trains each cell alone (cell by cell). rmini's cells are tiny's K = 2, n = 4 cells with the
    same hyperparameters, so the same config hashes and seeds: every row must be the same, exactly."""
    keys = ["kind", "ensemble_size", "hardness", "seed"]
    grouped = pd.read_parquet(reference.wf / "results" / STUDY / "runs.parquet").drop(columns="study")
    alone = pd.read_parquet(tiny_study / "results" / "tiny" / "runs.parquet").drop(columns="study")
    alone = alone[alone["config_hash"].isin(set(grouped["config_hash"]))]
    assert len(alone) == len(grouped) == N_RUNS and set(grouped["kind"]) == {"boot", "bootrp", "eps"}
    grouped, alone = (t.sort_values(keys, ignore_index=True) for t in (grouped, alone))
    pd.testing.assert_frame_equal(grouped.map(_cells), alone[grouped.columns].map(_cells))
