"""The engine against the research code, like for like, on the paper-scale panel.

Each cell (kind:K:n) is trained with the same seeds count and episodes by both
sides, each as a fresh process (no compilation cache: a study's first job),
one process after the other on a quiet machine, and timed from process start
to table written. Printed per cell: wall and CPU-seconds (user + system of the
process and its threads) of each side, per run, and the ratios, with the CPU
model beside them.

    # both sides on the panel (32 seeds, 15,000 episodes, reference mode)
    python benchmarks/speed_panel.py --original-dir ../nanodqn
    # this project only, on one XLA CPU device (one core) instead of every core
    python benchmarks/speed_panel.py --side project --cpu-devices 1
    # the table alone, from the cached rows
    python benchmarks/speed_panel.py --side none

The original side is the research code as its lock pins it, in its own virtual
environment (see benchmarks/compare_original.py: DEEPSEA_ORIGINAL_DIR,
DEEPSEA_ORIGINAL_PYTHON). The project side is `python -m deepsea_scaling.train
--fidelity reference` with `--cpu-devices` as given (default: every core
this process may use, as the research code uses them). Every timing is appended
to a CSV (default benchmarks/data/speed_panel.csv), one row per process, so
the table is redone from it and repeated timings show their spread (the table
keeps each side's fastest).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from compare_original import ORIGINAL_DRIVER, cpu_model  # noqa: E402
from profile_step import parse_cell  # noqa: E402

PANEL = ["boot:2:6", "boot:8:11", "bootrp:8:18", "bootrp:16:20"]
COLUMNS = ["side", "setting", "kind", "ensemble_size", "hardness", "num_episodes", "seeds", "discovered",
           "wall_s", "cpu_s", "compile_s", "train_s", "cpu", "date"]


def timed(cmd: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run `cmd`; (process, wall seconds, CPU seconds of the child: user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, **kwargs)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode})")
    return proc, wall, cpu


def run_project(kind: str, k: int, n: int, args) -> dict:
    out = Path(tempfile.mkdtemp(prefix="deepsea-panel-")) / "runs.parquet"
    env = {key: value for key, value in os.environ.items() if key != "JAX_COMPILATION_CACHE_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "workflow")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    cmd = [sys.executable, "-m", "deepsea_scaling.train", "--kind", kind, "--ensemble-size", str(k),
           "--hardness", str(n), "--num-episodes", str(args.num_episodes), "--seeds", f"0:{args.seeds}",
           "--fidelity", "reference", "--cpu-devices", str(args.cpu_devices), "--out", str(out), "--quiet"]
    _, wall, cpu = timed(cmd, env=env)
    discovered = int(pd.read_parquet(out, columns=["discovered"])["discovered"].sum())
    sidecar = json.loads(out.with_suffix(".json").read_text())  # the engine's own split of the process
    setting = f"reference, cpu-devices {args.cpu_devices}" + (f", {args.note}" if args.note else "")
    return {"setting": setting, "discovered": discovered, "wall_s": wall, "cpu_s": cpu,
            "compile_s": sidecar["compile_seconds"], "train_s": sidecar["run_seconds"]}


def run_original(kind: str, k: int, n: int, args) -> dict:
    orig_dir = Path(args.original_dir or os.environ.get("DEEPSEA_ORIGINAL_DIR") or "")
    if not (orig_dir / "main.py").exists():
        raise SystemExit("the original's tree: give --original-dir (the folder with main.py) or set DEEPSEA_ORIGINAL_DIR")
    python = args.original_python or os.environ.get("DEEPSEA_ORIGINAL_PYTHON") or str(orig_dir.resolve().parent / "venv" / "bin" / "python")
    fresh = Path(tempfile.mkdtemp(prefix=f"nanodqn-{kind}-{k}-{n}-"))
    spec = {"kind": kind, "ensemble_size": k, "hardness": n, "num_episodes": args.num_episodes, "seeds": args.seeds,
            "fresh_dir": str(fresh / "results"), "result": str(fresh / "result.json")}
    env = dict(os.environ, PYTHONPATH=str(orig_dir.resolve()), JAX_PLATFORMS="cpu")
    _, wall, cpu = timed([python, "-c", ORIGINAL_DRIVER, json.dumps(spec)], cwd=fresh, env=env)
    rows = json.loads((fresh / "result.json").read_text())["rows"]
    return {"setting": "its lock", "discovered": sum(r["discovered"] for r in rows), "wall_s": wall, "cpu_s": cpu}


def append(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    old = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=COLUMNS)
    both = pd.concat([old, pd.DataFrame([row], columns=COLUMNS)], ignore_index=True) if len(old) else pd.DataFrame([row], columns=COLUMNS)
    tmp = path.with_name(f".{path.name}.tmp")
    both.to_csv(tmp, index=False)
    os.replace(tmp, path)


def report(table: pd.DataFrame, cells, args) -> str:
    """Markdown: per cell each side's fastest process (and how many were timed), per run, and the ratios."""
    lines = ["| cell | original wall (CPU) s | per run | this project wall (CPU) s | start-up + compile + training | "
             "per run | setting | wall ratio | CPU ratio |", "| --- | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: |"]
    for kind, k, n in cells:
        sel = table[(table.kind == kind) & (table.ensemble_size == k) & (table.hardness == n)
                    & (table.num_episodes == args.num_episodes) & (table.seeds == args.seeds)]
        orig = sel[sel.side == "original"].sort_values("wall_s")
        o = orig.iloc[0] if len(orig) else pd.Series({"wall_s": float("nan"), "cpu_s": float("nan")})
        for setting, proj in sel[sel.side == "project"].groupby("setting"):
            p = proj.sort_values("wall_s").iloc[0]
            split = ("" if pd.isna(p.compile_s) else
                     f"{p.wall_s - p.compile_s - p.train_s:.1f} + {p.compile_s:.1f} + {p.train_s:.1f}")
            original = f"{o.wall_s:.1f} ({o.cpu_s:.0f}) x{len(orig)} | {o.wall_s / args.seeds:.2f}" if len(orig) else "not run | -"
            ratios = f"**{o.wall_s / p.wall_s:.1f}x** | {o.cpu_s / p.cpu_s:.1f}x" if len(orig) else "- | -"
            lines.append(
                f"| {kind} K={k} n={n} | {original} | "
                f"{p.wall_s:.1f} ({p.cpu_s:.0f}) x{len(proj)} | {split} | {p.wall_s / args.seeds:.2f} | {setting} | "
                f"{ratios} |")
    cpus = ", ".join(sorted(set(table.cpu.astype(str))))
    return "\n".join([f"CPU: {cpus}; {args.seeds} seeds, {args.num_episodes:,} episodes per run", "", *lines])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--side", choices=["both", "original", "project", "none"], default="both")
    ap.add_argument("--cell", action="append", help=f"kind:K:n (repeatable; default: {' '.join(PANEL)})")
    ap.add_argument("--seeds", type=int, default=32)
    ap.add_argument("--num-episodes", type=int, default=15000)
    ap.add_argument("--cpu-devices", type=int, default=len(os.sched_getaffinity(0)),
                    help="the project side's --cpu-devices (one core each)")
    ap.add_argument("--note", default="", help="appended to the project side's setting (e.g. an engine change under test)")
    ap.add_argument("--repeats", type=int, default=1, help="processes per cell and side")
    ap.add_argument("--original-dir", default=None)
    ap.add_argument("--original-python", default=None)
    ap.add_argument("--csv", default=str(HERE / "data" / "speed_panel.csv"))
    args = ap.parse_args(argv)
    cells = [parse_cell(c) for c in (args.cell or PANEL)]
    path, cpu = Path(args.csv), cpu_model()
    sides = {"both": ["original", "project"], "none": []}.get(args.side, [args.side])
    for kind, k, n in cells:
        for side in sides:
            for _ in range(args.repeats):
                result = (run_original if side == "original" else run_project)(kind, k, n, args)
                row = {"side": side, "kind": kind, "ensemble_size": k, "hardness": n, "num_episodes": args.num_episodes,
                       "seeds": args.seeds, "cpu": cpu, "date": time.strftime("%Y-%m-%d"), **result}
                append(path, row)
                print(f"{side} {kind} K={k} n={n} ({result['setting']}): {result['discovered']}/{args.seeds} discovered, "
                      f"{result['wall_s']:.1f} s wall, {result['cpu_s']:.1f} CPU-s", flush=True)
    if path.exists():
        print(report(pd.read_csv(path), cells, args))


if __name__ == "__main__":
    main()
