"""plot_residuals: mean +- sd of (predicted - observed) P per K and kind."""

from common import log_to_rule_log, select_variant

log = log_to_rule_log(snakemake)

import pandas as pd

from deepsea_scaling import plots

variant = snakemake.params.variant
cells = select_variant(pd.read_csv(snakemake.input.cells), variant)
fits = select_variant(pd.read_csv(snakemake.input.fits), variant)
ax = plots.plot_residuals(cells, fits, caption=snakemake.params.caption)
plots.save_figure(ax.figure, snakemake.output.png, pdf=True)
