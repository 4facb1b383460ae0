"""Command line: a results tree of the original research code -> this project's run table (and its analysis).

    python -m deepsea_scaling.reanalyse ORIGINAL_TREE --out runs.parquet \
        [--study original] [--experiment NAME ...] [--analyse OUTDIR]

ORIGINAL_TREE holds `<experiment>/<run>/config.yaml` and `results.csv` as the
original's `schedule_runs` writes them (`original.read_tree`). Writes the run
table (docs/INTERFACES.md, plus `experiment` and `source`, the folders it came
from). With --analyse OUTDIR it also writes the study's tables
(convergence.csv, psi_fit.csv, kind_comparison.csv, law_tests.csv) and figures
(frontier_and_heatmaps, residuals, collapse, probability_vs_n, law_tests; for
a tree with sweep values also hyperparameter_sweep and sweep/<variant>/
frontier_and_heatmaps; PNG and PDF) there, with the functions the workflow's rules call. A tree that
cannot be read exits with status 2 and one line naming the path.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import pandas as pd

from .original import OriginalTreeError, read_tree

# The collapse figure's region when the tree has no study config: the paper's.
CRITICAL_REGION = {"n_min": 8, "n_max": 12, "k_min": 3, "k_max": 6}


def analyse(runs: pd.DataFrame, outdir: str | Path, caption: str | None = None) -> list[Path]:
    """The tables and figures of a study from its run table; returns the paths written."""
    from . import law, plots, stats
    from .io import write_table

    outdir = Path(outdir)
    cells = stats.convergence_table(runs)
    fits = stats.fit_psi_table(cells)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.AnalysisWarning)
        comparison = stats.compare_kinds(cells)
    tests = law.law_tests(cells)
    residuals = stats.residuals_by_k(cells, fits)
    written = []
    for name, table in (("convergence.csv", cells), ("psi_fit.csv", fits), ("kind_comparison.csv", comparison),
                        ("residuals.csv", residuals), ("law_tests.csv", tests)):
        write_table(table, outdir / name)
        written.append(outdir / name)
    default = {k: t[t["variant"] == "default"] if "variant" in t.columns else t
               for k, t in (("cells", cells), ("fits", fits), ("tests", tests), ("runs", runs),
                            ("residuals", residuals))}
    figures = {
        "frontier_and_heatmaps": plots.plot_frontier_and_heatmaps(default["cells"], default["fits"], caption=caption),
        "residuals": plots.plot_residuals(default["residuals"], caption=caption).figure,
        "collapse": plots.plot_collapse(default["runs"], CRITICAL_REGION, caption=caption),
        "probability_vs_n": plots.plot_probability_vs_n(default["cells"], default["fits"], caption=caption),
        "law_tests": plots.plot_law_tests(law.law_residuals(default["cells"], default["tests"]), default["tests"],
                                          caption=caption),
    }
    if fits["variant"].nunique() > 1:  # a sweep: as the workflow's sweep figures
        figures["hyperparameter_sweep"] = plots.plot_hyperparameter_sweep(fits, caption=caption).figure
        for variant, fig in plots.frontier_figures_by_variant(cells, fits, caption=caption).items():
            if variant != "default":
                figures[f"sweep/{variant}/frontier_and_heatmaps"] = fig
    for name, fig in figures.items():
        written += plots.save_figure(fig, outdir / f"{name}.png", pdf=True)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepsea_scaling.reanalyse", description=__doc__.splitlines()[0])
    parser.add_argument("tree", help="results tree of the original code: <experiment>/<run>/{config.yaml,results.csv}")
    parser.add_argument("--out", required=True, help="run table to write (.parquet, or .csv)")
    parser.add_argument("--study", default="original", help="value of the `study` column (default: original)")
    parser.add_argument("--experiment", action="append", help="read only this <experiment> folder (repeatable)")
    parser.add_argument("--analyse", metavar="OUTDIR", help="also write the study's tables and figures to OUTDIR")
    args = parser.parse_args(argv)
    try:
        runs = read_tree(args.tree, study=args.study, experiments=args.experiment)
    except OriginalTreeError as err:
        print(f"reanalyse: error: {err}", file=sys.stderr)
        return 2
    from .io import write_table

    table = runs if str(args.out).endswith(".parquet") else runs.assign(diversity=runs["diversity"].map(list))
    write_table(table, args.out)
    cells = runs.groupby(["kind", "variant", "ensemble_size", "hardness"]).size()
    print(f"{args.out}: {len(runs)} runs in {len(cells)} cells "
          f"({', '.join(f'{k}: {v}' for k, v in runs['kind'].value_counts().sort_index().items())}) "
          f"from {runs['experiment'].nunique()} experiment(s) of {args.tree}")
    if args.analyse:
        caption = f"original code's results: {args.tree}, {len(cells)} cells"
        for path in analyse(runs, args.analyse, caption=caption):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
