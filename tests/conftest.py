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
    seconds: float

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


def run_snakemake(cwd: Path, *args: str, timeout: float = 600) -> SnakemakeResult:
    """Run `python -m snakemake ARGS` in `cwd`; output is stdout and stderr together."""
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=timeout,
    )
    return SnakemakeResult(proc.returncode, proc.stdout, time.perf_counter() - started)


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
