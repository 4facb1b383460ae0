import json
import shlex
import sys
from argparse import Namespace
from pathlib import Path

import yaml

# The package lives beside the rules (workflow/deepsea_scaling): importable
# here from its path, by the scripts (workflow/scripts/common.py) and by the
# training command (PYTHONPATH in TRAIN_ENV), so the workflow runs from a plain
# checkout as well as after `pip install -e .`.
PACKAGE_DIR = str(Path(workflow.basedir) / "workflow")
if PACKAGE_DIR not in sys.path:
    sys.path.insert(0, PACKAGE_DIR)

from deepsea_scaling import groups as groups_lib
from deepsea_scaling import rounds as rounds_lib
from deepsea_scaling import study as study_lib

# ------------------------------------------------------------ config checks
# A study defined in a --configfile replaces config.yaml's study of that name
# whole (Snakemake merges config files key by key, which would silently add
# config.yaml's kinds to the user's study). Then the schema (types, ranges,
# unknown keys) and the semantics (TrainConfig fields and bounds, the chosen
# study defined): one line naming the key, before any job is planned.
with open(Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml") as f:
    CONFIG_SCHEMA = yaml.safe_load(f)
STUDIES = study_lib.load_workflow_config(
    config,
    [yaml.safe_load(Path(p).read_text()) for p in workflow.config_settings.configfiles],
    dict(workflow.config_settings.config),
    CONFIG_SCHEMA,
)
STUDY = STUDIES[config["study"]]

# Every study's training jobs, by study and group name (a few ms per study).
# A sequential design trains a subset, round by round: a round's jobs are its
# plan's units grouped by program (`round_groups`), found from the plans
# (`group_of`); with train_grouping: cell they are these groups of one.
GROUPS = {
    name: groups_lib.groups_by_name(groups_lib.train_groups(study))
    for name, study in STUDIES.items()
}


wildcard_constraints:
    study=r"[A-Za-z0-9_-]+",
    group=groups_lib.GROUP_NAME_REGEX,
    variant=r"[A-Za-z0-9_.=+-]+",


# Resources of the training rule are settings, never read off the machine that
# plans the workflow (a cluster's login node has no GPU): `train_gpus` (0 by
# default; profiles/slurm sets the rule's gpu to 1) and `train_threads`.
TRAIN_GPUS = config.get("train_gpus", 0)
TRAIN_THREADS = config.get("train_threads", 1)

# Figures of every study; the sweep figures only where the study sweeps.
FIGURES = [
    "frontier_and_heatmaps",
    "residuals",
    "collapse",
    "probability_vs_n",
    "law_tests",
    "psi_by_budget",
]
SWEEP_FIGURES = ["hyperparameter_sweep"]
TABLES = [
    "convergence.csv",
    "psi_fit.csv",
    "kind_comparison.csv",
    "residuals.csv",
    "law_tests.csv",
    "psi_by_budget.csv",
]

# Environment of every training job: JAX allocates GPU memory as it needs it
# instead of preallocating 75% of the card, so several jobs can share one GPU
# (raise the profile's `resources: gpu=` to run more at once). A value set in
# the calling environment wins. XLA_FLAGS passes through unchanged: set it there
# for other XLA options (the training command turns XLA:CPU's multi-threaded Eigen off,
# one core per device, unless XLA_FLAGS sets it).
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


def get_final_output():
    """Tables and figures of the active study (the target of `rule all`)."""
    return study_outputs(STUDY)


def study_outputs(study):
    outputs = [f"results/{study.name}/{table}" for table in TABLES]
    outputs += decisions_of_study(Namespace(study=study.name))
    if study.is_sweep:
        outputs += [
            f"results/{study.name}/{table}"
            for table in (
                "variant_comparison.csv",
                "variant_table.csv",
                "variant_table.md",
            )
        ]
    figures = FIGURES + (SWEEP_FIGURES if study.is_sweep else [])
    outputs += [f"plots/{study.name}/{figure}.png" for figure in figures]
    outputs += [
        f"plots/{study.name}/sweep/{variant}/frontier_and_heatmaps.png"
        for variant in study.variants
        if variant != study_lib.DEFAULT_VARIANT
    ]
    return outputs


# ------------------------------------------------------- train_group inputs
def group_of(wildcards):
    """The TrainGroup a group table's path names; an error if the study plans no such group."""
    found = GROUPS.get(wildcards.study, {}).get(wildcards.group)
    study = STUDIES.get(wildcards.study)
    # a sequential design's round may group several cells: look in its plans
    if found is None and study is not None and study.sequential:
        for path in sorted(Path(f"results/{study.name}/design").glob("round_*.json")):
            found = _groups_of_plan(study.name, path).get(wildcards.group)
            if found is not None:
                break
    if found is None:
        raise study_lib.StudyError(
            f"results/{wildcards.study}/runs/{wildcards.group}.parquet: study {wildcards.study} plans "
            "no such training group (the config changed?); run `snakemake -n` to see its current groups"
        )
    return found


def group_batch(wildcards):
    """The --batch JSON of the group's training command."""
    return group_of(wildcards).batch_spec()


def group_runtime_minutes(wildcards, attempt):
    return group_of(wildcards).runtime_minutes(attempt)


def group_mem_mb(wildcards, attempt):
    return group_of(wildcards).mem_mb(attempt)


# --------------------------------------------------- sequential designs
def _plan_path(study, round_index):
    """The plan of a round; IncompleteCheckpointException (handled by Snakemake) until it exists."""
    return checkpoints.plan_round.get(study=study, round=str(round_index)).output.plan


def _read_plan(path):
    with open(path) as f:
        return json.load(f)


_PLAN_GROUPS = {}


def _groups_of_plan(study, path):
    """A round plan's training jobs by name: its new units, grouped as the study's train_grouping
    says; read once per version of the file (Snakemake asks for them for every job of the round).
    """
    key = (study, str(path), Path(path).stat().st_mtime_ns)
    if key not in _PLAN_GROUPS:
        units = _read_plan(path)["units"]
        _PLAN_GROUPS[key] = groups_lib.groups_by_name(
            groups_lib.round_groups(STUDIES[study], units)
        )
    return _PLAN_GROUPS[key]


def _round_groups(study, round_index):
    """Round r's training jobs."""
    return list(_groups_of_plan(study, _plan_path(study, round_index)).values())


def previous_plan(wildcards):
    """Round r's predecessor's plan (none for the first round)."""
    r = int(wildcards.round)
    return [] if r == 0 else [_plan_path(wildcards.study, r - 1)]


def tables_before_round(wildcards):
    """The group tables of every unit planned before round r."""
    r = int(wildcards.round)
    return [
        group.table for q in range(r) for group in _round_groups(wildcards.study, q)
    ]


def final_plan(wildcards):
    """The first plan that says the design is done (rounds are checkpoints: one at a time)."""
    study = study_of(wildcards)
    for r in range(rounds_lib.MAX_ROUNDS + 1):
        path = _plan_path(study.name, r)
        if _read_plan(path)["done"]:
            return path
    raise study_lib.StudyError(
        f"studies.{study.name}: design {study.design} not done after {rounds_lib.MAX_ROUNDS} rounds"
    )


def design_settings(wildcards):
    """What a round's plan depends on besides the tables (a change replans)."""
    study = study_of(wildcards)
    return {
        "design": study.design,
        "reference_limit": study.reference_limit,
        "frontier": dict(study.frontier),
        "cells": [c.hash for c in study.cells()],
        "shards": study.shards(),
    }


def trained_groups(study):
    """The groups a study trains: all of a grid; those of the final plan of a sequential design."""
    if not study.sequential:
        return list(GROUPS[study.name].values())
    last = _read_plan(final_plan(Namespace(study=study.name)))["round"]
    return [group for q in range(last + 1) for group in _round_groups(study.name, q)]


# ------------------------------------------------------ aggregation inputs
def group_tables_of_study(wildcards):
    """Every group table the study trains, all kinds, variants and cells."""
    return [group.table for group in trained_groups(study_of(wildcards))]


def expected_rows_of_study(wildcards):
    """group table -> [[config hash, start, stop, variant], ...]: what merge_runs checks."""
    return {
        group.table: group.expected_rows()
        for group in trained_groups(study_of(wildcards))
    }


def decisions_of_study(wildcards):
    """A sequential design's decisions table (skipped cells and what was assumed); none for a grid."""
    study = study_of(wildcards)
    return [f"results/{study.name}/design/decisions.csv"] if study.sequential else []


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
