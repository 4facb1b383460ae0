"""merge_runs: shard tables -> results/{study}/runs.parquet (config hashes checked)."""

from common import log_to_rule_log

log = log_to_rule_log(snakemake)

from deepsea_scaling.io import write_table
from deepsea_scaling.study import merge_shards

runs = merge_shards(
    snakemake.input.shards,
    snakemake.params.expected_hashes,
    study=snakemake.params.study,
    variants=snakemake.params.variants,
)
log.info("merged %d shards: %d runs", len(snakemake.input.shards), len(runs))
write_table(runs, snakemake.output.runs)
