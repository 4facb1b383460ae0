"""The tiny study's runs, bit for bit: refactoring the engine must not move a number.

The runs are those of config.yaml's `tiny` study (kinds boot/bootrp with
K in {2, 4}, eps, n in {4, 6}; 4 seeds in one shard; 400 episodes; rb_size 1000,
learning_starts 500, num_log_points 10, base_seed 0) as the workflow trains
them (conftest.tiny_study, the end-to-end tests' run: one training job per
cell and seed shard). The digest covers each run's cell, seed, config hash
and every metric, floats by their exact bits, in a fixed row order.

History: first recorded on the engine API's results before the redesign of
issue 12 and held through it and the research-fidelity options; re-pinned
once, in a commit of its own, when the ablation study changed the defaults
(init uniform, warm-up outside the budget); then recorded from the workflow's
run table instead of a second training of the same runs (the old digest,
615da421..., held on the same code when this one was recorded); re-pinned
(c0835284... before) when the tiny study's shards grew from 2 seeds to 4 (10
training jobs instead of 20): the engine and every discrete outcome are
unchanged, but with K = 4 the last bits of a run's floats depend on how many
runs one program vmaps (XLA orders a gradient reduction by the batch's
width), and its Q-diversity curve with them. A change that
is meant to change the numbers re-pins it the same way: in a commit of its
own, saying why.

One digest per vector ISA: XLA:CPU compiles for the widest vector unit the
CPU has, and a vectorised float reduction sums in an order that follows the
vector width, so the same engine and the same library versions give other
last bits on a CPU with AVX-512 than on one with AVX2 only (found on a 2-core
AMD EPYC of family 25 without AVX-512: every commit's digest there is the
AVX2 one below, the AVX-512 one on the Intel Xeon and AMD EPYC CPUs with
AVX-512 that recorded and checked it). Both digests move together: a change
that holds one and breaks the other is a change of the numbers. A CPU of
another class (another ISA, an ARM machine) has no pin: the test says so and
skips; record its digest with `runs_digest` on the code that holds the others.
"""

import hashlib
import platform
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

PINNED = {
    "x86_64-avx512": "09c269675dbb6f5448194b00fda76b1ece84fd75060aad63cc862677b7c03414",
    "x86_64-avx2": "2506b59b26246ad9758cec7af655062dcf98ddd225d8ff74632503ad1caba288",
}

IDENTITY = ["kind", "ensemble_size", "hardness", "seed", "config_hash", "members"]
METRICS = ["discovered", "episodes_to_discovery", "all_members_discovered", "episodes_to_all_members",
           "final_return", "diverged", "total_episodes", "diversity"]


def runs_digest(runs: pd.DataFrame) -> str:
    """sha256 over every run's identity and metrics (exact bits), rows sorted by cell and seed."""
    runs = runs.sort_values(IDENTITY[:4], kind="stable", ignore_index=True)
    digest = hashlib.sha256()
    for row in runs[IDENTITY + METRICS].itertuples(index=False):
        for name, value in zip(IDENTITY + METRICS, row):
            value = np.ascontiguousarray(value)
            digest.update(f"|{name}:{value.dtype.str}:".encode())
            digest.update(value.tobytes() if value.dtype != object else repr(value.item()).encode())
    return digest.hexdigest()


def isa_class(cpuinfo: str | None = None, machine: str | None = None) -> str:
    """`x86_64-avx512`, `x86_64-avx2`, or the machine name with `-other`: the widest vector unit XLA:CPU uses."""
    machine = machine or platform.machine()
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
    if machine in ("x86_64", "AMD64") and "avx512f" in flags:
        return "x86_64-avx512"
    if machine in ("x86_64", "AMD64") and "avx2" in flags:
        return "x86_64-avx2"
    return f"{machine}-other"


def test_isa_class_reads_the_widest_vector_unit():
    assert isa_class("flags\t: fpu sse2 avx avx2 fma avx512f avx512bw\n", "x86_64") == "x86_64-avx512"
    assert isa_class("flags\t: fpu sse2 avx avx2 fma\n", "x86_64") == "x86_64-avx2"
    assert isa_class("flags\t: fpu sse2 avx\n", "x86_64") == "x86_64-other"
    assert isa_class("Features\t: fp asimd\n", "aarch64") == "aarch64-other"


@pytest.mark.slow
def test_tiny_study_runs_are_bit_identical_to_the_pin(tiny_study):
    runs = pd.read_parquet(tiny_study / "results" / "tiny" / "runs.parquet")
    assert len(runs) == 10 * 4 and runs.groupby(IDENTITY[:3]).size().eq(4).all()
    isa = isa_class()
    if isa not in PINNED:
        pytest.skip(f"no pin for this CPU's vector ISA ({isa}); its digest here: {runs_digest(runs)}")
    assert runs_digest(runs) == PINNED[isa], f"the tiny study's runs moved on a {isa} CPU"
