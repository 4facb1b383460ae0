"""Reading the original research code's results tree (tests/fixtures/original_tree, made by running it)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepsea_scaling import law, original, reanalyse, stats
from deepsea_scaling.config import TrainConfig, config_hash

FIXTURE = Path(__file__).parent / "fixtures" / "original_tree"
RUN_COLUMNS = [  # docs/INTERFACES.md, "The run table"
    *TrainConfig().to_dict(), "seed", "config_hash", "members", "discovered", "episodes_to_discovery",
    "all_members_discovered", "episodes_to_all_members", "final_return", "diverged", "total_episodes", "diversity",
]


def fixture_copy(tmp_path) -> Path:
    dest = tmp_path / "tree"
    shutil.copytree(FIXTURE, dest)
    return dest


def a_run(tree: Path) -> Path:
    return sorted(tree.glob("*/*/results.csv"))[0].parent


def test_fixture_reads_into_the_run_table():
    runs = original.read_tree(FIXTURE, study="orig")
    assert set(RUN_COLUMNS) <= set(runs.columns)
    assert runs["study"].eq("orig").all() and runs["variant"].eq("default").all()
    folders = sorted(FIXTURE.glob("*/*/results.csv"))
    assert len(runs) == sum(len(pd.read_csv(p)) for p in folders)
    for path in folders:
        raw = pd.read_csv(path)
        cfg = original._read_config(path.parent / "config.yaml")
        rows = runs[runs["source"] == path.parent.name].sort_values("seed")
        assert (rows["kind"].iloc[0], rows["ensemble_size"].iloc[0], rows["hardness"].iloc[0]) == (
            cfg["kind"], cfg["ensemble_size"], cfg["hardness"])
        np.testing.assert_array_equal(rows["discovered"], raw["weak_convergence"].astype(bool))
        found = raw["weak_convergence"].astype(bool).to_numpy()
        np.testing.assert_array_equal(rows["episodes_to_discovery"].to_numpy()[found],
                                      raw["time_to_weak"].to_numpy()[found] + 1)
        # without a discovery the original writes the number of learning-phase episodes
        assert (raw["time_to_weak"][~found] == rows["total_episodes"].to_numpy()[~found]).all()
        assert rows["diversity"].map(len).eq(100).all()
        np.testing.assert_allclose(rows["diversity"].iloc[0], json.loads(raw["collapse_metric"].iloc[0]))
    first = runs.iloc[0]
    config = TrainConfig.from_dict({k: first[k].item() if hasattr(first[k], "item") else first[k]
                                    for k in TrainConfig().to_dict()})
    # the research code's behaviours: key(42) map, 416 warm-up steps of 24 envs outside the budget
    assert config.fidelity == "reference" and config.action_map == "key42" and config.warmup == "outside"
    assert config.warmup_steps == 416
    assert runs.iloc[0]["config_hash"] == config_hash(config)


def test_every_table_and_figure_runs_on_the_fixture(tmp_path):
    """The fixture, plus a copy of it as a sweep experiment (lr = 5e-4): every table and figure."""
    tree = fixture_copy(tmp_path)
    shutil.copytree(tree / "fixture", tree / "sweep")
    for path in (tree / "sweep").glob("*/config.yaml"):
        path.write_text(path.read_text().replace("lr: 0.0002", "lr: 0.0005"))
    out = tmp_path / "runs.parquet"
    assert reanalyse.main([str(tree), "--out", str(out), "--analyse", str(tmp_path / "analysis")]) == 0
    runs = pd.read_parquet(out)
    assert len(runs) == 2 * len(original.read_tree(FIXTURE))
    assert set(runs["variant"]) == {"default", "learning_rate=0.0005"}
    for name in ("convergence.csv", "psi_fit.csv", "kind_comparison.csv", "law_tests.csv"):
        assert (tmp_path / "analysis" / name).stat().st_size > 0
    for name in ("frontier_and_heatmaps", "residuals", "collapse", "probability_vs_n", "law_tests",
                 "hyperparameter_sweep", "sweep/learning_rate=0.0005/frontier_and_heatmaps"):
        assert (tmp_path / "analysis" / f"{name}.png").stat().st_size > 0, name
    cells = pd.read_csv(tmp_path / "analysis" / "convergence.csv")
    assert len(cells) == 24 and cells["successes"].sum() == runs["discovered"].sum()
    tests = pd.read_csv(tmp_path / "analysis" / "law_tests.csv")
    assert set(tests["model"]) == set(law.MODEL_NAMES)


def test_cli_is_documented_and_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "workflow")}
    out = tmp_path / "runs.csv"
    done = subprocess.run([sys.executable, "-m", "deepsea_scaling.reanalyse", str(FIXTURE), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "runs in" in done.stdout and len(pd.read_csv(out)) == len(original.read_tree(FIXTURE))


def _remove_results(tree):
    path = a_run(tree) / "results.csv"
    path.unlink()
    return path


def _remove_config(tree):
    path = a_run(tree) / "config.yaml"
    path.unlink()
    return path


def _unknown_kind(tree):
    path = a_run(tree) / "config.yaml"
    path.write_text(path.read_text().replace("kind: boot", "kind: dqn"))
    return path


def _unknown_field(tree):
    path = a_run(tree) / "config.yaml"
    path.write_text(path.read_text() + "soft_reset: 0.5\n")
    return path


def _missing_column(tree):
    path = a_run(tree) / "results.csv"
    pd.read_csv(path).drop(columns="time_to_strong").to_csv(path, index=False)
    return path


def _debug_map(tree):
    path = a_run(tree) / "config.yaml"
    path.write_text(path.read_text().replace("randomize_actions: true", "randomize_actions: false"))
    return path


def _wrong_budget(tree):
    path = a_run(tree) / "config.yaml"
    path.write_text(path.read_text().replace("num_episodes: ", "num_episodes: 7"))
    return a_run(tree) / "results.csv"


@pytest.mark.parametrize("damage, words", [
    (_remove_results, "missing"), (_remove_config, "missing"), (_unknown_kind, "unknown kind"),
    (_unknown_field, "unknown field"), (_missing_column, "time_to_strong"), (_debug_map, "randomize_actions"),
    (_wrong_budget, "learning-phase episodes"),
])
def test_bad_tree_is_refused_in_one_line_naming_the_path(tmp_path, capsys, damage, words):
    tree = fixture_copy(tmp_path)
    path = damage(tree)
    with pytest.raises(original.OriginalTreeError, match=words) as err:
        original.read_tree(tree)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert reanalyse.main([str(tree), "--out", str(tmp_path / "x.parquet")]) == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and str(path) in message
    assert not (tmp_path / "x.parquet").exists()


def test_empty_or_duplicated_trees_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(original.OriginalTreeError, match="no runs found"):
        original.read_tree(tmp_path / "empty")
    tree = fixture_copy(tmp_path)
    shutil.copytree(a_run(tree), tree / "again" / a_run(tree).name)
    with pytest.raises(original.OriginalTreeError, match="same configuration"):
        original.read_tree(tree)
    assert len(original.read_tree(tree, experiments=["again"])) == 4


def test_sweep_values_become_variants():
    assert original.variant_of({**original.ORIGINAL_FIELDS}) == "default"
    assert original.variant_of({**original.ORIGINAL_FIELDS, "lr": 5e-4}) == "learning_rate=0.0005"
    assert original.variant_of({**original.ORIGINAL_FIELDS, "rb_size": 40000}) == "rb_size=40000"
    assert original.variant_of({**original.ORIGINAL_FIELDS, "prior_scale": 10}) == "prior_scale=10.0"
    config = original.train_config({**original.ORIGINAL_FIELDS, "kind": "bootrp", "hardness": 20,
                                    "num_episodes": 50_000})
    # 50,000 episodes at n = 20 after a 416-step warm-up: episodes end every 20 steps in lockstep
    assert original.learning_episodes(config) == (((416 + 50_000 * 20 // 24) // 20) - 416 // 20) * 24
    assert stats.K1_ONLY_KINDS == ("eps",)
