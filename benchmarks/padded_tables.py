"""Cell tables padded to a larger n: the same bits, at what price per step?

A DeepSea run's state has tables over the n * n cells: the first layer's
kernel (a row lookup), its AdamW moments, the prior and target tables. A
training program shared by several n of one K row (fewer programs to compile
per study) would hold them padded to the row's largest n. This script checks
what that would cost and whether it changes any run:

- each cell is initialised by the engine's own init program at its n;
- the state's cell axes are padded with zeros to n_max * n_max rows;
- the engine's segment program, built for n_max * n_max cells (the
  environment still of size n), trains it through every logging segment;
- the padding is cut off again and every leaf of the final state (parameters,
  optimiser moments, prior and target, replay buffer, tracker) is compared bit
  for bit with the same runs trained unpadded; the training seconds of both
  (after compiling) are printed side by side.

One CPU device with one thread, as a workflow training job runs.

    python benchmarks/padded_tables.py                                  # the default cells
    python benchmarks/padded_tables.py --cell bootrp:8:9:17 --episodes 4000 --seeds 12
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "workflow"))
sys.path.insert(0, str(HERE))
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_cpu_multi_thread_eigen=false"]).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from compare_original import cpu_model  # noqa: E402
from deepsea_scaling.config import TrainConfig  # noqa: E402
from deepsea_scaling.engine import (  # noqa: E402
    _stack_hyper, _uniform_choices, _with_choices, compile_options, default_hyper, make_train, run_segment, seed_keys,
)

# (kind, K, n, n_max, fidelity): the default study's smallest n of a K row padded to the row's largest,
# and reference-mode cells of the paper's small boot rows
CELLS = ["bootrp:4:5:13", "boot:4:9:13", "bootrp:12:11:19", "eps:1:10:13",
         "bootrp:4:9:14:reference", "boot:2:6:11:reference"]


def is_key(x) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def resize(x, axis_from: int, axis_to: int):
    """Zero-pad (or cut) every axis of length `axis_from` to `axis_to` (keys unchanged)."""
    if is_key(x) or axis_from not in x.shape:
        return x
    x = np.asarray(x)
    if axis_to > axis_from:
        return np.pad(x, [(0, axis_to - axis_from) if d == axis_from else (0, 0) for d in x.shape])
    return x[tuple(slice(0, axis_to) if d == axis_from else slice(None) for d in x.shape)]


def train(config: TrainConfig, seeds: range, n_max: int | None) -> tuple[object, float]:
    """Final state of `seeds` of `config` trained unpadded (n_max None) or padded; training seconds."""
    trainer = make_train(config)
    cells = trainer.env.obs_size
    hyper, axes = _stack_hyper([default_hyper(config)] * len(seeds))
    static = _uniform_choices(hyper, axes)
    state = jax.jit(jax.vmap(_with_choices(trainer.init, static), in_axes=(0, axes)))(seed_keys(config, seeds), hyper)
    padded = cells if n_max is None else n_max * n_max
    if padded != cells:
        lengths = {d for leaf in jax.tree.leaves(state) for d in leaf.shape}
        if padded in lengths:
            raise SystemExit(f"{padded} is also the length of another axis of the state: choose another n_max")
        trainer = make_train(config, env=dataclasses.replace(trainer.env, obs_size=padded))
        state = jax.tree.map(lambda x: resize(x, cells, padded), state)
    segment = (jax.jit(jax.vmap(_with_choices(partial(run_segment, trainer), static, 2), in_axes=(0, None, axes)),
                       donate_argnums=0)
               .lower(state, jnp.int32(0), hyper).compile(compile_options(hot_loop=True)))
    t0 = time.perf_counter()
    for point in range(config.num_log_points):
        state = segment(state, jnp.int32(point), hyper)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - t0
    return jax.tree.map(lambda x: resize(x, padded, cells), state), seconds


def differing_leaves(a, b) -> list[str]:
    bad = []
    for (path, x), y in zip(jax.tree.leaves_with_path(a), jax.tree.leaves(b)):
        if is_key(x):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.tobytes() != y.tobytes():
            bad.append(jax.tree_util.keystr(path))
    return bad


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cell", action="append", help=f"kind:K:n:n_max[:fidelity] (default: {' '.join(CELLS)})")
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=12)
    args = ap.parse_args(argv)
    print(f"CPU: {cpu_model()}; JAX {jax.__version__}; {args.seeds} seeds, {args.episodes:,} episodes; one device, one thread")
    print("| cell | padded to | leaves differing | runs discovered | training s, unpadded | padded | price |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for spec in args.cell or CELLS:
        kind, k, n, n_max, *fidelity = spec.split(":")
        config = TrainConfig(kind=kind, ensemble_size=int(k), hardness=int(n), num_episodes=args.episodes,
                             fidelity=fidelity[0] if fidelity else "default")
        seeds = range(args.seeds)
        plain, t_plain = train(config, seeds, None)
        padded, t_padded = train(config, seeds, int(n_max))
        bad = differing_leaves(plain, padded)
        found = int(np.isfinite(np.asarray(plain.tracker.member_first_discovery)).any(axis=-1).sum())
        print(f"| {kind} K={k} n={n}{' ' + fidelity[0] if fidelity else ''} | {n_max} | "
              f"{len(bad)}{': ' + ', '.join(bad[:4]) if bad else ''} | {found}/{args.seeds} | "
              f"{t_plain:.2f} | {t_padded:.2f} | {t_padded / t_plain:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
