"""The paper_check study: the frontier design started from the published ψ, without training.

- the study validates, its settings reach the design per kind, and it dry-runs;
- its first round (the prior start) plans cells near the frontier under the
  published ψ, in every K row the law tests need (2, 4, 8, 16), one 8-seed
  shard each;
- run round by round on outcomes drawn from the law (published ψ and one
  well above it), it stops within its rounds at the target half-widths;
- the settings it introduced (prior_psi, law_ks, max_check_hours) do what
  they say on small grids; the wall-time projection of the benchmark.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import run_snakemake
from deepsea_scaling import designs as D
from deepsea_scaling import rounds
from deepsea_scaling import study as S
from deepsea_scaling.cost import cell_cost_seconds, schedule_seconds, shard_jobs
from deepsea_scaling.simulate import PAPER_KS, PAPER_NS, SimulatedWorlds, simulate_frontier_design, study_wall_hours
from deepsea_scaling.stats import predicted_probability

REPO = Path(__file__).resolve().parents[1]
STUDY = "paper_check"
PUBLISHED = {"boot": 0.80, "bootrp": 0.87}
TARGETS = {"boot": 0.02, "bootrp": 0.03}
LAW_KS = (2, 4, 8, 16)


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.fixture(scope="module")
def study(config) -> S.Study:
    return S.load_study(config, STUDY)


def _mid(psi, k, n) -> bool:
    return 0.1 < float(predicted_probability(psi, k, n)) < 0.9


# ------------------------------------------------------------- THE STUDY
def test_study_validates_and_is_the_paper_grid_under_a_frontier_design(config, study):
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    S.validate_config(config, schema)
    paper = S.load_study(config, "paper")
    grid = lambda s: sorted((c.kind, c.ensemble_size, c.hardness) for c in s.cells())  # noqa: E731
    assert grid(study) == grid(paper)  # the paper's K and n, both kinds
    assert study.design == "frontier" and study.num_episodes == 50_000
    assert all(c.config.fidelity == "reference" for c in study.cells())
    for kind in ("boot", "bootrp"):
        settings = study.frontier_settings(kind)
        assert settings.prior_psi == PUBLISHED[kind] and settings.target_half_width == TARGETS[kind]
        assert settings.law_ks == LAW_KS and settings.episodes == 50_000
        assert set(LAW_KS) <= {k for _, k, _ in grid(study)}


def test_dry_run_plans_the_first_round(workflow_dir):
    result = run_snakemake(workflow_dir, "-n", "--config", f"study={STUDY}")
    assert result.returncode == 0, result.output[-3000:]
    counts = result.job_counts()
    assert counts["plan_round"] == 1 and counts["design_decisions"] == 1, counts


def test_first_round_is_planned_under_the_published_psi(study):
    plan = rounds.plan_round(study, 0, {}, [])
    by_hash = {c.hash: c for c in study.cells()}
    assert not plan["done"] and plan["units"]
    assert all(b - a == 8 for _, a, b in plan["units"])  # one 8-seed shard per cell: one job
    for kind in ("boot", "bootrp"):
        cells = [by_hash[h] for h, _, _ in plan["units"] if by_hash[h].kind == kind]
        rows = {c.ensemble_size for c in cells}
        assert set(LAW_KS) <= rows, (kind, sorted(rows))
        psi = PUBLISHED[kind]
        mid = [c for c in cells if _mid(psi, c.ensemble_size, c.hardness)]
        assert len(mid) >= 0.75 * len(cells), (kind, len(mid), len(cells))
        for k in LAW_KS:  # each law row near its frontier, not only at its boundaries
            assert any(c.ensemble_size == k for c in mid), (kind, k)
        assert 1 not in rows  # K = 1 is not fitted
        seconds = sum(float(cell_cost_seconds(kind, c.ensemble_size, c.hardness, 8, 50_000)) for c in cells)
        assert seconds < 1.0 * 3600, (kind, seconds / 3600)  # a cheap start (cost model)


def _law_outcomes(study, psi_by_kind, seed=0):
    """A fixed discovery per (cell, seed) drawn from the law with the published overdispersion."""
    rho = {"boot": (4.1 - 1) / 31, "bootrp": (8.1 - 1) / 31}

    def discovered(cell, s):
        rng = np.random.default_rng([int(cell.hash[:8], 16), seed])
        p = float(predicted_probability(psi_by_kind[cell.kind], cell.ensemble_size, cell.hardness))
        if 0 < p < 1:  # one beta draw per cell, then the seeds
            c = (1 - rho[cell.kind]) / rho[cell.kind]
            p = rng.beta(max(p * c, 1e-12), max((1 - p) * c, 1e-12))
        return rng.random(s + 1)[s] < p
    return discovered


@pytest.mark.parametrize("truth", [PUBLISHED, {"boot": 0.93, "bootrp": 0.93}], ids=["published", "psi 0.93"])
def test_study_reaches_its_targets_within_its_rounds(study, truth):
    by_hash = {c.hash: c for c in study.cells()}
    discovered = _law_outcomes(study, truth)
    rows, trained, placed, plans = [], [], {}, []
    for r in range(10):
        plan = rounds.plan_round(study, r, rounds.outcomes(rows), trained, placed)
        placed, trained = plan["placed"], plan["trained"]
        plans.append(plan)
        rows += [{"config_hash": h, "discovered": discovered(by_hash[h], s), "diverged": False}
                 for h, a, b in plan["units"] for s in range(a, b)]
        if plan["done"]:
            break
    assert plans[-1]["done"] and len(plans) <= 1 + 3 + 1  # round 0, at most max_rounds, the plan that says done
    outcome = {(by_hash[h].kind, by_hash[h].ensemble_size, by_hash[h].hardness): st
               for h, st in rounds.outcomes(rows).items()}
    for kind in ("boot", "bootrp"):
        fit = D.fit_outcome(outcome, kind)
        assert fit.ok and fit.half_width <= TARGETS[kind], (kind, fit)
        for k in LAW_KS:  # the law tests have cells near the frontier in every law row
            assert any(kd == kind and kk == k and _mid(fit.psi, k, n) for kd, kk, n in outcome), (kind, k)
    hours = sum(float(cell_cost_seconds(c.kind, c.ensemble_size, c.hardness, b - a, 50_000))
                for h, a, b in trained for c in [by_hash[h]]) / 3600
    assert hours < 4.0, hours  # cost model, both kinds (simulated mean 1.0 at the published ψ, 1.9 at 0.93)


# -------------------------------------------------------- THE NEW SETTINGS
def test_without_a_prior_the_start_is_the_pilot():
    settings = D.FrontierSettings()
    assert D.frontier_start("boot", PAPER_KS, PAPER_NS, settings) == D.frontier_pilot("boot", PAPER_KS, PAPER_NS,
                                                                                       settings)


def test_a_kind_without_a_prior_starts_with_the_pilot(config):
    c = copy.deepcopy(config)
    c["studies"][STUDY]["frontier"]["prior_psi"] = {"bootrp": 0.87}
    study = S.load_study(c, STUDY)
    assert study.frontier_settings("boot").prior_psi is None
    assert study.frontier_settings("bootrp").prior_psi == 0.87
    boot = D.frontier_start("boot", PAPER_KS, PAPER_NS, study.frontier_settings("boot"))
    assert boot == D.frontier_pilot("boot", PAPER_KS, PAPER_NS, study.frontier_settings("boot"))


@pytest.mark.parametrize("psi", [0.75, 0.80, 0.87, 0.93])
def test_prior_start_sits_on_the_frontier_of_its_prior(psi):
    settings = D.FrontierSettings(prior_psi=psi, target_half_width=0.02, law_ks=LAW_KS)
    start = D.frontier_start("boot", PAPER_KS, PAPER_NS, settings)
    assert start and set(start.values()) <= {settings.seeds, settings.boundary_seeds}
    p = np.array([float(predicted_probability(psi, k, n)) for _, k, n in start])
    assert ((p > 0.1) & (p < 0.9)).mean() >= 0.7
    assert ((p > 0.01) & (p < 0.99)).all()  # nothing far off the frontier under the prior
    # the same cells as a later round planned on a (hypothetical) perfect fit would start from: none trained
    assert D.frontier_round("boot", PAPER_KS, PAPER_NS, {("boot", 2, 5): (3, 8)}, 0, settings).seeds == start


def test_law_ks_rows_get_boundary_and_mid_cells_and_only_they_boundary_cells():
    settings = D.FrontierSettings(prior_psi=0.8, law_ks=(2, 5, 16))  # 5: the grid's nearest, 4 or 6
    plan = D.frontier_round("boot", PAPER_KS, PAPER_NS, {}, 0, settings)
    rows = D.law_rows_of(PAPER_KS, settings)
    assert rows == [2, 4, 16]
    boundary = {c[1] for c, why in plan.reasons.items() if why == "boundary"}
    assert boundary and boundary <= set(rows)
    for k in rows:
        assert any(kk == k and _mid(0.8, k, n) for _, kk, n in plan.seeds)
    every = D.frontier_round("boot", PAPER_KS, PAPER_NS, {}, 0, D.FrontierSettings(prior_psi=0.8))
    assert {c[1] for c, why in every.reasons.items() if why == "boundary"} - set(rows)  # without: other rows too


def test_max_check_hours_caps_coverage_and_boundary_cells_only():
    psi = 0.93
    free = D.FrontierSettings(prior_psi=psi, law_ks=LAW_KS)
    capped = D.FrontierSettings(prior_psi=psi, law_ks=LAW_KS, max_check_hours=0.05)
    cost_h = lambda plan: {c: float(cell_cost_seconds("boot", c[1], c[2], t, 50_000)) / 3600  # noqa: E731
                           for c, t in plan.seeds.items()}
    a = D.frontier_round("boot", PAPER_KS, PAPER_NS, {}, 0, free)
    b = D.frontier_round("boot", PAPER_KS, PAPER_NS, {}, 0, capped)
    checks = lambda plan: {c for c, why in plan.reasons.items() if why == "boundary"}  # noqa: E731
    assert max(cost_h(a)[c] for c in checks(a)) > 0.05  # uncapped, some boundary cell is dearer
    assert all(cost_h(b)[c] <= 0.05 for c in checks(b))
    assert sum(cost_h(b).values()) < sum(cost_h(a).values())
    for k in LAW_KS:  # the law rows keep a mid cell whatever it costs
        assert any(kk == k and _mid(psi, k, n) for _, kk, n in b.seeds)
    # a coverage quarter that only dear cells could fill counts as covered
    trained = [(k, n) for _, k, n in b.seeds]
    assert len(D.open_gaps("boot", psi, PAPER_KS, PAPER_NS, trained, capped)) <= \
        len(D.open_gaps("boot", psi, PAPER_KS, PAPER_NS, trained, free))
    assert D.open_gaps("boot", psi, PAPER_KS, PAPER_NS, [], D.FrontierSettings(max_check_hours=1e-9)) == []


def test_frontier_stops_only_with_every_law_row_covered():
    """A fit narrow enough, but the K = 16 row has no mid cell yet: one more round, for it."""
    psi = 0.8
    settings = D.FrontierSettings(target_half_width=0.05, min_informative=0, law_ks=(2, 16))
    cells = {("boot", k, n): 32 for k in (2, 3, 4) for n in PAPER_NS if n <= 20}
    outcome = {c: (int(round(t * float(predicted_probability(psi, c[1], c[2])))), t) for c, t in cells.items()}
    plan = D.frontier_round("boot", PAPER_KS, PAPER_NS, outcome, 1, settings)
    assert not plan.stop
    assert any(k == 16 and _mid(plan.fit.psi, 16, n) for _, k, n in plan.seeds)
    without = D.frontier_round("boot", PAPER_KS, PAPER_NS, outcome, 1,
                               D.FrontierSettings(target_half_width=0.05, min_informative=0, law_ks=(2,)))
    assert not [c for c in without.seeds if c[1] == 16]


# ------------------------------------------------------ THE PROJECTION
def test_shard_jobs_and_schedule():
    assert shard_jobs(0, 8, 8) == [8] and shard_jobs(0, 8, 4) == [4, 4] and shard_jobs(4, 8, 4) == [4]
    assert shard_jobs(8, 8, 4) == [] and shard_jobs(2, 8, 4) == [4, 4]
    assert schedule_seconds([], 2) == 0
    assert schedule_seconds([3, 3, 3, 3], 2) == 6 and schedule_seconds([10, 1, 1], 2) == 10
    assert schedule_seconds([1, 1, 10], 2) == 11  # in plan order, not the best order


def test_study_wall_hours_runs_the_kinds_rounds_together():
    cell = ("boot", 2, 10)
    job = float(cell_cost_seconds("boot", 2, 10, 8, 50_000))
    plans = {"boot": [{cell: (0, 8)}, {("boot", 4, 10): (0, 8)}], "bootrp": [{("bootrp", 2, 10): (0, 8)}]}
    out = study_wall_hours(plans, shard_size=8, episodes=50_000, cores=2, slowdown=2.0, startup_seconds=10,
                           round_seconds=5)
    assert out["jobs"] == 3 and out["rounds"] == 2
    boot4 = float(cell_cost_seconds("boot", 4, 10, 8, 50_000))
    rp = float(cell_cost_seconds("bootrp", 2, 10, 8, 50_000))
    assert out["cpu_h"] == pytest.approx((2 * (job + boot4 + rp) + 30) / 3600)
    assert out["wall_h"] == pytest.approx((max(2 * job, 2 * rp) + 10 + 5 + 2 * boot4 + 10 + 5) / 3600)


def test_simulated_prior_start_is_cheaper_than_the_pilot_at_the_published_psi(study):
    worlds = SimulatedWorlds(PUBLISHED, {"boot": 4.1, "bootrp": 8.1}, studies=8, seed=5)
    from dataclasses import replace
    for kind in ("boot", "bootrp"):
        ours = simulate_frontier_design(worlds, kind, study.frontier_settings(kind))
        pilot = simulate_frontier_design(worlds, kind, replace(study.frontier_settings(kind), prior_psi=None))
        assert ours["cost_h"].mean() < pilot["cost_h"].mean()
        assert (ours["half_width"] <= TARGETS[kind]).all() and (ours["rounds"] <= 3).all()
        assert ours["covered"].mean() >= 0.75


def test_benchmark_prints_its_tables():
    proc = subprocess.run([sys.executable, "benchmarks/simulate_paper_check.py", "--studies", "2",
                           "--scenarios", "both 0.93", "--variants", "paper_check", "blind pilot"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| both 0.93" in proc.stdout and "wall h on 2 cores" in proc.stdout
