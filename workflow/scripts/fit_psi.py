"""fit_psi: convergence.csv (+ law_tests.csv) -> one psi per (study, variant, kind), K = 1 excluded,
with the law tests' verdict beside it (status says "law rejected (...)" where an alternative beats the law)."""

from common import log_to_rule_log

log = log_to_rule_log(snakemake)

import pandas as pd

from deepsea_scaling import law, stats
from deepsea_scaling.io import write_table

cells = pd.read_csv(snakemake.input.cells)
fits = stats.fit_psi_table(cells, by=stats.FIT_KEYS, include_k1=False)
fits = law.flag_fits(fits, pd.read_csv(snakemake.input.law_tests))
log.info("%d cells -> %d fits, law rejected for %d", len(cells), len(fits), int(law.is_rejected(fits["law_rejected"]).sum()))
write_table(fits, snakemake.output.fits)
