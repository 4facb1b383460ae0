"""Throughput of the training engine on the benchmark cells of the engine issue.

    python benchmarks/train_throughput.py            # both cells, full budgets, 1 and all CPU devices
    python benchmarks/train_throughput.py --cells named --cpu-devices 2 --episodes 1000

Each cell runs in a fresh process, so "end to end" includes Python start, the
imports and compilation, as the research code's figures did. Prints: seconds to
import, compile and run; vector steps and environment steps per second; peak
resident memory; and the ratio to the research code's figures measured on the
same kind of machine (docs/SCIENCE.md, "Running the original code on a CPU":
named cell 43 s end to end, 6.5 ms per vector step; large cell 245 s, 133 ms). On a CPU each cell runs once per entry of
--cpu-devices: its seeds split over that many XLA CPU devices, one core each (as
`deepsea-train --cpu-devices N` and the workflow's `train_threads` do).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CELLS = {
    "named": dict(kind="bootrp", ensemble_size=8, hardness=12, seeds=8, num_episodes=3000, ref_e2e=43.0, ref_ms=6.5),
    "large": dict(kind="bootrp", ensemble_size=10, hardness=20, seeds=32, num_episodes=2000, ref_e2e=245.0, ref_ms=133.0),
}

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from deepsea_scaling.config import TrainConfig
from deepsea_scaling.engine import train_seeds
import jax
t_import = time.perf_counter() - t0
spec = json.loads(sys.argv[1])
cfg = TrainConfig(kind=spec["kind"], ensemble_size=spec["ensemble_size"], hardness=spec["hardness"],
                  num_episodes=spec["num_episodes"])
res = train_seeds(cfg, range(spec["seeds"]))
print(json.dumps(dict(import_s=t_import, compile_s=res.compile_seconds, run_s=res.run_seconds,
                      steps=cfg.num_vector_steps, num_envs=cfg.num_envs, backend=jax.default_backend(),
                      devices=len(res.devices),
                      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--episodes", type=int, default=None, help="override the episode budget (quick look)")
    parser.add_argument("--cpu-devices", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}),
                        help="CPU device counts to run each cell with (default: 1 and every core)")
    args = parser.parse_args()
    for name in args.cells:
        for devices in args.cpu_devices:
            run_cell(name, devices, args.episodes)


def run_cell(name: str, devices: int, episodes: int | None) -> None:
    spec = dict(CELLS[name])
    if episodes:
        spec["num_episodes"] = episodes
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], check=True, capture_output=True, text=True, env=env)
    e2e = time.perf_counter() - t0
    r = json.loads(out.stdout.strip().splitlines()[-1])
    ms = 1000 * r["run_s"] / r["steps"]
    seeds = spec["seeds"]
    print(
        f"{name:5s} {spec['kind']} K={spec['ensemble_size']} n={spec['hardness']} seeds={seeds} "
        f"episodes={spec['num_episodes']} [{r['backend']} x {r['devices']}]\n"
        f"  end to end {e2e:7.1f} s   import {r['import_s']:.1f} s   compile {r['compile_s']:.1f} s   run {r['run_s']:.1f} s\n"
        f"  {ms:8.3f} ms per vector step   {1000 / ms:9.0f} vector steps/s   "
        f"{1000 / ms * r['num_envs'] * seeds:11.0f} env steps/s (all seeds)   "
        f"{3600 * seeds / max(e2e, 1e-9):8.0f} runs/h (end to end)\n"
        f"  peak RSS {r['peak_rss_mb']:.0f} MB\n"
        f"  vs research code: steady state {spec['ref_ms'] / ms:5.1f}x"
        + (f", end to end {spec['ref_e2e'] / e2e:4.1f}x" if not episodes else " (end-to-end ratio needs the full budget)")
    )


if __name__ == "__main__":
    main()
