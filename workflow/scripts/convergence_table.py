"""convergence_table: runs.parquet -> one row per cell (P-hat, Wilson interval, episodes)."""

from common import log_to_rule_log

log = log_to_rule_log(snakemake)

import pandas as pd

from deepsea_scaling import stats
from deepsea_scaling.io import write_table

runs = pd.read_parquet(snakemake.input.runs)
cells = stats.convergence_table(runs, by=stats.CELL_KEYS)
log.info("%d runs -> %d cells", len(runs), len(cells))
write_table(cells, snakemake.output.cells)
