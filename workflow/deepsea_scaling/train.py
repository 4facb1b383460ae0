"""Command line: train one shard of seeds of one (kind, K, n) cell and write its run table.

    python -m deepsea_scaling.train --kind bootrp --ensemble-size 10 --hardness 20 \\
        --seeds 0:32 --num-episodes 50000 --out results/shard.parquet

Writes the table (one row per seed) and a JSON provenance sidecar beside it
(same name, suffix .json), both atomically. Bad input exits with status 2 and
one line naming the option, before JAX compiles anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import shlex
import sys
import tempfile
import time
from pathlib import Path

from .config import ConfigError, TrainConfig, config_hash

PROG = "deepsea-train"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line: '<prog>: error: <what is wrong>'."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run = parser.add_argument_group("run")
    run.add_argument("--seeds", metavar="START:STOP",
                     help="seed indices of this shard, half-open, e.g. 0:32 (required without --batch)")
    run.add_argument("--out", metavar="PATH.parquet",
                     help="output table; the provenance sidecar goes to PATH.json (required without --batch)")
    run.add_argument("--batch", metavar="JSON",
                     help='several shards in one compiled program: a JSON list of {"config": {option: value}, '
                          '"seeds": [start, stop], "out": "path.parquet"}; the cells must share shapes '
                          "(K, n, buffer, budget) and may differ in other hyperparameters and boot/bootrp. "
                          "Each run's row is the same as when trained alone.")
    run.add_argument("--cpu-devices", type=int, default=1, metavar="N",
                     help="on a CPU: split the runs over N XLA CPU devices, one core each (N must divide the "
                          "number of runs, else the largest divisor below N is used; no effect on a GPU). "
                          "Training is the same; the Q-diversity curve can differ in the last bit.")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    hp = parser.add_argument_group("hyperparameters (defaults: REFERENCE.md)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        names = [flag, "--episodes"] if f.name == "num_episodes" else [flag]
        help_text = f.metadata.get("help", "")
        if f.type in ("bool", bool):
            hp.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        elif f.name == "hidden_sizes":
            hp.add_argument(*names, dest=f.name, type=_parse_sizes, default=f.default, metavar="W1,W2,...", help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            hp.add_argument(*names, dest=f.name, type=kind, default=f.default, help=help_text)
    return parser


def _parse_sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 24,24, not {text!r}") from None


def parse_seeds(text: str) -> range:
    try:
        start, stop = (int(x) for x in text.split(":"))
    except ValueError:
        raise ConfigError(f"--seeds={text} is invalid: give START:STOP with integers, e.g. 0:32") from None
    if start < 0 or stop <= start:
        raise ConfigError(f"--seeds={text} is invalid: need 0 <= START < STOP (an empty range trains nothing)")
    return range(start, stop)


def check_output(path: str) -> Path:
    """Refuse an output the run could not write, by really creating a file in its folder."""
    out = Path(path)
    if out.suffix != ".parquet":
        raise ConfigError(f"--out={path} is invalid: the table is parquet, give a path ending in .parquet")
    if out.is_dir():
        raise ConfigError(f"--out={path} is invalid: it is a directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.probe-"):
            pass
    except OSError as err:
        raise ConfigError(f"--out={path} is invalid: cannot write in {out.parent} ({err.strerror})") from None
    return out


def use_cpu_devices(count: int) -> None:
    """Ask XLA for `count` host (CPU) devices; must happen before JAX starts its backends."""
    import os

    if count < 1:
        raise ConfigError(f"--cpu-devices={count} is invalid: give a number of CPU devices >= 1")
    flag = f"--xla_force_host_platform_device_count={count}"
    if "jax" in sys.modules:  # in-process callers (tests): only a no-op request can be honoured
        import jax

        if len(jax.devices("cpu")) != count:
            raise ConfigError(f"--cpu-devices={count} is invalid here: JAX has already started with "
                              f"{len(jax.devices('cpu'))} CPU device(s); run the command in a fresh process")
        return
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    os.environ["XLA_FLAGS"] = " ".join([*flags, flag])


def rows(config: TrainConfig, seeds: range, metrics: dict) -> "pandas.DataFrame":  # noqa: F821
    import pandas as pd

    base = {**config.to_dict(), "config_hash": config_hash(config), "members": config.members}
    records = []
    for i, seed in enumerate(seeds):
        rec = {**base, "seed": seed}
        for name, values in metrics.items():
            value = values[i]
            rec[name] = [float(x) for x in value] if name == "diversity" else value.item()
        records.append(rec)
    return pd.DataFrame.from_records(records)


def parse_batch(text: str) -> list[tuple[TrainConfig, range, Path]]:
    """--batch: a JSON list of {"config": {field: value}, "seeds": [start, stop], "out": path}."""
    import json

    try:
        entries = json.loads(text)
        if not isinstance(entries, list) or not entries:
            raise ValueError("expected a non-empty JSON list")
    except ValueError as err:
        raise ConfigError(f"--batch is invalid: {err}") from None
    cells = []
    for i, entry in enumerate(entries):
        try:
            overrides = dict(entry["config"])
            start, stop = entry["seeds"]
            out = entry["out"]
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f'--batch entry {i} is invalid: give {{"config": {{...}}, "seeds": [start, stop], "out": "path.parquet"}}') from None
        if overrides.get("kind") == "eps":
            overrides["ensemble_size"] = 1
        try:
            config = TrainConfig.from_dict(overrides).validate()
        except (ConfigError, TypeError) as err:
            raise ConfigError(f"--batch entry {i}: {err}") from None
        cells.append((config, parse_seeds(f"{start}:{stop}"), check_output(out)))
    from .config import program_signature

    signatures = {program_signature(config) for config, _, _ in cells}
    if len(signatures) > 1:
        raise ConfigError("--batch is invalid: its cells differ in shapes or static settings (K, n, buffer, "
                          "budget, ...); batch only cells that differ in traced hyperparameters or boot/bootrp")
    return cells


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.batch is not None:
            cells = parse_batch(args.batch)
        else:
            if args.seeds is None or args.out is None:
                raise ConfigError("--seeds and --out are required (or give --batch)")
            hyper = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
            if hyper["kind"] == "eps":
                hyper["ensemble_size"] = 1
            config = TrainConfig(**hyper).validate()
            cells = [(config, parse_seeds(args.seeds), check_output(args.out))]
        use_cpu_devices(args.cpu_devices)
        from .envs import make_env

        make_env(cells[0][0])  # unknown or non-discrete environments fail here, before compiling
    except ConfigError as err:
        parser.exit(2, f"{PROG}: error: {err}\n")

    from . import engine, io

    first, first_seeds, _ = cells[0]
    label = f"{first.kind} K={first.members} n={first.hardness} seeds {first_seeds.start}:{first_seeds.stop}"
    if len(cells) > 1:
        label = f"batch of {len(cells)} cells, n={first.hardness}"
    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"[{label}] {msg}", flush=True))
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    runs = sum(len(seeds) for _, seeds, _ in cells)
    log(f"training {runs} runs x {first.num_vector_steps:,} vector steps in one program")
    results = engine.train_batch([(config, seeds) for config, seeds, _ in cells], progress=log)

    import jax

    for (config, seeds, out), result in zip(cells, results):
        table = rows(config, seeds, result.metrics)
        sidecar = {
            "command": shlex.join([PROG, *argv]),
            "config": config.to_dict(),
            "config_hash": config_hash(config),
            "seeds": [seeds.start, seeds.stop],
            "batched_runs": runs,
            "versions": io.package_versions(),
            "host": io.host_facts(),
            "jax_backend": jax.default_backend(),
            "devices": result.devices,
            "compile_seconds": round(result.compile_seconds, 3),
            "run_seconds": round(result.run_seconds, 3),
            "wall_seconds": round(time.perf_counter() - t0, 3),
            "vector_steps_per_second": round(config.num_vector_steps / max(result.run_seconds, 1e-9), 1),
            "started_utc": started.isoformat(timespec="seconds"),
            "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        io.write_json(sidecar, io.sidecar_path(out))
        io.write_table(table, out)
        log(
            f"wrote {out}: discovered {int(table['discovered'].sum())}/{len(table)}, "
            f"diverged {int(table['diverged'].sum())}; compile {result.compile_seconds:.1f}s, run {result.run_seconds:.1f}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
