# One job per study x kind x variant x K x n x seed shard: the training command
# line on a shard of seeds, vmapped together (on a CPU split over `train_threads`
# devices, one core each). No file inputs, so shards copied from another
# checkout are up to date; the config hash in the path makes a changed
# hyperparameter a new path instead of a stale file.
rule train_shard:
    output:
        table="results/{study}/runs/{kind}/{variant}/K{K}/n{n}/{hash}/seeds_{start}-{stop}.parquet",
        sidecar="results/{study}/runs/{kind}/{variant}/K{K}/n{n}/{hash}/seeds_{start}-{stop}.json",
    log:
        "logs/{study}/train/{kind}/{variant}/K{K}/n{n}/{hash}/seeds_{start}-{stop}.log",
    wildcard_constraints:
        study=CELL_GROUPED_STUDIES,
    conda:
        "../../envs/deepsea.yaml"
    threads: TRAIN_THREADS
    resources:
        gpu=TRAIN_GPUS,
        runtime=train_runtime_minutes,
        mem_mb=train_mem_mb,
    params:
        args=train_args,
    shell:
        f"{TRAIN_ENV} python -m deepsea_scaling.train {{params.args}}"
        " --cpu-devices {threads} --out {output.table} > {log} 2>&1"


# Studies with `train_grouping: shape`: one job (and one compiled program) per
# group of shards that share shapes - boot with bootrp, sweep values of traced
# hyperparameters. Same files, same rows as train_shard would write.
for group in TRAIN_GROUPS:

    rule:
        name:
            f"train_group_{group.name}"
        output:
            table=group.tables(),
            sidecar=group.sidecars(),
        log:
            f"logs/{group.study}/train_group/{group.name}.log",
        conda:
            "../../envs/deepsea.yaml"
        threads: TRAIN_THREADS
        resources:
            gpu=TRAIN_GPUS,
            runtime=group_runtime_minutes(group),
            mem_mb=group_mem_mb(group),
        params:
            batch=group.batch_json(),
        shell:
            f"{TRAIN_ENV} python -m deepsea_scaling.train --batch {{params.batch:q}}"
            " --cpu-devices {threads} > {log} 2>&1"
