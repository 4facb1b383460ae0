"""Simulate the three study designs on the paper grid and print their table (markdown).

    python benchmarks/simulate_designs.py --studies 400

Each simulated study draws every cell of the paper grid (docs/SCIENCE.md,
"Grids") from the published law, ψ 0.80 (boot) and 0.87 (bootrp), with beta
overdispersion matching the published Pearson dispersions 4.1 and 8.1 at 32
seeds; every seed of every cell is fixed once, so the designs see the same
worlds. Per design and kind, over the studies: cells trained, projected
CPU-hours (the project's cost model, `deepsea_scaling.cost`, with its
reference-mode coefficients by default, the mode of the paper's study,
`--fidelity`; 50,000 episodes, each cell trained alone, compiles left out),
bias of ψ (± its Monte Carlo standard error), coverage of ψ's 95% quasi-likelihood interval, its half-width, the fraction
reaching the target half-width, rounds, and for `reference` the speculative
overhead (cells trained that the protocol then skipped).
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from deepsea_scaling.designs import FrontierSettings  # noqa: E402
from deepsea_scaling.simulate import (PUBLISHED_DISPERSION, PUBLISHED_PSI, SimulatedWorlds,  # noqa: E402
                                      simulate_frontier_design, simulate_grid_design, simulate_reference_design)

TARGETS = {"boot": 0.01, "bootrp": 0.02}  # published interval half-widths (issue 14)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def summarise(design: str, kind: str, df: pd.DataFrame, psi: float, target: float) -> dict:
    err = df["psi"] - psi
    row = {
        "design": design, "kind": kind, "studies": len(df),
        "cells": df["cells"].mean(), "CPU-h": df["cost_h"].mean(), "CPU-h max": df["cost_h"].max(),
        "bias ψ": f"{err.mean():+.4f} ± {err.std(ddof=1) / np.sqrt(len(df)):.4f}",
        "coverage": df["covered"].mean(), "half-width": df["half_width"].mean(),
        "half-width < target": (df["half_width"] < target).mean(),
        "rounds": f"{df['rounds'].mean():.1f} (max {df['rounds'].max()})",
    }
    if "coverage_ok" in df:
        row["coverage cells"] = df["coverage_ok"].mean()
    if "overhead" in df:
        row["spec. overhead cells"] = f"{df['overhead'].mean():.1%} (max {df['overhead'].max():.1%})"
        row["spec. overhead CPU"] = f"{df['overhead_cost'].mean():.1%}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=3, help="reference protocol's LIMIT")
    parser.add_argument("--min-inclusion", type=float, default=0.8, help="speculative_round threshold")
    parser.add_argument("--pilot-seeds", type=int, default=FrontierSettings.pilot_seeds)
    parser.add_argument("--frontier-seeds", type=int, default=FrontierSettings.seeds)
    parser.add_argument("--boundary-seeds", type=int, default=FrontierSettings.boundary_seeds)
    parser.add_argument("--max-rounds", type=int, default=FrontierSettings.max_rounds)
    parser.add_argument("--psi", nargs="+", metavar="KIND=VALUE", help="true ψ per kind (default: published)")
    parser.add_argument("--dispersion", nargs="+", metavar="KIND=VALUE", help="dispersion at 32 seeds per kind")
    parser.add_argument("--target", nargs="+", metavar="KIND=VALUE", help="frontier target half-width per kind")
    parser.add_argument("--max-seeds", type=int, default=FrontierSettings.max_seeds,
                        help="frontier: seeds a cell may be topped up to")
    parser.add_argument("--fidelity", choices=["reference", "default"], default="reference",
                        help="the cost model's coefficients the trained cells are priced by")
    parser.add_argument("--csv", help="also write the per-study rows here")
    args = parser.parse_args()
    pairs = lambda items, default: {k: float(v) for k, v in (i.split("=") for i in items)} if items else default  # noqa: E731
    psi_by_kind = pairs(args.psi, PUBLISHED_PSI)
    dispersion = pairs(args.dispersion, {k: PUBLISHED_DISPERSION.get(k, 4.1) for k in psi_by_kind})
    targets = pairs(args.target, {k: TARGETS.get(k, 0.01) for k in psi_by_kind})

    start = time.time()
    worlds = SimulatedWorlds(psi_by_kind, dispersion, studies=args.studies, seed=args.seed)
    rows, per_study, cost = [], [], {}
    for kind, psi in psi_by_kind.items():
        target = targets[kind]
        settings = FrontierSettings(pilot_seeds=args.pilot_seeds, seeds=args.frontier_seeds,
                                    boundary_seeds=args.boundary_seeds, max_rounds=args.max_rounds,
                                    max_seeds=max(args.max_seeds, args.frontier_seeds), target_half_width=target)
        results = {
            "grid": simulate_grid_design(worlds, kind, fidelity=args.fidelity),
            "reference": simulate_reference_design(worlds, kind, limit=args.limit, min_inclusion=args.min_inclusion,
                                                   fidelity=args.fidelity),
            "frontier": simulate_frontier_design(worlds, kind, settings, fidelity=args.fidelity),
        }
        for design, df in results.items():
            rows.append(summarise(design, kind, df, psi, target))
            per_study.append(df.drop(columns="plans", errors="ignore").assign(design=design, kind=kind))
            cost[design, kind] = df["cost_h"].to_numpy()
    rounds = {d: np.maximum.reduce([r.loc[r.design == d, "rounds"].to_numpy() for r in per_study if (r.design == d).any()])
              for d in ("grid", "reference", "frontier")}
    wall = time.time() - start

    table = pd.DataFrame(rows)
    print(f"$ python benchmarks/simulate_designs.py {shlex.join(sys.argv[1:])}\n")
    print(f"{args.studies} simulated paper-grid studies per design; ψ {psi_by_kind}, dispersion at 32 seeds "
          f"{dispersion}; target half-widths {targets}; cost: CPU-hours at 50,000 episodes of the cost "
          f"model's {args.fidelity}-mode coefficients, compiles left out.\n")
    print(table.to_markdown(index=False, floatfmt=".3g"))
    print("\nCost ratios (mean CPU-hours; all kinds = sum):\n")
    ratio_rows = []
    for scope in list(psi_by_kind) + ["all kinds"]:
        kinds = list(psi_by_kind) if scope == "all kinds" else [scope]
        mean = {d: sum(cost[d, k].mean() for k in kinds) for d in ("grid", "reference", "frontier")}
        per = sum(cost["frontier", k] for k in kinds) / sum(cost["reference", k] for k in kinds)
        ratio_rows.append({"kinds": scope, "grid CPU-h": mean["grid"], "reference CPU-h": mean["reference"],
                           "frontier CPU-h": mean["frontier"], "reference / grid": mean["reference"] / mean["grid"],
                           "frontier / reference": mean["frontier"] / mean["reference"],
                           "frontier / reference, worst study": per.max()})
    print(pd.DataFrame(ratio_rows).to_markdown(index=False, floatfmt=".3g"))
    print("\nRounds of a whole study (kinds planned in parallel, so the largest; frontier after its pilot):\n")
    print(pd.DataFrame([{"design": d, "rounds mean": r.mean(), "rounds max": r.max()} for d, r in rounds.items()])
          .to_markdown(index=False, floatfmt=".2g"))
    print(f"\nwall time {wall:.0f} s on {cpu_model()}")
    if args.csv:
        pd.concat(per_study, ignore_index=True).to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
