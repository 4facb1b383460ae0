"""convergence_table: runs.parquet (+ a design's decisions) -> one row per cell (P-hat, Wilson interval, episodes)."""

from common import log_to_rule_log

log = log_to_rule_log(snakemake)

import pandas as pd

from deepsea_scaling import stats
from deepsea_scaling.io import write_table

runs = pd.read_parquet(snakemake.input.runs)
cells = stats.convergence_table(runs, by=stats.CELL_KEYS)
if snakemake.input.decisions:
    decisions = pd.read_csv(snakemake.input.decisions[0])
    cells = stats.with_decisions(cells, decisions.assign(study=runs["study"].iloc[0]))
log.info("%d runs -> %d cells", len(runs), len(cells))
write_table(cells, snakemake.output.cells)
