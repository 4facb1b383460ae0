"""plot_probability_vs_n: P-hat with Wilson intervals against n, with the fitted law."""

from common import log_to_rule_log, select_variant

log = log_to_rule_log(snakemake)

import pandas as pd

from deepsea_scaling import plots

variant = snakemake.params.variant
cells = select_variant(pd.read_csv(snakemake.input.cells), variant)
fits = select_variant(pd.read_csv(snakemake.input.fits), variant)
fig = plots.plot_probability_vs_n(cells, fits, caption=snakemake.params.caption)
plots.save_figure(fig, snakemake.output.png, pdf=True)
