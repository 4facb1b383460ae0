"""Tests of deepsea_scaling.designs: the reference protocol, speculative rounds, the frontier design."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from deepsea_scaling import designs as D
from deepsea_scaling.cost import cell_cost_seconds
from deepsea_scaling.simulate import PAPER_KS, PAPER_NS, SimulatedWorlds, simulate_cells, simulate_frontier_design
from deepsea_scaling.stats import fit_psi

T, S, U = D.TRAINED, D.ASSUMED_SOLVED, D.ASSUMED_UNSOLVED

# ------------------------------------------------- A HAND-WORKED EXAMPLE GRID
# Two kinds, K = 1, 2, 3, n = 3..8, 4 seeds per cell: successes per K row.
KS, NS, TRIALS = (1, 2, 3), (3, 4, 5, 6, 7, 8), 4
SUCCESSES = {
    "a": {1: [4, 0, 1, 0, 0, 3],     # zeros at n = 4, 6, 7: not consecutive
          2: [4, 4, 3, 0, 2, 0],     # full at n = 3, 4: last_full = 4, carried into K = 3
          3: [4, 4, 4, 0, 0, 0]},
    "b": {1: [1, 0, 0, 0, 2, 2],     # last_full reset to 0 for the new kind: n = 3 trains
          2: [4, 2, 4, 1, 0, 1],     # full at n = 3, 5: last_full = 5
          3: [4, 4, 4, 4, 4, 0]},    # n = 3, 4 < 5 skipped as solved; full at 5, 6, 7
}
OUTCOME = {(kind, k, n): (rows[k][j], TRIALS) for kind, rows in SUCCESSES.items() for k in KS
           for j, n in enumerate(NS)}

# Worked by hand from the protocol's pseudo-code (docs/SCIENCE.md, "The research code's
# study protocol"); columns n = 3..8.
EXPECTED_LIMIT_3 = {
    ("a", 1): [T, T, T, T, T, U],   # third zero cell at n = 7: n = 8 not trained (its 3 successes unseen)
    ("a", 2): [T, T, T, T, T, T],   # two zero cells only; last_full 3 → 4
    ("a", 3): [S, T, T, T, T, T],   # n = 3 < last_full 4; third zero at n = 8, the row's end
    ("b", 1): [T, T, T, T, U, U],   # zeros at 4, 5, 6
    ("b", 2): [T, T, T, T, T, T],   # last_full 3, then 5
    ("b", 3): [S, S, T, T, T, T],   # n = 3, 4 < 5
}
EXPECTED_LIMIT_1 = {
    ("a", 1): [T, T, U, U, U, U],
    ("a", 2): [T, T, T, T, U, U],
    ("a", 3): [S, T, T, T, U, U],
    ("b", 1): [T, T, U, U, U, U],
    ("b", 2): [T, T, T, T, T, U],   # zero at n = 7
    ("b", 3): [S, S, T, T, T, T],
}


def _expected_list(expected):
    return [(kind, k, n, action) for kind in ("a", "b") for k in KS
            for n, action in zip(NS, expected[(kind, k)])]


@pytest.mark.parametrize("limit, expected", [(3, EXPECTED_LIMIT_3), (1, EXPECTED_LIMIT_1)])
def test_reference_protocol_hand_worked(limit, expected):
    state = D.reference_protocol(["a", "b"], KS, NS, limit, OUTCOME)
    got = [(d.kind, d.ensemble_size, d.hardness, d.action) for d in state.decisions]
    assert got == _expected_list(expected)  # also the order: kind, then K, then n
    assert state.done and state.next_cells == ()


def test_reference_protocol_incremental():
    """With part of the outcomes, decisions stop at each kind's first unknown cell to train."""
    known = {c: v for c, v in OUTCOME.items() if c not in {("a", 2, 5), ("b", 3, 7)}}
    state = D.reference_protocol(["a", "b"], KS, NS, 3, known)
    assert state.next_cells == (("a", 2, 5), ("b", 3, 7))
    got = [(d.kind, d.ensemble_size, d.hardness, d.action) for d in state.decisions]
    full = _expected_list(EXPECTED_LIMIT_3)
    a_part = [r for r in full if r[0] == "a" and (r[1], r[2]) < (2, 5)]
    b_part = [r for r in full if r[0] == "b" and (r[1], r[2]) < (3, 7)]
    assert got == a_part + b_part
    # skipped cells need no outcome: a's (1, 8) is absent and nothing asks for it
    state = D.reference_protocol(["a"], KS, NS, 3, {c: v for c, v in OUTCOME.items() if c != ("a", 1, 8)})
    assert state.done
    # nothing known: the first cell of every kind
    assert D.reference_protocol(["a", "b"], KS, NS, 3, {}).next_cells == (("a", 1, 3), ("b", 1, 3))


def test_protocol_walk_matches_reference_protocol():
    rng = np.random.default_rng(0)
    ks, ns = (1, 2, 4, 8), (3, 4, 5, 6, 8, 10, 12)
    for _ in range(100):
        limit = int(rng.integers(1, 4))
        s = rng.choice([0, 1, 2, 4], size=(1, len(ks), len(ns)), p=[0.35, 0.2, 0.2, 0.25])
        known = rng.random(s.shape) < 0.9
        outcome = {("x", k, n): (int(s[0, i, j]), 4) for i, k in enumerate(ks) for j, n in enumerate(ns) if known[0, i, j]}
        codes = D.protocol_walk(s, np.full(s.shape, 4), known, ns, limit)[0]
        expected = np.zeros_like(codes)
        code = {T: D.TRAINED_CODE, S: D.SOLVED_CODE, U: D.UNSOLVED_CODE}
        for d in D.reference_protocol(["x"], ks, ns, limit, outcome).decisions:
            expected[ks.index(d.ensemble_size), ns.index(d.hardness)] = code[d.action]
        np.testing.assert_array_equal(codes, expected)


# --------------------------------------------------------- SPECULATIVE ROUNDS
@pytest.mark.parametrize("case", range(12))
def test_speculative_rounds_make_the_protocols_decisions(case):
    """Round after round, the trained cells grow until the protocol is decided; same decisions as sequentially."""
    rng = np.random.default_rng(case)
    kinds, ks, ns = ("boot", "bootrp"), (1, 2, 4, 8, 16), (3, 4, 5, 6, 8, 10, 12, 16, 20)
    limit = (1, 3)[case % 2]
    if case < 6:  # the law
        psi = {"boot": rng.uniform(0.6, 0.9), "bootrp": rng.uniform(0.7, 0.95)}
        p = {(kd, k, n): 1 - (1 - psi[kd] ** n) ** k for kd in kinds for k in ks for n in ns}
    else:         # arbitrary outcomes, nothing like the law
        p = {(kd, k, n): rng.choice([0.0, 0.3, 1.0]) for kd in kinds for k in ks for n in ns}
    truth = {c: (int(rng.binomial(8, q)), 8) for c, q in p.items()}
    known: dict = {}
    for rounds in range(1, 200):
        batch = D.speculative_round(kinds, ks, ns, limit, known, trials=8, draws=16, seed=case)
        if not batch:
            break
        assert not set(batch) & set(known)  # a cell is never trained twice
        known.update({c: truth[c] for c in batch})
    sequential = D.reference_protocol(kinds, ks, ns, limit, truth)
    speculative = D.reference_protocol(kinds, ks, ns, limit, known)
    assert speculative.done and speculative.decisions == sequential.decisions
    assert set(sequential.cells(T)) <= set(known)
    assert rounds <= len(sequential.cells(T))


def test_speculative_round_plans_each_kind_alone():
    """Kinds planned together = each planned alone (simulations plan one kind at a time)."""
    known = {c: v for c, v in OUTCOME.items() if c[1] == 1}
    both = D.speculative_round(["a", "b"], KS, NS, 3, known, trials=TRIALS)
    assert both == D.speculative_round(["a"], KS, NS, 3, known, trials=TRIALS) + \
        D.speculative_round(["b"], KS, NS, 3, known, trials=TRIALS)
    assert ("a", 2, 3) in both and ("b", 2, 3) in both  # each kind's next cell


# ----------------------------------------------------------------- FAST FIT
def test_fit_cells_equals_fit_psi():
    cells = simulate_cells({"boot": 0.8}, PAPER_KS, PAPER_NS, trials=32, seed=5, overdispersion=0.1, replicates=3)
    for _, c in cells[cells.ensemble_size > 1].groupby("replicate"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = fit_psi(c).iloc[0]
        fast = D.fit_cells(c.successes, c.trials, c.ensemble_size, c.hardness)
        assert fast.ok
        np.testing.assert_allclose([fast.psi, fast.log_psi_se, fast.dispersion_quasi, fast.low, fast.high],
                                   [ref.psi, ref.log_psi_se, ref.dispersion_quasi, ref.psi_quasi_low,
                                    ref.psi_quasi_high], rtol=1e-8)
    assert not D.fit_cells([0, 0], [8, 8], [2, 4], [10, 20]).ok  # all failed: no estimate, as fit_psi


def test_cell_cost_matches_the_cost_model_of_training_jobs():
    """runtime_minutes = 2 + 2 × (cost model) rounded up; the same model, per cell."""
    from deepsea_scaling import cost
    from deepsea_scaling.config import TrainConfig
    for kind, k, n, seeds in [("boot", 40, 96, 32), ("bootrp", 8, 30, 32), ("eps", 1, 60, 16)]:
        config = TrainConfig(kind=kind, ensemble_size=1 if kind == "eps" else k, hardness=n, num_episodes=50_000)
        seconds = float(cell_cost_seconds(kind, k, n, seeds, 50_000))
        assert cost.train_seconds(config, seeds) == pytest.approx(seconds)
        assert cost.runtime_minutes(config, seeds) == max(5, int(np.ceil(2 + 2 * seconds / 60)))


# ----------------------------------------------------------------- FRONTIER
def _law_outcome(kind, psi, seeds):
    return {c: (int(round(t * (1 - (1 - psi ** c[2]) ** c[1]))), t) for c, t in seeds.items()}


def test_frontier_round_picks_cells_near_the_frontier_plus_coverage_and_boundary():
    settings = D.FrontierSettings(target_half_width=0.01)
    pilot = D.frontier_pilot("boot", PAPER_KS, PAPER_NS, settings)
    assert {c[1] for c in pilot} == {2, 6, 16} and set(pilot.values()) == {8}
    plan = D.frontier_round("boot", PAPER_KS, PAPER_NS, _law_outcome("boot", 0.8, pilot), 1, settings)
    assert not plan.stop and abs(plan.fit.psi - 0.8) < 0.02
    info = [c for c, why in plan.reasons.items() if why == "information"]
    p = np.array([1 - (1 - 0.8 ** n) ** k for _, k, n in info])
    assert len(info) > 10 and ((p > 0.02) & (p < 0.98)).mean() > 0.9  # the information sits near the frontier
    assert all(1 < k for _, k, _ in plan.seeds)  # K = 1 is not fitted
    boundary = [c for c, why in plan.reasons.items() if why == "boundary"]
    assert boundary and all(plan.seeds[c] == settings.boundary_seeds for c in boundary)
    # every K row gets a cell on each side of the frontier under the fit (trained before, or planned now)
    have = set(pilot) | set(plan.seeds)
    law = lambda k, n: 1 - (1 - plan.fit.psi ** n) ** k  # noqa: E731
    for k in (k for k in PAPER_KS if k > 1):
        row = [law(k, n) for _, kk, n in have if kk == k]
        assert any(0.001 <= q <= 0.1 for q in row) or min(law(k, n) for n in PAPER_NS) > 0.1
        assert any(0.9 <= q <= 0.999 for q in row) or max(law(k, n) for n in PAPER_NS) < 0.9
    # after the round, the coverage condition holds
    assert D.coverage_gaps(plan.fit.psi, PAPER_KS, PAPER_NS, [(c[1], c[2]) for c in have]) == []
    # rounds spent: stop, whatever the fit
    assert D.frontier_round("boot", PAPER_KS, PAPER_NS, _law_outcome("boot", 0.8, pilot), 4, settings).stop


def test_coverage_gap_gets_a_coverage_cell():
    settings = D.FrontierSettings(target_half_width=0.5)  # information alone would ask for nothing
    lo, hi = D.mid_range(0.8, PAPER_KS, PAPER_NS)
    assert (lo, hi) == (3, 26)  # issue 14: about n ≤ 26 for BDQN, n ≤ 42 for RP-BDQN
    assert D.mid_range(0.87, PAPER_KS, PAPER_NS) == (3, 40)
    trained = {("boot", k, n): 32 for k in (2, 3, 4) for n in range(3, 12) if n in PAPER_NS}
    gaps = D.coverage_gaps(0.8, PAPER_KS, PAPER_NS, [(c[1], c[2]) for c in trained])
    assert gaps and all(a > 9 for a, _ in gaps)  # only the quarters beyond n ≈ 9 lack a cell
    plan = D.frontier_round("boot", PAPER_KS, PAPER_NS, _law_outcome("boot", 0.8, trained), 1, settings)
    coverage = [c for c, why in plan.reasons.items() if why == "coverage"]
    assert len(coverage) == len(gaps)
    for (a, b), (_, k, n) in zip(gaps, sorted(coverage, key=lambda c: c[2])):
        assert a <= n <= b and 0.1 < 1 - (1 - 0.8 ** n) ** k < 0.9


def test_frontier_tops_up_cells_only_when_allowed_and_short_of_information():
    """Small ψ: few cells near the frontier; with max_seeds > seeds, trained cells are topped up."""
    ks, ns = (2, 3, 4), (3, 4, 5, 6, 7, 8)
    trained = {("boot", k, n): 8 for k in ks for n in ns}
    outcome = _law_outcome("boot", 0.65, trained)
    plain = D.frontier_round("boot", ks, ns, outcome, 1, D.FrontierSettings(target_half_width=0.005))
    assert not [c for c, why in plain.reasons.items() if why == "information"]  # nothing left at 8 seeds
    topped = D.frontier_round("boot", ks, ns, outcome, 1, D.FrontierSettings(target_half_width=0.005, max_seeds=32))
    ups = [c for c, why in topped.reasons.items() if why == "information"]
    assert ups and all(c in trained and topped.seeds[c] == 32 for c in ups)


def test_frontier_on_simulated_studies_recovers_psi():
    worlds = SimulatedWorlds({"boot": 0.8}, {"boot": 4.1}, studies=6, seed=3)
    df = simulate_frontier_design(worlds, "boot", D.FrontierSettings(target_half_width=0.01))
    assert df["covered"].sum() >= 5 and abs(df["psi"].mean() - 0.8) < 0.005
    assert (df["rounds"] <= 3).all() and df["coverage_ok"].all() and df["target_met"].mean() >= 0.8
    assert (df["cost_h"] < 15).all()


def test_plan_next_round_runs_each_design_to_the_end():
    """Round by round through the one entry point; a rerun with everything trained asks for nothing."""
    worlds = SimulatedWorlds({"boot": 0.8, "bootrp": 0.87}, {"boot": 4.1, "bootrp": 8.1}, studies=1, seed=9)
    ks, ns = worlds.ks, worlds.ns
    frontier = {"boot": D.FrontierSettings(target_half_width=0.01), "bootrp": D.FrontierSettings(target_half_width=0.02)}
    for design in D.DESIGNS:
        seeds: dict = {}
        for round_index in range(50):
            plan = D.plan_next_round(design, ("boot", "bootrp"), ks, ns, worlds.outcome(0, seeds), round_index,
                                     frontier=frontier)
            if not plan:
                break
            assert all(t > seeds.get(c, 0) for c, t in plan.items())  # never asks for seeds it has
            seeds.update(plan)
        outcome = worlds.outcome(0, seeds)
        assert D.plan_next_round(design, ("boot", "bootrp"), ks, ns, outcome, round_index, frontier=frontier) == {}
        if design == "grid":
            assert round_index == 1 and len(seeds) == 2 * len(ks) * len(ns)
        if design == "reference":
            state = D.reference_protocol(("boot", "bootrp"), ks, ns, 3, outcome)
            assert state.done and set(state.cells(T)) <= set(seeds) and round_index <= 8
        if design == "frontier":
            assert round_index <= 4  # pilot + at most 3 rounds
            assert D.fit_outcome(outcome, "boot").half_width < 0.01
    with pytest.raises(ValueError, match="unknown design"):
        D.plan_next_round("adaptive", ("boot",), ks, ns, {}, 0)


def test_designs_table():
    assert list(D.DESIGNS) == ["grid", "reference", "frontier"]
    assert not D.DESIGNS["grid"].sequential and D.DESIGNS["reference"].sequential
