"""design_decisions: the final plan of a sequential design -> one row per cell with its decision."""

from common import log_to_rule_log

log = log_to_rule_log(snakemake)

import json

import pandas as pd

from deepsea_scaling.io import write_table

with open(snakemake.input.plan) as f:
    plan = json.load(f)
decisions = pd.DataFrame(plan["decisions"])
# The reference design's speculation: cells trained that the protocol then skipped.
trained_cells = {unit[0] for unit in plan["trained"]}
decisions["speculative"] = decisions["hash"].isin(trained_cells) & (decisions["decision"] != "trained")
log.info(
    "round %d: %s; %d cell(s) trained speculatively and then skipped by the design (%.1f%% of those it kept)",
    plan["round"], decisions["decision"].value_counts().to_dict(), int(decisions["speculative"].sum()),
    100 * decisions["speculative"].sum() / max(1, (decisions["decision"] == "trained").sum()),
)
write_table(decisions, snakemake.output.decisions)
