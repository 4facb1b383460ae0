"""Designs round by round on a study's cells and seed shards (`rounds.plan_round`), without training."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from deepsea_scaling import designs, rounds
from deepsea_scaling import study as S
from deepsea_scaling.stats import predicted_probability

REPO = Path(__file__).resolve().parents[1]
PSI = {"boot": 0.80, "bootrp": 0.87, "eps": 0.75}


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


# A rectangular grid for the sequential designs (they walk whole K rows and n columns): the former
# default study's, 90 cells.
GRID_KINDS = {"boot": {"ensemble_sizes": [1, 2, 4, 8, 16], "hardness": [4, 6, 8, 10, 12, 14, 16, 20]},
              "bootrp": {"ensemble_sizes": [1, 2, 4, 8, 16], "hardness": [6, 8, 10, 12, 14, 16, 20, 24, 28]},
              "eps": {"hardness": [4, 6, 8, 10, 12]}}


def _study(config, name, **changes):
    c = copy.deepcopy(config)
    c["studies"][name].update(changes)
    return S.load_study(c, name)


def _discovered(cell, seed) -> bool:
    """A fixed outcome per (cell, seed), drawn from the law: reruns of a seed give the same."""
    p = float(predicted_probability(PSI[cell.kind], cell.ensemble_size, cell.hardness))
    return np.random.default_rng([int(cell.hash[:8], 16), seed]).random() < p


def _run_design(study):
    """Plan rounds until done, 'training' each unit from the fixed outcomes. Returns (plans, rows)."""
    by_hash = {c.hash: c for c in study.cells()}
    rows, trained, plans, placed = [], [], [], {}
    for r in range(rounds.MAX_ROUNDS):
        plan = rounds.plan_round(study, r, rounds.outcomes(rows), trained, placed)
        placed = plan["placed"]
        plans.append(plan)
        assert not [u for u in plan["units"] if u in trained], "a unit trained twice"
        for h, a, b in plan["units"]:
            rows += [{"config_hash": h, "discovered": _discovered(by_hash[h], s), "diverged": False}
                     for s in range(a, b)]
        trained = plan["trained"]
        if plan["done"]:
            return plans, rows
    raise AssertionError("design did not finish")


def test_grid_design_is_one_round_of_everything(config):
    study = _study(config, "tiny")
    plans, _ = _run_design(study)
    assert len(plans) == 2 and plans[1]["done"] and not plans[1]["units"]
    assert len(plans[0]["units"]) == len(study.cells()) * len(study.shards())


@pytest.mark.parametrize("limit", [1, 3])
def test_reference_design_makes_exactly_the_protocols_decisions(config, limit):
    study = _study(config, "default", kinds=GRID_KINDS, design="reference", reference_limit=limit)
    plans, rows = _run_design(study)
    outcome = rounds.outcomes(rows)
    decisions = plans[-1]["decisions"]
    assert len(decisions) == len(study.cells())
    for kind in study.kinds:
        cells = [c for c in study.cells() if c.kind == kind]
        ks, ns = sorted({c.ensemble_size for c in cells}), sorted({c.hardness for c in cells})
        # the protocol walked one cell at a time, knowing every cell's outcome
        full = {(c.kind, c.ensemble_size, c.hardness): (
            sum(_discovered(c, s) for s in range(study.seeds_per_cell)), study.seeds_per_cell) for c in cells}
        truth = designs.reference_protocol([kind], ks, ns, limit, full)
        assert truth.done
        ours = [(d["kind"], d["ensemble_size"], d["hardness"], d["decision"]) for d in decisions if d["kind"] == kind]
        assert ours == [(*d.cell, d.action) for d in truth.decisions]
    trained = {d["hash"] for d in decisions if d["decision"] == designs.TRAINED}
    assert trained <= set(outcome)
    # speculation: cells trained that the protocol skips, and the number of rounds, stay small
    wasted = set(outcome) - trained
    assert len(wasted) <= 0.25 * len(trained) + 2, (len(wasted), len(trained))
    assert len(plans) <= 15, len(plans)


def test_frontier_design_stops_within_its_rounds_and_reuses_cells(config):
    study = _study(config, "default", kinds=GRID_KINDS, design="frontier", seeds_per_cell=32, shard_size=4,
                   frontier={"pilot_seeds": 8, "seeds": 8, "boundary_seeds": 4, "max_rounds": 2,
                             "target_half_width": {"boot": 0.02, "bootrp": 0.03}})
    plans, rows = _run_design(study)
    assert len(plans) <= 1 + 2 + 1  # pilot, at most max_rounds, and the plan that says done
    units = [tuple(u) for p in plans for u in p["units"]]
    assert len(units) == len(set(units))
    assert all(b - a == 4 for _, a, b in units)
    eps = {c.hash for c in study.cells() if c.kind == "eps"}
    assert {h for h, _, _ in plans[0]["units"]} >= eps  # the K = 1 baseline trains whole in the pilot
    trained = {d["hash"] for d in plans[-1]["decisions"] if d["decision"] == designs.TRAINED}
    assert trained == set(rounds.outcomes(rows))
    assert 0 < len(trained) < len(study.cells())
    first_round = {}  # each trained cell's hash -> the first round whose plan trains a shard of it
    for r, plan in enumerate(plans):
        for h, _, _ in plan["units"]:
            first_round.setdefault(h, r)
    assert set(first_round) == trained
    assert {d["hash"]: d["round"] for d in plans[-1]["decisions"] if d["round"] is not None} == first_round


def test_frontier_seeds_must_fill_whole_shards(config):
    with pytest.raises(S.StudyError, match=r"frontier\.pilot_seeds: 6 is invalid; give a multiple of shard_size=4"):
        _study(config, "default", kinds=GRID_KINDS, design="frontier", shard_size=4, frontier={"pilot_seeds": 6})
