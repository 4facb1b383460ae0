"""One prepared check of the project on whatever accelerator JAX sees (issue 25).

    bash benchmarks/gpu_check.sh --out DIR                 # a GPU machine: at most 8 minutes
    bash benchmarks/gpu_check.sh --out DIR --cpu           # the CPU backend, small sizes and budgets

Phases, in this order, each in fresh processes under its own time guard (a
share of --deadline; a phase that would start past the deadline is reported
as skipped):

1. install: the CUDA build of JAX named in README.md ("Running it"), if
   nvidia-smi lists a GPU that JAX does not see.
2. tests: the fast test tier, `pytest -m "not slow" -q -x` (--skip-tests).
3. throughput: the two cells of benchmarks/train_throughput.py, run by its
   own child program (end to end, compile, run, ms per vector step).
4. frontier: the frontier design's dearest cells at 50,000 episodes in
   reference mode (`FRONTIER_CELLS`), compile seconds and steady-state
   seconds per learning vector step (`project_study_cost.time_cell`: the
   engine's own compile and segment timings, the fastest of --repeats
   segments), at several runs per program.
5. agreement: the same cells and seeds trained on the default device and on
   the CPU backend: discovery counts (Fisher's exact test) and Q-values on
   every DeepSea cell of the initial networks (within float tolerance) and of
   the trained ones (reported).
6. projection: the project's cost model (`project_study_cost`) fitted to the
   frontier timings, projected over the paper study as a grid, under its
   reference design and under a frontier design (simulated studies at the
   published psi, as benchmarks/simulate_designs.py).

Writes DIR/gpu_check.json and DIR/gpu_check.md (after every phase, so a run
cut short leaves what it measured).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

# The dearest cells of the paper_check study (config.yaml: the frontier design started from
# the published law, K rows 2, 4, 8, 16), its rounds simulated (20 studies, cost.py's costs):
# at the published psi, bootrp K 10 n 32 and boot K 16 n 24 are trained in every study and
# cost 9.5% and 8% of it; if psi is 0.93 the K 16 row reaches n 30-32 (bootrp K 16 n 32 in
# 8 of 20 studies), the largest cell it trains. On DeepSea boot trains bootrp's program (its
# prior scaled by 0), so each time is both kinds'.
FRONTIER_CELLS = [("bootrp", 10, 32), ("boot", 16, 24), ("bootrp", 16, 32)]
# Agreement: one (K, n) of both kinds, reference mode, where about a quarter of the runs
# discover at 5,000 episodes (benchmarks/README.md, the comparison with the research code).
AGREE_CELL = (2, 6)
FISHER_MIN_P = 0.01  # discovery counts of the two backends agree unless Fisher's p is below this
# Initial Q-values: |dQ| <= Q_RTOL * max |Q|. Float32 on one backend and the other differs in
# the last bits; XLA may run float32 matrix products on an NVIDIA GPU's TF32 tensor cores
# (10-bit mantissa, relative error about 1e-3), which this tolerance admits.
Q_RTOL = 5e-3
DEFAULTS = {  # sizes and budgets: the GPU's, then --cpu's
    "gpu": dict(sizes=[32, 256, 1024], learn_steps=50, throughput_episodes=None, agree_seeds=64,
                agree_episodes=5000),
    "cpu": dict(sizes=[4, 8], learn_steps=15, throughput_episodes=500, agree_seeds=8, agree_episodes=1000),
}
# Each phase's time guard, as a share of --deadline (install runs only where needed).
SHARES = {"install": 0.30, "tests": 0.12, "throughput": 0.12, "frontier": 0.40, "agreement": 0.15,
          "projection": 0.04}
MIN_PHASE_S = 10  # a phase with less time than this left is skipped
RESULT = "RESULT "  # a worker's result lines on stdout


# ------------------------------------------------------------------ WORKERS (fresh processes)
def emit(**result) -> None:
    print(RESULT + json.dumps(result), flush=True)


def paper_cells() -> dict:
    """(kind, K, n) -> TrainConfig of the paper study (50,000 episodes, fidelity: reference)."""
    import yaml

    from deepsea_scaling import study as study_lib

    study = study_lib.load_study(yaml.safe_load((ROOT / "config.yaml").read_text()), "paper")
    return {(c.kind, c.ensemble_size, c.hardness): c.config for c in study.cells()}


def worker_probe(spec: dict) -> None:
    """The device JAX sees and the versions; whether the project imports."""
    from importlib import metadata

    import jax

    device = jax.devices()[0]
    try:
        memory_gb = (device.memory_stats() or {}).get("bytes_limit", 0) / 2**30 or None
    except Exception:  # not every backend reports memory
        memory_gb = None
    try:
        import deepsea_scaling.engine  # noqa: F401
        project = "ok"
    except Exception as e:
        project = f"{type(e).__name__}: {e}"
    emit(backend=jax.default_backend(), device_kind=device.device_kind, devices=len(jax.devices()),
         memory_gb=memory_gb, jax=jax.__version__, jaxlib=metadata.version("jaxlib"), project_import=project)


def worker_frontier(spec: dict) -> None:
    """Each cell at each size: `time_cell`'s compile and steady-state seconds per vector step.

    A measurement that the previous one of its cell says would not end within
    the budget is reported as skipped; a failure (out of memory, say) as failed.
    """
    from project_study_cost import time_cell

    cells, end = paper_cells(), time.monotonic() + spec["budget"]
    for kind, k, n in spec["cells"]:
        last = None
        for size in spec["sizes"]:
            row = dict(kind=kind, K=k, n=n, seeds=size)
            steps = (1 + spec["repeats"]) * spec["learn_steps"] + 2
            if last and last["compile_s"] + steps * last["step_s"] * size / last["seeds"] > end - time.monotonic():
                emit(**row, status="skipped: would pass the phase's time guard")
                continue
            print(f"  timing {kind} K={k} n={n}, {size} runs in one program ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                m = time_cell(cells[(kind, k, n)], size, spec["learn_steps"], spec["repeats"])
            except Exception as e:
                emit(**row, status=f"failed: {type(e).__name__}: {str(e)[:300]}")
                continue
            last = dict(row, **m)
            steps_50k = cells[(kind, k, n)].num_vector_steps
            emit(**row, status="ok", compile_s=m["compile_s"], step_s=m["step_s"],
                 wall_s=time.perf_counter() - t0, hours_at_50k=steps_50k * m["step_s"] / 3600)


def worker_agree(spec: dict) -> None:
    """Train both kinds of AGREE_CELL on this process's backend; save discoveries and Q-values.

    One program for both kinds (boot runs bootrp's, its prior scaled by 0, as in
    `engine.train_batch`), compiled with the engine's options: `engine.run`, the
    whole run as one pure function, and the Q-values of every member on every
    DeepSea cell of the initial and the trained networks.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from deepsea_scaling import engine
    from deepsea_scaling.config import TrainConfig
    from deepsea_scaling.metrics import summarize

    k, n = spec["cell"]
    configs = {kind: TrainConfig(kind=kind, ensemble_size=k, hardness=n, num_episodes=spec["episodes"],
                                 fidelity="reference") for kind in ("boot", "bootrp")}
    trainer, cells = engine.make_train(configs["bootrp"]), jnp.arange(n * n)

    def one_run(key, hyper):
        start, end = trainer.init(key, hyper), engine.run(trainer, key, hyper)  # XLA computes init once
        q = [trainer.agent.q_shared(s.params, s.prior, cells, hyper) for s in (start, end)]
        return summarize(end.tracker)["discovered"], *q

    def inputs(cfg):
        return engine.seed_keys(cfg, range(spec["seeds"])), engine.default_hyper(cfg)

    t0 = time.perf_counter()
    program = jax.jit(jax.vmap(one_run, in_axes=(0, None))).lower(*inputs(configs["bootrp"])).compile(
        engine.compile_options(hot_loop=True))
    compile_s = time.perf_counter() - t0
    for kind, cfg in configs.items():
        t0 = time.perf_counter()
        discovered, q_initial, q_trained = (np.asarray(x) for x in program(*inputs(cfg)))
        np.savez(Path(spec["dir"]) / f"{kind}.npz", discovered=discovered, q_initial=q_initial, q_trained=q_trained)
        emit(kind=kind, backend=jax.default_backend(), discovered=int(discovered.sum()), seeds=spec["seeds"],
             compile_s=compile_s, seconds=time.perf_counter() - t0)


WORKERS = {"probe": worker_probe, "frontier": worker_frontier, "agree": worker_agree}


# ------------------------------------------------------------------ THE HOST SIDE
def run_guarded(cmd: list[str], timeout: float, env: dict) -> tuple[str, list[dict], list[str]]:
    """Run `cmd` in its own process group, echoing its output; kill the group at `timeout`.

    Returns (status: ok / timed out / failed (exit N), the RESULT lines' dicts,
    the other output lines). Results printed before a timeout are kept.
    """
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    results, lines = [], []

    def read():
        for line in proc.stdout:
            if line.startswith(RESULT):
                results.append(json.loads(line[len(RESULT):]))
            else:
                lines.append(line.rstrip("\n"))
                print("    " + line, end="", file=sys.stderr, flush=True)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        status = "ok" if proc.wait(timeout=max(timeout, 1)) == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        status = f"timed out after {timeout:.0f} s"
    finally:  # also on Ctrl-C: no process of the group outlives its phase
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=10)
    return status, results, lines


def child_env(args, platforms: str | None = None) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "workflow"), env.get("PYTHONPATH")) if p)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if platforms or args.cpu:
        env["JAX_PLATFORMS"] = platforms or "cpu"
    return env


def run_worker(args, name: str, spec: dict, timeout: float, platforms: str | None = None):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, json.dumps(spec)]
    return run_guarded(cmd, timeout, child_env(args, platforms))


def machine_info(args) -> dict:
    """Device, backend and versions (a probe process), the host's CPU, the GPU nvidia-smi lists."""
    from simulate_designs import cpu_model

    status, results, lines = run_worker(args, "probe", {}, 120)
    info = results[0] if results else {"backend": None, "device_kind": None, "error": status, "tail": lines[-5:]}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        smi = None
    return {**info, "nvidia_smi": smi, "cpu_model": cpu_model(), "cpu_cores": os.cpu_count(),
            "load_average": round(os.getloadavg()[0], 1), "python": platform.python_version()}


def readme_jax_spec() -> str:
    """The CUDA build of JAX that README.md's "Running it" names, e.g. jax[cuda12]==0.10.2."""
    match = re.search(r'pip install "(jax\[cuda\d+\]==[\w.]+)"', (ROOT / "README.md").read_text())
    if not match:
        raise ValueError("README.md names no `pip install \"jax[cudaNN]==VERSION\"`")
    return match.group(1)


def phase_install(args, budget: float, report: dict) -> dict:
    """pip install README's CUDA build of JAX where nvidia-smi lists a GPU that JAX does not see."""
    machine = report["machine"]
    if args.cpu:
        return {"status": "skipped", "why": "--cpu"}
    if machine.get("backend") == "gpu":
        return {"status": "skipped", "why": f"JAX {machine.get('jax')} already sees the GPU"}
    if not machine.get("nvidia_smi"):
        return {"status": "skipped", "why": "nvidia-smi lists no GPU"}
    spec = readme_jax_spec()
    status, _, lines = run_guarded([sys.executable, "-m", "pip", "install", spec], budget, child_env(args))
    report["machine"] = machine_info(args)
    return {"status": status, "spec": spec, "backend_after": report["machine"].get("backend"), "tail": lines[-5:]}


def phase_tests(args, budget: float, report: dict) -> dict:
    """The fast test tier; on a timeout, how far it got."""
    if args.skip_tests:
        return {"status": "skipped", "why": "--skip-tests"}
    cmd = [sys.executable, "-m", "pytest", "-m", "not slow", "-q", "-x", "-p", "no:cacheprovider"]
    status, _, lines = run_guarded(cmd, budget, child_env(args))
    summary = next((line for line in reversed(lines) if re.search(r"\d+ (passed|failed|errors?)\b", line)), "")
    counts = {word: int(num) for num, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected)", summary)}
    progress = re.findall(r"\[\s*(\d+)%\]", "\n".join(lines))
    return {"status": status, "counts": counts, "progress_percent": int(progress[-1]) if progress else 0,
            "tail": lines[-8:] if status != "ok" else lines[-1:]}


def phase_throughput(args, budget: float, report: dict) -> dict:
    """train_throughput.py's cells, each by its own child program (a fresh process, end to end)."""
    from train_throughput import CELLS, CHILD

    end, rows, status = time.monotonic() + budget, [], "ok"
    for name in args.throughput_cells:
        spec = dict(CELLS[name], num_episodes=args.throughput_episodes or CELLS[name]["num_episodes"])
        row = dict(cell=name, kind=spec["kind"], K=spec["ensemble_size"], n=spec["hardness"], seeds=spec["seeds"],
                   episodes=spec["num_episodes"])
        if end - time.monotonic() < MIN_PHASE_S:
            rows.append(dict(row, status="skipped: past the phase's time guard"))
            status = "cut by its time guard"
            continue
        t0 = time.perf_counter()
        run_status, _, lines = run_guarded([sys.executable, "-c", CHILD, json.dumps(spec)], end - time.monotonic(),
                                           child_env(args))
        e2e = time.perf_counter() - t0
        row["status"] = run_status
        try:  # the child program's figures: its last line that is a JSON object
            r = json.loads(next(line for line in reversed(lines) if line.startswith("{")))
        except (StopIteration, ValueError):
            rows.append(dict(row, tail=lines[-5:]))
            status = run_status if run_status != "ok" else "failed"
            continue
        ms = 1000 * r["run_s"] / r["steps"]
        rows.append(dict(row, end_to_end_s=e2e, import_s=r["import_s"], compile_s=r["compile_s"], run_s=r["run_s"],
                         vector_steps=r["steps"], ms_per_vector_step=ms,
                         env_steps_per_s=1000 / ms * r["num_envs"] * spec["seeds"], peak_rss_mb=r["peak_rss_mb"]))
        print(f"  {name}: end to end {e2e:.1f} s, compile {r['compile_s']:.1f} s, {ms:.3f} ms per vector step",
              file=sys.stderr, flush=True)
    return {"status": status, "cells": rows}


def phase_frontier(args, budget: float, report: dict) -> dict:
    """FRONTIER_CELLS at each size (`worker_frontier`), and where run-steps per second saturate."""
    cells = FRONTIER_CELLS[:args.frontier_cells]
    spec = dict(cells=cells, sizes=args.sizes, learn_steps=args.learn_steps, repeats=args.repeats, budget=budget - 15)
    status, results, lines = run_worker(args, "frontier", spec, budget)
    measured = {(r["kind"], r["K"], r["n"], r["seeds"]) for r in results}
    results += [dict(kind=kd, K=k, n=n, seeds=s, status=f"not measured: the worker {status}")
                for kd, k, n in cells for s in args.sizes if (kd, k, n, s) not in measured]
    ok = [r for r in results if r["status"] == "ok"]
    for r in ok:
        r["run_steps_per_s"] = r["seeds"] / r["step_s"]
    saturation = {}
    for kd, k, n in cells:  # the fewest runs per program within 20% of the best run-steps per second
        rows = sorted((r for r in ok if (r["kind"], r["K"], r["n"]) == (kd, k, n)), key=lambda r: r["seeds"])
        if rows:
            best = max(r["run_steps_per_s"] for r in rows)
            saturation[f"{kd} K={k} n={n}"] = next(r["seeds"] for r in rows if r["run_steps_per_s"] >= 0.8 * best)
    return {"status": status, "learn_steps": args.learn_steps, "repeats": args.repeats, "measurements": results,
            "saturates_at_runs": saturation, **({"tail": lines[-5:]} if status != "ok" else {})}


def phase_agreement(args, budget: float, report: dict) -> dict:
    """`worker_agree` on the default device, then on the CPU backend; compare what they saved."""
    import tempfile

    import numpy as np
    from scipy.stats import fisher_exact

    end = time.monotonic() + budget
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for side, platforms in (("device", None), ("cpu", "cpu")):
            Path(tmp, side).mkdir()
            spec = dict(cell=AGREE_CELL, seeds=args.agree_seeds, episodes=args.agree_episodes, dir=str(Path(tmp, side)))
            status, results, lines = run_worker(args, "agree", spec, end - time.monotonic(), platforms)
            if status != "ok":
                return {"status": status, "passed": False, "side": side, "tail": lines[-5:]}
            runs[side] = {r["kind"]: r for r in results}
        rows = []
        for kind in ("boot", "bootrp"):
            a, b = (np.load(Path(tmp, side, f"{kind}.npz")) for side in ("device", "cpu"))
            s, t, seeds = int(a["discovered"].sum()), int(b["discovered"].sum()), args.agree_seeds
            dq = {q: float(np.max(np.abs(a[q] - b[q]))) for q in ("q_initial", "q_trained")}
            scale = {q: float(np.max(np.abs(b[q]))) for q in ("q_initial", "q_trained")}
            rows.append(dict(
                kind=kind, K=AGREE_CELL[0], n=AGREE_CELL[1], seeds=seeds, episodes=args.agree_episodes,
                discovered_device=s, discovered_cpu=t,
                fisher_p=float(fisher_exact([[s, seeds - s], [t, seeds - t]]).pvalue),
                same_outcome_seeds=int(np.sum(a["discovered"] == b["discovered"])),
                q_initial_max_abs_diff=dq["q_initial"], q_initial_max_abs=scale["q_initial"],
                q_initial_ok=dq["q_initial"] <= Q_RTOL * max(scale["q_initial"], 1e-6),
                q_trained_max_abs_diff=dq["q_trained"], q_trained_max_abs=scale["q_trained"],
                **{f"{side}_{key}": runs[side][kind][key] for side in runs
                   for key in ("backend", "compile_s", "seconds")}))
    passed = all(r["fisher_p"] >= FISHER_MIN_P and r["q_initial_ok"] for r in rows)
    return {"status": "ok", "passed": passed, "fisher_min_p": FISHER_MIN_P, "q_rtol": Q_RTOL, "cells": rows}


def simulated_training(study, worlds, index: int, frontier: dict) -> dict:
    """(kind, K, n) -> seeds that the workflow's rounds (`plan_next_round`) train in simulated study `index`."""
    from deepsea_scaling.designs import plan_next_round

    trained: dict = {}
    for r in itertools.count():
        wanted = plan_next_round(study.design, worlds.kinds, worlds.ks, worlds.ns, worlds.outcome(index, trained), r,
                                 seeds=study.seeds_per_cell, limit=study.reference_limit, frontier=frontier)
        if not wanted:
            return trained
        trained.update(wanted)


def phase_projection(args, budget: float, report: dict) -> dict:
    """The paper study on this device: project_study_cost's model fitted to the frontier timings.

    grid: every cell and shard (`project_study`); reference: the paper study's
    own design; frontier: the same grid under the frontier design at the
    published half-widths (as benchmarks/simulate_designs.py); paper_check:
    that study's design and settings, where config.yaml has it. Sequential
    designs: means over simulated studies at the published psi, one compile
    per trained cell.
    """
    import dataclasses

    import numpy as np
    import yaml
    from project_study_cost import features, fit_cost_model, project_study
    from simulate_designs import TARGETS

    from deepsea_scaling import study as study_lib
    from deepsea_scaling.cost import cell_cost_seconds
    from deepsea_scaling.simulate import PUBLISHED_DISPERSION, PUBLISHED_PSI, SimulatedWorlds

    ok = [r for r in report["phases"]["frontier"].get("measurements", []) if r["status"] == "ok"]
    if not ok:
        return {"status": "skipped", "why": "no frontier timings"}
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    study = study_lib.load_study(config, "paper")
    cells = {(c.kind, c.ensemble_size, c.hardness): c.config for c in study.cells()}
    X = [features(r["seeds"], cells[(r["kind"], r["K"], r["n"])].members, r["n"]) for r in ok]
    coef, worst = fit_cost_model(X, [r["step_s"] for r in ok])
    compile_s = float(np.median([r["compile_s"] for r in ok]))
    grid = project_study(study, coef, compile_s)
    cpu_h = sum(float(cell_cost_seconds(c.kind, c.ensemble_size, c.hardness, study.seeds_per_cell,
                                        study.num_episodes)) for c in study.cells()) / 3600
    designs = {"grid": dict(cells=len(cells), train_h=sum(grid["train_h"].values()), compile_h=grid["compile_h"],
                            total_h=grid["total_h"], cpu_core_h_cost_model=cpu_h)}
    ks, ns = sorted({k for _, k, _ in cells}), sorted({n for _, _, n in cells})
    worlds = SimulatedWorlds(PUBLISHED_PSI, PUBLISHED_DISPERSION, ks, ns, studies=args.design_studies, seed=0)
    plans = {"reference": (study, None), "frontier": (dataclasses.replace(study, design="frontier"), {
        kind: dataclasses.replace(study.frontier_settings(kind), target_half_width=TARGETS[kind]) for kind in TARGETS})}
    try:
        check = study_lib.load_study(config, "paper_check")
        plans["paper_check"] = (check, {kind: check.frontier_settings(kind) for kind in check.kinds})
    except (study_lib.StudyError, TypeError) as e:  # no such study (yet), or settings this checkout cannot read
        print(f"  no paper_check projection: {e}", file=sys.stderr)
    end = time.monotonic() + budget
    for name, (design_study, frontier) in plans.items():
        per_study = []
        for i in range(worlds.studies):
            if per_study and time.monotonic() > end - 2:  # the time guard: fewer simulated studies
                break
            trained = simulated_training(design_study, worlds, i, frontier)
            train_s = sum(cells[c].num_vector_steps * float(features(s, cells[c].members, c[2]) @ coef)
                          for c, s in trained.items())
            cpu_s = sum(float(cell_cost_seconds(c[0], c[1], c[2], s, study.num_episodes)) for c, s in trained.items())
            per_study.append((len(trained), train_s / 3600, len(trained) * compile_s / 3600, cpu_s / 3600))
        c, t, comp, cpu = np.mean(per_study, axis=0)
        designs[name] = dict(cells=float(c), train_h=float(t), compile_h=float(comp), total_h=float(t + comp),
                             cpu_core_h_cost_model=float(cpu), simulated_studies=len(per_study))
    return {"status": "ok", "study": study.name, "episodes": study.num_episodes,
            "model": dict(a=coef[0], b_SK=coef[1], c_SKn2=coef[2], d_S=coef[3], samples=len(ok),
                          worst_relative_error=worst, compile_s=compile_s),
            "designs": designs}


PHASES = {"install": phase_install, "tests": phase_tests, "throughput": phase_throughput,
          "frontier": phase_frontier, "agreement": phase_agreement, "projection": phase_projection}


# ------------------------------------------------------------------ REPORT
def _f(x, digits=3) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}g}"


def markdown(report: dict) -> str:
    m, ph = report["machine"], report["phases"]
    out = [f"# GPU check: {m.get('device_kind')} ({m.get('backend')})", "",
           f"{report['started']}, {report.get('total_s', 0):.0f} s in all, deadline {report['settings']['deadline']} s"
           f"{' (--cpu)' if report['settings']['cpu'] else ''}.", "",
           "| machine | |", "| --- | --- |"]
    keys = ("device_kind", "backend", "devices", "memory_gb", "nvidia_smi", "jax", "jaxlib", "cpu_model", "cpu_cores",
            "load_average", "python", "project_import")
    out += [f"| {key} | {m.get(key)} |" for key in keys]
    out += ["", "| phase | status | seconds | time guard s |", "| --- | --- | --- | --- |"]
    out += [f"| {name} | {r.get('status')}{' (' + r['why'] + ')' if r.get('why') else ''} | "
            f"{r.get('seconds', 0):.1f} | {r.get('time_guard_s', 0):.0f} |" for name, r in ph.items()]
    if ph.get("tests", {}).get("counts"):
        out += ["", f"Tests: {ph['tests']['counts']}, last progress {ph['tests']['progress_percent']}%."]
    if ph.get("throughput", {}).get("cells"):
        out += ["", "## train_throughput.py cells", "",
                "| cell | seeds | episodes | status | end to end s | compile s | run s | ms per vector step | "
                "env steps/s |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        out += [f"| {r['cell']}: {r['kind']} K={r['K']} n={r['n']} | {r['seeds']} | {r['episodes']} | {r['status']} | "
                f"{_f(r.get('end_to_end_s'))} | {_f(r.get('compile_s'))} | {_f(r.get('run_s'))} | "
                f"{_f(r.get('ms_per_vector_step'))} | {_f(r.get('env_steps_per_s'))} |"
                for r in ph["throughput"]["cells"]]
    if ph.get("frontier", {}).get("measurements"):
        fr = ph["frontier"]
        out += ["", f"## Frontier cells, reference mode (fastest of {fr['repeats']} segments of "
                f"{fr['learn_steps']} learning steps)", "",
                "| cell | runs per program | status | compile s | ms per vector step | run-steps per s | "
                "h for these runs at 50,000 episodes |", "| --- | --- | --- | --- | --- | --- | --- |"]
        out += [f"| {r['kind']} K={r['K']} n={r['n']} | {r['seeds']} | {r['status']} | {_f(r.get('compile_s'))} | "
                f"{_f(1e3 * r['step_s'] if 'step_s' in r else None)} | {_f(r.get('run_steps_per_s'))} | "
                f"{_f(r.get('hours_at_50k'))} |" for r in fr["measurements"]]
        out += ["", "Fewest runs per program within 20% of the best run-steps per second: "
                + (", ".join(f"{c}: {s}" for c, s in fr["saturates_at_runs"].items()) or "-") + "."]
    if ph.get("agreement", {}).get("cells"):
        ag = ph["agreement"]
        out += ["", f"## Agreement: default device against the CPU backend ({'passed' if ag['passed'] else 'FAILED'})",
                "", "| cell | seeds x episodes | discovered device / CPU | Fisher p | same outcome | "
                "max abs dQ initial (max abs Q) | max abs dQ trained (max abs Q) |",
                "| --- | --- | --- | --- | --- | --- | --- |"]
        out += [f"| {r['kind']} K={r['K']} n={r['n']} | {r['seeds']} x {r['episodes']} | {r['discovered_device']} / "
                f"{r['discovered_cpu']} | {_f(r['fisher_p'])} | {r['same_outcome_seeds']}/{r['seeds']} | "
                f"{_f(r['q_initial_max_abs_diff'])} ({_f(r['q_initial_max_abs'])}) | "
                f"{_f(r['q_trained_max_abs_diff'])} ({_f(r['q_trained_max_abs'])}) |" for r in ag["cells"]]
        out += ["", f"Passed: every Fisher p >= {ag['fisher_min_p']} and initial |dQ| <= {ag['q_rtol']} x max |Q|; "
                "trained Q-values are reported, not judged (a flipped near-tie changes a run's path)."]
    if ph.get("projection", {}).get("designs"):
        pr, mod = ph["projection"], ph["projection"]["model"]
        out += ["", f"## Projection: study '{pr['study']}' on this device ({pr['episodes']:,} episodes)", "",
                f"Seconds per vector step = {_f(mod['a'])} + {_f(mod['b_SK'])}·S·K + {_f(mod['c_SKn2'])}·S·K·n² "
                f"+ {_f(mod['d_S'])}·S (S runs of K members; fitted to the {mod['samples']} frontier timings, worst "
                f"relative error {mod['worst_relative_error']:.0%}: other cells are extrapolated); compile "
                f"{mod['compile_s']:.1f} s per program. grid: every cell and shard; the sequential designs: means "
                "over simulated studies at the published psi, trained round by round as the workflow plans them, "
                "one compile per trained cell; one job at a time on one device.", "",
                "| design | simulated studies | cells | train h | compile h | total h | CPU-core-h, cost.py's model |",
                "| --- | --- | --- | --- | --- | --- | --- |"]
        out += [f"| {d} | {r.get('simulated_studies', '-')} | {r['cells']:.0f} | {r['train_h']:.3g} | "
                f"{r['compile_h']:.3g} | {r['total_h']:.3g} | {r['cpu_core_h_cost_model']:.3g} |"
                for d, r in pr["designs"].items()]
    return "\n".join(out) + "\n"


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return WORKERS[sys.argv[2]](json.loads(sys.argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--cpu", action="store_true", help="the CPU backend, with its small sizes and budgets")
    parser.add_argument("--skip-tests", action="store_true", help="leave out the fast test tier")
    parser.add_argument("--deadline", type=float, default=480, help="seconds for everything (default 8 minutes)")
    parser.add_argument("--sizes", type=int, nargs="+", help="runs per program of the frontier cells "
                        "(GPU: 32 256 1024; --cpu: 4 8)")
    parser.add_argument("--learn-steps", type=int, help="learning steps per timed segment (GPU 50, --cpu 15)")
    parser.add_argument("--repeats", type=int, default=3, help="timed segments per frontier cell; the fastest counts")
    parser.add_argument("--frontier-cells", type=int, default=len(FRONTIER_CELLS), help="time the first N cells")
    parser.add_argument("--throughput-cells", nargs="+", default=["named", "large"], choices=["named", "large"],
                        help="cells of train_throughput.py to run")
    parser.add_argument("--throughput-episodes", type=int, help="episodes of the throughput cells "
                        "(GPU: theirs; --cpu 500)")
    parser.add_argument("--agree-seeds", type=int, help="seeds per kind of the agreement (GPU 64, --cpu 8)")
    parser.add_argument("--agree-episodes", type=int, help="episodes of the agreement (GPU 5000, --cpu 1000)")
    parser.add_argument("--design-studies", type=int, default=20, help="simulated studies per design")
    args = parser.parse_args()
    for key, value in DEFAULTS["cpu" if args.cpu else "gpu"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    t_start, deadline = time.monotonic(), time.monotonic() + args.deadline
    report = {"started": datetime.datetime.now().isoformat(timespec="seconds"),
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "machine": machine_info(args), "phases": {}}
    print(f"gpu check on {report['machine'].get('device_kind')} ({report['machine'].get('backend')}), "
          f"deadline {args.deadline:.0f} s", file=sys.stderr, flush=True)
    for name, phase in PHASES.items():
        left = deadline - time.monotonic()
        if left < MIN_PHASE_S:
            result = {"status": "skipped: past the deadline"}
        else:
            budget = min(SHARES[name] * args.deadline, left)
            print(f"[{time.monotonic() - t_start:5.0f} s] {name} (time guard {budget:.0f} s)", file=sys.stderr,
                  flush=True)
            t0 = time.monotonic()
            try:
                result = phase(args, budget, report)
            except Exception as e:
                result = {"status": f"failed: {type(e).__name__}: {e}"}
            result.update(seconds=time.monotonic() - t0, time_guard_s=budget)
        print(f"[{time.monotonic() - t_start:5.0f} s] {name}: {result['status']}", file=sys.stderr, flush=True)
        report["phases"][name] = result
        report["total_s"] = time.monotonic() - t_start
        write(report, args.out)
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
