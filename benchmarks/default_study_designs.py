"""Which default grid pins psi down best for its cost: simulated under the misfit a pilot measured.

    python benchmarks/default_study_designs.py results/default/convergence.csv   # a pilot's table

The law P = 1 - (1 - psi^n)^K does not hold at a laptop budget (docs/FINDINGS.md):
its quasi-binomial interval then widens by the Pearson dispersion, whose misfit part
grows with the seeds per cell. This script takes a pilot's convergence table, fits
per kind the law tests' fullest model (effective K = K^alpha and psi drifting with n,
`fit.fit_batch`) as the truth, and simulates candidate grids of ensemble cells:
per grid and kind the median 95% quasi half-width of psi, the share of simulated
studies with it at most --target, the median dispersion and the share of cells
between P = 0.05 and 0.95; with the grid's training job-seconds for both kinds by
the cost model (`cost.job_seconds`: start-up, compile and training, one job per
(K, n) for boot and bootrp together). Bands are the n per K where the truth's P,
averaged over the two kinds, lies in [0.1, 0.9]; every other n unless --every-n.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from deepsea_scaling import cost, fit  # noqa: E402
from deepsea_scaling.config import TrainConfig  # noqa: E402

KINDS = ("boot", "bootrp")
CANDIDATES = [(2, 4, 8, 16), (2, 4, 8), (2, 3, 4, 6, 8), (4, 6, 8, 12), (2, 4, 6, 8, 12), (4, 6, 8, 12, 16)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("convergence", help="a pilot study's results/<study>/convergence.csv")
    parser.add_argument("--seeds", default="8,12,16,32", help="seeds per cell to try (comma-separated)")
    parser.add_argument("--episodes", type=int, help="budget of the jobs' cost (default: the pilot's)")
    parser.add_argument("--target", type=float, default=0.02, help="quasi half-width of psi to reach")
    parser.add_argument("--every-n", action="store_true", help="every n of a band, not every other")
    parser.add_argument("--sims", type=int, default=400)
    args = parser.parse_args(argv)

    cells = pd.read_csv(args.convergence)
    episodes = args.episodes or int(cells["budget_episodes"].max())
    truth = {}
    for kind in KINDS:
        c = cells[(cells["kind"] == kind) & (cells["ensemble_size"] > 1) & (cells["trials"] > 0)]
        n_ref = float(np.exp(np.mean(np.log(c["hardness"]))))
        both = fit.fit_batch(c["successes"], c["trials"], c["ensemble_size"], c["hardness"],
                             free=("alpha", "theta1"), n_ref=n_ref)
        truth[kind] = (both.beta[0], n_ref)
        named = dict(zip(fit.PARAMS, both.beta[0]))
        print(f"# truth {kind}: psi(n_ref={n_ref:.1f}) {np.exp(named['theta0']):.3f}, "
              f"alpha {named['alpha']:.2f}, theta1 {named['theta1']:.3f} (from {len(c)} cells)")

    def p_true(kind, K, n):
        beta, n_ref = truth[kind]
        return fit.predict(beta[None], np.asarray(K, float), np.asarray(n, float), n_ref)[0]

    def band(K):
        ns = [n for n in range(2, 41) if 0.1 <= np.mean([p_true(k, [K], [n])[0] for k in KINDS]) <= 0.9]
        return [(K, n) for n in (ns if args.every_n else ns[::2])]

    def job_seconds(grid, seeds):
        return sum(cost.job_seconds(TrainConfig(kind="bootrp", ensemble_size=K, hardness=n, num_episodes=episodes),
                                    2 * seeds) for K, n in grid)

    rng = np.random.default_rng(0)
    print(f"# {episodes:,} episodes; target half-width {args.target}; {args.sims} simulated studies per row")
    print(f"{'K rows':18s} {'cells':>5s} {'seeds':>5s} {'job-s':>6s}  " + "  ".join(
        f"{k + ': half-width, P(<= target), dispersion, informative':52s}" for k in KINDS))
    for ks in CANDIDATES:
        grid = [cell for K in ks for cell in band(K)]
        K, n = np.array(grid, float).T
        for seeds in (int(s) for s in args.seeds.split(",")):
            out = []
            for kind in KINDS:
                s = rng.binomial(seeds, p_true(kind, K, n), size=(args.sims, len(grid)))
                est = fit.fit_batch(s, seeds, K, n)
                _, low, high = fit.intervals(est)["psi"]
                half = (high - low) / 2
                informative = np.mean((s > 0.05 * seeds) & (s < 0.95 * seeds))
                out.append(f"{np.median(half):.4f}, {np.mean(half <= args.target):.2f}, "
                           f"{np.median(est.dispersion):.1f}, {informative:.2f}")
            print(f"{','.join(map(str, ks)):18s} {len(grid):5d} {seeds:5d} {job_seconds(grid, seeds):6.0f}  "
                  + "  ".join(f"{o:52s}" for o in out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
