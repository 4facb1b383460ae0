"""plot_psi_by_budget: psi with its quasi-binomial interval against the training budget, with the published values."""

from common import log_to_rule_log, select_variant

log = log_to_rule_log(snakemake)

import pandas as pd

from deepsea_scaling import plots

table = select_variant(pd.read_csv(snakemake.input.table), snakemake.params.variant)
ax = plots.plot_psi_by_budget(table, caption=snakemake.params.caption)
plots.save_figure(ax.figure, snakemake.output.png, pdf=True)
