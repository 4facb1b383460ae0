import shlex
import shutil
import sys
from pathlib import Path

import yaml

# The package lives beside the rules (workflow/deepsea_scaling): importable
# here from its path, by the scripts (workflow/scripts/common.py) and by the
# training command (PYTHONPATH in TRAIN_ENV), so the workflow runs from a plain
# checkout as well as after `pip install -e .`.
PACKAGE_DIR = str(Path(workflow.basedir) / "workflow")
if PACKAGE_DIR not in sys.path:
    sys.path.insert(0, PACKAGE_DIR)

from deepsea_scaling import study as study_lib

# ------------------------------------------------------------ config checks
# Schema (types, ranges, unknown keys), then semantics (TrainConfig fields,
# valid configs, the chosen study defined): one line naming the key, before
# any job is planned.
with open(Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml") as f:
    CONFIG_SCHEMA = yaml.safe_load(f)
study_lib.validate_config(config, CONFIG_SCHEMA)
STUDIES = study_lib.load_all_studies(config)
STUDY = STUDIES[config["study"]]


wildcard_constraints:
    study=r"[A-Za-z0-9_-]+",
    kind=r"boot|bootrp|eps",
    variant=r"[A-Za-z0-9_.=+-]+",
    K=r"\d+",
    n=r"\d+",
    hash=r"[0-9a-f]{16}",
    start=r"\d+",
    stop=r"\d+",


# Training jobs ask for a GPU only where there is one: on a CPU-only machine the
# profile's `gpu` limit must not serialise them (they run `--cores` at a time).
# On SLURM, profiles/slurm sets train_shard's gpu explicitly.
TRAIN_GPUS = 1 if shutil.which("nvidia-smi") else 0
TRAIN_THREADS = config.get("train_threads", 1)

# Figures of every study; the sweep figures only where the study sweeps.
FIGURES = ["frontier_and_heatmaps", "residuals", "collapse", "probability_vs_n"]
SWEEP_FIGURES = ["hyperparameter_sweep"]
TABLES = ["convergence.csv", "psi_fit.csv", "kind_comparison.csv"]
# Does the law hold? Its nested alternatives and their tests (law.py).
TABLES += ["law_tests.csv"]
FIGURES += ["law_tests"]

# Environment of every training job: JAX allocates GPU memory as it needs it
# instead of preallocating 75% of the card, so several jobs can share one GPU
# (raise the profile's `resources: gpu=` to run more at once). A value set in
# the calling environment wins. XLA_FLAGS passes through unchanged: set it there
# for CPU thread flags, e.g. XLA_FLAGS=--xla_cpu_multi_thread_eigen=false.
TRAIN_ENV = (
    f"PYTHONPATH={shlex.quote(PACKAGE_DIR)}${{{{PYTHONPATH:+:$PYTHONPATH}}}} "
    "XLA_PYTHON_CLIENT_PREALLOCATE=${{XLA_PYTHON_CLIENT_PREALLOCATE:-false}} "
    "JAX_COMPILATION_CACHE_DIR=${{JAX_COMPILATION_CACHE_DIR:-.jax_cache}}"
)


# ---------------------------------------------------------------- helpers
def study_of(wildcards):
    """The Study a wildcard `study` names (any study of config.yaml, not only the active one)."""
    try:
        return STUDIES[wildcards.study]
    except KeyError:
        raise study_lib.StudyError(
            f"study: {wildcards.study!r} is not defined; choose one of {', '.join(sorted(STUDIES))}"
        ) from None


def cell_of(wildcards):
    """The Cell a shard path names; an error if the path's hash is not the study's."""
    return study_of(wildcards).cell(
        wildcards.kind, wildcards.variant, wildcards.K, wildcards.n, wildcards.hash
    )


def seeds_of(wildcards):
    return int(wildcards.stop) - int(wildcards.start)


def get_final_output():
    """Tables and figures of the active study (the target of `rule all`)."""
    return study_outputs(STUDY)


def study_outputs(study):
    outputs = [f"results/{study.name}/{table}" for table in TABLES]
    figures = FIGURES + (SWEEP_FIGURES if study.is_sweep else [])
    outputs += [f"plots/{study.name}/{figure}.png" for figure in figures]
    outputs += [
        f"plots/{study.name}/sweep/{variant}/frontier_and_heatmaps.png"
        for variant in study.variants
        if variant != study_lib.DEFAULT_VARIANT
    ]
    return outputs


# ------------------------------------------------------ train_shard inputs
def train_args(wildcards):
    """Options of `python -m deepsea_scaling.train` for the shard (all but --out)."""
    return study_lib.train_command_args(
        cell_of(wildcards), int(wildcards.start), int(wildcards.stop)
    )


def train_runtime_minutes(wildcards, attempt):
    return study_lib.estimate_runtime_minutes(
        cell_of(wildcards), seeds_of(wildcards), attempt
    )


def train_mem_mb(wildcards, attempt):
    return study_lib.estimate_mem_mb(cell_of(wildcards), seeds_of(wildcards), attempt)


# ------------------------------------------------------- train_group jobs
TRAIN_GROUPS = [g for study in STUDIES.values() for g in study_lib.train_groups(study)]
# train_shard serves the studies that train cell by cell; the others have
# one generated rule per group (workflow/rules/train.smk).
_GROUPED = sorted({g.study for g in TRAIN_GROUPS})
CELL_GROUPED_STUDIES = (
    r"(?!(?:" + "|".join(_GROUPED) + r")$)[A-Za-z0-9_-]+"
    if _GROUPED
    else r"[A-Za-z0-9_-]+"
)


def group_runtime_minutes(group):
    """runtime(wildcards, attempt) of a group job: as for its cells' seeds together."""

    def runtime(wildcards, attempt):
        return study_lib.estimate_runtime_minutes(
            group.shards[0][0], group.seeds, attempt
        )

    return runtime


def group_mem_mb(group):
    def mem_mb(wildcards, attempt):
        return study_lib.estimate_mem_mb(group.shards[0][0], group.seeds, attempt)

    return mem_mb


# ------------------------------------------------------ aggregation inputs
def shards_of_study(wildcards):
    """Every shard parquet of the study, all kinds, variants and cells."""
    return study_of(wildcards).shard_paths()


def expected_hashes_of_study(wildcards):
    return [cell.hash for cell, _ in _shards_with_cells(study_of(wildcards))]


def variants_of_study_shards(wildcards):
    return [cell.variant for cell, _ in _shards_with_cells(study_of(wildcards))]


def _shards_with_cells(study):
    return [(cell, shard) for cell in study.cells() for shard in study.shards(cell)]


def figure_caption(wildcards):
    """One line under every figure: study, budget, seeds, number of cells."""
    return study_of(wildcards).caption()


def critical_region(wildcards):
    """The collapse figure's region, in the keys of plots.plot_collapse."""
    region = study_of(wildcards).critical_region
    return {
        "n_min": region["hardness_min"],
        "n_max": region["hardness_max"],
        "k_min": region["ensemble_min"],
        "k_max": region["ensemble_max"],
    }


def sweep_variants(wildcards):
    return list(study_of(wildcards).variants)
