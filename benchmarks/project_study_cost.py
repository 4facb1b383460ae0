"""Project what a whole study costs on this device, from a few timed cells.

    python benchmarks/project_study_cost.py --study paper
    python benchmarks/project_study_cost.py --study default --samples 6

1. Reads the study from config.yaml (the workflow's own expansion).
2. Times a sample of its cells on the current JAX device: compile seconds, and
   seconds per vector step of the learning phase. Each sample uses the study's
   seeds per shard, K and n, with a short budget. (A real run's warm-up steps
   only act and are cheaper; they are costed as learning steps, an
   overestimate of at most a few percent at the paper's budget.)
3. Fits a cost model per vector step,
       seconds/step = a + b * S*K + c * S*K*n^2 + d * S
   (S seeds, K members: a is fixed per-step overhead, b the per-member network
   work, c the per-member work that grows with the n^2-row first layer -- the
   optimiser's pass over it -- and d the per-seed environment work), by
   non-negative least squares on the samples.
4. Prints the projected device-hours of the study: training per kind (and
   variant), compiles (one per program shape: boot and bootrp share programs),
   and the total, with the model's fit on the samples.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from deepsea_scaling import study as study_lib  # noqa: E402
from deepsea_scaling.config import TrainConfig, program_signature  # noqa: E402


def sample_cells(cells, samples: int):
    """Cells spread over the (K, n) range: the corners, the centre, then evenly spaced others."""
    ks = sorted({c.ensemble_size for c in cells if c.kind != "eps"})
    ns = sorted({c.hardness for c in cells})
    pick = lambda xs, q: xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]  # noqa: E731
    wanted = [(pick(ks, qk), pick(ns, qn)) for qk, qn in
              [(0, 0), (1, 1), (0.5, 0.5), (1, 0), (0, 1), (0.5, 1), (1, 0.5), (0.25, 0.75), (0.75, 0.25)]]
    chosen, seen = [], set()
    ensemble = [c for c in cells if c.kind != "eps" and c.variant == study_lib.DEFAULT_VARIANT]
    for k, n in wanted:
        best = min(ensemble, key=lambda c: (abs(c.ensemble_size - k), abs(c.hardness - n)))
        key = (best.ensemble_size, best.hardness)
        if key not in seen:
            seen.add(key)
            chosen.append(best)
        if len(chosen) == samples:
            break
    return chosen


def time_cell(config: TrainConfig, seeds: int, learn_steps: int, repeats: int = 1) -> dict:
    """Compile seconds and steady-state seconds per learning vector step of one cell.

    The engine's own `train_seeds` runs the cell cut in 1 + `repeats` logging
    segments of about `learn_steps` steps; the later ones, all learning steps,
    are timed (nothing is compiled or warmed up in them) and the fastest
    counts (on a busy machine other work slows some). Runs are split over the
    CPU devices as in a training job.
    """
    from deepsea_scaling.engine import train_seeds

    warm = 2  # learning starts after two vector steps of acting
    points = 1 + repeats
    steps = warm + points * learn_steps
    probe = TrainConfig.from_dict({
        **config.to_dict(), "num_episodes": math.ceil(steps * config.num_envs / config.hardness),
        "learning_starts": warm * config.num_envs, "num_log_points": points,
        "num_probe_states": min(config.num_probe_states, warm * config.num_envs),
    })
    result = train_seeds(probe, range(seeds))
    total = probe.num_vector_steps
    per_step = [result.segment_seconds[p] / ((p + 1) * total // points - p * total // points) for p in range(1, points)]
    return {"compile_s": result.compile_seconds, "step_s": min(per_step)}


def features(seeds: int, members: int, n: int) -> np.ndarray:
    return np.array([1.0, seeds * members, seeds * members * n * n, seeds], dtype=float)


def fit_cost_model(X, y) -> tuple[np.ndarray, float]:
    """Coefficients of seconds per vector step over `features` (non-negative least squares on the
    samples' rows X and seconds y), and the worst relative error on the samples."""
    from scipy.optimize import nnls

    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    scale = X.max(axis=0)
    coef, _ = nnls(X / scale, y)
    coef = coef / scale
    return coef, float(np.max(np.abs(X @ coef - y) / y))


def project_study(study, coef: np.ndarray, compile_s: float) -> dict:
    """Device-hours of every shard of `study` under the cost model `coef`: training per
    kind/variant, compiles (one per program: boot and bootrp share programs) and the total."""
    per_group: dict[str, float] = {}
    programs = set()
    for cell in study.cells():
        cfg = cell.config
        for start, stop in study.shards():
            s = stop - start
            group = f"{cell.kind}/{cell.variant}"
            per_group[group] = per_group.get(group, 0.0) + cfg.num_vector_steps * float(
                features(s, cfg.members, cell.hardness) @ coef) / 3600
            programs.add((program_signature(cfg), s))
    compile_h = len(programs) * compile_s / 3600
    return {"train_h": per_group, "programs": len(programs), "compile_h": compile_h,
            "total_h": sum(per_group.values()) + compile_h}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default="paper")
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--samples", type=int, default=7, help="cells to time (>= 4)")
    parser.add_argument("--learn-steps", type=int, default=200, help="learning steps timed per sample")
    parser.add_argument("--cpu-devices", type=int, default=1,
                        help="on a CPU: split each job's runs over this many devices, one core each (train_threads)")
    args = parser.parse_args()

    from deepsea_scaling.train import use_cpu_devices

    use_cpu_devices(args.cpu_devices)
    import jax

    with open(args.config) as f:
        config = yaml.safe_load(f)
    study = study_lib.load_study(config, args.study)
    cells = study.cells()
    seeds = min(study.shard_size, study.seeds_per_cell)
    print(f"study {study.name}: {len(cells)} cells, {study.seeds_per_cell} seeds per cell in shards of {seeds}, "
          f"{study.num_episodes:,} episodes per run; device: {jax.default_backend()} {jax.devices()[0].device_kind} "
          f"x {len(jax.devices())}")

    rows, X, y = [], [], []
    for cell in sample_cells(cells, max(4, args.samples)):
        t0 = time.perf_counter()
        m = time_cell(cell.config, seeds, args.learn_steps)
        rows.append((cell, m))
        X.append(features(seeds, cell.config.members, cell.hardness))
        y.append(m["step_s"])
        print(f"  timed {cell.kind} K={cell.ensemble_size:3d} n={cell.hardness:3d}: compile {m['compile_s']:5.1f} s, "
              f"{1e3 * m['step_s']:8.2f} ms per vector step ({time.perf_counter() - t0:.0f} s)", flush=True)

    coef, worst = fit_cost_model(X, y)
    print("cost model, seconds per vector step = "
          f"{coef[0]:.3g} + {coef[1]:.3g}*S*K + {coef[2]:.3g}*S*K*n^2 + {coef[3]:.3g}*S; "
          f"worst relative error on the samples {worst:.0%}")
    compile_s = float(np.median([m["compile_s"] for _, m in rows]))

    p = project_study(study, coef, compile_s)
    print(f"\nprojected device-hours for study '{study.name}' on this device ({jax.default_backend()}):")
    for group, hours in sorted(p["train_h"].items()):
        print(f"  train {group:28s} {hours:9.2f} h")
    print(f"  compile ({p['programs']} programs x {compile_s:.1f} s)   {p['compile_h']:9.2f} h")
    print(f"  TOTAL                              {p['total_h']:9.2f} h  "
          f"(analysis and figures: minutes, not counted)")
    if jax.default_backend() == "cpu":
        print(f"  = {p['total_h'] * len(jax.devices()):,.0f} CPU-core-hours "
              f"({len(jax.devices())} core(s) per job, one per CPU device)")


if __name__ == "__main__":
    main()
