"""Tests of the design simulations in deepsea_scaling.simulate."""

from __future__ import annotations

import numpy as np

from deepsea_scaling.simulate import (PUBLISHED_DISPERSION, PUBLISHED_PSI, SimulatedWorlds, correlation_from_dispersion,
                                      simulate_grid_design, simulate_reference_design)


def test_worlds_fix_every_seed():
    worlds = SimulatedWorlds(PUBLISHED_PSI, PUBLISHED_DISPERSION, studies=3, seed=1)
    for t in (1, 8, 32):
        s = worlds.successes(2, "boot", 4, 10, t)
        assert 0 <= s <= t
    # topping up 8 seeds to 32 keeps the first 8 seeds' outcomes
    assert worlds.successes(0, "bootrp", 8, 20, 8) <= worlds.successes(0, "bootrp", 8, 20, 32)
    assert worlds.successes(0, "bootrp", 8, 20, 32) - worlds.successes(0, "bootrp", 8, 20, 8) <= 24
    assert worlds.outcome(1, {("boot", 2, 5): 8, ("boot", 2, 6): 0}) == {("boot", 2, 5): (worlds.successes(1, "boot", 2, 5, 8), 8)}


def test_worlds_dispersion_is_the_published_one():
    """Pearson χ²/df of 32-seed cells with 0.3 < P < 0.7 around the true P: about 1 + 31ρ."""
    assert np.isclose(correlation_from_dispersion(4.1), 0.1)
    worlds = SimulatedWorlds({"boot": 0.8}, {"boot": 4.1}, studies=200, seed=2)
    k, n = np.meshgrid(worlds.ks, worlds.ns, indexing="ij")
    p = 1 - (1 - 0.8 ** n) ** k
    mid = (p > 0.3) & (p < 0.7)
    s = worlds.grid_counts("boot")[:, mid]
    chi2 = (s - 32 * p[mid]) ** 2 / (32 * p[mid] * (1 - p[mid]))
    assert 3.6 < chi2.mean() < 4.6


def test_grid_and_reference_simulations():
    worlds = SimulatedWorlds(PUBLISHED_PSI, PUBLISHED_DISPERSION, studies=3, seed=4)
    grid = simulate_grid_design(worlds, "boot")
    ref = simulate_reference_design(worlds, "boot", limit=3)
    assert (grid["cells"] == 468).all() and (ref["cells"] < 250).all()
    assert (ref["cost_h"] < grid["cost_h"] / 6).all()
    assert (ref["cells"] + ref["assumed_solved"] + ref["assumed_unsolved"] == 468).all()
    assert (ref["rounds"] < ref["cells"] / 10).all() and (ref["overhead"] < 0.25).all()
    assert (abs(ref["psi"] - 0.8) < 0.02).all()


def test_worlds_drawn_from_another_model_than_the_law():
    """probability_by_kind replaces the law: an effective ensemble size K^2 gives P = 1 - (1 - psi^n)^(K^2)."""
    from deepsea_scaling import law

    beta = law.beta_of(0.8, alpha=2.0)
    worlds = SimulatedWorlds({"boot": 0.8}, ks=(2, 4), ns=(6, 10), studies=400, max_seeds=32, seed=3,
                             probability_by_kind={"boot": lambda K, n: law.predict(beta, K, n)})
    observed = worlds.grid_counts("boot").mean(axis=0) / 32
    expected = 1 - (1 - 0.8 ** np.array([6, 10])[None]) ** (np.array([2, 4])[:, None] ** 2)
    np.testing.assert_allclose(observed, expected, atol=0.02)
    law_p = 1 - (1 - 0.8 ** 10) ** 2
    assert abs(observed[0, 1] - law_p) > 0.1  # not the law's P
