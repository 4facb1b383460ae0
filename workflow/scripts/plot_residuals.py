"""plot_residuals: mean +- sd of (predicted - observed) P per K and kind, from residuals.csv."""

from common import log_to_rule_log, select_variant

log = log_to_rule_log(snakemake)

import pandas as pd

from deepsea_scaling import plots

residuals = select_variant(pd.read_csv(snakemake.input.residuals), snakemake.params.variant)
ax = plots.plot_residuals(residuals, caption=snakemake.params.caption)
plots.save_figure(ax.figure, snakemake.output.png, pdf=True)
