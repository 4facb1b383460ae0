"""merge_runs: group tables -> results/{study}/runs.parquet (every row checked against the plan)."""

import sys

from common import log_to_rule_log

log = log_to_rule_log(snakemake)

from deepsea_scaling.io import ShardError, write_table
from deepsea_scaling.runs import merge_group_tables

try:
    runs = merge_group_tables(snakemake.params.expected, study=snakemake.params.study)
except ShardError as err:
    # One line naming the file and how to rebuild it, in the rule's log and in
    # Snakemake's own output (stderr of the job), not only in a traceback.
    log.error("%s", err)
    print(f"merge_runs: error: {err}", file=sys.__stderr__, flush=True)
    sys.exit(1)
log.info("merged %d group tables: %d runs", len(snakemake.input.tables), len(runs))
write_table(runs, snakemake.output.runs)
