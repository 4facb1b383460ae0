"""What psi would the research code's protocol report, if the world were a study's fitted alternative to the law?

    python benchmarks/protocol_under_misfit.py --law-tests docs/results/paper_check/law_tests.csv

The published psi were fitted with the one-parameter law on the cells the
research code's protocol trained (docs/SCIENCE.md, "The research code's study
protocol": the paper grid, 32 seeds a cell, a K row stopping after 3 cells
without a discovery, cells predicted solved skipped). Where the law does not
hold (an effective ensemble size K^alpha with alpha far from 1, or psi drifting
with n), a psi fitted on one mix of cells differs from a psi fitted on
another, so a study's psi and the published one can differ with neither
engine at fault. This script takes a study's fitted alternative per kind (the
`law_tests.csv` row of the model given, by default the one with the least
AIC), draws many simulated studies of the paper grid from it (with the
study's dispersion), runs the protocol on each (`simulate.simulate_reference_design`)
and fits the law to the cells it trained; it prints the psi the protocol would
report (median and the 5-95% range over the simulated studies) beside the
psi fitted on every cell of the grid, the study's own psi and the published one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from deepsea_scaling import law  # noqa: E402
from deepsea_scaling.published import PUBLISHED  # noqa: E402
from deepsea_scaling.simulate import (PAPER_KS, PAPER_NS, SimulatedWorlds, simulate_grid_design,  # noqa: E402
                                      simulate_reference_design)


def alternative_of(tests: pd.DataFrame, kind: str, model: str | None) -> pd.Series:
    rows = tests[(tests["kind"] == kind) & tests["status"].astype(str).str.match(r"ok\b")]
    if "variant" in rows:
        rows = rows[rows["variant"].fillna("default") == "default"]
    if rows.empty:
        raise SystemExit(f"protocol_under_misfit.py: no fitted model for kind {kind!r} in the law tests")
    if model is None:
        return rows.loc[rows["aic"].idxmin()]
    chosen = rows[rows["model"] == model]
    if chosen.empty:
        raise SystemExit(f"protocol_under_misfit.py: no {model!r} row for kind {kind!r}; "
                         f"choose one of {', '.join(rows['model'])}")
    return chosen.iloc[0]


def summarise(psi: pd.Series) -> str:
    q = np.nanquantile(psi, [0.05, 0.5, 0.95])
    return f"{q[1]:.3f} [{q[0]:.3f}, {q[2]:.3f}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--law-tests", type=Path, default=Path("docs/results/paper_check/law_tests.csv"))
    parser.add_argument("--model", choices=law.MODEL_NAMES, default=None,
                        help="the alternative to simulate (default: the least AIC per kind)")
    parser.add_argument("--studies", type=int, default=200, help="simulated studies per kind")
    parser.add_argument("--seeds", type=int, default=32, help="seeds per cell, as the research code's protocol")
    parser.add_argument("--limit", type=int, default=3, help="cells without a discovery that end a K row")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.law_tests.exists():
        parser.exit(2, f"protocol_under_misfit.py: {args.law_tests} not found; build the study's law tests first "
                       "(snakemake --cores all --config study=<study> results/<study>/law_tests.csv)\n")
    tests = pd.read_csv(args.law_tests)
    print(f"Paper grid: K {PAPER_KS[0]}..{PAPER_KS[-1]} ({len(PAPER_KS)} values), n {PAPER_NS[0]}..{PAPER_NS[-1]} "
          f"({len(PAPER_NS)} values); {args.seeds} seeds a cell; {args.studies} simulated studies per kind.")
    print(f"{'kind':<7} {'world (fitted alternative)':<44} {'its law psi':>11} {'protocol reports':>24} "
          f"{'all cells':>24} {'published':>10}")
    for kind in [k for k in ("boot", "bootrp") if k in set(tests["kind"])]:
        alt = alternative_of(tests, kind, args.model)
        law_row = tests[(tests["kind"] == kind) & (tests["model"] == "law")].iloc[0]
        theta1 = 0.0 if not np.isfinite(alt["theta1"]) else float(alt["theta1"])
        alpha = 1.0 if not np.isfinite(alt["alpha"]) else float(alt["alpha"])
        beta = law.beta_of(float(alt["psi"]), alpha=alpha, theta1=theta1)
        n_ref = float(alt["n_ref"])
        worlds = SimulatedWorlds({kind: float(law_row["psi"])}, {kind: max(1.0, float(alt["dispersion"]))},
                                 ks=PAPER_KS, ns=PAPER_NS, studies=args.studies, max_seeds=args.seeds,
                                 seed=args.seed, probability_by_kind={kind: lambda K, n: law.predict(beta, K, n, n_ref)})
        protocol = simulate_reference_design(worlds, kind, limit=args.limit, seeds=args.seeds, speculate=False)
        grid = simulate_grid_design(worlds, kind, seeds=args.seeds)
        world = f"{alt['model']}: psi {alt['psi']:.3f}, alpha {alpha:.2f}, theta1 {theta1:+.3f}"
        paper = PUBLISHED[kind]
        print(f"{kind:<7} {world:<44} {law_row['psi']:>11.3f} {summarise(protocol['psi']):>24} "
              f"{summarise(grid['psi']):>24} {paper.psi:>6.2f}±{paper.psi_pm:.2f}")
        print(f"{'':<7} protocol: {protocol['cells'].median():.0f} cells trained (median); "
              f"dispersion of the world {max(1.0, float(alt['dispersion'])):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
