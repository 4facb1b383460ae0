# One job per study x kind x variant x K x n x seed shard: the training command
# line on a shard of seeds, vmapped together on one device. No file inputs, so
# shards copied from another checkout are up to date; the config hash in the
# path makes a changed hyperparameter a new path instead of a stale file.
rule train_shard:
    output:
        table="results/{study}/runs/{kind}/{variant}/K{K}/n{n}/{hash}/seeds_{start}-{stop}.parquet",
        sidecar="results/{study}/runs/{kind}/{variant}/K{K}/n{n}/{hash}/seeds_{start}-{stop}.json",
    log:
        "logs/{study}/train/{kind}/{variant}/K{K}/n{n}/{hash}/seeds_{start}-{stop}.log",
    conda:
        "../../envs/deepsea.yaml"
    threads: 1
    resources:
        gpu=TRAIN_GPUS,
        runtime=train_runtime_minutes,
        mem_mb=train_mem_mb,
    params:
        args=train_args,
    shell:
        TRAIN_ENV + " python -m deepsea_scaling.train {params.args}"
        " --out {output.table} > {log} 2>&1"
