"""Unit tests of deepsea_scaling.study: expansion of config.yaml into cells, hashes and shards."""

from __future__ import annotations

import copy
from pathlib import Path

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
def test_a_kind_grid_can_be_a_list_of_blocks(config, schema):
    """A list of blocks trains their union (a band of n per K), each cell once; the schema and the
    loader accept it, and a sequential design refuses it before anything runs."""
    bands = [{"ensemble_sizes": [2], "hardness": [4, 6]}, {"ensemble_sizes": [2, 4], "hardness": [6, 8]}]
    c = tiny_config(config, kinds={"boot": bands, "bootrp": bands, "eps": [{"hardness": [4]}, {"hardness": [4, 6]}]})
    S.validate_config(c, schema)
    cells = S.load_study(c, "tiny").cells()
    for kind in ("boot", "bootrp"):
        assert [(x.ensemble_size, x.hardness) for x in cells if x.kind == kind] == [(2, 4), (2, 6), (2, 8), (4, 6), (4, 8)]
    assert [x.hardness for x in cells if x.kind == "eps"] == [4, 6]
    with pytest.raises(S.StudyError, match=r"kinds\.boot: a list of blocks needs design: grid"):
        S.load_study(tiny_config(c, design="frontier"), "tiny")
    with pytest.raises(S.StudyError, match=r"kinds\.boot\[1\]\.hardness: empty grid"):
        S.load_study(tiny_config(c, kinds={"boot": [bands[0], {"ensemble_sizes": [2], "hardness": []}]}), "tiny")


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
    assert tiny.shards() == [(0, 4)]


def test_paper_grid_is_the_reference_grid(config):
    paper = S.load_study(config, "paper")
    ns = sorted({c.hardness for c in paper.cells()})
    ks = sorted({c.ensemble_size for c in paper.cells()})
    assert ns == list(range(3, 12)) + list(range(12, 31, 2)) + list(range(32, 97, 4))
    assert ks == [1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 32, 40]
    assert {c.kind for c in paper.cells()} == {"boot", "bootrp"}
    assert (paper.seeds_per_cell, paper.num_episodes) == (32, 50_000)
    assert len(paper.cells()) == 2 * 13 * 36


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
        assert not {c.hash for c in base.cells()} & {c.hash for c in other.cells()}


def test_raising_seeds_adds_only_new_shards(config):
    c16 = tiny_config(config, seeds_per_cell=16, shard_size=8)
    c32 = tiny_config(config, seeds_per_cell=32, shard_size=8)
    old, new = S.load_study(c16, "tiny").shards(), S.load_study(c32, "tiny").shards()
    assert old == [(0, 8), (8, 16)] and new == old + [(16, 24), (24, 32)]


def test_study_in_a_configfile_replaces_the_study_of_that_name_whole(config):
    """Snakemake merges --configfile key by key; a user's study must not inherit kinds."""
    from snakemake.utils import update_config

    user = {"studies": {"default": {"kinds": {"boot": {"ensemble_sizes": [2], "hardness": [4]}},
                                    "seeds_per_cell": 4, "shard_size": 2, "num_episodes": 400,
                                    "hyperparameters": {"rb_size": 1000, "learning_starts": 500}}}}
    merged = copy.deepcopy(config)
    update_config(merged, copy.deepcopy(user))  # what Snakemake does with --configfile
    assert set(merged["studies"]["default"]["kinds"]) == {"boot", "bootrp", "eps"}  # inherited, silently
    S.replace_studies_whole(merged, [user], {"study": "default"})
    assert merged["studies"]["default"] == user["studies"]["default"]
    assert merged["studies"]["paper"] == config["studies"]["paper"]  # other studies untouched
    assert set(S.load_study(merged, "default").kinds) == {"boot"}


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda s: s["kinds"]["boot"].update(ensemble_sizes=[]), "studies.tiny.kinds.boot.ensemble_sizes"),
        (lambda s: s["kinds"]["boot"].update(ensemble_sizes=[0, 2]), "studies.tiny.kinds.boot.ensemble_sizes[0]"),
        (lambda s: s["kinds"]["boot"].update(hardness=[1]), "studies.tiny.kinds.boot.hardness[0]"),
        (lambda s: s.update(seeds_per_cell=0), "studies.tiny.seeds_per_cell"),
        (lambda s: s.update(shard_size=0), "studies.tiny.shard_size"),
        (lambda s: s.update(shard_size=3), "studies.tiny.shard_size"),  # does not divide 4 seeds
        (lambda s: s.update(critical_region={"hardness_min": 6, "hardness_max": 4, "ensemble_min": 2,
                                             "ensemble_max": 4}), "studies.tiny.critical_region.hardness_min"),
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


def test_sweep_of_a_tuple_field_gives_a_usable_variant_name(config):
    c = tiny_config(config, sweep={"hidden_sizes": {"values": [[32, 32], "16,16,16"]}})
    study = S.load_study(c, "tiny")
    assert study.variants == ("default", "hidden_sizes=32x32", "hidden_sizes=16x16x16")
    cell = next(c for c in study.cells() if c.variant == "hidden_sizes=16x16x16")
    assert cell.config.hidden_sizes == (16, 16, 16)


def test_a_budget_within_the_warm_up_is_refused_naming_the_budget(config):
    bad = tiny_config(config, num_episodes=5)  # 5 * 4 // 24 = 0 learning steps after the warm-up
    with pytest.raises(S.StudyError, match=r"^studies\.tiny\.num_episodes: .*no learning step"):
        S.load_study(bad, "tiny")
    inside = tiny_config(config, num_episodes=40)
    inside["studies"]["tiny"]["hyperparameters"]["warmup"] = "inside"  # 40 episodes = 7 steps of a 21-step warm-up
    with pytest.raises(S.StudyError, match=r"^studies\.tiny\.num_episodes: .*learning would never start"):
        S.load_study(inside, "tiny")
