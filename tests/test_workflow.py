"""The Snakemake workflow without training: lint, format, dry runs, config errors, up-to-date checks."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import run_snakemake

STUDIES = ["default", "paper", "sweep", "tiny"]


def test_lint_is_clean(workflow_dir):
    result = run_snakemake(workflow_dir, "--lint")
    assert result.returncode == 0, result.output
    assert "Lints for" not in result.output, result.output


def test_snakefmt_check(repo):
    proc = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "."], cwd=repo,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("study", STUDIES)
def test_dry_run_of_every_study(workflow_dir, study):
    result = run_snakemake(workflow_dir, "-n", "--config", f"study={study}")
    assert result.returncode == 0, result.output[-3000:]
    counts = result.job_counts()
    train_jobs = counts.get("train_shard", 0) + sum(v for k, v in counts.items() if k.startswith("train_group_"))
    assert train_jobs >= 1, counts
    for rule in ["merge_runs", "convergence_table", "fit_psi", "compare_kinds",
                 "plot_frontier_and_heatmaps", "plot_residuals", "plot_collapse", "plot_probability_vs_n",
                 "test_law", "plot_law_tests"]:
        assert counts.get(rule, 0) >= 1, (rule, counts)
    if study == "sweep":
        assert counts["plot_hyperparameter_sweep"] == 1
        assert counts["plot_sweep_frontiers"] == 9  # one per swept value
    if study == "paper":
        # 936 cells ("about a thousand training jobs"); train_grouping: shape
        # trains boot and bootrp of each (K, n) shard in one job
        assert train_jobs == 13 * 36
        # the bound, kept generous: measured about 3 s on the CI machine
        assert result.seconds < 30, f"paper study planned in {result.seconds:.1f} s"


def test_one_figure_plans_only_what_it_needs(workflow_dir):
    result = run_snakemake(workflow_dir, "-n", "plots/tiny/residuals.png")
    assert result.returncode == 0, result.output[-3000:]
    assert result.job_counts() == {
        "train_shard": 20,  # 10 cells x 2 shards
        "merge_runs": 1,
        "convergence_table": 1,
        "fit_psi": 1,
        "plot_residuals": 1,
        "total": 24,
    }


def test_train_shard_resources_and_command(workflow_dir):
    import shutil

    result = run_snakemake(workflow_dir, "-n", "-p", "--config", "study=tiny")
    gpus = 1 if shutil.which("nvidia-smi") else 0  # a GPU only where there is one
    assert f"gpu={gpus}" in result.output and "runtime=" in result.output and "mem_mb=" in result.output
    assert "XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}" in result.output
    assert "python -m deepsea_scaling.train --kind" in result.output
    assert "--seeds 0:2 --cpu-devices 1 --out results/tiny/runs/" in result.output
    two = run_snakemake(workflow_dir, "-n", "-p", "--cores", "2", "--config", "study=tiny", "train_threads=2")
    assert "--cpu-devices 2 --out" in two.output and "--cpu-devices 1" not in two.output


def _fake_outputs(wf, study="tiny"):
    """Create every output of the study as an empty file, then let Snakemake mark them up to date."""
    summary = run_snakemake(wf, "--summary", "--config", f"study={study}")
    assert summary.returncode == 0, summary.output[-3000:]
    for line in summary.output.splitlines()[1:]:
        path = line.split("\t")[0]
        if "\t" in line and path.startswith(("results/", "plots/")):
            (wf / path).parent.mkdir(parents=True, exist_ok=True)
            (wf / path).touch()
    touched = run_snakemake(wf, "--touch", "--cores", "1", "--config", f"study={study}")
    assert touched.returncode == 0, touched.output[-3000:]


def test_up_to_date_has_nothing_to_do(fresh_workflow, tmp_path):
    _fake_outputs(fresh_workflow)
    result = run_snakemake(fresh_workflow, "-n", "--config", "study=tiny")
    assert result.returncode == 0, result.output[-3000:]
    assert "Nothing to be done" in result.output, result.output[-3000:]

    # Results copied into another checkout (no .snakemake/ metadata) are up to date
    # when timestamps are kept; without them, no training shard is ever rerun
    # (train_shard has no file inputs).
    from conftest import copy_workflow

    for preserve, name in ((True, "kept"), (False, "fresh")):
        other = copy_workflow(tmp_path / f"other_{name}")
        copy = shutil.copytree if preserve else _copytree_new_times
        for folder in ("results", "plots"):
            copy(fresh_workflow / folder, other / folder)
        result = run_snakemake(other, "-n", "--config", "study=tiny")
        assert result.returncode == 0, result.output[-3000:]
        if preserve:
            assert "Nothing to be done" in result.output, result.output[-3000:]
        assert "train_shard" not in result.job_counts(), result.output[-3000:]


def _copytree_new_times(src, dst):
    return shutil.copytree(src, dst, copy_function=shutil.copyfile)


# --------------------------------------------------------------- bad config
BAD_CONFIGS = {
    "typo": ("""
        studies:
          tiny:
            num_episode: 400
        """, "studies.tiny.num_episode"),
    "zero_k": ("""
        studies:
          tiny:
            kinds:
              boot: {ensemble_sizes: [0, 2], hardness: [4, 6]}
        """, "studies.tiny.kinds.boot.ensemble_sizes[0]"),
    "empty_grid": ("""
        studies:
          tiny:
            kinds:
              boot: {ensemble_sizes: [], hardness: [4, 6]}
        """, "studies.tiny.kinds.boot.ensemble_sizes"),
    "hardness_one": ("""
        studies:
          tiny:
            kinds:
              eps: {hardness: [1]}
        """, "studies.tiny.kinds.eps.hardness[0]"),
    "unknown_kind": ("""
        studies:
          tiny:
            kinds:
              epsilon: {hardness: [4]}
        """, "studies.tiny.kinds.epsilon"),
    "wrong_type": ("""
        studies:
          tiny:
            seeds_per_cell: many
        """, "studies.tiny.seeds_per_cell"),
    "no_shards": ("""
        studies:
          tiny:
            shard_size: 0
        """, "studies.tiny.shard_size"),
    "zero_threads": ("""
        train_threads: 0
        """, "train_threads"),
    "unknown_hyperparameter": ("""
        studies:
          tiny:
            hyperparameters: {learning_rat: 0.001}
        """, "studies.tiny.hyperparameters.learning_rat"),
}


def _assert_fails_fast(result, key, wf):
    assert result.returncode != 0, result.output[-3000:]
    assert f"{key}:" in result.output, result.output[-3000:]
    assert result.seconds < 10, f"took {result.seconds:.1f} s"
    assert "Select jobs to execute" not in result.output
    assert not (wf / "results").exists()


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_invalid_config_fails_fast_naming_the_key(workflow_dir, tmp_path, case):
    text, key = BAD_CONFIGS[case]
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent(text))
    result = run_snakemake(workflow_dir, "--cores", "1", "--configfile", str(bad), "--config", "study=tiny")
    _assert_fails_fast(result, key, workflow_dir)


def test_unknown_study_fails_fast(workflow_dir):
    result = run_snakemake(workflow_dir, "--cores", "1", "--config", "study=nope")
    _assert_fails_fast(result, "study", workflow_dir)
    assert "choose one of default, paper, sweep, tiny" in result.output
