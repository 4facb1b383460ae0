"""fit_psi: convergence.csv -> one psi per (study, variant, kind), K = 1 excluded."""

from common import log_to_rule_log

log = log_to_rule_log(snakemake)

import pandas as pd

from deepsea_scaling import stats
from deepsea_scaling.io import write_table

cells = pd.read_csv(snakemake.input.cells)
fits = stats.fit_psi_table(cells, by=stats.FIT_KEYS, include_k1=False)
log.info("%d cells -> %d fits", len(cells), len(fits))
write_table(fits, snakemake.output.fits)
