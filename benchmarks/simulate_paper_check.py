"""Simulate the `paper_check` study's design against its alternatives and print the table (markdown).

    python benchmarks/simulate_paper_check.py --studies 200

The study (config.yaml, `paper_check`): the paper grid, 50,000 episodes, the
frontier design with the settings of its `frontier:` block. Each simulated
study draws every cell from the law P = 1 − (1 − ψ^n)^K at a true ψ per kind
(scenarios below; the published ψ, lower, and higher as this engine's shorter
runs suggest) with beta overdispersion giving the published Pearson
dispersions (4.1 BDQN, 8.1 RP-BDQN at 32 seeds); every seed of every cell is
fixed once (`simulate.SimulatedWorlds`), so every variant of the design sees
the same worlds. Variants change one thing of the study's settings (the
blind pilot instead of the published-ψ start, no cap on the checks, every K
row, 16 seeds per cell, the published half-widths, ...).

Per scenario, variant and kind: CPU-hours of the cost model in the study's
mode (`fidelity: reference`: `cost.COSTS["reference"]`; mean, max), bias of
ψ̂, coverage of ψ's 95% quasi interval, its half-width, the fraction of
studies meeting the target, rounds after round 0. Per scenario and variant, the whole
study on a machine of `--cores` cores: CPU-hours with the cost model's
training seconds times `--slowdown` plus `--startup` seconds per training job
(one cell's seed shard each; by default the model's start-up and compile), the
wall hours of the rounds run one after the other
(`simulate.study_wall_hours`: each round's jobs `--cores` at a time, in plan
order, plus `--round-seconds` for planning), the jobs, and the rounds.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from deepsea_scaling import cost  # noqa: E402
from deepsea_scaling import study as study_lib  # noqa: E402
from deepsea_scaling.simulate import (PUBLISHED_DISPERSION, SimulatedWorlds,  # noqa: E402
                                      simulate_frontier_design, study_wall_hours)
from simulate_designs import cpu_model  # noqa: E402

# scenario -> true ψ per kind
SCENARIOS = {
    "published (0.80, 0.87)": {"boot": 0.80, "bootrp": 0.87},
    "both 0.75": {"boot": 0.75, "bootrp": 0.75},
    "both 0.90": {"boot": 0.90, "bootrp": 0.90},
    "both 0.93": {"boot": 0.93, "bootrp": 0.93},
    "engine-like (0.83, 0.93)": {"boot": 0.83, "bootrp": 0.93},
}
# variant -> (changes of FrontierSettings, per kind where a dict of kinds; changes of the study)
VARIANTS = {
    "paper_check": ({}, {}),
    "blind pilot": ({"prior_psi": None}, {}),
    "no check cap": ({"max_check_hours": None}, {}),
    "every K row": ({"law_ks": None}, {}),
    "min_informative 40 (the default)": ({"min_informative": 40}, {}),
    "min_informative 20": ({"min_informative": 20}, {}),
    "16 seeds per cell": ({"seeds": 16, "pilot_seeds": 16, "max_seeds": 16}, {}),
    "shards of 4 (4-seed boundary cells)": ({"boundary_seeds": 4}, {"shard_size": 4}),
    "published half-widths (0.01, 0.02)": ({"target_half_width": {"boot": 0.01, "bootrp": 0.02}}, {}),
    "frontier defaults, blind pilot": ("defaults", {}),
}


def settings_for(study, kind: str, changes):
    base = study.frontier_settings(kind)
    if changes == "defaults":  # FrontierSettings' defaults but the study's targets, budget and seeds
        from deepsea_scaling.designs import FrontierSettings
        return FrontierSettings(episodes=base.episodes, target_half_width=base.target_half_width)
    return replace(base, **{k: (v[kind] if isinstance(v, dict) else v) for k, v in changes.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=200, help="simulated studies per scenario")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--study", default="paper_check")
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--slowdown", type=float, default=1.0,
                        help="measured / the cost model's training seconds (e.g. two jobs sharing memory bandwidth)")
    parser.add_argument("--startup", type=float, default=None,
                        help="seconds of start-up and compile per job (default: the cost model's, in the study's mode)")
    parser.add_argument("--round-seconds", type=float, default=20.0, help="seconds of planning per round")
    parser.add_argument("--csv", help="also write the per-study rows here")
    args = parser.parse_args()

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    study = study_lib.load_study(config, args.study)
    fidelity = study.cells()[0].config.fidelity
    if args.startup is None:
        args.startup = cost.COSTS[fidelity].startup + cost.COSTS[fidelity].compile
    kinds = [k for k in study.kinds if k in ("boot", "bootrp")]
    grid = {c.kind: set() for c in study.cells()}
    for c in study.cells():
        grid[c.kind].add((c.ensemble_size, c.hardness))
    ks = sorted({k for k, _ in grid[kinds[0]]})
    ns = sorted({n for _, n in grid[kinds[0]]})

    start = time.time()
    kind_rows, study_rows, per_study = [], [], []
    for scenario in args.scenarios:
        truth = {k: SCENARIOS[scenario][k] for k in kinds}
        worlds = SimulatedWorlds(truth, {k: PUBLISHED_DISPERSION[k] for k in kinds}, ks=ks, ns=ns,
                                 studies=args.studies, seed=args.seed, max_seeds=32)
        for variant in args.variants:
            changes, study_changes = VARIANTS[variant]
            shard = study_changes.get("shard_size", study.shard_size)
            results = {}
            for kind in kinds:
                settings = settings_for(study, kind, changes)
                df = simulate_frontier_design(worlds, kind, settings, fidelity=fidelity)
                results[kind] = df
                kind_rows.append({
                    "scenario": scenario, "variant": variant, "kind": kind, "ψ": truth[kind],
                    "target": settings.target_half_width,
                    "CPU-h": df["cost_h"].mean(), "CPU-h max": df["cost_h"].max(),
                    "bias ψ": f"{(df['psi'] - truth[kind]).mean():+.4f}",
                    "coverage": df["covered"].mean(), "half-width": df["half_width"].mean(),
                    "target met": (df["half_width"] <= settings.target_half_width).mean(),
                    "rounds": f"{df['rounds'].mean():.1f} (max {df['rounds'].max()})",
                })
                per_study.append(df.drop(columns="plans").assign(scenario=scenario, variant=variant, kind=kind))
            whole = pd.DataFrame([
                study_wall_hours({k: results[k]["plans"].iloc[i] for k in kinds}, shard, study.num_episodes,
                                 args.cores, args.slowdown, args.startup, args.round_seconds, fidelity=fidelity)
                for i in range(args.studies)])
            study_rows.append({
                "scenario": scenario, "variant": variant,
                "CPU-h": whole["cpu_h"].mean(), "CPU-h max": whole["cpu_h"].max(),
                f"wall h on {args.cores} cores": whole["wall_h"].mean(), "wall h max": whole["wall_h"].max(),
                "wall ≤ 3 h": (whole["wall_h"] <= 3).mean(),
                "jobs": whole["jobs"].mean(), "rounds": f"{whole['rounds'].mean():.1f} (max {whole['rounds'].max()})",
            })
    wall = time.time() - start

    print(f"$ python benchmarks/simulate_paper_check.py {shlex.join(sys.argv[1:])}\n")
    print(f"study {study.name}: {len(ks)} K x {len(ns)} n per kind, {study.num_episodes:,} episodes, "
          f"shards of {study.shard_size} seeds; {args.studies} simulated studies per scenario, the same for "
          f"every variant; dispersion at 32 seeds {({k: PUBLISHED_DISPERSION[k] for k in kinds})}.\n")
    print(f"Per kind (CPU-hours of the cost model, {fidelity} mode, training only):\n")
    print(pd.DataFrame(kind_rows).to_markdown(index=False, floatfmt=".3g"))
    print(f"\nWhole study on {args.cores} cores: CPU-hours x {args.slowdown} plus {args.startup:.0f} s per job; "
          f"rounds one after the other ({args.round_seconds:.0f} s of planning each); rounds include round 0:\n")
    print(pd.DataFrame(study_rows).to_markdown(index=False, floatfmt=".3g"))
    print(f"\nwall time {wall:.0f} s on {cpu_model()}")
    if args.csv:
        pd.concat(per_study, ignore_index=True).to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
