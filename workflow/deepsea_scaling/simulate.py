"""Simulated run and cell tables drawn from the law P = 1 − (1 − ψ^n)^K.

For tests and demos of `stats` and `plots` without training anything.
`simulate_runs` gives a table with the engine's run-table columns
(docs/INTERFACES.md); `simulate_cells` gives cell counts directly, many data
sets at once, for the statistical tests.
"""

from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .stats import predicted_probability

# Main heatmap grid of the reference study (REFERENCE.md, "Grids").
PAPER_NS = tuple(range(3, 12)) + tuple(range(12, 31, 2)) + tuple(range(32, 97, 4))
PAPER_KS = (1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 32, 40)


def _grid(psi_by_kind: Mapping[str, float], ks: Sequence[int], ns: Sequence[int]) -> pd.DataFrame:
    """(kind, K, n, p_true) rows; `eps` gets K = 1 only."""
    rows = []
    for kind, psi in psi_by_kind.items():
        kind_ks = (1,) if kind == "eps" else tuple(ks)
        for k in kind_ks:
            for n in ns:
                rows.append((kind, int(k), int(n), float(predicted_probability(psi, k, n))))
    return pd.DataFrame(rows, columns=["kind", "ensemble_size", "hardness", "p_true"])


def _cell_probabilities(p_true: np.ndarray, overdispersion: float | None, rng: np.random.Generator,
                        size: tuple[int, ...]) -> np.ndarray:
    """Per-cell success probability: the law, or a beta draw around it.

    overdispersion ρ (intra-cell correlation, 0 < ρ < 1): p ~ Beta with mean
    p_true and variance ρ·p(1 − p), so the binomial dispersion is 1 + (t − 1)ρ.
    """
    p = np.broadcast_to(p_true, size)
    if not overdispersion:
        return p
    conc = (1 - overdispersion) / overdispersion
    a = np.clip(p * conc, 1e-300, None)
    b = np.clip((1 - p) * conc, 1e-300, None)
    return np.where((p > 0) & (p < 1), rng.beta(a, b), p)


def simulate_cells(psi_by_kind: Mapping[str, float], ks: Sequence[int] = PAPER_KS, ns: Sequence[int] = PAPER_NS,
                   trials: int = 32, seed: int = 0, overdispersion: float | None = None,
                   replicates: int = 1) -> pd.DataFrame:
    """Cell counts drawn from the law, `replicates` independent data sets at once.

    Returns columns kind, ensemble_size, hardness, p_true, trials, successes,
    p_hat, and `replicate` (0..replicates−1) when replicates > 1; one row per
    (replicate, kind, K, n).
    """
    rng = np.random.default_rng(seed)
    grid = _grid(psi_by_kind, ks, ns)
    p = _cell_probabilities(grid["p_true"].to_numpy(), overdispersion, rng, (replicates, len(grid)))
    successes = rng.binomial(trials, p)  # (replicates, cells)
    out = pd.concat([grid] * replicates, ignore_index=True)
    out["trials"] = trials
    out["successes"] = successes.reshape(-1)
    out["p_hat"] = out["successes"] / trials
    if replicates > 1:
        out.insert(0, "replicate", np.repeat(np.arange(replicates), len(grid)))
    return out


def _diversity_curves(discovered: np.ndarray, kind: np.ndarray, K: np.ndarray, num_log_points: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Plausible Q-diversity curves, shape (runs, num_log_points).

    NaN before learning starts; then members drift apart and, in runs that
    never discover the reward, collapse towards each other (BDQN much more
    than RP-BDQN, whose priors keep a floor). K = 1 has no diversity (0).
    """
    runs = len(discovered)
    t = np.linspace(0, 1, num_log_points)[None, :]
    start = rng.lognormal(np.log(0.5), 0.3, size=(runs, 1))
    has_prior = (kind == "bootrp")[:, None]
    floor = np.where(discovered[:, None], 0.3, np.where(has_prior, 0.05, 0.003))
    rate = rng.uniform(4, 10, size=(runs, 1))
    curve = start * (floor + (1 - floor) * np.exp(-rate * t))
    curve *= rng.lognormal(0, 0.08, size=curve.shape)
    curve[:, : max(1, num_log_points // 50)] = np.nan
    curve[K == 1] = 0.0
    return curve


def simulate_runs(psi_by_kind: Mapping[str, float], ks: Sequence[int], ns: Sequence[int], trials: int = 32,
                  seed: int = 0, overdispersion: float | None = None, num_log_points: int = 100,
                  num_episodes: int = 3_000, diverged_rate: float = 0.0) -> pd.DataFrame:
    """A run table as the engine writes it, drawn from the law.

    psi_by_kind: e.g. {"boot": 0.80, "bootrp": 0.87, "eps": 0.6}; `eps` gets
    K = 1 only. One row per (kind, K, n, seed) with the engine's columns:
    kind, ensemble_size, hardness, num_episodes, num_log_points, seed,
    members, config_hash, discovered, episodes_to_discovery,
    all_members_discovered, episodes_to_all_members, final_return, diverged,
    total_episodes, diversity (list of `num_log_points` floats). A fraction
    `diverged_rate` of runs diverge (not discovered, NaN diversity).
    """
    rng = np.random.default_rng(seed)
    grid = _grid(psi_by_kind, ks, ns)
    p = _cell_probabilities(grid["p_true"].to_numpy(), overdispersion, rng, (len(grid),))
    runs = grid.loc[grid.index.repeat(trials)].reset_index(drop=True)
    runs["seed"] = np.tile(np.arange(trials), len(grid))
    n_runs = len(runs)
    p_run = np.repeat(p, trials)
    K = runs["ensemble_size"].to_numpy()
    kind = runs["kind"].to_numpy()

    diverged = rng.random(n_runs) < diverged_rate
    discovered = (rng.random(n_runs) < p_run) & ~diverged
    # Discovery happens earlier when it is easy; all members follow later, if at all.
    first = num_episodes * rng.beta(2, 2 + 6 * p_run)
    gap = (num_episodes - first) * rng.beta(1, 3, n_runs)
    all_members = discovered & (rng.random(n_runs) < 0.9 ** (K - 1))
    diversity = _diversity_curves(discovered, kind, K, num_log_points, rng)
    diversity[diverged] = np.nan

    runs["num_episodes"] = num_episodes
    runs["num_log_points"] = num_log_points
    runs["members"] = np.where(kind == "eps", 1, K)
    runs["config_hash"] = [hashlib.sha256(f"{k},{e},{h}".encode()).hexdigest()[:16]
                           for k, e, h in zip(kind, K, runs["hardness"])]
    runs["discovered"] = discovered
    runs["episodes_to_discovery"] = np.where(discovered, np.round(first), np.nan)
    runs["all_members_discovered"] = all_members
    runs["episodes_to_all_members"] = np.where(all_members, np.round(first + gap), np.nan)
    runs["final_return"] = np.where(discovered, 0.99 * rng.beta(8, 1, n_runs), 0.0)
    runs["final_return"] = np.where(diverged, np.nan, runs["final_return"])
    runs["diverged"] = diverged
    runs["total_episodes"] = num_episodes
    runs["diversity"] = list(diversity)
    runs["diversity"] = runs["diversity"].map(lambda a: [float(x) for x in a])
    return runs.drop(columns="p_true")
