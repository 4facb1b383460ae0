"""design_decisions: the final plan of a sequential design -> one row per cell with its decision."""

from common import log_to_rule_log

log = log_to_rule_log(snakemake)

import json

import pandas as pd

from deepsea_scaling.io import write_table

with open(snakemake.input.plan) as f:
    plan = json.load(f)
decisions = pd.DataFrame(plan["decisions"])
log.info("round %d: %s", plan["round"], decisions["decision"].value_counts().to_dict())
write_table(decisions, snakemake.output.decisions)
