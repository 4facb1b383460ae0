"""plot_collapse: Q-diversity over training, converged vs not, in the critical region."""

from common import log_to_rule_log, select_variant

log = log_to_rule_log(snakemake)

import pandas as pd

from deepsea_scaling import plots

runs = select_variant(pd.read_parquet(snakemake.input.runs), snakemake.params.variant)
fig = plots.plot_collapse(
    runs, dict(snakemake.params.critical_region), caption=snakemake.params.caption
)
plots.save_figure(fig, snakemake.output.png, pdf=True)
