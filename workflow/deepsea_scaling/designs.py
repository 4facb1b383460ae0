"""Study designs: which cells of a (kind, K, n) grid get trained, round by round.

Three designs, one table (`DESIGNS`):

- grid: every cell, all seeds, in one round (the behaviour before designs).
- reference: exactly the research code's decisions (docs/SCIENCE.md, "The
  research code's study protocol"). The protocol is sequential; the workflow
  trains a few cells per round speculatively (`speculative_round`) and accepts
  them in the protocol's order (`reference_protocol`).
- frontier: a pilot (coarse subgrid, fewer seeds), a ψ fit, then at most
  `max_rounds` rounds that add the cells with the most Fisher information about
  ψ per CPU-second under the current fit, plus coverage and boundary cells
  (`frontier_pilot`, `frontier_round`). With a prior ψ (say the published
  one), round 0 is such an information round planned under the prior instead
  of the pilot (`frontier_start`).

Everything is a pure function of the grid and the outcomes known so far: a
dict (kind, K, n) -> (successes, trials). A cell is named by (kind, K, n) and
its seeds are 0..trials−1, so a cell trained in an earlier round is reused;
asking for more seeds of a cell means training only the missing ones.

How a workflow drives it (one checkpoint per round): read the cells trained
so far into an outcome dict, call `plan_next_round(design, ..., outcome,
round_index)`, train the (kind, K, n) -> seeds it returns (only seeds not yet
trained), repeat with round_index + 1 until it returns {}. Then for
`reference`, `reference_protocol(...)` gives every cell's decision (the
convergence table marks skipped cells *not trained*, with the value assumed:
all seeds successful for ASSUMED_SOLVED, none for ASSUMED_UNSOLVED) and the fit
reads only its TRAINED cells, not the speculative extras; for `grid` and
`frontier` the fit reads every trained cell (`stats.fit_psi`, or `fit_cells`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats as sps

from .cost import cell_cost_seconds
from .fit import fit_batch, wald_interval
from .study import DESIGNS  # the table of designs lives with the study's keys
from .stats import predicted_probability

Cell = tuple  # (kind, K, n)
Outcome = Mapping[tuple, tuple]  # (kind, K, n) -> (successes, trials)

TRAINED, ASSUMED_SOLVED, ASSUMED_UNSOLVED = "trained", "assumed_solved", "assumed_unsolved"
_PSI_MAX = 0.999  # ψ guesses a round plans over stay below 1 (ψ̂·exp(2 se) may not)


# ------------------------------------------------------- REFERENCE PROTOCOL
@dataclass(frozen=True)
class Decision:
    kind: str
    ensemble_size: int
    hardness: int
    action: str           # TRAINED, ASSUMED_SOLVED or ASSUMED_UNSOLVED

    @property
    def cell(self) -> Cell:
        return (self.kind, self.ensemble_size, self.hardness)


@dataclass(frozen=True)
class ProtocolState:
    decisions: tuple      # Decision, in protocol order (kind by kind)
    next_cells: tuple     # cells the protocol must train next, at most one per kind; empty when done

    @property
    def done(self) -> bool:
        return not self.next_cells

    def cells(self, action: str) -> list:
        return [d.cell for d in self.decisions if d.action == action]


def reference_protocol(kinds: Sequence[str], ensemble_sizes: Sequence[int], hardness: Sequence[int],
                       limit: int, outcome: Outcome) -> ProtocolState:
    """The research code's decisions as far as `outcome` allows.

    Per kind (in the given order), K rows ascending, n ascending: a cell is
    skipped (assumed unsolved) once its row has `limit` trained cells without
    a success (not necessarily consecutive), skipped (assumed solved) when n <
    last_full, the largest n with every seed successful so far in this kind
    (carried across K rows, reset per kind), else trained. The walk of a kind
    stops at the first trained cell whose outcome is unknown: that cell is the
    kind's next cell. Kinds are independent, so each kind has its own next cell.
    """
    decisions, next_cells = [], []
    ks, ns = sorted(ensemble_sizes), sorted(hardness)
    for kind in kinds:
        last_full = 0
        blocked = False
        for K in ks:
            zero_cells = 0
            for n in ns:
                if zero_cells >= limit:
                    decisions.append(Decision(kind, K, n, ASSUMED_UNSOLVED))
                    continue
                if n < last_full:
                    decisions.append(Decision(kind, K, n, ASSUMED_SOLVED))
                    continue
                if (kind, K, n) not in outcome:
                    next_cells.append((kind, K, n))
                    blocked = True
                    break
                successes, trials = outcome[(kind, K, n)]
                decisions.append(Decision(kind, K, n, TRAINED))
                if successes == 0:
                    zero_cells += 1
                if successes == trials:
                    last_full = n
            if blocked:
                break
    return ProtocolState(tuple(decisions), tuple(next_cells))


TRAINED_CODE, SOLVED_CODE, UNSOLVED_CODE, BLOCKED_CODE = 1, 2, 3, 0


def protocol_walk(successes: np.ndarray, trials: np.ndarray, known: np.ndarray, hardness: Sequence[int],
                  limit: int) -> np.ndarray:
    """`reference_protocol` for one kind, vectorised over a batch of data sets.

    successes, trials, known: arrays (batch, K rows ascending, n ascending).
    Returns int8 codes of the same shape: TRAINED_CODE, SOLVED_CODE,
    UNSOLVED_CODE, or BLOCKED_CODE (undecided: at or after the first trained
    cell whose outcome is unknown).
    """
    batch, n_k, _ = successes.shape
    codes = np.zeros(successes.shape, dtype=np.int8)
    last_full = np.zeros(batch)
    open_ = np.ones(batch, dtype=bool)
    for i in range(n_k):
        zero_cells = np.zeros(batch, dtype=int)
        for j, n in enumerate(hardness):
            unsolved = open_ & (zero_cells >= limit)
            solved = open_ & ~unsolved & (n < last_full)
            train = open_ & ~unsolved & ~solved
            open_ = open_ & ~(train & ~known[:, i, j])
            done = train & open_
            codes[unsolved, i, j] = UNSOLVED_CODE
            codes[solved, i, j] = SOLVED_CODE
            codes[done, i, j] = TRAINED_CODE
            s, t = successes[:, i, j], trials[:, i, j]
            zero_cells += done & (s == 0)
            last_full = np.where(done & (s == t), n, last_full)
    return codes


def speculative_round(kinds: Sequence[str], ensemble_sizes: Sequence[int], hardness: Sequence[int], limit: int,
                      outcome: Outcome, *, trials: int = 32, min_inclusion: float = 0.8, draws: int = 64,
                      psi_prior: tuple = (0.55, 0.97), overdispersion: float = 0.15, seed: int = 0) -> list:
    """Cells to train in the next round of the reference design, speculatively.

    Always the protocol's next cell of every unfinished kind; besides, every
    untrained cell that the protocol trains with probability ≥ `min_inclusion`
    when the unknown outcomes are drawn `draws` times from the law (ψ drawn
    from the fit of the kind's trained cells, its quasi interval widened
    twofold, or from `psi_prior` when there is no fit; beta-binomial with
    intra-cell correlation `overdispersion`). The protocol's decisions do not
    depend on this guess, only the work wasted does. Deterministic given its
    arguments. Returns cells (kind, K, n) in protocol order.
    """
    state = reference_protocol(kinds, ensemble_sizes, hardness, limit, outcome)
    if state.done:
        return []
    ks, ns = sorted(ensemble_sizes), sorted(hardness)
    K = np.array(ks)[:, None] * np.ones(len(ns), dtype=int)
    N = np.ones(len(ks), dtype=int)[:, None] * np.array(ns)
    chosen = []
    for kind in kinds:
        if not any(c[0] == kind for c in state.next_cells):
            continue
        # Seeded by the kind's own state only, so a kind plans the same alone or with others.
        rng = np.random.default_rng([seed, zlib.crc32(kind.encode()), sum(c[0] == kind for c in outcome)])
        s = np.zeros(K.shape)
        t = np.full(K.shape, float(trials))
        known = np.zeros(K.shape, dtype=bool)
        for i, k in enumerate(ks):
            for j, n in enumerate(ns):
                if (kind, k, n) in outcome:
                    s[i, j], t[i, j] = outcome[(kind, k, n)]
                    known[i, j] = True
        psi = _psi_draws(s[known], t[known], K[known], N[known], psi_prior, draws, rng)
        p = predicted_probability(psi[:, None, None], K[None], N[None])
        if overdispersion:
            conc = (1 - overdispersion) / overdispersion
            inside = (p > 0) & (p < 1)
            p = np.where(inside, rng.beta(np.clip(p * conc, 1e-12, None), np.clip((1 - p) * conc, 1e-12, None)), p)
        drawn_t = np.broadcast_to(t, p.shape)
        drawn_s = np.where(known[None], s[None], rng.binomial(drawn_t.astype(int), p))
        codes = protocol_walk(drawn_s, drawn_t, np.ones(p.shape, dtype=bool), ns, limit)
        inclusion = (codes == TRAINED_CODE).mean(axis=0)
        want = ~known & (inclusion >= min_inclusion)
        for cell in state.next_cells:
            if cell[0] == kind:
                want[ks.index(cell[1]), ns.index(cell[2])] = True
        chosen += [(kind, ks[i], ns[j]) for i, j in zip(*np.nonzero(want))]
    return chosen


def _psi_draws(s, t, K, n, psi_prior, draws, rng) -> np.ndarray:
    fit = fit_cells(s, t, K, n)
    if fit.ok and np.isfinite(fit.quasi_se):
        theta = fit.log_psi + 2 * fit.quasi_se * rng.standard_normal(draws)
        return np.clip(np.exp(theta), 0.3, 0.999)
    return rng.uniform(*psi_prior, size=draws)


# ---------------------------------------------------------------- FAST FIT
@dataclass(frozen=True)
class QuickFit:
    """ψ by binomial maximum likelihood with the quasi-binomial interval of `stats.fit_psi`."""
    ok: bool
    psi: float = np.nan
    log_psi: float = np.nan
    log_psi_se: float = np.nan    # binomial (expected information)
    dispersion_quasi: float = np.nan
    quasi_se: float = np.nan      # log_psi_se · sqrt(dispersion_quasi)
    low: float = np.nan
    high: float = np.nan

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def cell_information(psi, K, n) -> np.ndarray:
    """Binomial Fisher information about log ψ of one trial of cell (K, n); broadcasts."""
    K, n = np.asarray(K, dtype=float), np.asarray(n, dtype=float)
    theta = np.log(np.asarray(psi, dtype=float))
    x = np.exp(n * theta)
    log_q = K * np.log1p(-x)
    p = -np.expm1(log_q)
    log_dp = np.log(K * n) + n * theta + (K - 1) * np.log1p(-x)
    with np.errstate(divide="ignore", invalid="ignore"):
        info = np.exp(2 * log_dp - log_q) / p  # dP² / (P (1 − P))
    return np.where(p > 0, info, 0.0)


def fit_cells(s, t, K, n, level: float = 0.95) -> QuickFit:
    """Maximum likelihood ψ of the cells given (K > 1 filtering is the caller's), for simulations and planning.

    The law's `fit.fit_batch`: the estimate, binomial standard error,
    dispersion over informative cells and quasi interval of `stats.fit_psi`
    (tests check it) without its GLM and profile interval, in a quarter of
    its time (6 against 21 ms on 190 cells). Cells without trials are left
    out; returns QuickFit(ok=False) with fewer than two cells left, or where
    fit_psi has no estimate.
    """
    s, t, K, n = (np.asarray(a, dtype=float) for a in (s, t, K, n))
    keep = t > 0
    s, t, K, n = s[keep], t[keep], K[keep], n[keep]
    if len(s) < 2 or s.sum() == 0 or (s == t).all():
        return QuickFit(False)
    law = fit_batch(s, t, K, n)
    theta = float(law.beta[0, 0])
    if not np.isfinite(theta) or theta >= 0:
        return QuickFit(False)
    se = float(np.sqrt(law.cov[0, 0, 0]))
    dispersion_quasi = float(law.dispersion[0])
    qse = se * np.sqrt(dispersion_quasi)
    low, high = wald_interval(theta, qse, level, log_scale=True)
    return QuickFit(True, float(np.exp(theta)), theta, se, dispersion_quasi, qse, float(low), float(high))


def fit_outcome(outcome: Outcome, kind: str, include_k1: bool = False) -> QuickFit:
    """`fit_cells` on one kind's cells of an outcome dict (K = 1 left out, as the project's fit does)."""
    rows = [(s, t, k, n) for (kd, k, n), (s, t) in outcome.items() if kd == kind and (include_k1 or k > 1)]
    if not rows:
        return QuickFit(False)
    s, t, k, n = np.array(rows, dtype=float).T
    return fit_cells(s, t, k, n)


# ----------------------------------------------------------------- FRONTIER
@dataclass(frozen=True)
class FrontierSettings:
    """Settings of the frontier design (one kind at a time)."""
    pilot_ks: tuple = (2, 6, 16)               # grid values nearest these are used
    pilot_ns: tuple = (3, 5, 8, 12, 18, 26, 36)
    pilot_seeds: int = 8
    # Seeds of a cell picked in a round. Fewer than the study's 32: with
    # intra-cell correlation ρ a cell's information saturates near 1/ρ seeds
    # (published dispersions 4.1 and 8.1 at 32 seeds: ρ ≈ 0.10 and 0.23), so
    # 8 seeds per cell buy about 1.6x the information per CPU-second of 32,
    # and equal to the pilot's they keep one dispersion for the quasi interval.
    seeds: int = 8
    boundary_seeds: int = 4                    # seeds of a boundary cell (a check, not information)
    # Seeds a cell may be topped up to when the cells at `seeds` cannot supply
    # the information the target needs (small ψ: few cells near the frontier).
    # Equal to `seeds`: never (the published ψ need no top-ups on the paper grid).
    max_seeds: int = 8
    target_half_width: float = 0.01            # stop when ψ's quasi interval is narrower
    max_rounds: int = 3
    episodes: int = 50_000                     # for the cost model
    safety: float = 1.1                        # aim this much beyond the information the target needs
    min_efficiency: float = 0.1                # never buy information at < this × the best rate on offer
    level: float = 0.95
    p_mid: tuple = (0.1, 0.9)                  # coverage: cells with P in this range count
    # Cells with t·P(1 − P) ≥ 1 estimate the dispersion that scales the quasi
    # interval; with few, a study that stops as soon as the interval is narrow
    # enough stops when the dispersion happens to be underestimated (simulated
    # coverage 0.85 for bootrp studies that took 2-3 rounds with no minimum).
    min_informative: int = 40
    psi_fallback: tuple = (0.6, 0.95)          # ψ guesses when every cell failed / succeeded
    # A start from a prior ψ instead of the pilot: round 0 is planned as an
    # information round (the cells `frontier_round` would pick) under ψ =
    # prior_psi, its information averaged over prior_psi·exp(±2·prior_spread),
    # with the dispersion of 32-seed cells assumed to be prior_dispersion.
    # None: the pilot subgrid.
    prior_psi: float | None = None
    prior_spread: float = 0.05                 # sd of log ψ the prior start plans for
    prior_dispersion: float = 4.1              # Pearson dispersion of 32-seed cells (published: 4.1, 8.1)
    # K rows the law's alternatives are tested on (effective K = K^α needs
    # several K; grid values nearest these): each of them gets, in every round,
    # a cell with P in p_mid under the current fit (or prior) if it has none;
    # the coverage quarters span their mid range, and only they get boundary
    # cells (at large K and ψ both are the study's dearest cells). None: every
    # K row of the grid for both, no row required.
    law_ks: tuple | None = None
    # The checks (coverage quarters and boundary cells, not the law rows' cells)
    # skip cells whose new seeds cost more than this many CPU-hours (cost
    # model): at large ψ they sit at large n and K, the dearest corner of the
    # grid. A quarter only such cells could fill counts as covered. None: no cap.
    max_check_hours: float | None = None


@dataclass(frozen=True)
class FrontierPlan:
    """What one frontier round asks for."""
    seeds: dict                 # (kind, K, n) -> total seeds wanted (≥ those already trained)
    reasons: dict               # (kind, K, n) -> "information" | "coverage" | "boundary"
    fit: QuickFit               # the fit the round was planned on
    stop: bool                  # True: target met (or rounds spent); nothing more to train
    coverage_ok: bool           # the coverage condition holds for the trained cells under `fit`
    cost_seconds: float = 0.0   # projected CPU-seconds of the new seeds


def _nearest(values: Sequence[int], wanted: Iterable[int]) -> list:
    values = sorted(values)
    return sorted({min(values, key=lambda v: (abs(v - w), v)) for w in wanted})


def frontier_pilot(kind: str, ensemble_sizes: Sequence[int], hardness: Sequence[int],
                   settings: FrontierSettings = FrontierSettings()) -> dict:
    """The pilot round: (kind, K, n) -> seeds, on the grid values nearest the settings' pilot K and n."""
    ks = _nearest([k for k in ensemble_sizes if k > 1] or ensemble_sizes, settings.pilot_ks)
    ns = _nearest(hardness, settings.pilot_ns)
    return {(kind, k, n): settings.pilot_seeds for k in ks for n in ns}


def frontier_start(kind: str, ensemble_sizes: Sequence[int], hardness: Sequence[int],
                   settings: FrontierSettings = FrontierSettings()) -> dict:
    """Round 0 of the frontier design: (kind, K, n) -> seeds.

    The pilot (`frontier_pilot`), or with `settings.prior_psi` the cells of an
    information round planned under that ψ (`frontier_round` at round 0, which
    reads no outcomes).
    """
    if settings.prior_psi is None:
        return frontier_pilot(kind, ensemble_sizes, hardness, settings)
    return frontier_round(kind, ensemble_sizes, hardness, {}, 0, settings).seeds


def mid_range(psi: float, ensemble_sizes: Sequence[int], hardness: Sequence[int], p_mid=(0.1, 0.9)):
    """(n_min, n_max) over which some grid cell with K > 1 has p_mid[0] < P < p_mid[1]; None if none."""
    ks = np.array([k for k in ensemble_sizes if k > 1] or list(ensemble_sizes))[:, None]
    ns = np.array(sorted(hardness))
    p = predicted_probability(psi, ks, ns[None])
    mid = ((p > p_mid[0]) & (p < p_mid[1])).any(axis=0)
    return (int(ns[mid].min()), int(ns[mid].max())) if mid.any() else None


def coverage_gaps(psi: float, ensemble_sizes: Sequence[int], hardness: Sequence[int], trained: Iterable[tuple],
                  p_mid=(0.1, 0.9)) -> list:
    """Quarters of the mid range (see `mid_range`) with no trained (K, n) of p_mid[0] < P < p_mid[1].

    Returns a list of (n_low, n_high) quarter bounds (inclusive) lacking such a cell; [] when covered.
    """
    span = mid_range(psi, ensemble_sizes, hardness, p_mid)
    if span is None:
        return []
    lo, hi = span
    edges = np.linspace(lo, hi, 5)
    mid_cells = [(k, n) for k, n in trained if k > 1 and p_mid[0] < predicted_probability(psi, k, n) < p_mid[1]]
    gaps = []
    for q in range(4):
        a, b = edges[q], edges[q + 1]
        if not any(a <= n <= b for _, n in mid_cells):
            gaps.append((a, b))
    return gaps


def open_gaps(kind: str, psi: float, ensemble_sizes: Sequence[int], hardness: Sequence[int],
              trained: Iterable[tuple], settings: FrontierSettings) -> list:
    """The coverage gaps a frontier round must fill: `coverage_gaps` over the
    mid range of the `law_ks` rows (of every row when None), less those that
    no cell within `max_check_hours` could fill (P in p_mid, `seeds` seeds)."""
    ks = sorted(k for k in ensemble_sizes if k > 1)
    gaps = coverage_gaps(psi, law_rows_of(ks, settings) or ks, hardness, trained, settings.p_mid)
    if settings.max_check_hours is None or not gaps:
        return gaps
    K, N = np.meshgrid(ks, sorted(hardness), indexing="ij")
    p = predicted_probability(psi, K, N)
    cheap = cell_cost_seconds(kind, K, N, settings.seeds, settings.episodes) <= settings.max_check_hours * 3600
    fillable = (p > settings.p_mid[0]) & (p < settings.p_mid[1]) & cheap
    return [(a, b) for a, b in gaps if (fillable & (N >= a) & (N <= b)).any()]


def law_rows_of(ensemble_sizes: Sequence[int], settings: FrontierSettings) -> list:
    """The grid's K rows (K > 1) nearest `settings.law_ks`; [] when it is None."""
    ks = sorted(k for k in ensemble_sizes if k > 1)
    return _nearest(ks, settings.law_ks) if settings.law_ks and ks else []


def frontier_round(kind: str, ensemble_sizes: Sequence[int], hardness: Sequence[int], outcome: Outcome,
                   round_index: int, settings: FrontierSettings = FrontierSettings()) -> FrontierPlan:
    """Plan frontier round `round_index` (1..max_rounds) of one kind from the outcomes so far.

    Fits ψ on the kind's trained cells with K > 1. Stops (empty plan) when the
    quasi interval's half-width is below the target and the coverage condition
    holds, or when round_index > max_rounds. Otherwise picks, under the fit:
    1. information: cells (new, or pilot cells topped up to `seeds`) by Fisher
       information about log ψ per CPU-second, averaged over ψ̂·exp(±2 se), until
       the information expected to reach the target half-width (times
       `safety`, with the dispersion extrapolated to `seeds` seeds) is planned,
       but none whose rate is below `min_efficiency` × the best rate (a noisy
       pilot dispersion must not buy the whole grid; later rounds top up);
    2. coverage: the best cell of each quarter of the mid range (of the
       `law_ks` rows if given, else of every row) lacking one (`open_gaps`:
       none dearer than `max_check_hours`), and of each `law_ks` row lacking a
       cell with P in p_mid;
    3. boundary: per K (of `law_ks` if given), if the row has no trained cell
       with 0.001 ≤ P ≤ 0.1 (resp. 0.9 ≤ P ≤ 0.999), its first n with P ≤ 0.1
       (last n with P ≥ 0.9), with `boundary_seeds` seeds, so a wrong fit
       shows (unless dearer than `max_check_hours`).

    Round 0 with `settings.prior_psi` (the prior start, `frontier_start`):
    the same picks with ψ̂ = prior_psi, se = prior_spread and the dispersion
    `prior_dispersion`, from no outcomes; it never stops.
    """
    prior = round_index == 0 and settings.prior_psi is not None
    if prior:
        outcome = {}
    view = _round_view(kind, ensemble_sizes, hardness, outcome, settings, prior)
    if not prior and (round_index > settings.max_rounds or view.target_met(settings)):
        return FrontierPlan({}, {}, view.fit, True, view.coverage_ok)
    picks = _Picks(kind, view)
    planned, need, rho = _pick_information(view, picks, outcome, settings)
    _pick_top_ups(view, picks, planned, need, rho, settings)
    _pick_informative(view, picks, settings)
    _pick_coverage(view, picks, settings)
    _pick_boundary(view, picks, settings)
    return FrontierPlan(picks.seeds, picks.reasons, view.fit, False, view.coverage_ok, picks.cost_seconds(settings))


@dataclass
class _RoundView:
    """What a frontier round plans on: the ψ it assumes, the fit and the grid's cells as arrays
    (K, N, seeds trained t_have, P under ψ, information per seed, the information rate of a cell's
    first `seeds` seeds and the cells in order of that rate)."""

    kind: str
    ks: list
    ns: list
    have: dict
    fit: QuickFit
    psi: float
    spread: float
    located: bool  # ψ known well enough (a fit, or the prior) to plan around it
    trained: list
    law_rows: list
    gaps: list
    coverage_ok: bool
    K: np.ndarray
    N: np.ndarray
    t_have: np.ndarray
    p_hat: np.ndarray
    info_per_seed: np.ndarray
    new_seeds: np.ndarray
    gain: np.ndarray
    ratio: np.ndarray
    order: np.ndarray

    def in_mid(self, k, n, settings: FrontierSettings) -> bool:
        return settings.p_mid[0] < float(predicted_probability(self.psi, k, n)) < settings.p_mid[1]

    def target_met(self, settings: FrontierSettings) -> bool:
        """The stopping rule: the half-width below target, the mid range covered, every law row with a
        mid cell on the grid holding a trained one, and enough informative cells."""
        informative = sum(t * p * (1 - p) >= 1 for (k, n), (_, t) in self.have.items() if k > 1
                          for p in [float(predicted_probability(self.psi, k, n))])
        rows_ok = all(any(k == row and self.in_mid(k, n, settings) for k, n in self.trained)
                      or not any(self.in_mid(row, n, settings) for n in self.ns) for row in self.law_rows)
        return (self.fit.ok and self.fit.half_width < settings.target_half_width and self.coverage_ok
                and rows_ok and informative >= settings.min_informative)


def _round_view(kind, ensemble_sizes, hardness, outcome: Outcome, settings: FrontierSettings, prior: bool) -> _RoundView:
    ks = sorted(k for k in ensemble_sizes if k > 1)
    ns = sorted(hardness)
    have = {(k, n): st for (kd, k, n), st in outcome.items() if kd == kind}
    fit = fit_outcome(outcome, kind)
    if prior:
        psi, spread = float(settings.prior_psi), min(max(settings.prior_spread, 1e-4), 0.5)
    elif fit.ok:
        psi, spread = fit.psi, min(max(fit.quasi_se, 1e-4), 0.1)
    else:
        p_all = [s / t for s, t in have.values() if t > 0]
        psi = settings.psi_fallback[0] if not p_all or max(p_all) < 0.5 else settings.psi_fallback[1]
        spread = 0.1
    located = fit.ok or prior
    trained = [kn for kn, (s, t) in have.items() if t > 0]
    gaps = open_gaps(kind, psi, ks, ns, trained, settings) if located else [(min(ns), max(ns))]
    coverage_ok = fit.ok and not gaps
    K = np.repeat(ks, len(ns)).astype(float)
    N = np.tile(ns, len(ks)).astype(float)
    t_have = np.array([have.get((int(k), int(n)), (0, 0))[1] for k, n in zip(K, N)], dtype=float)
    psis = np.minimum(np.exp(np.log(psi) + spread * np.array([-2.0, -1.0, 0.0, 1.0, 2.0])), _PSI_MAX)
    info_per_seed = cell_information(psis[:, None], K[None], N[None]).mean(axis=0)
    new_seeds = np.clip(settings.seeds - t_have, 0, None)
    cost = cell_cost_seconds(kind, K, N, new_seeds, settings.episodes)
    gain = new_seeds * info_per_seed
    ratio = np.where(new_seeds > 0, gain / np.where(cost > 0, cost, np.inf), -1.0)
    return _RoundView(kind, ks, ns, have, fit, psi, spread, located, trained, law_rows_of(ks, settings), gaps,
                      coverage_ok, K, N, t_have, predicted_probability(psi, K, N), info_per_seed, new_seeds, gain,
                      ratio, np.argsort(-ratio, kind="stable"))


class _Picks:
    """The round's plan as it is built: (kind, K, n) -> total seeds and the reason it was first picked."""

    def __init__(self, kind: str, view: _RoundView):
        self.kind, self.view = kind, view
        self.seeds: dict = {}
        self.reasons: dict = {}

    def key(self, i) -> tuple:
        return (self.kind, int(self.view.K[i]), int(self.view.N[i]))

    def add(self, i, total, why) -> None:
        key = self.key(i)
        if total > max(self.view.t_have[i], self.seeds.get(key, 0)):
            self.seeds[key] = int(total)
            self.reasons.setdefault(key, why)

    def cost_seconds(self, settings: FrontierSettings) -> float:
        have = self.view.have
        return float(sum(cell_cost_seconds(self.kind, c[1], c[2], s - have.get((c[1], c[2]), (0, 0))[1],
                                           settings.episodes) for c, s in self.seeds.items()))


def _pick_information(view: _RoundView, picks: _Picks, outcome: Outcome, settings: FrontierSettings):
    """1. INFORMATION: cells by information per CPU-second until the information the target needs is
    planned. Returns (planned, need, rho): the information planned and needed, the intra-cell correlation."""
    z = sps.norm.ppf(0.5 + settings.level / 2)
    rho = 0.0
    if view.located:
        rho = _intra_cell_correlation(outcome, view.kind, view.fit) if view.fit.ok else \
            float(np.clip((settings.prior_dispersion - 1) / 31, 0.0, 0.5))  # dispersion 1 + 31ρ at 32 seeds
        phi_plan = 1 + (settings.seeds - 1) * rho
        info_have = float(np.sum(view.t_have * cell_information(view.psi, view.K, view.N)))
        need = settings.safety * (z * view.psi) ** 2 * phi_plan / settings.target_half_width ** 2 - info_have
    else:
        need = np.inf
    ratio, order = view.ratio, view.order
    planned = 0.0
    best = ratio[order[0]] if len(order) else 0.0
    for i in order:
        if ratio[i] <= max(0.0, settings.min_efficiency * best) or planned >= need:
            break
        picks.add(i, settings.seeds, "information")
        planned += view.gain[i]
        if not view.located and len(picks.seeds) >= 2 * len(view.ks):
            break
    return planned, need, rho


def _pick_top_ups(view: _RoundView, picks: _Picks, planned: float, need: float, rho: float,
                  settings: FrontierSettings) -> None:
    """1a. TOP-UPS to max_seeds, cheapest information first, when the cells above fall short."""
    if not (view.located and settings.max_seeds > settings.seeds and planned < need):
        return
    current = np.array([max(t, picks.seeds.get((view.kind, int(k), int(n)), 0))
                        for t, k, n in zip(view.t_have, view.K, view.N)])
    extra = np.clip(settings.max_seeds - current, 0, None)
    # more seeds of one cell are worth less under intra-cell correlation ρ
    worth = (1 + (settings.seeds - 1) * rho) / (1 + (settings.max_seeds - 1) * rho)
    gain_up = extra * view.info_per_seed * worth
    cost_up = cell_cost_seconds(view.kind, view.K, view.N, extra, settings.episodes)
    ratio_up = np.where((extra > 0) & (current > 0), gain_up / np.where(cost_up > 0, cost_up, np.inf), -1.0)
    for i in np.argsort(-ratio_up, kind="stable"):
        if ratio_up[i] <= 0 or planned >= need:
            break
        picks.add(i, settings.max_seeds, "information")
        planned += gain_up[i]


def _pick_informative(view: _RoundView, picks: _Picks, settings: FrontierSettings) -> None:
    """1b. INFORMATIVE CELLS: enough cells with t·P(1 − P) ≥ 1 to estimate the dispersion."""
    variance = view.p_hat * (1 - view.p_hat)
    informs_now = view.t_have * variance >= 1
    informs_after = np.maximum(view.t_have, settings.seeds) * variance >= 1
    planned_now = np.array([picks.key(i) in picks.seeds for i in range(len(view.K))], dtype=bool)
    count = int(np.sum(informs_now | (planned_now & informs_after)))
    for i in view.order:
        if count >= settings.min_informative or view.ratio[i] <= 0:
            break
        if informs_after[i] and not informs_now[i] and not planned_now[i]:
            picks.add(i, settings.seeds, "information")
            planned_now[i] = True
            count += 1


def _pick_coverage(view: _RoundView, picks: _Picks, settings: FrontierSettings) -> None:
    """2. COVERAGE: the best cell of each open quarter of the mid range (under ψ̂ and ψ̂·exp(±2 se)), and
    of each law row lacking a cell with P in p_mid."""
    gaps = list(view.gaps)
    if view.located:  # the gaps under ψ̂·exp(±2 se) too, so that the next fit's quarters are covered
        for shifted in (view.psi * np.exp(-2 * view.spread), min(view.psi * np.exp(2 * view.spread), _PSI_MAX)):
            gaps += [g for g in open_gaps(view.kind, shifted, view.ks, view.ns, view.trained, settings) if g not in gaps]
    K, N, ratio = view.K, view.N, view.ratio
    mid = (view.p_hat > settings.p_mid[0]) & (view.p_hat < settings.p_mid[1])
    check_cost = cell_cost_seconds(view.kind, K, N, np.clip(settings.seeds - view.t_have, 0, None), settings.episodes)
    affordable = check_cost <= (np.inf if settings.max_check_hours is None else settings.max_check_hours * 3600)
    for a, b in gaps:
        inside = np.nonzero(mid & affordable & (N >= a) & (N <= b))[0]
        if len(inside) and not any(picks.key(i) in picks.seeds for i in inside):
            best = inside[np.argmax(np.where(view.new_seeds[inside] > 0, ratio[inside], np.inf))]
            picks.add(best, settings.seeds, "coverage")
    for k in view.law_rows:
        row = np.nonzero((K == k) & mid)[0]
        if len(row) and not any((view.t_have[i] > 0 or picks.key(i) in picks.seeds) for i in row):
            picks.add(row[np.argmax(ratio[row])], settings.seeds, "coverage")


def _pick_boundary(view: _RoundView, picks: _Picks, settings: FrontierSettings) -> None:
    """3. BOUNDARY: per K row, a cell with 0.001 ≤ P ≤ 0.1 and one with 0.9 ≤ P ≤ 0.999 (trained or
    planned), else its first n with P ≤ 0.1 and last with P ≥ 0.9, with `boundary_seeds` seeds."""
    K, N, p_hat, t_have = view.K, view.N, view.p_hat, view.t_have

    def affordable(i):
        extra = max(settings.boundary_seeds - t_have[i], 0)
        return settings.max_check_hours is None or \
            float(cell_cost_seconds(view.kind, K[i], N[i], extra, settings.episodes)) <= settings.max_check_hours * 3600

    for k in (view.law_rows or view.ks):
        row = np.nonzero(K == k)[0]
        p_row, t_row = p_hat[row], t_have[row]
        planned_row = np.array([picks.key(i) in picks.seeds for i in row], dtype=bool)
        has = t_row > 0
        if not ((has | planned_row) & (p_row >= 0.001) & (p_row <= 0.1)).any():
            low = row[p_row <= 0.1]
            if len(low) and affordable(low[0]):
                picks.add(low[0], settings.boundary_seeds, "boundary")
        if not ((has | planned_row) & (p_row >= 0.9) & (p_row <= 0.999)).any():
            high = row[p_row >= 0.9]
            if len(high) and affordable(high[-1]):
                picks.add(high[-1], settings.boundary_seeds, "boundary")


def _intra_cell_correlation(outcome: Outcome, kind: str, fit: QuickFit) -> float:
    """ρ with dispersion 1 + (t − 1)ρ, from the fit's dispersion and the informative cells' mean trials."""
    rows = [(s, t, k, n) for (kd, k, n), (s, t) in outcome.items() if kd == kind and k > 1 and t > 1]
    _, t, k, n = np.array(rows, dtype=float).T
    p = predicted_probability(fit.psi, k, n)
    informative = t * p * (1 - p) >= 1
    t_bar = t[informative].mean() if informative.sum() >= 3 else t.mean()
    phi = fit.dispersion_quasi if np.isfinite(fit.dispersion_quasi) else 1.0
    return float(np.clip((phi - 1) / max(t_bar - 1, 1), 0.0, 0.5))


# ------------------------------------------------------------- ONE ENTRY
def plan_next_round(design: str, kinds: Sequence[str], ensemble_sizes: Sequence[int], hardness: Sequence[int],
                    outcome: Outcome, round_index: int, *, seeds: int = 32, limit: int = 3,
                    frontier: FrontierSettings | Mapping[str, FrontierSettings] | None = None,
                    **speculation) -> dict:
    """The cells to train in round `round_index` (0, 1, ...): (kind, K, n) -> total seeds; {} when done.

    grid: every cell with `seeds` in round 0, then nothing. reference: the
    cells of `speculative_round` (keyword arguments `speculation` go to it),
    `seeds` each, until the protocol is decided. frontier: round 0 is the
    pilot of every kind (or its prior start, `frontier_start`); round r ≥ 1
    is `frontier_round(r)` per kind, with
    `frontier` the settings of all kinds or a dict kind -> settings (the
    target half-width differs by kind). Only entries with more seeds than
    `outcome` holds are returned, so a rerun after an interruption, given the
    cells already trained, asks for the rest only.
    """
    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; one of {', '.join(DESIGNS)}")
    if design == "grid":
        wanted = {(kd, k, n): seeds for kd in kinds for k in ensemble_sizes for n in hardness} if round_index == 0 else {}
    elif design == "reference":
        wanted = {c: seeds for c in speculative_round(kinds, ensemble_sizes, hardness, limit, outcome, trials=seeds,
                                                       **speculation)}
    else:
        wanted = {}
        for kind in kinds:
            settings = frontier.get(kind, FrontierSettings()) if isinstance(frontier, Mapping) else \
                (frontier or FrontierSettings())
            if round_index == 0:
                wanted.update(frontier_start(kind, ensemble_sizes, hardness, settings))
            else:
                wanted.update(frontier_round(kind, ensemble_sizes, hardness, outcome, round_index, settings).seeds)
    return {c: t for c, t in wanted.items() if t > outcome.get(c, (0, 0))[1]}
