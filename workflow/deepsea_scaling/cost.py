"""CPU cost of training one cell, from the project's fitted cost model.

The model is the one `benchmarks/project_study_cost.py` fitted on one CPU core
(2026-11-22, benchmarks/README.md) and `study.estimate_runtime_minutes` uses
(there doubled for safety): per vector step of the learning loop,

    0.2 ms + 20 µs per seed-member pair + 40 ns per pair and first-layer row,

with n² first-layer rows on DeepSea(n) and ceil(episodes / num_envs) · n vector
steps per run. Start-up and compiling (about two minutes per job) are left
out: they depend on how cells are grouped into jobs, not on the design.
"""

from __future__ import annotations

import numpy as np

STEP_SECONDS = 0.2e-3      # fixed per vector step
PAIR_SECONDS = 2e-5        # per seed-member pair
PAIR_ROW_SECONDS = 4e-8    # per seed-member pair and first-layer row
NUM_ENVS = 24              # TrainConfig.num_envs default


def members(kind: str, ensemble_size) -> np.ndarray:
    """Networks trained per seed: 1 for ε-greedy (`eps`), K otherwise."""
    return np.ones_like(np.asarray(ensemble_size)) if kind == "eps" else np.asarray(ensemble_size)


def cell_cost_seconds(kind: str, ensemble_size, hardness, seeds, episodes: int, num_envs: int = NUM_ENVS) -> np.ndarray:
    """CPU-seconds to train `seeds` seeds of cell (kind, K, n) for `episodes` episodes.

    ensemble_size, hardness and seeds broadcast (numpy arrays or scalars);
    returns an array of their broadcast shape (a 0-d array for scalars).
    """
    n = np.asarray(hardness, dtype=float)
    width = np.asarray(seeds, dtype=float) * members(kind, ensemble_size)
    steps = -(-int(episodes) // int(num_envs)) * n
    per_step = STEP_SECONDS + PAIR_SECONDS * width + PAIR_ROW_SECONDS * width * n ** 2
    return np.where(width > 0, steps * per_step, 0.0)
