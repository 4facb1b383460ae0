# The one training rule. A job trains one group: the same seed range of every
# cell of a study that shares a compiled program (train_grouping: shape: boot
# with bootrp, the sweep values of traced hyperparameters) or of one cell
# (train_grouping: cell), vmapped together (on a CPU split over
# `train_threads` devices). The group's name carries a digest of its members'
# config hashes, so a changed hyperparameter is a new path, never a stale file;
# no file inputs, so tables copied from another checkout are up to date.
rule train_group:
    output:
        table="results/{study}/runs/{group}.parquet",
        sidecar="results/{study}/runs/{group}.json",
    log:
        "logs/{study}/train/{group}.log",
    conda:
        "../../envs/deepsea.yaml"
    threads: TRAIN_THREADS
    resources:
        gpu=TRAIN_GPUS,
        runtime=group_runtime_minutes,
        mem_mb=group_mem_mb,
    params:
        batch=group_batch,
    shell:
        f"{TRAIN_ENV} python -m deepsea_scaling.train --batch {{params.batch:q}}"
        " --cpu-devices {threads} --out {output.table} > {log} 2>&1"
