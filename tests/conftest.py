"""Fixtures of the workflow tests: a throw-away copy of the workflow, and a runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))  # deepsea_scaling without `pip install -e .`

# One JAX compilation cache for the whole test session, shared by in-process
# tests, the training command's subprocesses and Snakemake's training jobs
# (they inherit the environment; the workflow's jobs use
# $JAX_COMPILATION_CACHE_DIR when it is set). Set before anything imports jax,
# which reads these variables once. Every program is cached, however fast it
# compiled (JAX skips those under 1 s by default): the suite compiles the same
# small programs in many processes. A cache the caller set is kept.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    _SESSION_CACHE = tempfile.mkdtemp(prefix="deepsea-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# What a user's checkout of the workflow holds; results, logs and .snakemake stay out.
WORKFLOW_FILES = ["Snakefile", "config.yaml", "workflow", "profiles", "envs"]
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".snakemake", "results", "plots", "logs")


def copy_workflow(dest: Path) -> Path:
    """Copy the workflow's files (not its results) into `dest`; return `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=_IGNORE)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


# The modules that take longest, longest first (their summed test durations in a
# full run, `--durations=0`): pytest-xdist's `--dist loadfile` hands whole
# modules to idle workers in collection order, so starting the long ones first
# keeps one from being left to run alone at the end. The rest keep their order.
SLOWEST_FIRST = ["test_slurm.py", "test_e2e.py", "test_robustness.py", "test_frontier_e2e.py", "test_engine.py",
                 "test_workflow.py", "test_cli.py", "test_fidelity.py", "test_budget.py", "test_gpu_check.py",
                 "test_inputs.py", "test_reference_e2e.py", "test_plots.py", "test_stats.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a module kept


def pytest_unconfigure(config):
    cache = globals().get("_SESSION_CACHE")
    if cache and not hasattr(config, "workerinput"):  # the controller removes what it made
        shutil.rmtree(cache, ignore_errors=True)


@dataclass
class SnakemakeResult:
    returncode: int
    output: str
    seconds: float  # wall clock
    cpu_seconds: float = float("nan")  # user + system time of snakemake and its children (load-independent)

    def job_counts(self) -> dict[str, int]:
        """The dry run's 'Job stats' table as {rule: count} (with 'total')."""
        counts, inside = {}, False
        for line in self.output.splitlines():
            if line.startswith("Job stats:"):
                inside, counts = True, {}
                continue
            if inside:
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit():
                    counts[parts[0]] = int(parts[1])
                    if parts[0] == "total":
                        inside = False
        return counts


def run_snakemake(cwd: Path, *args: str, timeout: float = 600,
                  env: dict[str, str] | None = None) -> SnakemakeResult:
    """Run `python -m snakemake ARGS` in `cwd`; output is stdout and stderr together.

    `env`: variables added to (or replacing) the calling environment's.
    """
    import resource

    env = {**os.environ, **(env or {})}
    env.setdefault("MPLBACKEND", "Agg")
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=timeout,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return SnakemakeResult(proc.returncode, proc.stdout, time.perf_counter() - started, cpu)


@pytest.fixture(scope="session")
def workflow_dir(tmp_path_factory) -> Path:
    """A copy of the workflow for dry runs (nothing is built in it)."""
    return copy_workflow(tmp_path_factory.mktemp("workflow"))


@pytest.fixture
def fresh_workflow(tmp_path) -> Path:
    """A copy of the workflow for one test that builds (fake or real) outputs."""
    return copy_workflow(tmp_path / "workflow")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


# ------------------------------------------------ small studies for real runs
def write_study_config(dest: Path, name: str, **changes) -> Path:
    """A config file with one study `name`, the `tiny` study of config.yaml
    shrunk by `changes` (default: boot K=2 and eps at n=4, 4 seeds in shards of
    2: 4 training shards), made the active study. Pass it with
    `--configfile PATH`: Snakemake merges it into config.yaml."""
    import yaml

    spec = yaml.safe_load((REPO / "config.yaml").read_text())["studies"]["tiny"]
    spec.update(
        description=f"test study {name}: the tiny study, shrunk",
        kinds={"boot": {"ensemble_sizes": [2], "hardness": [4]}, "eps": {"hardness": [4]}},
        seeds_per_cell=4,
        shard_size=2,
    )
    spec.update(changes)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump({"study": name, "studies": {name: spec}}, sort_keys=False))
    return dest


@pytest.fixture(scope="session")
def jax_cache_env() -> dict[str, str]:
    """Environment for real training runs: the session's JAX compilation cache
    (set above for every process the tests start; named here for the runs
    that pass their environment explicitly)."""
    return {name: os.environ[name] for name in
            ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}


# ------------------------------------------- trained once, read by many tests
@contextmanager
def _exclusive(lock: Path):
    """Hold an exclusive lock on the file `lock` (blocking): one pytest-xdist worker at a time."""
    import fcntl

    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """config.yaml's `tiny` study built for real with `--cores 2` in a copy of
    the workflow: every table and figure (test_e2e.py), the pin's run table
    (test_pin.py) and the cells trained alone that test_robustness.py compares
    its grouped rows with. Trained once per test run: under pytest-xdist the
    first worker that asks trains it, in a folder all workers share, and the
    others wait for it and read it."""
    pytest.importorskip("deepsea_scaling.engine")
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    wf, done = root / "tiny_study", root / "tiny_study.done"
    with _exclusive(root / "tiny_study.lock"):
        if not done.exists():
            shutil.rmtree(wf, ignore_errors=True)  # what a worker that failed left
            copy_workflow(wf)
            # gpu=2: two training shards at once on the CPU (the profile's gpu=1 is for one GPU)
            result = run_snakemake(wf, "--cores", "2", "--resources", "gpu=2", "--config", "study=tiny",
                                   timeout=1500)
            assert result.returncode == 0, result.output[-5000:]
            done.touch()
    return wf
