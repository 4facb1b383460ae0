"""plot_frontier_and_heatmaps / plot_sweep_frontiers: P-hat heatmaps and fitted frontiers of one variant."""

from common import log_to_rule_log, select_variant

log = log_to_rule_log(snakemake)

import pandas as pd

from deepsea_scaling import plots

variant = snakemake.params.variant
cells = select_variant(pd.read_csv(snakemake.input.cells), variant)
fits = select_variant(pd.read_csv(snakemake.input.fits), variant)
title = None if variant == "default" else f"variant: {variant}"
fig = plots.plot_frontier_and_heatmaps(cells, fits, caption=snakemake.params.caption, title=title)
# the README's copy (rule docs_figure) is smaller and has no PDF
dpi = getattr(snakemake.params, "dpi", 200)
plots.save_figure(fig, snakemake.output.png, pdf=getattr(snakemake.params, "pdf", True), dpi=dpi)
