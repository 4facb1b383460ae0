"""residuals_table: convergence.csv + psi_fit.csv -> mean and sd of (predicted - observed) P per kind and K."""

from common import log_to_rule_log

log = log_to_rule_log(snakemake)

import pandas as pd

from deepsea_scaling import stats
from deepsea_scaling.io import write_table

cells = pd.read_csv(snakemake.input.cells)
fits = pd.read_csv(snakemake.input.fits)
residuals = stats.residuals_by_k(cells, fits)
log.info("%d cells, %d fits -> %d residual rows", len(cells), len(fits), len(residuals))
write_table(residuals, snakemake.output.residuals)
