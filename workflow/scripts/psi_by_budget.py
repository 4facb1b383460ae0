"""psi_by_budget: runs.parquet (+ a design's decisions) -> psi per (study, variant, kind) at each budget of a ladder."""

from common import log_to_rule_log

log = log_to_rule_log(snakemake)

import pandas as pd

from deepsea_scaling import budget
from deepsea_scaling.io import write_table

runs = pd.read_parquet(snakemake.input.runs)
decisions = None
if snakemake.input.decisions:
    decisions = pd.read_csv(snakemake.input.decisions[0]).assign(study=runs["study"].iloc[0])
table = budget.psi_by_budget(runs, decisions=decisions)
log.info("%d runs -> %d (kind, variant, budget) fits", len(runs), len(table))
write_table(table, snakemake.output.table)
