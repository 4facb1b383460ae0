"""plan_round: the run tables trained so far -> the next round's plan of a sequential design."""

from common import log_to_rule_log

log = log_to_rule_log(snakemake)

import json

import pandas as pd

from deepsea_scaling import rounds
from deepsea_scaling.io import atomic_path

study = snakemake.params.study
round_index = int(snakemake.params.round)
previous = {"trained": [], "placed": {}}
if snakemake.input.previous:
    with open(snakemake.input.previous[0]) as f:
        previous = json.load(f)
trained = previous["trained"]
rows = [] if not snakemake.input.tables else pd.concat(
    [pd.read_parquet(t, columns=["config_hash", "discovered", "diverged"]) for t in snakemake.input.tables]
).to_dict("records")
plan = rounds.plan_round(study, round_index, rounds.outcomes(rows), trained, previous["placed"])
log.info("study %s, design %s, round %d: %d units trained so far, %d new; done=%s",
         study.name, study.design, round_index, len(trained), len(plan["units"]), plan["done"])
with atomic_path(snakemake.output.plan) as tmp:
    tmp.write_text(json.dumps(plan, indent=1) + "\n")
