"""The one fit of the law and its alternatives: Fisher scoring, the Pearson dispersion, the intervals.

The law P = 1 − (1 − ψ^n)^K and the alternatives `law.py` tests it against
are one family,

    log(1 − P) = K^α · log(1 − ψ(n)^n),   log ψ(n) = θ0 + θ1·log(n / n_ref),

with parameters PARAMS = (θ0, θ1, α); the law is θ1 = 0, α = 1 (θ0 = log ψ
its only free parameter). Every ψ of the project is a maximum of the same
binomial likelihood (successes out of trials per cell) over this family:

- `fit_batch`: the one fitter. Fisher scoring with step halving, vectorised
  over B studies that share their cells, with θ1 and α free or fixed. It
  fits the law tests' models (`law.fit_models`), the sequential designs'
  quick fits (`designs.fit_cells`) and starts the GLM below.
- `glm`: the law as a statsmodels binomial GLM (no intercept, covariate n,
  coefficient log ψ, a link per row's K), the published fit of psi_fit.csv
  and of the kind comparison (`stats.fit_psi`, `stats.compare_kinds`). It
  starts at `fit_batch`'s estimate, so statsmodels only confirms the optimum
  and adds the standard errors, deviance and AIC.
- `pearson_dispersion`: Pearson χ²/df over all cells and over the
  informative ones (the quasi-binomial intervals and F tests use the latter).
- `wald_interval` (Wald and, with the dispersion, quasi-binomial),
  `intervals` (every parameter of a `fit_batch` fit) and `profile_interval`
  (likelihood ratio, the law): every interval a table reports.

Why a module of its own rather than law.py: law.py tests the law on tidy
tables and needs stats' cell handling (usable cells, groups, warnings),
while stats and designs need the fit; the fit depending on neither keeps
the imports one-way (fit <- stats <- law, fit <- designs). statsmodels is
imported by the first `glm` call only (1.3 s).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import optimize, special
from scipy import stats as sps

PARAMS = ("theta0", "theta1", "alpha")  # the order of a parameter vector
_NULL = np.array([np.nan, 0.0, 1.0])  # θ1 = 0 and α = 1: the law (θ0 is always free)
P_MIN, P_MAX = 1e-100, 1.0 - 1e-15  # keeps the link, its derivative and the Pearson terms finite
_P_FLOOR = 1e-300  # log P of a cell stays finite in the likelihood
_ETA_MAX = -1e-12  # log of a member's probability stays below 0


# ------------------------------------------------------------- THE FAMILY
def log_fail(beta, K, n, n_ref: float = 1.0) -> np.ndarray:
    """log(1 − P) of the family; beta (..., 3) as PARAMS, K and n (cells,). Returns (..., cells)."""
    beta = np.asarray(beta, dtype=float)
    K, n = np.asarray(K, dtype=float), np.asarray(n, dtype=float)
    theta0, theta1, alpha = (beta[..., i, None] for i in range(3))
    eta = np.minimum(n * (theta0 + theta1 * np.log(n / n_ref)), _ETA_MAX)
    return np.exp(alpha * np.log(K)) * np.log1p(-np.exp(eta))


def predict(beta, K, n, n_ref: float = 1.0) -> np.ndarray:
    """P(discovery) of the family at beta (..., 3); shape (..., cells)."""
    return -np.expm1(log_fail(beta, K, n, n_ref))


def beta_of(psi: float, alpha: float = 1.0, theta1: float = 0.0) -> np.ndarray:
    """A parameter vector (θ0, θ1, α) from ψ at n_ref, α and θ1."""
    return np.array([np.log(psi), theta1, alpha])


def loglik(beta, s, t, K, n, n_ref: float = 1.0) -> np.ndarray:
    """Binomial log-likelihood of the family at beta (..., 3), without the binomial coefficients.

    s, t: successes and trials, (..., cells) or (cells,); K, n: (cells,). Returns shape (...).
    """
    L = log_fail(beta, K, n, n_ref)
    log_p = np.log(np.clip(-np.expm1(L), _P_FLOOR, None))
    return np.sum(s * log_p + (t - s) * L, axis=-1)


def score_info(beta, s, t, K, n, n_ref, free):
    """Score (B, p) and Fisher information (B, p, p) of the free parameters (names of PARAMS) at beta (B, 3)."""
    theta0, theta1, alpha = (beta[:, i, None] for i in range(3))
    x = np.log(n / n_ref)
    eta = np.minimum(n * (theta0 + theta1 * x), _ETA_MAX)
    u = np.exp(eta)
    k_eff = np.exp(alpha * np.log(K))
    L = k_eff * np.log1p(-u)
    P = np.clip(-np.expm1(L), _P_FLOOR, None)
    d_theta0 = -k_eff * u / (-np.expm1(eta)) * n
    jac = {"theta0": d_theta0, "theta1": d_theta0 * x, "alpha": L * np.log(K)}
    J = np.stack([np.broadcast_to(jac[p], L.shape) for p in free], axis=-1)  # (B, cells, p)
    dl_dL = t - s / P  # dℓ/dL, with L = log(1 − P)
    w = t * np.exp(L) / P  # E[(dℓ/dL)²] = t(1 − P)/P
    score = np.einsum("bc,bcp->bp", dl_dL, J)
    info = np.einsum("bc,bcp,bcq->bpq", w, J, J)
    return score, info


# -------------------------------------------------------------- DISPERSION
class Dispersion(NamedTuple):
    """Pearson statistics of a fit, each of shape (...) for cells (..., cells)."""
    chi2: np.ndarray        # Pearson χ² over all cells
    dispersion: np.ndarray  # χ²/df over all cells (the published statistic); NaN without df
    quasi: np.ndarray       # χ²/df over the informative cells (or all, where too few are)
    quasi_df: np.ndarray    # the df of `quasi`: the quasi-F test's denominator df


def pearson_dispersion(s, t, p, n_params: int) -> Dispersion:
    """Pearson χ² and dispersion of fitted probabilities p, over all cells and over the informative cells.

    The quasi-binomial intervals and F tests use the informative-cell
    dispersion (`quasi`): cells whose expected binomial variance t·p(1 − p)
    is below 1 (p near 0 or 1, most of a DeepSea grid) cannot show
    overdispersion yet count in the df, and a single success where p = 1e-6
    adds 1e6/t to χ², so χ²/df over all cells is heavy-tailed (in simulations
    its mean was 11 for a true dispersion of 4, and 0.8 for a true 1). Falls
    back to all cells when fewer than n_params + 2 cells are informative.
    s, t, p: (..., cells); n_params: the fit's free parameters.
    """
    s, t = np.asarray(s, dtype=float), np.asarray(t, dtype=float)
    p = np.clip(p, P_MIN, P_MAX)
    var = t * p * (1 - p)
    terms = (s - t * p) ** 2 / np.clip(var, 1e-300, None)
    informative = var >= 1
    chi2 = terms.sum(axis=-1)
    df_all = np.full(chi2.shape, terms.shape[-1] - n_params)
    df_inf = informative.sum(axis=-1) - n_params
    use_inf = df_inf >= 2
    quasi_df = np.where(use_inf, df_inf, df_all)
    quasi_chi2 = np.where(use_inf, np.sum(np.where(informative, terms, 0.0), axis=-1), chi2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return Dispersion(chi2, np.where(df_all > 0, chi2 / df_all, np.nan),
                          np.where(quasi_df > 0, quasi_chi2 / quasi_df, np.nan), quasi_df)


# ------------------------------------------------------------ THE FITTER
@dataclass
class BatchFit:
    """Maximum-likelihood fits of one model to B studies with the same cells.

    beta (B, 3), cov (B, 3, 3) (zero rows/columns for fixed parameters; not
    scaled by the dispersion), loglik, deviance, dispersion (`pearson_dispersion`'s
    `quasi`), df_resid (its df, the F test's denominator df), converged: all
    (B,); loglik includes the binomial coefficients (as statsmodels' and
    psi_fit.csv's AIC). n_params: free parameters.
    """

    beta: np.ndarray
    cov: np.ndarray
    loglik: np.ndarray
    deviance: np.ndarray
    dispersion: np.ndarray
    df_resid: np.ndarray
    converged: np.ndarray
    n_params: int


def _start_theta0(s, t, K, n):
    """log ψ where the law fits each cell exactly (cells with 0 < s < t), median over cells, (B,)."""
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        psi = (-np.expm1(np.log1p(-s / t) / K)) ** (1 / n)
        guess = np.nanmedian(np.log(np.where((s > 0) & (s < t), psi, np.nan)), axis=-1)
    return np.minimum(np.where(np.isfinite(guess), guess, np.log(0.8)), -1e-6)


def fit_batch(successes, trials, K, n, free=(), *, n_ref: float | None = None,
              start: np.ndarray | None = None, max_iter: int = 100, tol: float = 1e-10) -> BatchFit:
    """Fit the family to B studies by Fisher scoring with step halving; θ0 and the parameters `free`.

    successes: (B, cells) or (cells,); trials: broadcastable to it; K, n:
    (cells,) shared by the studies. free: names of PARAMS free besides θ0
    ("alpha", "theta1"); () fits the law. n_ref: default the geometric mean
    of n. start: (B, 3) starting values (fixed parameters are reset to the
    law's); default θ0 from the cells the law fits exactly. A study has
    converged when a step gains less than `tol` in log-likelihood and moves
    no parameter by more than 1e-9: tight enough that the GLM started here
    and the law tests' law row agree with it to about 1e-10.
    """
    s = np.atleast_2d(np.asarray(successes, dtype=float))
    t = np.broadcast_to(np.asarray(trials, dtype=float), s.shape)
    K, n = np.asarray(K, dtype=float), np.asarray(n, dtype=float)
    n_ref = float(np.exp(np.mean(np.log(n)))) if n_ref is None else float(n_ref)
    free = ("theta0",) + tuple(free)
    idx = [PARAMS.index(p) for p in free]
    beta = np.tile(_NULL, (s.shape[0], 1))
    if start is not None:
        beta[:, idx] = np.asarray(start, dtype=float)[:, idx]
    else:
        beta[:, 0] = _start_theta0(s, t, K, n)
    with np.errstate(all="ignore"):  # trial steps may leave the domain; they are rejected below
        beta, ll, converged = _fisher_scoring(beta, s, t, K, n, n_ref, free, idx, max_iter, tol)
        return _summarise(beta, ll, converged, s, t, K, n, n_ref, free, idx)


def _fisher_scoring(beta, s, t, K, n, n_ref, free, idx, max_iter, tol):
    """(beta, loglik, converged) after Fisher scoring steps, each halved until the likelihood does not fall."""
    B = len(beta)
    ll = loglik(beta, s, t, K, n, n_ref)
    converged = np.zeros(B, bool)
    for _ in range(max_iter):
        score, info = score_info(beta, s, t, K, n, n_ref, free)
        ridge = 1e-12 * np.trace(info, axis1=1, axis2=2)[:, None, None] * np.eye(len(free)) + 1e-300
        step = np.linalg.solve(info + ridge, score[..., None])[..., 0]
        step = np.where(np.isfinite(step), step, 0.0)
        scale = np.ones(B)
        todo = ~converged
        new_beta, new_ll = beta.copy(), ll.copy()
        for _halving in range(40):
            trial = beta.copy()
            trial[:, idx] = beta[:, idx] + scale[:, None] * step
            trial_ll = loglik(trial, s, t, K, n, n_ref)
            ok = todo & np.isfinite(trial_ll) & (trial_ll >= ll - 1e-12)
            new_beta[ok], new_ll[ok] = trial[ok], trial_ll[ok]
            todo &= ~ok
            if not todo.any():
                break
            scale = np.where(todo, scale / 2, scale)
        gain = new_ll - ll
        moved = np.max(np.abs(new_beta - beta), axis=1)
        beta, ll = new_beta, new_ll
        converged |= (gain < tol) & (moved < 1e-9) | (moved == 0)
        if converged.all():
            break
    return beta, ll, converged


def _summarise(beta, ll, converged, s, t, K, n, n_ref, free, idx) -> BatchFit:
    """The BatchFit at the estimates beta (B, 3) with log-likelihood ll (without binomial coefficients)."""
    B = len(beta)
    _, info = score_info(beta, s, t, K, n, n_ref, free)
    cov = np.zeros((B, 3, 3))
    cov[np.ix_(np.arange(B), idx, idx)] = np.linalg.pinv(info)
    sat = special.xlogy(s, s / t) + special.xlogy(t - s, (t - s) / t)
    deviance = 2 * (np.sum(sat, axis=-1) - ll)
    # with the binomial coefficients, as statsmodels' loglik and AIC (psi_fit.csv)
    ll = ll + np.sum(special.gammaln(t + 1) - special.gammaln(s + 1) - special.gammaln(t - s + 1), axis=-1)
    disp = pearson_dispersion(s, t, predict(beta, K, n, n_ref), len(free))
    return BatchFit(beta, cov, ll, np.maximum(deviance, 0.0), disp.quasi, disp.quasi_df, converged, len(free))


# ------------------------------------------------------------- INTERVALS
def wald_interval(estimate, se, level: float = 0.95, log_scale: bool = False):
    """(low, high) = estimate ± z·se, broadcast; log_scale: estimate is log ψ, the ends are ψ (capped at 1).

    The quasi-binomial interval is this one with se·√dispersion.
    """
    z = sps.norm.ppf(0.5 + level / 2)
    low, high = estimate - z * se, estimate + z * se
    if not log_scale:
        return low, high
    with np.errstate(over="ignore"):
        return np.exp(low), np.minimum(np.exp(high), 1.0)


def intervals(fit: BatchFit, level: float = 0.95, quasi: bool = True) -> dict:
    """Wald intervals per parameter, (B,) arrays: {name: (estimate, low, high)}.

    psi (ψ at n_ref) from θ0 on the log scale; alpha and theta1 directly.
    quasi: scale the standard errors by √dispersion (by 1 where it is NaN).
    """
    phi = np.where(np.isfinite(fit.dispersion), fit.dispersion, 1.0) if quasi else np.ones(len(fit.beta))
    se = np.sqrt(np.clip(np.diagonal(fit.cov, axis1=1, axis2=2), 0, None) * phi[:, None])
    out = {name: (fit.beta[:, i], *wald_interval(fit.beta[:, i], se[:, i], level)) for i, name in enumerate(PARAMS)}
    theta0 = out.pop("theta0")[0]
    out["psi"] = (np.exp(theta0), *wald_interval(theta0, se[:, 0], level, log_scale=True))
    return out


def profile_interval(theta_hat: float, s, t, K, n, level: float = 0.95) -> tuple[float, float]:
    """Likelihood-ratio interval for ψ of the law: {ψ : 2(ℓ̂ − ℓ(ψ)) ≤ χ²₁(level)}; theta_hat = log ψ̂."""
    cut = sps.chi2.ppf(level, 1) / 2

    def ll(theta):
        return loglik(np.array([theta, 0.0, 1.0]), s, t, K, n)

    l_hat = ll(theta_hat)

    def f(theta):
        return l_hat - ll(theta) - cut

    lo_end, hi_end = theta_hat - 50.0, -1e-13
    low = optimize.brentq(f, lo_end, theta_hat, xtol=1e-12) if f(lo_end) > 0 else -np.inf
    high = optimize.brentq(f, theta_hat, hi_end, xtol=1e-14) if f(hi_end) > 0 else 0.0
    return float(np.exp(low)), float(np.exp(high))


# ------------------------------------------------------------- THE GLM
@functools.cache
def power_law_link() -> type:
    """The GLM's link class, built on first use: statsmodels (1.3 s to import) is loaded only by a fit."""
    from statsmodels.genmod.families import links

    class PowerLawLink(links.Link):
        """g_K(p) = log(1 − (1 − p)^(1/K)) with one K per row of the GLM.

        The arrays statsmodels passes have one value per observation, so K is a
        vector of the same length.
        """

        def __init__(self, K):
            self.K = np.asarray(K, dtype=float)

        def _u(self, p):
            # u = (1 − p)^(1/K) and 1 − u, both without cancellation.
            e = np.log1p(-p) / self.K
            return np.exp(e), -np.expm1(e)

        def __call__(self, p):
            p = np.clip(p, P_MIN, P_MAX)
            return np.log(self._u(p)[1])

        def inverse(self, z):
            z = np.minimum(z, -1e-15)
            return np.clip(-np.expm1(self.K * np.log1p(-np.exp(z))), P_MIN, P_MAX)

        def deriv(self, p):
            p = np.clip(p, P_MIN, P_MAX)
            u, one_minus_u = self._u(p)
            return u / (self.K * (1 - p) * one_minus_u)

        def deriv2(self, p):
            p = np.clip(p, P_MIN, P_MAX)
            u, one_minus_u = self._u(p)
            d1 = u / (self.K * (1 - p) * one_minus_u)
            return d1 / (1 - p) * (1 - 1 / self.K - u / (self.K * one_minus_u))

        def inverse_deriv(self, z):
            z = np.minimum(z, -1e-15)
            ez = np.exp(z)
            return self.K * np.exp((self.K - 1) * np.log1p(-ez)) * ez

        def inverse_deriv2(self, z):
            z = np.minimum(z, -1e-15)
            ez = np.exp(z)
            q = np.log1p(-ez)
            return self.K * ez * (np.exp((self.K - 1) * q) - (self.K - 1) * np.exp((self.K - 2) * q) * ez)

    return PowerLawLink


def __getattr__(name: str):
    if name == "PowerLawLink":  # fit.PowerLawLink, built on first use (power_law_link)
        return power_law_link()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def glm(s, t, K, n, group=None):
    """The law as a binomial GLM (statsmodels): one log ψ per group of cells, started at `fit_batch`'s.

    s, t, K, n: (cells,). group: (cells,) integers 0..G−1, the ψ each cell
    shares (default: one ψ for all). The design matrix has column g = n on
    the cells of group g, 0 elsewhere. IRLS from a poor start can run away
    (θ → +1e98 on a grid whose K = 8 cells all discover and K = 2 cells
    rarely do); started at the optimum, it only adds the standard errors,
    deviance and AIC. Returns statsmodels' GLM results (params: log ψ per
    group; bse, deviance, aic, mu).
    """
    import statsmodels.api as sm

    s, t, K, n = (np.asarray(a, dtype=float) for a in (s, t, K, n))
    group = np.zeros(len(s), dtype=int) if group is None else np.asarray(group)
    members = [group == g for g in range(group.max() + 1)]
    X = np.column_stack([n * m for m in members])
    start = np.array([fit_batch(s[m], t[m], K[m], n[m]).beta[0, 0] for m in members])
    family = sm.families.Binomial(link=power_law_link()(K), check_link=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sm.GLM(np.column_stack([s, t - s]), X, family=family)
        return model.fit(start_params=start, maxiter=200, tol=1e-12)
