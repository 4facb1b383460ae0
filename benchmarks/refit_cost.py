"""Refit the cost model on the training jobs a study actually ran, and print measured against predicted.

    python benchmarks/refit_cost.py --study paper_check          # in the checkout that ran it
    python benchmarks/refit_cost.py --study paper_check --log .snakemake/log/*.snakemake.log
    python benchmarks/refit_cost.py --runs DIR ... --samples steps.csv --time bootrp:2:96 boot:16:96

Every training job writes its provenance beside its table
(results/<study>/runs/*.json): compile seconds, training seconds, the wall
seconds from the start of training to the table written and (newer jobs)
`process_seconds` from the process's start. For older jobs the process wall is
read from Snakemake's logs when given (`--log`: the job's start and finish
stamps, 1 s resolution), else the job's start-up is the fit's median.

The fit (`cost.fit_coefficients`): seconds per vector step
a + b * pairs + c * pairs * n^2 (+ (d + e * n^2) * pairs where the job's
program evaluates a prior network: bootrp, or boot batched with it; boot alone
builds none), with pairs = runs x members, by non-negative least squares on relative errors;
start-up and compile per job as medians. Then each
job's predicted wall (start-up + compile + training) is printed beside its
measured wall, with the worst and the median relative error, and the
coefficients to put in `cost.COSTS`. The machine (CPU model, cores) and the
number of jobs running side by side matter: run the study as you mean to
use the model.

A study's jobs seldom reach the large n where the n^2 terms dominate (the
paper's grid goes to n = 96). `--time kind:K:n ...` times such cells in the
steady state instead (seconds per learning vector step, `--seeds` runs, the
study's fidelity, one CPU device, the engine's own `train_seeds` as
`project_study_cost.py` runs it) and appends them to `--samples` (a CSV);
the fit takes the CSV's rows beside the jobs and prints them measured
against predicted.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from deepsea_scaling import cost  # noqa: E402
from deepsea_scaling.config import TrainConfig, program_family, program_signature  # noqa: E402
from deepsea_scaling.io import cpu_model  # noqa: E402


def snakemake_walls(logs: list[Path]) -> dict[str, float]:
    """Table stem -> seconds from a train_group job's start stamp to its finish stamp, from Snakemake logs."""
    walls: dict[str, float] = {}
    stamp = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
    for log in logs:
        started: dict[str, tuple[datetime, str]] = {}
        when, rule, out = None, None, None
        for line in log.read_text(errors="replace").splitlines():
            m = stamp.match(line.strip())
            if m:
                when, rule, out = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y"), None, None
                continue
            line = line.strip()
            if line.endswith("rule train_group:"):
                rule = "train_group"
            elif rule == "train_group" and line.startswith("output:"):
                out = Path(line.split()[1].rstrip(",")).stem
            elif rule == "train_group" and line.startswith("jobid:") and when is not None and out:
                started[line.split()[1]] = (when, out)
            elif line.startswith("Finished jobid:") and when is not None:
                job = line.split()[2]
                if job in started:
                    t, stem = started.pop(job)
                    walls[stem] = (when - t).total_seconds()
    return walls


def load_jobs(study: str, logs: list[Path], runs_dirs: list[Path] | None = None) -> list[dict]:
    """One dict per training job whose sidecar is in results/<study>/runs (or each of `runs_dirs`);
    a job timed more than once (the same table name in several folders) keeps its fastest timing:
    on a machine with other load or CPU steal, a job's noise only ever adds time."""
    walls = snakemake_walls(logs)
    paths = [p for d in (runs_dirs or [Path("results") / study / "runs"]) for p in sorted(Path(d).glob("*.json"))]
    timings: dict[str, list[dict]] = {}
    for path in paths:
        prov = json.loads(path.read_text())
        configs = [TrainConfig.from_dict(e["config"]) for e in prov["entries"]]
        programs: dict = {}
        for c, e in zip(configs, prov["entries"]):
            programs.setdefault(program_signature(c), []).append((c, e["seeds"][1] - e["seeds"][0]))
        if len({program_family(c) for c in configs}) != 1:
            continue  # cells of several program families (not made by the workflow): no one program's cost
        runs = sum(e["seeds"][1] - e["seeds"][0] for e in prov["entries"])
        process = prov.get("process_seconds", walls.get(path.stem))
        row = {} if len(programs) == 1 else {"parts": [
            (cells[0][0], sum(r for _, r in cells), cost.has_prior([c for c, _ in cells])) for cells in programs.values()]}
        timings.setdefault(path.stem, []).append(dict(
            name=path.stem, config=max(configs, key=lambda c: c.hardness), runs=runs, prior=cost.has_prior(configs), **row,
            train_seconds=prov["run_seconds"],
            compile_seconds=prov["compile_seconds"], wall_seconds=prov["wall_seconds"],
            process_seconds=process, started=prov.get("started_utc", ""), cpu=prov.get("host", {}).get("cpu_model")))
    jobs = []
    for name, times in timings.items():
        fastest = min(times, key=lambda j: j["process_seconds"] if j["process_seconds"] is not None else j["wall_seconds"])
        jobs.append({**fastest, "timings": len(times), "started": min(j["started"] for j in times)})
    return jobs


SAMPLE_COLUMNS = ["kind", "K", "n", "runs", "fidelity", "step_seconds", "cpu_model", "measured_utc"]


def time_samples(cells: list[str], fidelity: str, seeds: int, learn_steps: int) -> list[dict]:
    """Steady-state seconds per learning vector step of each `kind:K:n` cell, `seeds` runs, one CPU device."""
    from datetime import timezone

    from deepsea_scaling.train import use_cpu_devices
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from project_study_cost import time_cell
    use_cpu_devices(1)
    out = []
    for cell in cells:
        kind, k, n = cell.split(":")
        config = TrainConfig(kind=kind, ensemble_size=int(k), hardness=int(n), fidelity=fidelity)
        m = time_cell(config, seeds, learn_steps, repeats=2)
        out.append(dict(kind=kind, K=int(k), n=int(n), runs=seeds, fidelity=fidelity, step_seconds=m["step_s"],
                        cpu_model=cpu_model(), measured_utc=datetime.now(timezone.utc).isoformat(timespec="seconds")))
        print(f"timed {cell}: {m['step_s'] * 1e3:.2f} ms per vector step ({seeds} runs)", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default="paper_check")
    parser.add_argument("--log", type=Path, nargs="*", default=[], help="Snakemake logs of the study's runs")
    parser.add_argument("--since", default="", help="only jobs started at or after this UTC time (ISO)")
    parser.add_argument("--runs", type=Path, nargs="*", default=None, metavar="DIR",
                        help="read the jobs' sidecars from these folders instead of results/<study>/runs "
                             "(e.g. the same jobs timed again: each job keeps its fastest timing)")
    parser.add_argument("--samples", type=Path, help="CSV of steady-state step timings to fit beside the jobs")
    parser.add_argument("--time", nargs="+", default=[], metavar="KIND:K:N",
                        help="time these cells' steady-state steps first and append them to --samples")
    parser.add_argument("--seeds", type=int, default=8, help="runs per timed cell (default 8, a paper_check shard)")
    parser.add_argument("--learn-steps", type=int, default=150, help="learning steps per timing (best of 2)")
    args = parser.parse_args(argv)
    if args.time and not args.samples:
        parser.error("--time needs --samples FILE to append its timings to")
    jobs = [j for j in load_jobs(args.study, args.log, args.runs) if j["started"] >= args.since]
    if len(jobs) < 3:
        where = " ".join(map(str, args.runs)) if args.runs else f"results/{args.study}/runs"
        parser.exit(2, f"refit_cost.py: {len(jobs)} one-program jobs in {where}"
                       f"{' since ' + args.since if args.since else ''}; need at least 3: run the study first\n")
    # the process wall where known (start-up includes imports); else the training wall
    for j in jobs:
        if j["process_seconds"] is not None:
            j["wall_seconds"] = max(j["process_seconds"], j["wall_seconds"])
    # a program compiled by an earlier job of the study loads from JAX's compilation cache (boot
    # alone compiles its own program, without the prior; beside bootrp it runs bootrp's)
    seen = set()
    for j in sorted(jobs, key=lambda j: j["started"]):
        signature = (program_signature(j["config"]), j["prior"])
        j["cached"] = signature in seen
        seen.add(signature)
    fidelity = jobs[0]["config"].fidelity
    import pandas as pd
    if args.time:
        new = pd.DataFrame(time_samples(args.time, fidelity, args.seeds, args.learn_steps), columns=SAMPLE_COLUMNS)
        old = pd.read_csv(args.samples) if args.samples.exists() else None
        pd.concat([old, new] if old is not None else [new], ignore_index=True).to_csv(args.samples, index=False)
    samples = []
    if args.samples:
        frame = pd.read_csv(args.samples)
        for r in frame[frame.fidelity == fidelity].itertuples():
            config = TrainConfig(kind=r.kind, ensemble_size=int(r.K), hardness=int(r.n), fidelity=r.fidelity)
            samples.append(dict(config=config, runs=int(r.runs), step_seconds=float(r.step_seconds)))
    fit = cost.fit_coefficients(jobs, samples)
    import os
    measured_on = sorted({j["cpu"] for j in jobs if j.get("cpu")}) or [f"{cpu_model()} (this machine)"]
    timed = max(j["timings"] for j in jobs)
    print(f"{len(jobs)} jobs of study {args.study} ({fidelity} mode), timed on {', '.join(measured_on)}"
          + (f"; up to {timed} timings a job, the fastest kept" if timed > 1 else "") + f"; this machine: "
          f"{cpu_model()}, {os.cpu_count()} cores")
    print(f"{'job':<30} {'kind':<6} {'K':>3} {'n':>3} {'runs':>4} {'prior':>5} {'cached':>6} {'measured s':>10} "
          f"{'predicted s':>11} {'error':>7}")
    errors = []
    for j in sorted(jobs, key=lambda j: j["wall_seconds"]):
        c = j["config"]
        training = (cost.row_parts_seconds(j["parts"], coeffs=fit) if "parts" in j
                    else cost.train_seconds(c, j["runs"], j["prior"], coeffs=fit))
        predicted = fit.startup + (fit.compile_cached if j["cached"] else fit.compile) + training
        err = predicted / j["wall_seconds"] - 1
        errors.append(err)
        print(f"{j['name']:<30} {c.kind:<6} {c.ensemble_size:>3} {c.hardness:>3} {j['runs']:>4} "
              f"{'yes' if j['prior'] else 'no':>5} "
              f"{'yes' if j['cached'] else 'no':>6} "
              f"{j['wall_seconds']:>10.1f} {predicted:>11.1f} {err:>+7.0%}")
    errors = np.abs(errors)
    with_process = sum(j["process_seconds"] is not None for j in jobs)
    print(f"\njobs: worst error {errors.max():.0%}, median {np.median(errors):.0%} "
          f"({with_process} of {len(jobs)} walls from process start, the rest from training start)")
    if samples:
        print(f"\n{len(samples)} steady-state samples ({args.samples.name}), ms per learning vector step")
        print(f"{'kind':<6} {'K':>3} {'n':>3} {'runs':>4} {'measured':>9} {'predicted':>9} {'error':>7}")
        sample_errors = []
        for smp in samples:
            c = smp["config"]
            predicted = cost.train_seconds(c, smp["runs"], coeffs=fit, steps=1)
            sample_errors.append(predicted / smp["step_seconds"] - 1)
            print(f"{c.kind:<6} {c.ensemble_size:>3} {c.hardness:>3} {smp['runs']:>4} "
                  f"{smp['step_seconds'] * 1e3:>9.2f} {predicted * 1e3:>9.2f} {sample_errors[-1]:>+7.0%}")
        sample_errors = np.abs(sample_errors)
        print(f"samples: worst error {sample_errors.max():.0%}, median {np.median(sample_errors):.0%}")
    print(f"Coefficients(step={fit.step:.3g}, pair={fit.pair:.3g}, pair_row={fit.pair_row:.3g}, "
          f"startup={fit.startup:.1f}, compile={fit.compile:.1f}, compile_cached={fit.compile_cached:.1f}, "
          f"prior_pair={fit.prior_pair:.3g}, prior_pair_row={fit.prior_pair_row:.3g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
