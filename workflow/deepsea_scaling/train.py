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
import os
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
    run.add_argument("--seeds", required=True, metavar="START:STOP",
                     help="seed indices of this shard, half-open, e.g. 0:32")
    run.add_argument("--out", required=True, metavar="PATH.parquet",
                     help="output table; the provenance sidecar goes to PATH.json")
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    hyper = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    try:
        if hyper["kind"] == "eps":
            hyper["ensemble_size"] = 1
        config = TrainConfig(**hyper).validate()
        seeds = parse_seeds(args.seeds)
        out = check_output(args.out)
        from .envs import make_env

        make_env(config)  # unknown or non-discrete environments fail here, before compiling
    except ConfigError as err:
        parser.exit(2, f"{PROG}: error: {err}\n")

    from . import engine, io

    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"[{config.kind} K={config.members} n={config.hardness} seeds {args.seeds}] {msg}", flush=True))
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    log(f"training {len(seeds)} seeds x {config.num_vector_steps:,} vector steps (config {config_hash(config)})")
    result = engine.train_seeds(config, seeds, progress=log)
    table = rows(config, seeds, result.metrics)

    import jax

    sidecar = {
        "command": shlex.join([PROG, *argv]),
        "config": config.to_dict(),
        "config_hash": config_hash(config),
        "seeds": [seeds.start, seeds.stop],
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
