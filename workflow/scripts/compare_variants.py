"""compare_variants: convergence.csv -> likelihood-ratio tests of each sweep variant's psi against the default's."""

from common import log_to_rule_log

log = log_to_rule_log(snakemake)

import pandas as pd

from deepsea_scaling import stats
from deepsea_scaling.io import write_table

cells = pd.read_csv(snakemake.input.cells)
comparison = stats.compare_variants(cells)
log.info("%d comparisons", len(comparison))
write_table(comparison, snakemake.output.comparison)
