"""Side by side: the research code (knyazer/nanodqn) against this project's engine.

Trains the same (kind, K, n) cells with both and prints, per cell, successes out
of trials and the discovery rate of each, a two-sided Fisher exact test, and per
kind a pooled test (Cochran-Mantel-Haenszel over the cells, and Fisher on the
summed counts), with the CPU model and the wall times.

The original side runs the research code exactly as its lock pins it, in its own
virtual environment, as a subprocess per cell that calls

    schedule_runs(N, Config(kind=..., ensemble_size=K, hardness=n, num_episodes=E), fresh_dir)

from its `main.py` (one row per seed; `weak_convergence` is discovery). Its seeds
come from a hash of its Config; seed i's key is `split(key(hash), N)[i]`, which
with JAX's partitionable threefry does not depend on N. Where the tree and the
interpreter are is given by options or by the environment:

    DEEPSEA_ORIGINAL_DIR      the nanodqn source tree (the folder with main.py)
    DEEPSEA_ORIGINAL_PYTHON   the interpreter of its virtual environment
                              (default: <DEEPSEA_ORIGINAL_DIR>/../venv/bin/python)

The project side runs `python -m deepsea_scaling.train` for the same cells with
seeds 0:S; anything after `--` is passed through to it (for example
`-- --fixed-action-map`, or `-- --fidelity reference`: every behaviour of the
research code, docs/RESEARCH_CODE.md).

Both sides cache one row per run in CSV files and skip cells already there
with enough seeds, so a comparison can be redone from the caches alone. The
committed `benchmarks/data/original_runs.csv` holds the original side's rows.

    # both sides, default grid (16 cells: K 2, 8; n 4, 6, 10, 14), 24 seeds each,
    # the project with extra options
    python benchmarks/compare_original.py -- --fixed-action-map
    # only the original (long: run it in the background)
    python benchmarks/compare_original.py --side original --original-csv runs.csv
    # only the report, from the caches
    python benchmarks/compare_original.py --side none
    # the project's side cut from a study's runs (no training): paper_check's
    # 50,000-episode runs at 15,000 episodes against the original trained there
    python benchmarks/compare_original.py --num-episodes 15000 --seeds 16 \
        --kinds boot --ensemble-sizes 2,8 --hardnesses 8,10 --project-table results/paper_check/runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_ORIGINAL_CSV = HERE / "data" / "original_runs.csv"

ROW_COLUMNS = [
    "source", "variant", "kind", "ensemble_size", "hardness", "num_episodes", "seed",
    "discovered", "episodes_to_discovery", "all_members_discovered",
    "episodes_to_all_members", "final_diversity", "cell_wall_s", "cell_seeds", "cpu",
]

# Runs inside the original's virtual environment, with its tree on sys.path and a
# scratch folder as the working directory (its main.py writes `.jax_cache` there).
ORIGINAL_DRIVER = r"""
import json, sys, time
t0 = time.time()
from main import schedule_runs, Config
spec = json.loads(sys.argv[1])
cfg = Config(kind=spec["kind"], ensemble_size=spec["ensemble_size"],
             hardness=spec["hardness"], num_episodes=spec["num_episodes"])
df = schedule_runs(spec["seeds"], cfg, spec["fresh_dir"])
rows = []
for i, r in df.reset_index(drop=True).iterrows():
    cm = r["collapse_metric"]
    rows.append({
        "seed": int(i),
        "discovered": bool(r["weak_convergence"]),
        "episodes_to_discovery": int(r["time_to_weak"]),
        "all_members_discovered": bool(r["strong_convergence"]),
        "episodes_to_all_members": int(r["time_to_strong"]),
        "final_diversity": float(cm[-1]),
    })
json.dump({"rows": rows, "wall_s": time.time() - t0, "autoseed": cfg.autoseed()},
          open(spec["result"], "w"))
"""


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def parse_list(text: str, cast=int) -> list:
    return [cast(x) for x in text.split(",") if x.strip()]


def grid(args) -> list[tuple[str, int, int]]:
    return [(kind, K, n) for kind in args.kinds for K in args.ensemble_sizes
            for n in args.hardnesses]


def load_cache(path: Path) -> pd.DataFrame:
    if path.exists():
        return pd.read_csv(path, dtype={"variant": str}, keep_default_na=False,
                           na_values={c: [""] for c in ROW_COLUMNS if c != "variant"})
    return pd.DataFrame(columns=ROW_COLUMNS)


def append_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    old = load_cache(path)
    new = pd.DataFrame(rows, columns=ROW_COLUMNS)
    key = ["variant", "kind", "ensemble_size", "hardness", "num_episodes", "seed"]
    both = pd.concat([old, new], ignore_index=True) if len(old) else new
    both = both.drop_duplicates(subset=key, keep="last")
    tmp = path.with_name(f".{path.name}.tmp")
    both.sort_values(key).to_csv(tmp, index=False)
    os.replace(tmp, path)


def cell_rows(cache: pd.DataFrame, variant: str, kind: str, K: int, n: int, E: int,
              seeds: int) -> pd.DataFrame:
    sel = cache[(cache["variant"] == variant) & (cache["kind"] == kind)
                & (cache["ensemble_size"] == K) & (cache["hardness"] == n)
                & (cache["num_episodes"] == E)]
    sel = sel[sel["seed"] < seeds]
    return sel if len(sel) == seeds else sel.iloc[0:0]


def project_variant(args) -> str:
    """The label of the project's rows: its extra options, or the run table they were cut from."""
    if args.project_table:
        return f"table {args.project_table} cut at {args.num_episodes}"
    return shlex.join(args.project_args)


def rows_from_table(args, cpu: str) -> None:
    """The project's rows from runs already trained (a run table, or a folder of group tables), each run
    cut at --num-episodes (`budget.truncate_runs`: exact for boot and bootrp, whose training does not
    depend on the total budget). Only the grid's cells; every run the table has (any number of seeds)."""
    sys.path.insert(0, str(REPO / "workflow"))
    from deepsea_scaling.budget import truncate_runs

    path = Path(args.project_table)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    runs = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    variant = project_variant(args)
    cache_path = Path(args.project_csv)
    cache = load_cache(cache_path)
    rows = []
    for kind, K, n in grid(args):
        cell = runs[(runs["kind"] == kind) & (runs["ensemble_size"] == K) & (runs["hardness"] == n)]
        done = cache[(cache["variant"] == variant) & (cache["kind"] == kind) & (cache["ensemble_size"] == K)
                     & (cache["hardness"] == n) & (cache["num_episodes"] == args.num_episodes)]
        if cell.empty or len(done) >= len(cell):
            print(f"project {kind} K={K} n={n}: {'cached' if len(done) else 'not in the table'}", flush=True)
            continue
        cut = truncate_runs(cell, args.num_episodes)
        for _, r in cut.iterrows():
            div = np.asarray(r["diversity"], dtype=float) if "diversity" in cut else np.array([np.nan])
            rows.append({
                "source": "project", "variant": variant, "kind": kind, "ensemble_size": K, "hardness": n,
                "num_episodes": args.num_episodes, "seed": int(r["seed"]), "discovered": bool(r["discovered"]),
                "episodes_to_discovery": r["episodes_to_discovery"],
                "all_members_discovered": bool(r["all_members_discovered"]),
                "episodes_to_all_members": r["episodes_to_all_members"],
                "final_diversity": float(div[-1]) if div.size else np.nan,
                "cell_wall_s": np.nan, "cell_seeds": len(cut), "cpu": cpu,
            })
        print(f"project {kind} K={K} n={n}: {int(cut['discovered'].sum())}/{len(cut)} (cut from "
              f"{int(cell['num_episodes'].iloc[0])} episodes)", flush=True)
    if rows:
        append_rows(cache_path, rows)


def run_original(args, cpu: str) -> None:
    orig_dir = args.original_dir or os.environ.get("DEEPSEA_ORIGINAL_DIR")
    if not orig_dir:
        sys.exit("the original's tree: give --original-dir or set DEEPSEA_ORIGINAL_DIR")
    orig_dir = Path(orig_dir).resolve()
    python = (args.original_python or os.environ.get("DEEPSEA_ORIGINAL_PYTHON")
              or str(orig_dir.parent / "venv" / "bin" / "python"))
    if not (orig_dir / "main.py").exists():
        sys.exit(f"no main.py in {orig_dir}")
    cache_path = Path(args.original_csv)
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="nanodqn-"))
    scratch.mkdir(parents=True, exist_ok=True)
    for kind, K, n in grid(args):
        if len(cell_rows(load_cache(cache_path), "", kind, K, n, args.num_episodes, args.seeds)):
            print(f"original {kind} K={K} n={n}: cached", flush=True)
            continue
        fresh = Path(tempfile.mkdtemp(prefix=f"{kind}_{K}_{n}_", dir=scratch))
        spec = {"kind": kind, "ensemble_size": K, "hardness": n,
                "num_episodes": args.num_episodes, "seeds": args.seeds,
                "fresh_dir": str(fresh / "results"), "result": str(fresh / "result.json")}
        env = dict(os.environ, PYTHONPATH=str(orig_dir), JAX_PLATFORMS="cpu")
        t0 = time.time()
        proc = subprocess.run([python, "-c", ORIGINAL_DRIVER, json.dumps(spec)], cwd=fresh,
                              env=env, check=False, capture_output=True, text=True)
        wall = time.time() - t0
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            sys.exit(f"original {kind} K={K} n={n} failed (exit {proc.returncode})")
        result = json.loads((fresh / "result.json").read_text())
        rows = [dict(r, source="original", variant="", kind=kind, ensemble_size=K, hardness=n,
                     num_episodes=args.num_episodes, cell_wall_s=round(wall, 1),
                     cell_seeds=args.seeds, cpu=cpu) for r in result["rows"]]
        append_rows(cache_path, rows)
        k = sum(r["discovered"] for r in rows)
        print(f"original {kind} K={K} n={n}: {k}/{len(rows)} in {wall:.0f} s", flush=True)


def run_project(args, cpu: str) -> None:
    if args.project_table:
        return rows_from_table(args, cpu)
    cache_path = Path(args.project_csv)
    variant = project_variant(args)
    out_dir = Path(tempfile.mkdtemp(prefix="deepsea-project-"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "workflow")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    for kind, K, n in grid(args):
        if len(cell_rows(load_cache(cache_path), variant, kind, K, n, args.num_episodes,
                         args.seeds)):
            print(f"project {kind} K={K} n={n}: cached", flush=True)
            continue
        out = out_dir / f"{kind}_{K}_{n}.parquet"
        cmd = [sys.executable, "-m", "deepsea_scaling.train", "--kind", kind,
               "--ensemble-size", str(K), "--hardness", str(n),
               "--num-episodes", str(args.num_episodes), "--seeds", f"0:{args.seeds}",
               "--out", str(out), "--quiet", *args.project_args]
        t0 = time.time()
        proc = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True)
        wall = time.time() - t0
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            sys.exit(f"project {kind} K={K} n={n} failed (exit {proc.returncode})")
        df = pd.read_parquet(out)
        rows = []
        for _, r in df.iterrows():
            div = np.asarray(r["diversity"], dtype=float) if "diversity" in df else np.array([np.nan])
            rows.append({
                "source": "project", "variant": variant, "kind": kind, "ensemble_size": K,
                "hardness": n, "num_episodes": args.num_episodes, "seed": int(r["seed"]),
                "discovered": bool(r["discovered"]),
                "episodes_to_discovery": r["episodes_to_discovery"],
                "all_members_discovered": bool(r["all_members_discovered"]),
                "episodes_to_all_members": r["episodes_to_all_members"],
                "final_diversity": float(div[-1]) if div.size else np.nan,
                "cell_wall_s": round(wall, 1), "cell_seeds": args.seeds, "cpu": cpu,
            })
        append_rows(cache_path, rows)
        k = sum(r["discovered"] for r in rows)
        print(f"project {kind} K={K} n={n}: {k}/{len(rows)} in {wall:.0f} s", flush=True)


def pooled_tests(tables: list[np.ndarray]) -> tuple[float, float]:
    """(CMH p, Fisher p on the summed table) for 2x2 tables [[s1, f1], [s2, f2]]."""
    from scipy.stats import fisher_exact
    from statsmodels.stats.contingency_tables import StratifiedTable

    summed = np.sum(tables, axis=0)
    p_fisher = fisher_exact(summed)[1]
    # Strata with a zero margin carry no information and make CMH undefined.
    informative = [t for t in tables if (t.sum(0) > 0).all() and (t.sum(1) > 0).all()]
    p_cmh = (StratifiedTable(informative).test_null_odds(correction=True).pvalue
             if informative else float("nan"))
    return float(p_cmh), float(p_fisher)


def report(args, cpu: str) -> str:
    from scipy.stats import fisher_exact

    orig = load_cache(Path(args.original_csv))
    proj = load_cache(Path(args.project_csv))
    variant = project_variant(args)
    lines = [f"CPU (this machine): {cpu}, {os.cpu_count()} logical CPUs", ""]
    if len(orig):
        lines.append(f"CPU (original rows): {', '.join(sorted(set(map(str, orig['cpu']))))}")
    if len(proj):
        lines.append(f"CPU (project rows): {', '.join(sorted(set(map(str, proj['cpu']))))}")
    lines += ["", (f"Budget: {args.num_episodes} episodes; project options: "
                   f"`{variant or '(defaults)'}`"), "",
              ("Episodes to discovery: median over the discovered runs, counted from 1 (the "
               "original's `time_to_weak` + 1; it counts learning-phase episodes only)."), "",
              ("| kind | K | n | original | rate | med. ep. | wall s | project | rate | med. ep. "
               "| wall s | Fisher p |"),
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    pooled: dict[str, list] = {}
    walls = {"original": 0.0, "project": 0.0}
    for kind, K, n in grid(args):
        o = cell_rows(orig, "", kind, K, n, args.num_episodes, args.seeds)
        if not len(o):  # fewer seeds than asked: show what there is
            o = orig[(orig["variant"] == "") & (orig["kind"] == kind)
                     & (orig["ensemble_size"] == K) & (orig["hardness"] == n)
                     & (orig["num_episodes"] == args.num_episodes)]
        p = proj[(proj["variant"] == variant) & (proj["kind"] == kind)
                 & (proj["ensemble_size"] == K) & (proj["hardness"] == n)
                 & (proj["num_episodes"] == args.num_episodes)]
        cells = []
        for d, side in ((o, "original"), (p, "project")):
            if len(d):
                s, t = int(d["discovered"].astype(bool).sum()), len(d)
                w = float(d["cell_wall_s"].iloc[0])
                walls[side] += 0.0 if np.isnan(w) else w
                found = d[d["discovered"].astype(bool)]["episodes_to_discovery"].astype(float)
                med = found.median() + (1 if side == "original" else 0) if len(found) else None
                cells.append((s, t, f"{s}/{t}", f"{s / t:.2f}",
                              "-" if med is None else f"{med:.0f}", "-" if np.isnan(w) else f"{w:.0f}"))
            else:
                cells.append((None, None, "-", "-", "-", "-"))
        (s1, t1, *c1), (s2, t2, *c2) = cells
        if s1 is not None and s2 is not None:
            table = np.array([[s1, t1 - s1], [s2, t2 - s2]])
            pv = f"{fisher_exact(table)[1]:.3f}"
            pooled.setdefault(kind, []).append(table)
        else:
            pv = "-"
        lines.append(f"| {kind} | {K} | {n} | {' | '.join(c1)} | {' | '.join(c2)} | {pv} |")
    lines += ["", "| kind | original | rate | project | rate | CMH p | pooled Fisher p |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for kind, tables in pooled.items():
        tot = np.sum(tables, axis=0)
        p_cmh, p_fisher = pooled_tests(tables)
        lines.append(
            f"| {kind} | {tot[0, 0]}/{tot[0].sum()} | {tot[0, 0] / tot[0].sum():.3f} | "
            f"{tot[1, 0]}/{tot[1].sum()} | {tot[1, 0] / tot[1].sum():.3f} | {p_cmh:.3f} | "
            f"{p_fisher:.3f} |")
    lines += ["", (f"Wall time, sum over cells: original {walls['original']:.0f} s, "
                   f"project {walls['project']:.0f} s")]
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--side", choices=["both", "original", "project", "none"], default="both",
                    help="which side to train (cells already cached are skipped); "
                         "none: only the report, from the caches")
    ap.add_argument("--kinds", type=lambda s: parse_list(s, str), default=["boot", "bootrp"])
    ap.add_argument("--ensemble-sizes", type=parse_list, default=[2, 8])
    ap.add_argument("--hardnesses", type=parse_list, default=[4, 6, 10, 14])
    ap.add_argument("--num-episodes", type=int, default=5000)
    ap.add_argument("--seeds", type=int, default=24, help="runs per cell on each side")
    ap.add_argument("--original-dir", default=None,
                    help="the research code's tree (default: $DEEPSEA_ORIGINAL_DIR)")
    ap.add_argument("--original-python", default=None,
                    help="its venv's interpreter (default: $DEEPSEA_ORIGINAL_PYTHON, else "
                         "venv/bin/python beside the tree)")
    ap.add_argument("--original-csv", default=str(DEFAULT_ORIGINAL_CSV),
                    help="cache of the original's rows (read, and appended to)")
    ap.add_argument("--project-csv", default="compare_project_runs.csv",
                    help="cache of the project's rows (read, and appended to)")
    ap.add_argument("--project-table", default=None,
                    help="the project's side from runs already trained (a run table or a folder of group "
                         "tables, e.g. results/paper_check/runs), each run cut at --num-episodes; no training")
    ap.add_argument("--scratch", default=None,
                    help="folder for the original's per-cell output (default: a temp folder)")
    args = ap.parse_args(argv)
    args.project_args = extra
    cpu = cpu_model()
    t0 = time.time()
    if args.side in ("both", "original"):
        run_original(args, cpu)
    if args.side in ("both", "project"):
        run_project(args, cpu)
    print(report(args, cpu))
    print(f"\nThis invocation: {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
