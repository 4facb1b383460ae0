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

`--tables` checks the one product that can round differently by row count,
the Q-table over the cells (the default mode's target table): 4 members'
table over the first c cells against the same rows of their 361-cell table,
computed as the engine does (one product over every cell) and in a loop over
blocks of a fixed row count (`lax.map`, which XLA cannot merge back into one
product), with the time of a 169-cell table for 12 runs.

One CPU device with one thread, as a workflow training job runs.

    python benchmarks/padded_tables.py                                  # the default cells
    python benchmarks/padded_tables.py --cell bootrp:8:9:17 --episodes 4000 --seeds 12
    python benchmarks/padded_tables.py --tables
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
from deepsea_scaling.networks import QNetwork, ensemble_apply_shared, init_ensemble  # noqa: E402
from deepsea_scaling.engine import (  # noqa: E402
    _stack_hyper, _uniform_choices, _with_choices, compile_options, default_hyper, make_train, run_segment, seed_keys,
)

# (kind, K, n, n_max, fidelity): the default study's smallest n of a K row padded to the row's largest,
# and reference-mode cells of the paper's small boot rows
TABLE_CELLS = [25, 36, 49, 64, 81, 121, 169]
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


def q_table(network: QNetwork, params, cells: int, block: int | None) -> jax.Array:
    """Every member's Q over cells [0, cells): one product (block None) or a loop over blocks of `block` rows."""
    if block is None:
        return ensemble_apply_shared(network, params, jnp.arange(cells))
    count = -(-cells // block)
    index = jnp.minimum(jnp.arange(count * block), cells - 1).reshape(count, block)
    out = jax.lax.map(lambda rows: ensemble_apply_shared(network, params, rows), index)  # (blocks, K, block, A)
    members, actions = out.shape[1], out.shape[-1]
    return jnp.moveaxis(out, 0, 1).reshape(members, count * block, actions)[:, :cells]


def tables(runs: int = 12, members: int = 4, largest: int = 361) -> None:
    network = QNetwork(hidden_sizes=(24, 24), num_actions=2, num_cells=largest)
    one = init_ensemble(network, jax.random.key(3), members, jnp.int32(0))
    params = jax.tree.map(lambda x: jnp.stack([x] * runs), one)

    def first_cells(cells: int):
        first = params["params"]["RowLookupDense_0"]
        return {"params": {**params["params"], "RowLookupDense_0": {**first, "kernel": first["kernel"][:, :, :cells]}}}

    def program(cells: int, block: int | None):
        return jax.jit(jax.vmap(lambda p: q_table(network.clone(num_cells=cells), p, cells, block)))

    print(f"| Q-table of {members} members, computed | " + " | ".join(f"{c} cells" for c in TABLE_CELLS)
          + f" | 169 cells, {runs} runs, ms |")
    print("| --- " * (len(TABLE_CELLS) + 2) + "|")
    plain = {c: np.asarray(program(c, None)(first_cells(c))) for c in TABLE_CELLS}
    for block in (None, 16, 32, 64):
        whole = np.asarray(program(largest, block)(first_cells(largest)))
        marks = []
        for c in TABLE_CELLS:
            table = np.asarray(program(c, block)(first_cells(c)))
            mark = "=" if table.tobytes() == whole[:, :, :c].tobytes() else "differs"
            marks.append(mark + (" (as today)" if block and table.tobytes() == plain[c].tobytes() else ""))
        run, p = program(169, block), first_cells(169)
        run(p).block_until_ready()
        t0 = time.perf_counter()
        for _ in range(50):
            run(p).block_until_ready()
        name = "as the engine does: one product" if block is None else f"in blocks of {block} rows"
        print(f"| {name} | " + " | ".join(marks) + f" | {(time.perf_counter() - t0) / 50 * 1e3:.2f} |", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cell", action="append", help=f"kind:K:n:n_max[:fidelity] (default: {' '.join(CELLS)})")
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--tables", action="store_true", help="only the Q-table's rounding by row count")
    args = ap.parse_args(argv)
    if args.tables:
        print(f"CPU: {cpu_model()}; JAX {jax.__version__}; one device, one thread; '=': the same bits as the same "
              "rows of the 361-cell table")
        return tables()
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
