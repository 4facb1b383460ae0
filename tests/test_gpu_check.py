"""benchmarks/gpu_check.sh on the CPU backend, smallest sizes: every section of its JSON is there and sane."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ["install", "tests", "throughput", "frontier", "agreement", "projection"]


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_gpu_check_on_cpu_writes_every_section(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ)  # the session's compilation cache (conftest): the agreement's CPU side reuses programs
    cmd = ["bash", "benchmarks/gpu_check.sh", "--out", str(out), "--cpu", "--skip-tests", "--sizes", "2",
           "--learn-steps", "4", "--throughput-cells", "named", "--throughput-episodes", "24", "--frontier-cells", "1",
           "--agree-seeds", "2", "--agree-episodes", "50", "--design-studies", "2"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert (out / "gpu_check.md").read_text().startswith("# GPU check: ")

    machine = report["machine"]
    assert machine["backend"] == "cpu" and machine["device_kind"] and machine["jax"] and machine["cpu_model"]
    assert machine["project_import"] == "ok"
    phases = report["phases"]
    assert list(phases) == SECTIONS
    assert phases["install"]["status"] == "skipped" and phases["tests"]["status"] == "skipped"
    assert all(phases[name]["status"] == "ok" for name in SECTIONS[2:]), {k: v["status"] for k, v in phases.items()}

    (cell,) = phases["throughput"]["cells"]
    assert all(positive(cell[key]) for key in ("compile_s", "run_s", "ms_per_vector_step", "end_to_end_s"))
    (timed,) = phases["frontier"]["measurements"]
    assert timed["status"] == "ok" and (timed["K"], timed["n"], timed["seeds"]) == (10, 32, 2)
    assert positive(timed["compile_s"]) and positive(timed["step_s"]) and positive(timed["hours_at_50k"])

    agreement = phases["agreement"]
    assert agreement["passed"] and [c["kind"] for c in agreement["cells"]] == ["boot", "bootrp"]
    for c in agreement["cells"]:  # one backend against itself: the same runs, bit for bit
        assert c["device_backend"] == c["cpu_backend"] == "cpu" and c["discovered_device"] == c["discovered_cpu"]
        assert c["q_initial_max_abs_diff"] == 0 and positive(c["q_initial_max_abs"])

    designs = phases["projection"]["designs"]
    assert list(designs)[:3] == ["grid", "reference", "frontier"]  # then paper_check, where config.yaml has it
    assert all(positive(d["total_h"]) and positive(d["cells"]) for d in designs.values())
    assert designs["frontier"]["total_h"] < designs["reference"]["total_h"] < designs["grid"]["total_h"]
