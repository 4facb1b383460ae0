"""merge_runs: shard tables -> results/{study}/runs.parquet (config hashes checked)."""

import sys

from common import log_to_rule_log

log = log_to_rule_log(snakemake)

from deepsea_scaling.io import ShardError, write_table
from deepsea_scaling.study import merge_shards

try:
    runs = merge_shards(
        snakemake.input.shards,
        snakemake.params.expected_hashes,
        study=snakemake.params.study,
        variants=snakemake.params.variants,
    )
except ShardError as err:
    # One line naming the file and how to rebuild it, in the rule's log and in
    # Snakemake's own output (stderr of the job), not only in a traceback.
    log.error("%s", err)
    print(f"merge_runs: error: {err}", file=sys.__stderr__, flush=True)
    sys.exit(1)
log.info("merged %d shards: %d runs", len(snakemake.input.shards), len(runs))
write_table(runs, snakemake.output.runs)
