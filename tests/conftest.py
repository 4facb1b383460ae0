"""Fixtures of the workflow tests: a throw-away copy of the workflow, and a runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))  # deepsea_scaling without `pip install -e .`

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
def jax_cache_env(tmp_path_factory) -> dict[str, str]:
    """Environment for real training runs: one JAX compilation cache for the
    whole session, so a cell compiled once starts faster in later runs."""
    return {"JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache"))}
