"""Where a training job's seconds go besides training: imports, tracing and compiling each program.

    python benchmarks/job_overhead.py                                   # bootrp K=8 n=12, default mode, 32 runs
    python benchmarks/job_overhead.py --cell boot:2:6 --fidelity reference --episodes 15000
    python benchmarks/job_overhead.py --opt-levels 2,1                  # the hot loop at LLVM levels 2 and 1

Runs in a fresh process without JAX's persistent compilation cache, as a job of
a study's first run does, and prints one line of seconds: the imports of JAX and
the engine, then for the init program and the training segment program (the hot
loop, once per `--opt-levels` entry) the tracing and lowering (`lower`) and
XLA's compile (`compile`), the summary (on the host; the program it
replaced is timed beside it), and one logging
segment's run (the fastest of three, after one warm-up call), so a compile
lever's price in training speed shows beside its gain. Run it twice or more:
single timings on a shared machine vary by 10-40%.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

T0 = time.perf_counter()
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)  # every program compiled, as in a study's first run
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", default="bootrp:8:12", metavar="KIND:K:N")
    parser.add_argument("--fidelity", default="default", choices=["default", "reference"])
    parser.add_argument("--episodes", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--opt-levels", default="2", metavar="L1,L2",
                        help="LLVM optimisation levels of the hot loop to compile and time (the engine uses 2)")
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from deepsea_scaling import engine
    from deepsea_scaling.config import TrainConfig
    from deepsea_scaling.io import cpu_model
    from deepsea_scaling.metrics import summarize
    from deepsea_scaling.train import resolve_config

    imports = time.perf_counter() - T0
    kind, k, n = args.cell.split(":")
    config, _ = resolve_config(TrainConfig(kind=kind, ensemble_size=int(k), hardness=int(n),
                                           num_episodes=args.episodes, fidelity=args.fidelity))
    trainer = engine.make_train(config)
    keys = engine.seed_keys(config, range(args.runs))
    hyper, axes = engine._stack_hyper([engine.default_hyper(config)] * args.runs)
    static = engine._uniform_choices(hyper, axes)
    init_fn = engine._with_choices(trainer.init, static)
    segment_fn = engine._with_choices(partial(engine.run_segment, trainer), static, 2)

    def timed(fn):
        t = time.perf_counter()
        out = fn()
        return time.perf_counter() - t, out

    row = {"imports": imports}
    with engine._rolled_threefry():
        row["init lower"], init_lowered = timed(lambda: jax.jit(jax.vmap(init_fn, in_axes=(0, axes))).lower(keys, hyper))
    row["init compile"], init = timed(lambda: init_lowered.compile(engine.compile_options(hot_loop=False)))
    state_shape = init_lowered.out_info
    row["segment lower"], segment_lowered = timed(lambda: jax.jit(
        jax.vmap(segment_fn, in_axes=(0, None, axes)), donate_argnums=0).lower(state_shape, jnp.int32(0), hyper))
    for level in (int(x) for x in args.opt_levels.split(",")):
        row[f"segment compile O{level}"], segment = timed(
            lambda: segment_lowered.compile({"xla_backend_optimization_level": level}))

        def one_segment():
            state = segment(init(keys, hyper), jnp.int32(config.num_log_points // 2), hyper)
            jax.block_until_ready(state.tracker.episodes)

        one_segment()
        row[f"segment run O{level}"] = min(timed(one_segment)[0] for _ in range(3))
    final = init(keys, hyper)
    # the engine summarises a finished run on the host (numpy); before, it compiled a third program for it
    row["summary lower+compile (before)"], _ = timed(lambda: jax.jit(jax.vmap(lambda s: summarize(s.tracker)))
                                                     .lower(state_shape).compile(engine.compile_options(hot_loop=False)))
    row["summary on host"], _ = timed(lambda: summarize(jax.tree.map(np.asarray, final.tracker), xp=np))
    print(f"# {args.cell} {args.fidelity} mode, {args.runs} runs, {args.episodes:,} episodes; "
          f"{cpu_model()}, {os.cpu_count()} cores; JAX {jax.__version__}; constant choices: {sorted(static)}")
    print("  ".join(f"{name} {seconds:.2f}" for name, seconds in row.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
