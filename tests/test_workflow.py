"""The Snakemake workflow without training: lint, format, dry runs, config errors, up-to-date checks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, run_snakemake

STUDIES = ["default", "paper", "sweep", "tiny", "ablation"]


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
    train_jobs = counts.get("train_group", 0)
    assert train_jobs >= 1 or counts.get("plan_round") == 1, counts
    assert not [rule for rule in counts if rule.startswith("train") and rule != "train_group"], counts
    for rule in ["merge_runs", "convergence_table", "fit_psi", "compare_kinds", "residuals_table",
                 "plot_frontier_and_heatmaps", "plot_residuals", "plot_collapse", "plot_probability_vs_n",
                 "test_law", "plot_law_tests"]:
        assert counts.get(rule, 0) >= 1, (rule, counts)
    if study in ("sweep", "ablation"):
        assert counts["plot_hyperparameter_sweep"] == 1 and counts["compare_variants"] == 1
        assert counts["plot_sweep_frontiers"] == (9 if study == "sweep" else 8)  # one per swept value
    if study in ("paper", "sweep"):
        # design: reference: the first round is a checkpoint; its plan decides what trains
        assert counts["plan_round"] == 1 and counts["design_decisions"] == 1, counts
        # the bound, on CPU time so that a loaded machine does not fail it (wall: ~4 s unloaded)
        assert result.cpu_seconds < 10, f"{study} study planned in {result.cpu_seconds:.1f} s of CPU"


def test_every_study_lists_the_same_short_set_of_rules(workflow_dir):
    """One training rule whatever the study: no rule is generated per group."""
    listed = {}
    for study in ("tiny", "paper"):  # a grid and a sequential design; the rules are the Snakefile's, not a study's
        result = run_snakemake(workflow_dir, "--list-rules", "--config", f"study={study}")
        assert result.returncode == 0, result.output[-3000:]
        listed[study] = sorted(line.strip() for line in result.output.splitlines()
                               if line.strip() and " " not in line.strip())
    assert all(rules == listed["tiny"] for rules in listed.values()), listed
    assert [rule for rule in listed["tiny"] if rule.startswith("train")] == ["train_group"]
    assert len(listed["tiny"]) < 25


def test_one_figure_plans_only_what_it_needs(workflow_dir):
    result = run_snakemake(workflow_dir, "-n", "plots/tiny/residuals.png")
    assert result.returncode == 0, result.output[-3000:]
    assert result.job_counts() == {
        "train_group": 10,  # 10 cells, one shard each (tiny trains cell by cell)
        "merge_runs": 1,
        "convergence_table": 1,
        "test_law": 1,  # psi_fit.csv says beside psi whether the law tests reject the law
        "fit_psi": 1,
        "residuals_table": 1,
        "plot_residuals": 1,
        "total": 16,
    }


def _train_resources(output: str) -> list[str]:
    """The `resources:` line of every train_group job of a dry run's output."""
    found, inside = [], False
    for line in output.splitlines():
        stripped = line.strip()
        if stripped.startswith(("rule ", "localrule ")):
            inside = stripped.rstrip(":").split()[-1] == "train_group"
        elif inside and stripped.startswith("resources:"):
            found.append(stripped)
    return found


def test_train_group_resources_and_command(workflow_dir):
    result = run_snakemake(workflow_dir, "-n", "-p", "--config", "study=tiny")
    resources = _train_resources(result.output)
    assert len(resources) == 10, result.output[-3000:]
    # no GPU unless the config says so, whatever the planning machine has
    assert all("gpu=0" in r and "runtime=" in r and "mem_mb=" in r for r in resources), resources
    assert "XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}" in result.output
    assert "python -m deepsea_scaling.train --batch" in result.output
    assert "--cpu-devices 1 --out results/tiny/runs/K" in result.output
    two = run_snakemake(workflow_dir, "-n", "-p", "--cores", "2", "--config", "study=tiny", "train_threads=2",
                        "train_gpus=1")
    assert "--cpu-devices 2 --out" in two.output and "--cpu-devices 1" not in two.output
    assert all("gpu=1" in r for r in _train_resources(two.output))


def paper_grid_config(tmp_path):
    """The paper study as a full grid (every training job planned at once; its own design is sequential)."""
    import yaml

    from conftest import REPO

    spec = yaml.safe_load((REPO / "config.yaml").read_text())["studies"]["paper"]
    spec.update(design="grid", train_grouping="shape")
    path = tmp_path / "paper_grid.yaml"
    path.write_text(yaml.safe_dump({"studies": {"paper": spec}}))
    return path


def test_slurm_profile_asks_a_gpu_for_every_training_job_of_the_paper_study(workflow_dir, tmp_path):
    """Planned on this GPU-less machine, with SLURM's tools hidden: the setting decides, not the host."""
    bin_dir = tmp_path / "bin"  # no sinfo/sacct/scontrol/nvidia-smi on PATH
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    for tool in ("nvidia-smi", "sinfo", "scontrol", "sbatch"):
        assert shutil.which(tool, path=env["PATH"]) is None or tool != "nvidia-smi", tool
    grid = paper_grid_config(tmp_path)
    result = run_snakemake(workflow_dir, "-n", "--profile", "profiles/slurm", "--configfile", str(grid),
                           "--config", "study=paper", env=env)
    assert result.returncode == 0, result.output[-3000:]
    resources = _train_resources(result.output)
    assert len(resources) == result.job_counts()["train_group"] == 13 * 36
    assert all(re.search(r"\bgpu=1\b", r) for r in resources), resources[:3]
    plain = run_snakemake(workflow_dir, "-n", "--configfile", str(grid), "--config", "study=paper", env=env)
    assert all(re.search(r"\bgpu=0\b", r) for r in _train_resources(plain.output))


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
    # when timestamps are kept; without them, no training job is ever rerun
    # (train_group has no file inputs).
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
        assert "train_group" not in result.job_counts(), result.output[-3000:]


def _copytree_new_times(src, dst):
    return shutil.copytree(src, dst, copy_function=shutil.copyfile)


# --------------------------------------------------------------- bad config
# Each case: a change to config.yaml's tiny study (a study in a --configfile
# replaces the study of that name whole), or top-level keys; the key the one
# line must name; and, where the check says what is allowed, that text.
def _tiny(**changes):
    return lambda spec: spec.update(changes)


def _grid(kind, **grid):
    return lambda spec: spec["kinds"].update({kind: grid})


TINY_HYPER = {"rb_size": 1000, "learning_starts": 500}
BAD_CONFIGS = {
    "typo": (_tiny(num_episode=400), "studies.tiny.num_episode", None),
    "zero_k": (_grid("boot", ensemble_sizes=[0, 2], hardness=[4, 6]), "studies.tiny.kinds.boot.ensemble_sizes[0]",
               "must be >= 1"),
    "empty_grid": (_grid("boot", ensemble_sizes=[], hardness=[4, 6]), "studies.tiny.kinds.boot.ensemble_sizes", None),
    "hardness_one": (_grid("eps", hardness=[1]), "studies.tiny.kinds.eps.hardness[0]", "must be >= 2"),
    "unknown_kind": (_grid("ucb", ensemble_sizes=[2], hardness=[4]), "studies.tiny.kinds.ucb",
                     "allowed: boot, bootrp, eps"),
    "wrong_type": (_tiny(seeds_per_cell="many"), "studies.tiny.seeds_per_cell", None),
    "seeds_zero": (_tiny(seeds_per_cell=0), "studies.tiny.seeds_per_cell", "must be >= 1"),
    "seeds_negative": (_tiny(seeds_per_cell=-3), "studies.tiny.seeds_per_cell", "must be >= 1"),
    "episodes_zero": (_tiny(num_episodes=0), "studies.tiny.num_episodes", "must be >= 1"),
    "no_shards": (_tiny(shard_size=0), "studies.tiny.shard_size", "must be >= 1"),
    "shard_size_negative": (_tiny(shard_size=-2), "studies.tiny.shard_size", "must be >= 1"),
    "orphan_shard": (_tiny(shard_size=3), "studies.tiny.shard_size", None),
    "no_kinds": (_tiny(kinds={}), "studies.tiny.kinds", "give at least 1"),
    "zero_threads": ({"train_threads": 0}, "train_threads", None),
    "negative_gpus": ({"train_gpus": -1}, "train_gpus", None),
    "unknown_hyperparameter": (_tiny(hyperparameters={"learning_rat": 0.001}),
                               "studies.tiny.hyperparameters.learning_rat", None),
    # checked by the training command's own validation (TrainConfig), through the workflow
    "hyperparameter_type": (_tiny(hyperparameters={"rb_size": "large"}), "studies.tiny.hyperparameters.rb_size",
                            "give an integer >= 1"),
    "train_cli_range": (_tiny(hyperparameters={"rb_size": 1000, "learning_starts": 5000}),
                        "studies.tiny.hyperparameters.learning_starts", "must be <= --rb-size"),
    "threshold_above_one": (_tiny(hyperparameters={**TINY_HYPER, "discovery_threshold": 2.0}),
                            "studies.tiny.hyperparameters.discovery_threshold", "(0, 0.99]"),
    "region_min_above_max": (_tiny(critical_region={"hardness_min": 6, "hardness_max": 4, "ensemble_min": 2,
                                                    "ensemble_max": 4}), "studies.tiny.critical_region.hardness_min",
                             None),
}
# The cases that also go through Snakemake (the wiring: the Snakefile calls the
# same loader before planning): a schema error, an unknown kind, TrainConfig's
# own range check, a top-level setting.
THROUGH_SNAKEMAKE = ["typo", "unknown_kind", "train_cli_range", "zero_threads"]


def _bad_config_file(path, case):
    import yaml

    from conftest import REPO

    change = BAD_CONFIGS[case][0]
    if isinstance(change, dict):
        path.write_text(yaml.safe_dump(change))
        return path
    spec = yaml.safe_load((REPO / "config.yaml").read_text())["studies"]["tiny"]
    change(spec)
    path.write_text(yaml.safe_dump({"studies": {"tiny": spec}}))
    return path


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_every_bad_config_is_refused_in_one_line_naming_the_key(tmp_path, case):
    """What the Snakefile runs on its config before planning (study.load_workflow_config), in-process, on
    the config Snakemake merges from config.yaml, the --configfile and --config study=tiny."""
    import yaml
    from snakemake.utils import update_config

    from conftest import REPO
    from deepsea_scaling import study as S

    _, key, allowed = BAD_CONFIGS[case]
    user = yaml.safe_load(_bad_config_file(tmp_path / "bad.yaml", case).read_text())
    command_line = {"study": "tiny"}
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, user)
    update_config(config, command_line)
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    with pytest.raises(S.StudyError) as err:
        S.load_workflow_config(config, [user], command_line, schema)
    message = str(err.value)
    assert message.startswith(f"{key}:") and "\n" not in message, message
    if allowed:
        assert allowed in message, message


def _assert_fails_fast(result, key, wf, allowed=None):
    assert result.returncode != 0, result.output[-3000:]
    lines = [line for line in result.output.splitlines() if f"{key}:" in line]
    assert lines, result.output[-3000:]
    assert len({line.split(f"{key}:", 1)[1] for line in lines}) == 1, lines  # one message
    if allowed:
        assert allowed in lines[0], lines[0]
    # "under 10 s": on CPU time, which a loaded machine does not inflate (wall about 4 s unloaded)
    assert result.cpu_seconds < 10, f"took {result.cpu_seconds:.1f} s of CPU ({result.seconds:.1f} s wall)"
    assert "Select jobs to execute" not in result.output
    assert not (wf / "results").exists() and not (wf / "logs").exists()


@pytest.mark.parametrize("case", THROUGH_SNAKEMAKE)
def test_invalid_config_fails_fast_naming_the_key(workflow_dir, tmp_path, case):
    _, key, allowed = BAD_CONFIGS[case]
    bad = _bad_config_file(tmp_path / "bad.yaml", case)
    result = run_snakemake(workflow_dir, "--cores", "1", "--configfile", str(bad), "--config", "study=tiny")
    _assert_fails_fast(result, key, workflow_dir, allowed)


def test_unknown_study_fails_fast(workflow_dir):
    result = run_snakemake(workflow_dir, "--cores", "1", "--config", "study=nope")
    _assert_fails_fast(result, "study", workflow_dir)
    assert "is not defined; choose one of ablation, default, paper" in result.output


@pytest.mark.parametrize("design", ["reference", "frontier"])
def test_dry_run_of_each_sequential_design_on_the_paper_grid(workflow_dir, tmp_path, design):
    """The first round is a checkpoint: planned in seconds whatever the grid."""
    import yaml

    from conftest import REPO

    spec = yaml.safe_load((REPO / "config.yaml").read_text())["studies"]["paper"]
    spec.update(design=design, shard_size=8, frontier={"pilot_seeds": 8, "seeds": 8, "boundary_seeds": 8})
    path = tmp_path / "paper_design.yaml"
    path.write_text(yaml.safe_dump({"studies": {"paper": spec}}))
    result = run_snakemake(workflow_dir, "-n", "--configfile", str(path), "--config", "study=paper")
    assert result.returncode == 0, result.output[-3000:]
    assert result.job_counts()["plan_round"] == 1, result.output[-3000:]
    assert result.cpu_seconds < 10, f"planned in {result.cpu_seconds:.1f} s of CPU"


def test_profile_keys_are_snakemake_options():
    """Each profile key is a command-line option of this snakemake + plugin
    (a misspelt key is otherwise an error only when the profile is used)."""
    import yaml
    from snakemake.cli import get_argument_parser

    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    options = {o for a in get_argument_parser()._actions for o in a.option_strings}
    unknown = sorted(k for k in profile if f"--{k}" not in options)
    assert not unknown, f"profile keys that snakemake does not know: {unknown}"
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"
    assert profile["retries"] >= 1
    # the one training rule asks for a GPU whatever the planning machine has
    assert set(profile["set-resources"]) == {"train_group"}, profile["set-resources"]
    assert profile["set-resources"]["train_group"]["gpu"] == 1
    # runtime/mem of train_group come from the workflow's functions of attempt.
    assert not {"runtime", "mem_mb"} & set(profile["set-resources"]["train_group"])
    assert profile["groups"]["merge_runs"] == profile["groups"]["fit_psi"]
