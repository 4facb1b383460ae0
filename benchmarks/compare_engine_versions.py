"""Two runs of one study by two engine versions, side by side: are the discoveries the same within sampling?

    python benchmarks/compare_engine_versions.py OLD/results/default NEW/results/default

Reads each side's `convergence.csv` and `psi_fit.csv` (a finished study) and
prints per kind: the cells, the runs whose discovery differs between the
sides (same seeds, same cells), the discoveries on each side, the
Cochran-Mantel-Haenszel test over the cells both trained (law-free: does one
side discover more often in the same cells?) and each side's psi. An engine
change that moves floats by rounding changes individual runs' paths; it must
not move the discovery rates.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from deepsea_scaling.stats import cmh_p_value  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path, help="the first version's results/<study> folder")
    ap.add_argument("new", type=Path, help="the second version's results/<study> folder")
    args = ap.parse_args(argv)
    cells = {side: pd.read_csv(path / "convergence.csv") for side, path in (("old", args.old), ("new", args.new))}
    fits = {side: pd.read_csv(path / "psi_fit.csv").set_index("kind") for side, path in (("old", args.old), ("new", args.new))}
    runs = {side: pd.read_parquet(path / "runs.parquet") for side, path in (("old", args.old), ("new", args.new))}
    key = ["kind", "ensemble_size", "hardness", "seed"]
    paired = runs["old"][key + ["discovered"]].merge(runs["new"][key + ["discovered"]], on=key, suffixes=("_old", "_new"))
    print("| kind | cells | runs | runs whose discovery differs | discoveries old / new | CMH p | psi old | psi new |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind, old in cells["old"].groupby("kind"):
        new = cells["new"][cells["new"]["kind"] == kind]
        pairs = paired[paired["kind"] == kind]
        changed = int((pairs["discovered_old"] != pairs["discovered_new"]).sum())
        print(f"| {kind} | {len(old)} | {len(pairs)} | {changed} | {int(old['successes'].sum())} / "
              f"{int(new['successes'].sum())} | {cmh_p_value(old, new):.2g} | {fits['old'].loc[kind, 'psi']:.3f} | "
              f"{fits['new'].loc[kind, 'psi']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
