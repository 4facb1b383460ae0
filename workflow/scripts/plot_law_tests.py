"""plot_law_tests: the law's residuals by K and by n with each alternative's prediction."""

from common import log_to_rule_log, select_variant

log = log_to_rule_log(snakemake)

import pandas as pd

from deepsea_scaling import law, plots

variant = snakemake.params.variant
cells = select_variant(pd.read_csv(snakemake.input.cells), variant)
tests = select_variant(pd.read_csv(snakemake.input.tests), variant)
fig = plots.plot_law_tests(law.law_residuals(cells, tests), tests, caption=snakemake.params.caption)
plots.save_figure(fig, snakemake.output.png, pdf=True)
