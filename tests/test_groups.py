"""Training groups, the cost model's resource estimates, and the merge of group tables."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pandas as pd
import numpy as np
import pytest
import yaml

from deepsea_scaling import cost
from deepsea_scaling import study as S
from deepsea_scaling.config import TrainConfig, config_hash, program_family, program_signature
from deepsea_scaling.groups import GROUP_NAME_REGEX, groups_by_name, round_groups, train_groups
from deepsea_scaling.io import ShardError
from deepsea_scaling.runs import REQUIRED_COLUMNS, merge_group_tables

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.mark.parametrize("name", ["tiny", "default", "paper", "sweep", "ablation"])
def test_groups_cover_every_cell_and_shard_exactly_once(config, name):
    study = S.load_study(config, name)
    groups = train_groups(study)
    covered = sorted((cell.hash, g.start, g.stop) for g in groups for cell in g.cells)
    planned = sorted((cell.hash, a, b) for cell in study.cells() for a, b in study.shards())
    assert covered == planned
    for g in groups:
        assert re.fullmatch(GROUP_NAME_REGEX, g.name), g.name
        # one compiled training program (row groups: one per K row, called per n)
        assert len({program_family(c.config) if study.train_grouping == "row" else program_signature(c.config)
                    for c in g.cells}) == 1
        assert g.table == f"results/{name}/runs/{g.name}.parquet"
    assert len({g.name for g in groups}) == len(groups)
    if study.train_grouping == "cell":
        assert all(len(g.cells) == 1 for g in groups)
    else:
        assert len(groups) < len(planned)


def test_shape_grouping_trains_boot_with_bootrp(config):
    grid = copy.deepcopy(config)
    grid["studies"]["paper"].update(design="grid", train_grouping="shape")
    groups = train_groups(S.load_study(grid, "paper"))
    assert len(groups) == 13 * 36
    assert all(sorted(c.kind for c in g.cells) == ["boot", "bootrp"] for g in groups)


def test_row_grouping_trains_the_n_of_a_k_row_in_jobs_of_about_a_minute(config):
    """train_grouping: row (the default study's): the cells of one K row and shard, boot with bootrp, in
    jobs of whole (K, n) programs whose projected training stays within ROW_GROUP_SECONDS (a job of one
    program may exceed it); the paper's grid would keep its large cells alone."""
    from deepsea_scaling.groups import ROW_GROUP_SECONDS

    study = S.load_study(config, "default")
    assert study.train_grouping == "row"
    groups = train_groups(study)
    assert len(groups) < len({(c.config.members, c.config.hardness) for c in study.cells()})
    for g in groups:
        programs = g.programs()
        assert [p[0].config.hardness for p in programs] == sorted({c.config.hardness for c in g.cells})
        prices = [cost.train_seconds(p[0].config, len(p) * (g.stop - g.start),
                                     prior=cost.has_prior([c.config for c in p])) for p in programs]
        assert len(programs) == 1 or sum(prices) <= ROW_GROUP_SECONDS
        assert g.runtime_minutes() * 60 >= max(300, 2 * cost.row_parts_seconds(g.parts())) and g.mem_mb() > 0
    grid = copy.deepcopy(config)
    grid["studies"]["paper"].update(design="grid", train_grouping="row")
    paper = train_groups(S.load_study(grid, "paper"))
    large = [g for g in paper if g.cells[0].config.members == 40 and g.cells[0].config.hardness >= 20]
    assert large and all(len(g.programs()) == 1 for g in large)


def test_a_sequential_design_trains_cell_by_cell(config):
    """Its rounds pick single cells, so each cell's shard is a group of its own."""
    study = S.load_study(config, "paper")
    assert study.design == "reference" and study.sequential
    groups = train_groups(study)
    assert len(groups) == 2 * 13 * 36 and all(len(g.cells) == 1 for g in groups)


def test_a_round_trains_the_cells_that_share_a_program_in_one_job(config):
    """With train_grouping: shape a round's boot and bootrp units of one (K, n) shard are one job;
    a unit planned alone stays alone; with cell, a round's jobs are the groups of one of train_groups."""
    spec = copy.deepcopy(config)
    spec["studies"]["paper"].update(seeds_per_cell=64, shard_size=32)
    alone = S.load_study(spec, "paper")
    spec["studies"]["paper"].update(train_grouping="shape")
    study = S.load_study(spec, "paper")
    cells = study.cells()
    boot = next(c for c in cells if c.kind == "boot" and c.config.members == 4 and c.config.hardness == 10)
    twin = next(c for c in cells if c.kind == "bootrp" and program_signature(c.config) == program_signature(boot.config))
    other = next(c for c in cells if c.kind == "bootrp" and c.config.members == 8 and c.config.hardness == 12)
    units = [[twin.hash, 0, 32], [other.hash, 0, 32], [boot.hash, 0, 32], [boot.hash, 32, 64]]
    groups = round_groups(study, units)
    assert sorted((g.start, sorted(c.kind for c in g.cells)) for g in groups) == [
        (0, ["boot", "bootrp"]), (0, ["bootrp"]), (32, ["boot"])]
    pair = next(g for g in groups if len(g.cells) == 2)
    assert [c.kind for c in pair.cells] == [c.kind for c in cells if c in pair.cells]  # the study's cell order
    assert round_groups(study, list(reversed(units)))[0].name in {g.name for g in groups}
    assert {g.name for g in round_groups(alone, units)} <= set(groups_by_name(train_groups(alone)))
    assert all(len(g.cells) == 1 for g in round_groups(alone, units))
    with pytest.raises(ValueError, match="does not define"):
        round_groups(study, [["0123456789abcdef", 0, 32]])


@pytest.mark.parametrize("name", ["tiny", "default", "sweep", "ablation"])
def test_batch_spec_rebuilds_every_members_hash(config, name):
    """Also for options toggled back to this engine's value under fidelity: reference (the ablation's variants)."""
    for group in train_groups(S.load_study(config, name)):
        entries = json.loads(group.batch_spec())
        assert [e["seeds"] for e in entries] == [[group.start, group.stop]] * len(group.cells)
        for entry, cell in zip(entries, group.cells):
            assert config_hash(TrainConfig.from_dict(entry["config"])) == cell.hash
        assert group.expected_rows() == [[c.hash, group.start, group.stop, c.variant] for c in group.cells]


def test_batch_spec_of_a_reference_cell_is_what_it_was(config):
    """The command text of cells that were always right stays the same (a changed text retrains a job)."""
    group = next(g for g in train_groups(S.load_study(config, "sweep")) if g.cells[0].variant == "default")
    entry = json.loads(group.batch_spec())[0]["config"]
    assert set(entry) == {"kind", "ensemble_size", "hardness", "num_episodes", "fidelity", "init", "warmup",
                          "warmup_resample", "initial_target", "decay_scope", "action_map", "loss_reduction",
                          "base_seed"}


def test_group_name_is_content_addressed(config):
    """A changed hyperparameter, base seed or seed range is a new name; the same config the same name."""
    names = {g.name for g in train_groups(S.load_study(config, "tiny"))}
    assert names == {g.name for g in train_groups(S.load_study(copy.deepcopy(config), "tiny"))}
    for changes in ({"base_seed": 3}, {"seeds_per_cell": 8, "shard_size": 8}):
        other = copy.deepcopy(config)
        other["studies"]["tiny"].update(changes)
        assert not names & {g.name for g in train_groups(S.load_study(other, "tiny"))}


def test_resource_estimates_grow_with_work_and_attempt(config):
    groups = train_groups(S.load_study(config, "paper"))
    small = next(g for g in groups if g.cells[0].ensemble_size == 1 and g.cells[0].hardness == 3)
    big = next(g for g in groups if g.cells[0].ensemble_size == 40 and g.cells[0].hardness == 96)
    assert big.runtime_minutes() > small.runtime_minutes() >= 5
    assert big.runtime_minutes(attempt=2) == 2 * big.runtime_minutes()
    assert big.mem_mb(attempt=2) == 2 * big.mem_mb()
    assert big.mem_mb() > small.mem_mb() >= 2048


def test_cost_model_by_hand():
    """0.2 ms + 20 us per run-member pair + 40 ns per pair and n^2 row, per vector step."""
    config = TrainConfig(kind="bootrp", ensemble_size=10, hardness=20, num_episodes=2400)
    steps = 10_000 // 24 + 2400 * 20 // 24  # the warm-up (outside the budget), then the learning steps
    pairs = 32 * 10
    expected = steps * (0.2e-3 + 2e-5 * pairs + 4e-8 * pairs * 400)
    assert cost.train_seconds(config, 32) == pytest.approx(expected)


def test_fit_coefficients_recovers_known_costs_exactly():
    """Jobs timed by a known model: the fit returns that model (the prior's price from the jobs
    whose program evaluates one: bootrp alone and boot beside bootrp, not boot alone), and
    job_seconds adds the overhead."""
    true = cost.Coefficients(step=3e-4, pair=5e-5, pair_row=6e-8, startup=4.0, compile=9.0, compile_cached=1.5,
                             prior_pair=2e-5, prior_pair_row=3e-8)
    jobs = []
    for kind, k, n, runs, cached, prior in [
            ("boot", 2, 6, 8, False, False), ("bootrp", 8, 18, 8, False, True), ("boot", 16, 10, 4, True, True),
            ("bootrp", 4, 30, 16, False, True), ("boot", 8, 18, 8, True, False), ("boot", 4, 12, 8, False, False)]:
        config = TrainConfig(kind=kind, ensemble_size=k, hardness=n, num_episodes=5000, fidelity="reference")
        train = true.train_seconds(config.num_vector_steps, runs * k, n * n, runs * k * prior)
        compile_s = true.compile_cached if cached else true.compile
        jobs.append(dict(config=config, runs=runs, train_seconds=train, compile_seconds=compile_s, cached=cached,
                         wall_seconds=true.startup + compile_s + train, prior=prior))
    fields = ["step", "pair", "pair_row", "prior_pair", "prior_pair_row", "startup", "compile", "compile_cached"]
    fit = cost.fit_coefficients(jobs)
    np.testing.assert_allclose([getattr(fit, f) for f in fields], [getattr(true, f) for f in fields], rtol=1e-6)
    # steady-state steps of large cells fit beside the jobs, priced per step by the same model
    samples = []
    for kind, k, n in [("boot", 2, 96), ("bootrp", 16, 96), ("bootrp", 8, 72)]:
        config = TrainConfig(kind=kind, ensemble_size=k, hardness=n, fidelity="reference")
        samples.append(dict(config=config, runs=8, step_seconds=true.train_seconds(1, 8 * k, n * n,
                                                                                      8 * k * (kind == "bootrp"))))
    fit = cost.fit_coefficients(jobs[:3], samples)
    np.testing.assert_allclose([getattr(fit, f) for f in fields[:5]], [getattr(true, f) for f in fields[:5]],
                               rtol=1e-6)
    # jobs that all evaluate a prior (or none) cannot tell its price apart: no prior term
    assert cost.fit_coefficients([j for j in jobs if j["prior"]]).prior_pair == 0.0
    config = jobs[1]["config"]
    ref = cost.COSTS["reference"]
    assert cost.job_seconds(config, 8) == pytest.approx(ref.startup + ref.compile + cost.train_seconds(config, 8))
    assert cost.job_seconds(config, 8, cached=True) == pytest.approx(
        ref.startup + ref.compile_cached + cost.train_seconds(config, 8))
    with pytest.raises(ValueError, match="at least 3 jobs"):
        cost.fit_coefficients(jobs[:2])
    # a job of a K row's n (train_grouping: row): one start-up and compile, each n's steps at the largest n's rows
    rows = []
    for k, sizes in [(4, (6, 9, 12)), (8, (10, 14)), (2, (5, 20))]:
        parts = [(TrainConfig(kind="bootrp", ensemble_size=k, hardness=n, num_episodes=5000, fidelity="reference"),
                  8, True) for n in sizes]
        train = sum(true.train_seconds(c.num_vector_steps, 8 * k, max(sizes) ** 2, 8 * k) for c, _, _ in parts)
        assert cost.row_parts_seconds(parts, coeffs=true) == pytest.approx(train)
        rows.append(dict(config=parts[-1][0], runs=8 * len(sizes), parts=parts, train_seconds=train,
                         compile_seconds=true.compile, wall_seconds=true.startup + true.compile + train, prior=True))
    fit = cost.fit_coefficients(jobs + rows)
    np.testing.assert_allclose([getattr(fit, f) for f in fields], [getattr(true, f) for f in fields], rtol=1e-6)
    assert cost.row_job_seconds(rows[0]["parts"]) == pytest.approx(
        ref.startup + ref.compile + cost.row_parts_seconds(rows[0]["parts"]))


def test_a_program_evaluates_a_prior_unless_boot_trains_alone():
    """`cost.has_prior` follows `Agent.adds_prior`: bootrp's program, also for boot beside it; boot
    alone (or a prior scaled by 0) builds none. The reference mode prices the prior per pair, so
    a group with bootrp in it is projected dearer than boot alone, and its time limit is too."""
    boot = TrainConfig(kind="boot", ensemble_size=8, hardness=11, num_episodes=50_000, fidelity="reference")
    rp = TrainConfig(kind="bootrp", ensemble_size=8, hardness=11, num_episodes=50_000, fidelity="reference")
    rp0 = TrainConfig(kind="bootrp", ensemble_size=8, hardness=11, num_episodes=50_000, fidelity="reference",
                      prior_scale=0.0)
    assert not cost.has_prior([boot]) and cost.has_prior([rp]) and cost.has_prior([boot, rp])
    assert not cost.has_prior([rp0]) and not cost.has_prior([boot, rp0])
    assert cost.COSTS["reference"].prior_pair > 0
    alone, beside = cost.train_seconds(boot, 32), cost.train_seconds(boot, 32, prior=True)
    assert beside == pytest.approx(cost.train_seconds(rp, 32)) and alone < beside
    assert float(cost.cell_cost_seconds("boot", 8, 11, 32, 50_000, fidelity="reference")) == pytest.approx(alone)
    assert float(cost.cell_cost_seconds("bootrp", 8, 11, 32, 50_000, fidelity="reference")) == pytest.approx(beside)
    assert cost.runtime_minutes(boot, 32, prior=True) >= cost.runtime_minutes(boot, 32)


# ------------------------------------------------------------------- merging
def _table(path: Path, rows: list[tuple[str, int]], drop: tuple[str, ...] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({
        "kind": "boot", "ensemble_size": 2, "hardness": 4, "members": 2,
        "config_hash": [h for h, _ in rows], "seed": [s for _, s in rows],
        "discovered": True, "episodes_to_discovery": 3.0, "all_members_discovered": False,
        "episodes_to_all_members": float("nan"), "final_return": 0.5, "diverged": False,
        "total_episodes": 10, "diversity": [[0.1, 0.2]] * len(rows), "numerics": 2,
    })
    assert set(frame.columns) == {*REQUIRED_COLUMNS, "numerics"}
    frame.drop(columns=list(drop)).to_parquet(path)


def test_merge_adds_study_and_variant(tmp_path):
    a, b = "a" * 16, "b" * 16
    path = tmp_path / "g.parquet"
    _table(path, [(a, 0), (a, 1), (b, 0), (b, 1)])
    runs = merge_group_tables({str(path): [[a, 0, 2, "default"], [b, 0, 2, "lr=1"]]}, study="tiny")
    assert list(runs["study"]) == ["tiny"] * 4
    assert sorted(zip(runs["config_hash"], runs["variant"])) == [(a, "default")] * 2 + [(b, "lr=1")] * 2


@pytest.mark.parametrize(
    "rows, drop, match",
    [
        ([("a" * 16, 0)], (), r"missing \[\('aaaaaaaaaaaaaaaa', 1\)\]"),  # a seed lacking
        ([("a" * 16, 0), ("a" * 16, 1), ("a" * 16, 1)], (), r"duplicates: 1"),
        ([("c" * 16, 0), ("c" * 16, 1)], (), r"unexpected \[\('cccccccccccccccc', 0\)"),  # another config
        ([("a" * 16, 0), ("a" * 16, 1)], ("seed",), r"lacks column\(s\) seed"),
        ([("a" * 16, 0), ("a" * 16, 1)], ("discovered", "diversity"), r"lacks column\(s\) discovered, diversity"),
        # a default-mode DeepSea table from before engine version 2 (no numerics column): its float bits are stale
        ([("a" * 16, 0), ("a" * 16, 1)], ("numerics",), r"numerics version 1, this engine's 2"),
    ],
)
def test_merge_refuses_what_it_cannot_vouch_for(tmp_path, rows, drop, match):
    path = tmp_path / "g.parquet"
    _table(path, rows, drop)
    with pytest.raises(ShardError, match=match) as err:
        merge_group_tables({str(path): [["a" * 16, 0, 2, "default"]]}, study="t")
    assert str(err.value).startswith(str(path)) and "--forcerun" in str(err.value)
    assert "\n" not in str(err.value)


def test_merge_refuses_a_truncated_or_missing_table(tmp_path):
    path = tmp_path / "g.parquet"
    _table(path, [("a" * 16, 0), ("a" * 16, 1)])
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ShardError, match=r"g\.parquet is unreadable.*--forcerun"):
        merge_group_tables({str(path): [["a" * 16, 0, 2, "default"]]}, study="t")
    path.unlink()
    with pytest.raises(ShardError, match=r"g\.parquet is missing"):
        merge_group_tables({str(path): [["a" * 16, 0, 2, "default"]]}, study="t")
