"""The cost model: seconds, wall-clock minutes and memory of training runs.

One vector step of R runs of K members each on DeepSea(n) costs, on one CPU
core (default mode: fitted by `benchmarks/project_study_cost.py`,
benchmarks/README.md; worst sample error 37%):

    0.2 ms + 20 us per run-member pair + 40 ns per pair and first-layer row (n^2)

with TrainConfig's default warm-up (416 steps, outside the budget) plus
episodes * n // num_envs learning steps per DeepSea run. The n^2 term
is AdamW's pass over the first layer (one row per DeepSea cell), memory-
bandwidth bound at large n. `--fidelity reference` has its own coefficients
(`COSTS`), refitted on jobs of the `paper_check` study and steady-state steps
of larger cells by `benchmarks/refit_cost.py`, which prints measured against
predicted; there a program that evaluates a prior (bootrp, or boot batched
with it) pays more per pair and per pair and n^2 row than boot alone. A training job also pays start-up (imports, set-up,
writing its table) and compiling, once per job: `job_seconds`.

Study designs rank cells by `cell_cost_seconds` (the default mode's training
seconds, without the per-job overhead, which depends on how cells are
grouped); the cluster resources (`runtime_minutes`, `mem_mb`) are generous
bounds derived from the same model.
"""

from __future__ import annotations

import dataclasses

import math
from dataclasses import dataclass

import numpy as np

from .config import TrainConfig
from .kinds import KINDS

STEP_SECONDS = 0.2e-3  # fixed cost of one vector step (dispatch, acting)
PAIR_SECONDS = 2e-5  # per run-member pair (minibatch forward/backward)
PAIR_ROW_SECONDS = 4e-8  # per pair and first-layer row (AdamW over the n^2 rows)
NUM_ENVS = TrainConfig().num_envs  # 24
WARMUP_STEPS = TrainConfig().warmup_steps  # the default warm-up (416 steps, outside the budget) fills the buffer first


@dataclass(frozen=True)
class Coefficients:
    """Seconds per vector step (`step`, per run-member `pair`, per pair and n^2 row) and per job."""

    step: float
    pair: float
    pair_row: float
    startup: float  # per job: imports, environment set-up, writing the table
    compile: float  # per job: compiling its program, the first time
    compile_cached: float = 0.0  # per job: loading it from JAX's compilation cache (a program compiled before)
    prior_pair: float = 0.0  # per vector step and run-member pair, where the program evaluates a prior network
    prior_pair_row: float = 0.0  # per step, pair and n^2 row there (reference mode decays the prior's first layer)

    def train_seconds(self, steps, pairs, rows, prior_pairs=0.0):
        return steps * (self.step + self.pair * pairs + self.pair_row * pairs * rows
                        + (self.prior_pair + self.prior_pair_row * rows) * prior_pairs)


# default: the per-step terms above (the designs rank cells by them); start-up and compile per
# job refitted on the default study's 8 jobs (train_grouping: row, 1-5 n per job, each job
# compiling one init and one training program whatever its number of n), two at a time on a
# 2-core AMD EPYC with AVX2 only on a slow day (`python benchmarks/refit_cost.py --study default`
# in the checkout that ran it): 5.4 s and 16.3 s a job, median error 1%, worst 5%. Before, with a
# job per (K, n): 4.4 s and 9.8 s a job on a faster day, 27 jobs. (The per-step terms above were
# fitted on an AVX-512 EPYC; this machine's own are 1.4-2.4x those.) compile_cached: the AVX-512 EPYC's.
# reference: refitted on 17 of the paper_check study's jobs (50,000 episodes, 8 seeds a job,
# 18-197 s), each timed twice one at a time on a 2-core AMD EPYC with AVX2 only, the fastest
# kept, beside 14 steady-state steps of cells up to K = 16, n = 96 (boot alone builds no prior,
# so the prior has terms of its own): jobs within 32% (median 4%), steps within 49% (median 13%)
# (`python benchmarks/refit_cost.py --runs benchmarks/data/paper_check_timed/pass1 .../pass2
# --samples benchmarks/data/paper_check_timed/steps.csv`). compile_cached: loading a program
# from JAX's cache, measured there before (no job of the fit loads one).
COSTS = {
    "default": Coefficients(STEP_SECONDS, PAIR_SECONDS, PAIR_ROW_SECONDS, startup=5.4, compile=16.3,
                            compile_cached=2.1),
    "reference": Coefficients(0.0, 4.39e-05, 5.92e-08, startup=3.4, compile=10.2, compile_cached=2.5,
                              prior_pair=9.54e-06, prior_pair_row=2.05e-08),
}


def coefficients(config: TrainConfig) -> Coefficients:
    """The cost coefficients of `config`'s fidelity mode."""
    return COSTS.get(config.fidelity, COSTS["default"])


def has_prior(configs) -> bool:
    """Whether the program that trains `configs` together builds and evaluates a prior: some cell's
    kind has one with a scale other than 0 (boot trained alone builds none, `agent.Agent.adds_prior`;
    boot batched with bootrp runs bootrp's program with the prior scaled by 0)."""
    return any(KINDS[c.kind].has_prior and c.prior_scale != 0 for c in configs)


def members(kind: str, ensemble_size) -> np.ndarray:
    """Networks trained per seed: K for an ensemble kind, 1 otherwise (kinds.KINDS)."""
    return np.asarray(ensemble_size) if KINDS[kind].ensemble else np.ones_like(np.asarray(ensemble_size))


def cell_cost_seconds(kind: str, ensemble_size, hardness, seeds, episodes: int, num_envs: int = NUM_ENVS,
                      fidelity: str = "default") -> np.ndarray:
    """CPU-seconds to train `seeds` seeds of cell (kind, K, n) for `episodes` episodes, the cell
    trained alone (a program of its own), by `fidelity`'s per-step coefficients (`COSTS`).

    The designs rank cells by the default mode's (`fidelity="default"`, whatever the study's
    mode: a study's plans do not move when a coefficient is refitted); the paper study's
    projections price the cells they train in reference mode (`fidelity="reference"`).
    ensemble_size, hardness and seeds broadcast (numpy arrays or scalars);
    returns an array of their broadcast shape (a 0-d array for scalars).
    """
    c = COSTS[fidelity]
    n = np.asarray(hardness, dtype=float)
    width = np.asarray(seeds, dtype=float) * members(kind, ensemble_size)
    steps = WARMUP_STEPS + (int(episodes) * n) // int(num_envs)
    per_step = c.train_seconds(1.0, width, n ** 2, width if KINDS[kind].has_prior else 0.0)
    return np.where(width > 0, steps * per_step, 0.0)


def shard_jobs(have: int, want: int, shard_size: int) -> list[int]:
    """Seeds of each training job that brings a cell from `have` to `want` seeds (shards [a, a + shard_size))."""
    return [min(a + shard_size, want) - a for a in range(0, want, shard_size) if a + shard_size > have]


def schedule_seconds(durations, cores: int) -> float:
    """Wall seconds of jobs run `cores` at a time, started in the given order as cores free up."""
    free = [0.0] * max(1, int(cores))
    for d in durations:
        i = free.index(min(free))
        free[i] += float(d)
    return max(free)


def first_layer_rows(config: TrainConfig) -> int:
    """Rows of the first layer that the n^2 terms count: DeepSea's n * n cells, 0 elsewhere."""
    return config.hardness**2 if config.is_deepsea else 0


def train_seconds(config: TrainConfig, runs: int, prior: bool | None = None,
                  coeffs: Coefficients | None = None, steps: int | None = None) -> float:
    """Projected CPU-core seconds to train `runs` runs of `config` in one program (any environment);
    `prior`: whether that program evaluates a prior (default: `config` trained alone, `has_prior`).
    `coeffs` (default: `coefficients(config)`) and `steps` (default: the config's vector steps)
    let a fit price its own jobs and single steps."""
    pairs = runs * config.members
    prior = has_prior([config]) if prior is None else prior
    coeffs = coefficients(config) if coeffs is None else coeffs
    steps = config.num_vector_steps if steps is None else steps
    return float(coeffs.train_seconds(steps, pairs, first_layer_rows(config), pairs if prior else 0))


def job_seconds(config: TrainConfig, runs: int, cached: bool = False, prior: bool | None = None) -> float:
    """Projected wall seconds of one training job of `runs` runs: start-up, compile (or, `cached`,
    loading a program compiled before from JAX's compilation cache) and training."""
    c = coefficients(config)
    return c.startup + (c.compile_cached if cached else c.compile) + train_seconds(config, runs, prior)


def row_parts_seconds(parts, coeffs: Coefficients | None = None) -> float:
    """Projected training seconds of a job that trains `parts` ([(config, runs, prior)], one per DeepSea
    n of a K row) with one program (`engine.train_groups`): each part's steps at the largest n's rows."""
    largest = max(config.hardness for config, _, _ in parts)
    return sum(train_seconds(dataclasses.replace(config, hardness=largest), runs, prior, coeffs,
                             steps=config.num_vector_steps) for config, runs, prior in parts)


def row_job_seconds(parts) -> float:
    """Projected wall seconds of such a job: one start-up, one compile (init and training programs,
    shared by every n), and `row_parts_seconds`."""
    c = coefficients(parts[0][0])
    return c.startup + c.compile + row_parts_seconds(parts)


def fit_coefficients(jobs, step_samples=()) -> Coefficients:
    """Coefficients fitted to measured jobs, each a dict with `config` (TrainConfig), `runs`,
    `train_seconds`, `compile_seconds`, `wall_seconds` (the run's provenance) and optionally
    `cached` (its program was compiled by an earlier job: JAX's cache loads it); and to
    `step_samples`, each a dict with `config`, `runs` and `step_seconds` (the steady-state seconds
    of one learning vector step, as `benchmarks/refit_cost.py --time` measures them): cells too
    large to time whole, which pin the n^2 terms where the paper's grid needs them.

    Training seconds per job = steps * (a + b * pairs + c * pairs * n^2 [+ (d + e * n^2) * pairs
    where the program evaluates a prior: a job's `prior`, default `has_prior([config])`; d and e
    are fitted only where the jobs include both]), by non-negative least squares on relative
    errors (each row divided by its measured seconds, so short and long jobs weigh alike);
    start-up (wall minus compile minus training) and compile, first and cached, are medians
    over the jobs.
    """
    from scipy.optimize import nnls
    jobs = list(jobs)
    if len(jobs) < 3:
        raise ValueError(f"fit_coefficients needs at least 3 jobs, got {len(jobs)}")
    step_samples = list(step_samples)
    # a job's parts: (config, runs, steps, rows, prior); a row job's (`parts`: one per n) at its largest n's rows
    def parts(r, steps):
        if "parts" in r:
            largest = max(first_layer_rows(c) for c, _, _ in r["parts"])
            return [(c, runs, c.num_vector_steps, largest, prior) for c, runs, prior in r["parts"]]
        return [(r["config"], r["runs"], steps, first_layer_rows(r["config"]), r.get("prior", has_prior([r["config"]])))]

    rows_in = [(parts(j, None), j["train_seconds"]) for j in jobs]
    rows_in = [([(c, runs, c.num_vector_steps if steps is None else steps, rows, prior)
                 for c, runs, steps, rows, prior in ps], seconds) for ps, seconds in rows_in]
    rows_in += [(parts(s, 1), s["step_seconds"]) for s in step_samples]
    mixed = len({prior for ps, _ in rows_in for *_, prior in ps}) > 1
    X = []
    for ps, seconds in rows_in:
        total = np.zeros(5 if mixed else 3)
        for config, runs, steps, rows, prior in ps:
            pairs = runs * config.members
            row = [1.0, pairs, pairs * rows] + ([pairs * prior, pairs * rows * prior] if mixed else [])
            total += np.array(row, dtype=float) * steps
        X.append(total / seconds)
    X = np.array(X)
    scale = X.max(axis=0)
    scale[scale == 0] = 1.0
    solution, _ = nnls(X / scale, np.ones(len(X)))
    solution = solution / scale
    a, b, c = solution[:3]
    d, e = solution[3:] if mixed else (0.0, 0.0)
    startup = float(np.median([j["wall_seconds"] - j["compile_seconds"] - j["train_seconds"] for j in jobs]))
    first = [j["compile_seconds"] for j in jobs if not j.get("cached", False)]
    cached = [j["compile_seconds"] for j in jobs if j.get("cached", False)]
    compile_s = float(np.median(first or cached))
    return Coefficients(float(a), float(b), float(c), startup=max(0.0, startup), compile=compile_s,
                        compile_cached=float(np.median(cached)) if cached else compile_s, prior_pair=float(d),
                        prior_pair_row=float(e))


def runtime_minutes(config: TrainConfig, runs: int, attempt: int = 1, prior: bool | None = None) -> int:
    """A deliberately generous wall-time limit for one training job, doubling per attempt.

    Start-up and compiling (2 min at most), then twice the cost model, rounded up
    to at least 5 minutes. A GPU runs faster.
    """
    return runtime_minutes_of(train_seconds(config, runs, prior), attempt)


def runtime_minutes_of(training_seconds: float, attempt: int = 1) -> int:
    """`runtime_minutes` of a job whose projected training takes `training_seconds`."""
    minutes = 2 + 2 * training_seconds / 60
    return int(math.ceil(max(5, minutes))) * 2 ** (max(1, attempt) - 1)


def mem_mb(config: TrainConfig, runs: int, attempt: int = 1) -> int:
    """Host memory of one training job in MB, doubling per attempt.

    JAX and the libraries take about 2 GB; each run's replay buffer and each
    network's first layer (parameters, gradient, two AdamW moments and XLA's
    working copies: 6 arrays of rows x width floats) add the rest.
    """
    rows = first_layer_rows(config)
    pairs = runs * config.members
    buffer_mb = runs * config.rb_size * 64 / 1e6
    first_layer_mb = 6 * pairs * max(rows, 1) * config.hidden_sizes[0] * 4 / 1e6
    mb = 2048 + 2 * pairs + buffer_mb + first_layer_mb
    return int(math.ceil(mb)) * 2 ** (max(1, attempt) - 1)
