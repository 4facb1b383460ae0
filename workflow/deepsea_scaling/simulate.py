"""Simulated run and cell tables drawn from the law P = 1 − (1 − ψ^n)^K.

For tests and demos of `stats` and `plots` without training anything.
`simulate_runs` gives a table with the engine's run-table columns
(docs/INTERFACES.md); `simulate_cells` gives cell counts directly, many data
sets at once, for the statistical tests.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .published import PUBLISHED
from .stats import predicted_probability

# Main heatmap grid of the reference study (docs/SCIENCE.md, "Grids").
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


# ------------------------------------------------------- STUDY DESIGNS
# The published law (docs/SCIENCE.md, "Published results"): ψ and the Pearson dispersion of 32-seed cells.
PUBLISHED_PSI = {kind: p.psi for kind, p in PUBLISHED.items()}
PUBLISHED_DISPERSION = {kind: p.dispersion for kind, p in PUBLISHED.items()}


def correlation_from_dispersion(dispersion: float, trials: int = 32) -> float:
    """Intra-cell correlation ρ that gives binomial dispersion 1 + (trials − 1)ρ."""
    return (dispersion - 1) / (trials - 1)


class SimulatedWorlds:
    """Many simulated studies of one grid, each cell's seeds drawn once and for all.

    Every (study, kind, K, n) has a success probability drawn around the law
    (beta, intra-cell correlation from the dispersion at 32 seeds) and a fixed
    outcome for each of its seeds 0..max_seeds−1, so every design sees the same
    world, and a cell trained with 8 seeds then topped up to 32 keeps its first 8.
    """

    def __init__(self, psi_by_kind: Mapping[str, float], dispersion_by_kind: Mapping[str, float] | None = None,
                 ks: Sequence[int] = PAPER_KS, ns: Sequence[int] = PAPER_NS, studies: int = 200,
                 max_seeds: int = 32, seed: int = 0, dispersion_trials: int = 32,
                 probability_by_kind: Mapping[str, Callable] | None = None):
        """probability_by_kind: kind -> P(K, n) (arrays broadcast) for a world that is not the law
        (e.g. a fitted alternative of `law.py`); psi_by_kind stays the value coverage is judged by."""
        rng = np.random.default_rng(seed)
        self.kinds = tuple(psi_by_kind)
        self.ks, self.ns = tuple(sorted(ks)), tuple(sorted(ns))
        self.psi = dict(psi_by_kind)
        self.max_seeds = max_seeds
        cum = []
        for kind, psi in psi_by_kind.items():
            model = (probability_by_kind or {}).get(kind, lambda K, n, psi=psi: predicted_probability(psi, K, n))
            p_true = np.asarray(model(np.array(self.ks)[:, None], np.array(self.ns)[None]), dtype=float)
            dispersion = (dispersion_by_kind or {}).get(kind)
            rho = correlation_from_dispersion(dispersion, dispersion_trials) if dispersion else None
            p = _cell_probabilities(p_true, rho, rng, (studies,) + p_true.shape)
            hits = rng.random(p.shape + (max_seeds,)) < p[..., None]
            cum.append(np.concatenate([np.zeros(p.shape + (1,), np.int8), np.cumsum(hits, axis=-1, dtype=np.int8)], -1))
        self._cum = np.stack(cum, axis=1)  # (studies, kinds, K, n, max_seeds + 1)
        self.studies = studies

    def successes(self, study: int, kind: str, K: int, n: int, trials: int) -> int:
        return int(self._cum[study, self.kinds.index(kind), self.ks.index(K), self.ns.index(n), trials])

    def outcome(self, study: int, seeds: Mapping[tuple, int]) -> dict:
        """(kind, K, n) -> (successes, trials) for the cells and seed counts given."""
        return {c: (self.successes(study, *c, t), t) for c, t in seeds.items() if t > 0}

    def grid_counts(self, kind: str, trials: int = 32) -> np.ndarray:
        """Successes of every cell with `trials` seeds, shape (studies, K, n)."""
        return self._cum[:, self.kinds.index(kind), :, :, trials].astype(int)


def _cost_hours(kind: str, seeds: Mapping[tuple, int], episodes: int, fidelity: str = "default") -> float:
    from .cost import cell_cost_seconds
    if not seeds:
        return 0.0
    k, n, s = np.array([(c[1], c[2], t) for c, t in seeds.items()]).T
    return float(cell_cost_seconds(kind, k, n, s, episodes, fidelity=fidelity).sum() / 3600)


def _fit_row(fit, psi_true: float) -> dict:
    return dict(psi=fit.psi, low=fit.low, high=fit.high, half_width=fit.half_width,
                covered=bool(fit.ok and fit.low <= psi_true <= fit.high), fit_ok=fit.ok)


def simulate_grid_design(worlds: SimulatedWorlds, kind: str, seeds: int = 32, episodes: int = 50_000,
                         fidelity: str = "default") -> pd.DataFrame:
    """Every cell trained: one row per simulated study (cells, cost_h, psi, low, high, half_width, covered, rounds).

    cost_h: CPU-hours of the cost model's `fidelity` coefficients (each cell trained alone)."""
    from .designs import fit_cells
    ks, ns = np.meshgrid(worlds.ks, worlds.ns, indexing="ij")
    use = ks > 1
    counts = worlds.grid_counts(kind, seeds)
    cost = _cost_hours(kind, {(kind, k, n): seeds for k, n in zip(ks.ravel(), ns.ravel())}, episodes, fidelity)
    rows = []
    for study in range(worlds.studies):
        fit = fit_cells(counts[study][use], np.full(use.sum(), seeds), ks[use], ns[use])
        rows.append(dict(study=study, cells=ks.size, cost_h=cost, rounds=1, **_fit_row(fit, worlds.psi[kind])))
    return pd.DataFrame(rows)


def simulate_reference_design(worlds: SimulatedWorlds, kind: str, limit: int = 3, seeds: int = 32,
                              episodes: int = 50_000, speculate: bool = True, fidelity: str = "default",
                              **speculation) -> pd.DataFrame:
    """The research code's protocol per simulated study; with `speculate`, also its speculative rounds.

    Columns as `simulate_grid_design`, plus assumed_solved, assumed_unsolved,
    and with `speculate`: rounds, wasted_cells (trained speculatively, then
    skipped by the protocol), overhead (wasted / protocol's cells), overhead_cost
    (their share of the protocol's cost).
    """
    from .designs import ASSUMED_SOLVED, ASSUMED_UNSOLVED, TRAINED, fit_outcome, reference_protocol, speculative_round
    rows = []
    for study in range(worlds.studies):
        def outcome_of(cells, study=study):
            return {c: (worlds.successes(study, *c, seeds), seeds) for c in cells}
        every = outcome_of([(kind, k, n) for k in worlds.ks for n in worlds.ns])
        state = reference_protocol([kind], worlds.ks, worlds.ns, limit, every)
        trained = state.cells(TRAINED)
        cost = _cost_hours(kind, {c: seeds for c in trained}, episodes, fidelity)
        row = dict(study=study, cells=len(trained), cost_h=cost,
                   assumed_solved=len(state.cells(ASSUMED_SOLVED)), assumed_unsolved=len(state.cells(ASSUMED_UNSOLVED)),
                   **_fit_row(fit_outcome(outcome_of(trained), kind), worlds.psi[kind]))
        if speculate:
            known: dict = {}
            rounds = 0
            while True:
                batch = speculative_round([kind], worlds.ks, worlds.ns, limit, known, trials=seeds, **speculation)
                if not batch:
                    break
                rounds += 1
                known.update(outcome_of(batch))
            wasted = sorted(set(known) - set(trained))
            row.update(rounds=rounds, wasted_cells=len(wasted), overhead=len(wasted) / len(trained),
                       overhead_cost=_cost_hours(kind, {c: seeds for c in wasted}, episodes, fidelity) / cost)
        rows.append(row)
    return pd.DataFrame(rows)


def simulate_frontier_design(worlds: SimulatedWorlds, kind: str, settings=None,
                             fidelity: str = "default") -> pd.DataFrame:
    """The frontier design per simulated study.

    Columns as `simulate_grid_design`, plus pilot_cost_h (round 0: the pilot or
    the prior start, `designs.frontier_start`), target_met (half-width below
    the target), coverage_ok (the coverage condition under the final fit),
    rounds (after round 0) and plans (per round from 0, {(kind, K, n): (seeds
    before, seeds after)}: what `study_wall_hours` schedules).
    """
    from .designs import FrontierSettings, fit_outcome, frontier_round, frontier_start, open_gaps
    settings = settings or FrontierSettings()
    rows = []
    for study in range(worlds.studies):
        seeds = dict(frontier_start(kind, worlds.ks, worlds.ns, settings))
        plans = [{c: (0, t) for c, t in seeds.items()}]
        pilot_cost = _cost_hours(kind, seeds, settings.episodes, fidelity)
        rounds = 0
        for r in range(1, settings.max_rounds + 2):
            plan = frontier_round(kind, worlds.ks, worlds.ns, worlds.outcome(study, seeds), r, settings)
            if plan.stop:
                break
            rounds += 1
            plans.append({c: (seeds.get(c, 0), t) for c, t in plan.seeds.items()})
            seeds.update(plan.seeds)
        outcome = worlds.outcome(study, seeds)
        fit = fit_outcome(outcome, kind)
        gaps = open_gaps(kind, fit.psi, worlds.ks, worlds.ns, [(c[1], c[2]) for c in seeds], settings) if fit.ok \
            else [None]
        rows.append(dict(study=study, cells=len(seeds), cost_h=_cost_hours(kind, seeds, settings.episodes, fidelity),
                         pilot_cost_h=pilot_cost, rounds=rounds, coverage_ok=not gaps,
                         target_met=bool(fit.ok and fit.half_width < settings.target_half_width),
                         plans=plans, **_fit_row(fit, worlds.psi[kind])))
    return pd.DataFrame(rows)


def study_wall_hours(plans_by_kind, shard_size: int, episodes: int, cores: int = 2, slowdown: float = 1.0,
                     startup_seconds: float = 0.0, round_seconds: float = 0.0, fidelity: str = "default") -> dict:
    """CPU-hours and wall hours of one sequential study, from its rounds' plans.

    plans_by_kind: kind -> list of per-round plans {(kind, K, n): (seeds before,
    seeds after)} (the `plans` of `simulate_frontier_design`); the kinds' round
    r run together, as the workflow plans every kind in one checkpoint. Each
    cell's new seeds train as jobs of one seed shard each (`cost.shard_jobs`),
    each taking the cost model's seconds times `slowdown` plus
    `startup_seconds` (start-up and compile), `cores` at a time in plan order
    (`cost.schedule_seconds`); a round also waits `round_seconds` (planning).
    Returns cpu_h, wall_h, jobs and rounds (round 0 included).
    """
    from .cost import cell_cost_seconds, schedule_seconds, shard_jobs
    n_rounds = max((len(p) for p in plans_by_kind.values()), default=0)
    cpu = wall = 0.0
    jobs = 0
    for r in range(n_rounds):
        durations = []
        for kind, plans in plans_by_kind.items():
            for (kd, k, n), (have, want) in (plans[r] if r < len(plans) else {}).items():
                for size in shard_jobs(have, want, shard_size):
                    durations.append(float(cell_cost_seconds(kd, k, n, size, episodes, fidelity=fidelity)) * slowdown
                                     + startup_seconds)
        cpu += sum(durations)
        jobs += len(durations)
        wall += schedule_seconds(durations, cores) + round_seconds
    return dict(cpu_h=cpu / 3600, wall_h=wall / 3600, jobs=jobs, rounds=n_rounds)
