"""compare_kinds: convergence.csv -> likelihood-ratio tests of one psi for two kinds."""

from common import log_to_rule_log

log = log_to_rule_log(snakemake)

import pandas as pd

from deepsea_scaling import stats
from deepsea_scaling.io import write_table

cells = pd.read_csv(snakemake.input.cells)
comparison = stats.compare_kinds(cells, by=stats.COMPARE_KEYS)
log.info("%d comparisons", len(comparison))
write_table(comparison, snakemake.output.comparison)
