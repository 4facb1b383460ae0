"""Unit tests of deepsea_scaling.study: expansion of config.yaml into cells, shards, paths."""

from __future__ import annotations

import copy
import dataclasses
import shlex
from pathlib import Path

import pandas as pd
import pytest
import yaml

from deepsea_scaling import study as S
from deepsea_scaling.config import TrainConfig, config_hash

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.fixture(scope="module")
def schema() -> dict:
    return yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


def tiny_config(config, **changes) -> dict:
    c = copy.deepcopy(config)
    c["studies"]["tiny"].update(changes)
    return c


# ------------------------------------------------------------------ expansion
def test_repository_config_is_valid(config, schema):
    S.validate_config(config, schema)
    studies = S.load_all_studies(config)
    assert set(studies) >= {"default", "paper", "sweep", "tiny"}
    assert studies[config["study"]].name == config["study"]


def test_tiny_study_cells(config):
    tiny = S.load_study(config, "tiny")
    cells = tiny.cells()
    # bootrp and boot: K in {2, 4} x n in {4, 6}; eps: n in {4, 6} with K = 1
    assert len(cells) == 2 * 2 * 2 + 2
    eps = [c for c in cells if c.kind == "eps"]
    assert {(c.ensemble_size, c.hardness) for c in eps} == {(1, 4), (1, 6)}
    assert all(c.config.members == 1 for c in eps)
    assert all(c.variant == "default" for c in cells)
    for c in cells:
        assert c.config.rb_size == 1000 and c.config.learning_starts == 500
        assert c.config.num_episodes == tiny.num_episodes
        assert (c.config.kind, c.config.ensemble_size, c.config.hardness) == (c.kind, c.ensemble_size, c.hardness)
    assert tiny.shards(cells[0]) == [(0, 2), (2, 4)]


def test_paper_grid_is_the_reference_grid(config):
    paper = S.load_study(config, "paper")
    ns = sorted({c.hardness for c in paper.cells()})
    ks = sorted({c.ensemble_size for c in paper.cells()})
    assert ns == list(range(3, 12)) + list(range(12, 31, 2)) + list(range(32, 97, 4))
    assert ks == [1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 32, 40]
    assert {c.kind for c in paper.cells()} == {"boot", "bootrp"}
    assert (paper.seeds_per_cell, paper.num_episodes) == (32, 50_000)
    assert len(paper.shard_paths()) == 2 * 13 * 36


def test_sweep_variants(config):
    sweep = S.load_study(config, "sweep")
    kinds_of = {}
    for c in sweep.cells():
        kinds_of.setdefault(c.variant, set()).add(c.kind)
    assert kinds_of["default"] == {"boot", "bootrp"}
    assert kinds_of["prior_scale=1.0"] == {"bootrp"}  # prior_scale: bootrp only
    assert kinds_of["learning_rate=0.0005"] == {"boot", "bootrp"}
    assert len(kinds_of) == 1 + 3 + 3 + 3
    cell = next(c for c in sweep.cells() if c.variant == "learning_rate=0.0005")
    assert cell.config.learning_rate == 5e-4
    # the reference fills the whole buffer before learning starts
    cell = next(c for c in sweep.cells() if c.variant == "rb_size=5000")
    assert (cell.config.rb_size, cell.config.learning_starts) == (5000, 5000)
    assert sorted({c.hardness for c in sweep.cells()}) == [3, 5, 7, 9, 11, 12, 16, 20, 28, 32, 48, 64, 80, 96]


# ----------------------------------------------------------------- hashes
def test_hash_is_the_config_hash_and_stable(config):
    a = S.load_study(config, "tiny").cells()
    b = S.load_study(copy.deepcopy(config), "tiny").cells()
    assert [c.hash for c in a] == [c.hash for c in b]
    for c in a:
        expected = TrainConfig(kind=c.kind, ensemble_size=c.ensemble_size, hardness=c.hardness,
                               num_episodes=400, rb_size=1000, learning_starts=500, num_log_points=10)
        assert c.hash == config_hash(expected)
    assert len({c.hash for c in a}) == len(a)


def test_hyperparameter_and_base_seed_change_every_path(config):
    base = S.load_study(config, "tiny")
    changed = tiny_config(config, hyperparameters={"rb_size": 1000, "learning_starts": 500,
                                                   "num_log_points": 10, "learning_rate": 1e-3})
    reseeded = tiny_config(config, base_seed=7)
    for other in (S.load_study(changed, "tiny"), S.load_study(reseeded, "tiny")):
        assert not set(base.shard_paths()) & set(other.shard_paths())


def test_raising_seeds_adds_only_new_shards(config):
    c16 = tiny_config(config, seeds_per_cell=16, shard_size=8)
    c32 = tiny_config(config, seeds_per_cell=32, shard_size=8)
    old = set(S.load_study(c16, "tiny").shard_paths())
    new = set(S.load_study(c32, "tiny").shard_paths())
    assert old < new
    assert all("seeds_16-24" in p or "seeds_24-32" in p for p in new - old)


def test_shard_path_names_everything(config):
    tiny = S.load_study(config, "tiny")
    cell = next(c for c in tiny.cells() if c.kind == "boot" and c.ensemble_size == 4 and c.hardness == 6)
    assert S.shard_path("tiny", cell, 2, 4) == (
        f"results/tiny/runs/boot/default/K4/n6/{cell.hash}/seeds_2-4.parquet"
    )
    assert tiny.cell("boot", "default", "4", "6", cell.hash) is cell
    with pytest.raises(S.StudyError, match="config hash"):
        tiny.cell("boot", "default", 4, 6, "0" * 16)


# ------------------------------------------------------------ command line
@pytest.mark.parametrize("name", ["tiny", "sweep"])
def test_train_command_args_give_the_cells_hash(config, name):
    """The CLI, given the rule's arguments, trains exactly the config the path names."""
    train = pytest.importorskip("deepsea_scaling.train")
    parser = train.build_parser()
    study = S.load_study(config, name)
    for cell in study.cells()[:: max(1, len(study.cells()) // 60)]:
        args = parser.parse_args(shlex.split(S.train_command_args(cell, 0, 2)) + ["--out", "x.parquet"])
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
        if values["kind"] == "eps":
            values["ensemble_size"] = 1
        assert config_hash(TrainConfig(**values)) == cell.hash, S.train_command_args(cell, 0, 2)
        assert args.seeds == "0:2"


def test_resource_estimates_grow_with_work_and_attempt(config):
    paper = S.load_study(config, "paper")
    small = next(c for c in paper.cells() if c.ensemble_size == 1 and c.hardness == 3)
    big = next(c for c in paper.cells() if c.ensemble_size == 40 and c.hardness == 96)
    assert S.estimate_runtime_minutes(big, 32) > S.estimate_runtime_minutes(small, 32) >= 5
    assert S.estimate_runtime_minutes(big, 32, attempt=2) == 2 * S.estimate_runtime_minutes(big, 32)
    assert S.estimate_mem_mb(big, 32, attempt=2) == 2 * S.estimate_mem_mb(big, 32)
    assert S.estimate_mem_mb(big, 32) > S.estimate_mem_mb(small, 32) >= 2048


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda s: s["kinds"]["boot"].update(ensemble_sizes=[]), "studies.tiny.kinds.boot.ensemble_sizes"),
        (lambda s: s["kinds"]["boot"].update(ensemble_sizes=[0, 2]), "studies.tiny.kinds.boot.ensemble_sizes[0]"),
        (lambda s: s["kinds"]["boot"].update(hardness=[1]), "studies.tiny.kinds.boot.hardness[0]"),
        (lambda s: s.update(seeds_per_cell=0), "studies.tiny.seeds_per_cell"),
        (lambda s: s.update(shard_size=0), "studies.tiny.shard_size"),
        (lambda s: s.update(num_episodes=-1), "studies.tiny.num_episodes"),
        (lambda s: s.update(num_episode=400), "studies.tiny.num_episode"),
        (lambda s: s.update(seeds_per_cell="4"), "studies.tiny.seeds_per_cell"),
        (lambda s: s["kinds"].update(epsilon={"hardness": [4]}), "studies.tiny.kinds.epsilon"),
        (lambda s: s["kinds"]["eps"].update(ensemble_sizes=[2]), "studies.tiny.kinds.eps.ensemble_sizes"),
        (lambda s: s.update(kinds={}), "studies.tiny.kinds"),
    ],
)
def test_bad_values_name_the_key(config, schema, mutate, key):
    bad = copy.deepcopy(config)
    mutate(bad["studies"]["tiny"])
    with pytest.raises(S.StudyError) as err:
        S.validate_config(bad, schema)
        S.load_all_studies(bad)
    message = str(err.value)
    assert message.startswith(key + ":"), message
    assert "\n" not in message


@pytest.mark.parametrize(
    "hyper, key",
    [
        ({"learning_rat": 1e-3}, "studies.tiny.hyperparameters.learning_rat"),
        ({"rb_size": "big"}, "studies.tiny.hyperparameters.rb_size"),
        ({"learning_starts": 5000}, "studies.tiny.hyperparameters.learning_starts"),
        ({"hardness": 5}, "studies.tiny.hyperparameters.hardness"),
    ],
)
def test_semantic_errors_name_the_key(config, schema, hyper, key):
    bad = tiny_config(config, hyperparameters={"rb_size": 1000, "learning_starts": 500, **hyper})
    S.validate_config(bad, schema)  # the schema cannot know TrainConfig's fields
    with pytest.raises(S.StudyError) as err:
        S.load_study(bad, "tiny")
    assert str(err.value).startswith(key + ":"), str(err.value)


def test_sweep_of_unknown_hyperparameter_or_kind(config):
    bad = tiny_config(config, sweep={"gama": {"values": [0.9]}})
    with pytest.raises(S.StudyError, match=r"^studies\.tiny\.sweep\.gama\.values\[0\]: unknown hyperparameter"):
        S.load_study(bad, "tiny")
    bad = tiny_config(config, sweep={"gamma": {"values": [0.9], "kinds": ["boot", "nope"]}})
    with pytest.raises(S.StudyError, match=r"^studies\.tiny\.sweep\.gamma\.kinds\[1\]"):
        S.load_study(bad, "tiny")


def test_unknown_study_name(config):
    bad = dict(config, study="nope")
    with pytest.raises(S.StudyError, match=r"^study: 'nope' is not defined; choose one of .*tiny"):
        S.load_all_studies(bad)


# ------------------------------------------------------------------- merging
def _shard(path: Path, config_hash_: str, seeds: range) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"seed": list(seeds), "config_hash": config_hash_, "discovered": True}).to_parquet(path)


def test_merge_shards_adds_study_and_variant(tmp_path):
    a, b = tmp_path / "seeds_0-2.parquet", tmp_path / "x" / "seeds_2-4.parquet"
    _shard(a, "a" * 16, range(0, 2))
    _shard(b, "b" * 16, range(2, 4))
    runs = S.merge_shards([a, b], ["a" * 16, "b" * 16], study="tiny", variants=["default", "lr=1"])
    assert list(runs["study"]) == ["tiny"] * 4
    assert list(runs["variant"]) == ["default", "default", "lr=1", "lr=1"]
    assert list(runs["seed"]) == [0, 1, 2, 3]


def test_merge_refuses_mismatched_truncated_or_wrong_seeds(tmp_path):
    from deepsea_scaling.io import ShardError

    shard = tmp_path / "seeds_0-2.parquet"
    _shard(shard, "a" * 16, range(0, 2))
    with pytest.raises(ShardError, match=r"seeds_0-2\.parquet.*does not match.*--forcerun"):
        S.merge_shards([shard], ["b" * 16], study="t", variants=["default"])
    _shard(shard, "a" * 16, range(0, 1))
    with pytest.raises(ShardError, match="expected 0..1"):
        S.merge_shards([shard], ["a" * 16], study="t", variants=["default"])
    shard.write_bytes(shard.read_bytes()[:40])  # truncated
    with pytest.raises(ShardError, match=r"seeds_0-2\.parquet.*--forcerun") as err:
        S.merge_shards([shard], ["a" * 16], study="t", variants=["default"])
    assert "\n" not in str(err.value)


def test_train_groups_cover_every_shard_once_and_rebuild_each_hash():
    import json

    import yaml

    from deepsea_scaling.config import TrainConfig, config_hash
    from deepsea_scaling.study import load_study, train_groups

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    study = load_study(config, "sweep")
    groups = train_groups(study)
    paths = [p for g in groups for p in g.tables()]
    assert sorted(paths) == sorted(study.shard_paths())  # every shard, exactly once
    assert len(groups) < len(paths)
    for group in groups[:20]:
        for entry, (cell, start, stop) in zip(json.loads(group.batch_json()), group.shards):
            assert config_hash(TrainConfig.from_dict(entry["config"])) == cell.hash
            assert entry["seeds"] == [start, stop]
