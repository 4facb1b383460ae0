"""Command line: train seeds of one (kind, K, n) cell, or a group of cells, and write the run table.

    python -m deepsea_scaling.train --kind bootrp --ensemble-size 10 --hardness 20 \\
        --seeds 0:32 --num-episodes 50000 --out results/shard.parquet
    python -m deepsea_scaling.train --batch @group.json --out results/group.parquet

Writes the table (one row per run) and then a JSON provenance sidecar beside it
(same name, suffix .json), each atomically; if either cannot be written,
neither is left and the exit status is 1. Bad input exits with status 2 and
one line naming the option, its value and what is accepted, before JAX
compiles anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .config import (FIELDS, ConfigError, TrainConfig, accepted, config_hash, for_environment, program_family,
                     program_signature)
from .kinds import KINDS

PROCESS_T0 = time.perf_counter()  # (nearly) process start: jax and the engine load later

PROG = "deepsea-train"
BATCH_HELP = (
    'several cells in one compiled program: a JSON list (inline, or @FILE to read it from FILE) of '
    '{"config": {option: value}, "seeds": [start, stop]} entries. Without "out" in the entries, all rows '
    'go into one table at --out (one sidecar lists every entry); with an "out" in every entry, each entry '
    "gets its own table. The cells must share shapes (K, buffer, budget) and may differ in traced "
    "hyperparameters, boot/bootrp and DeepSea's n (one program for every n, called per n). Each run's "
    "row is the same as when trained alone."
)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line: '<prog>: error: <what is wrong>'."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


@dataclass(frozen=True)
class Entry:
    """One cell's seeds to train, and where its rows go (None: the group table at --out)."""

    config: TrainConfig
    seeds: range
    out: Path | None


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
                     help="output table; the provenance sidecar goes to PATH.json (required unless every "
                          "--batch entry has its own out)")
    run.add_argument("--batch", metavar="JSON|@FILE", help=BATCH_HELP)
    run.add_argument("--cpu-devices", type=int, default=1, metavar="N",
                     help="on a CPU: split the runs over N XLA CPU devices, one core each (N must divide the "
                          "number of runs, else the largest divisor below N is used; no effect on a GPU). "
                          "Training is the same; the Q-diversity curve can differ in the last bit.")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    hp = parser.add_argument_group("hyperparameters (defaults: docs/SCIENCE.md; bounds: TrainConfig's declarations)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        names = [flag, "--episodes"] if f.name == "num_episodes" else [flag]
        help_text = f"{f.metadata['help']}; accepted: {accepted(f.name)}"
        if f.type == "bool":
            hp.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        else:
            metavar = "W1,W2,..." if f.name == "hidden_sizes" else None
            hp.add_argument(*names, dest=f.name, type=_cli_type(f.name), default=f.default, metavar=metavar,
                            help=help_text)
    return parser


def _cli_type(name: str):
    """Parse an option's text as its field's type; the error names what is accepted."""
    ftype = FIELDS[name].type

    def parse(text: str):
        try:
            if ftype == "int":
                return int(text)
            if ftype == "float":
                return float(text)
            if ftype == "str":
                return text
            return tuple(int(w) for w in text.split(",") if w.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is invalid: give {accepted(name)}") from None

    parse.__name__ = ftype  # argparse names the type in some messages
    return parse


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
    # One core per device: XLA:CPU's Eigen pool would spread each device's products over every core, so
    # jobs that fill a machine one core each (`snakemake --cores all`, train_threads: 1) would contend for
    # all of them (two one-core jobs side by side: 1.12x faster with it off; the same bits). A setting in
    # the caller's XLA_FLAGS wins.
    if not any(f.startswith("--xla_cpu_multi_thread_eigen") for f in flags):
        flags.append("--xla_cpu_multi_thread_eigen=false")
    os.environ["XLA_FLAGS"] = " ".join([*flags, flag])


def rows(config: TrainConfig, seeds: range, metrics: dict) -> "pandas.DataFrame":  # noqa: F821
    import pandas as pd

    from .engine import numerics_version

    base = {**config.to_dict(), "config_hash": config_hash(config), "members": config.members,
            "numerics": numerics_version(config)}
    records = []
    for i, seed in enumerate(seeds):
        rec = {**base, "seed": seed}
        for name, values in metrics.items():
            value = values[i]
            rec[name] = [float(x) for x in value] if name == "diversity" else value.item()
        records.append(rec)
    return pd.DataFrame.from_records(records)


def resolve_config(config: TrainConfig, where: str = "") -> tuple[TrainConfig, str | None]:
    """The config to train: K = 1 for a kind that is no ensemble, DeepSea's threshold replaced by
    the environment's solved return (`config.for_environment`), the environment checked, then
    `validate()`. Returns (config, a note on what was replaced or None); ConfigError on bad input."""
    try:
        if config.kind in KINDS and not KINDS[config.kind].ensemble:
            config = dataclasses.replace(config, ensemble_size=1)
        config, note = for_environment(config)
        if not config.is_deepsea:  # unknown or non-discrete environments fail here, before compiling
            from .envs import make_env

            make_env(config)
        return config.validate(), note
    except ConfigError as err:
        raise ConfigError(f"{where}{err}") from None


def read_spec(text: str) -> str:
    """--batch's JSON: the text itself, or the contents of FILE for '@FILE'."""
    if not text.startswith("@"):
        return text
    try:
        return Path(text[1:]).read_text()
    except OSError as err:
        raise ConfigError(f"--batch={text} is invalid: cannot read {text[1:]} ({err.strerror})") from None


def parse_batch(text: str, group_out: str | None = None) -> tuple[list[Entry], list[str]]:
    """--batch: a JSON list of {"config": {field: value}, "seeds": [start, stop][, "out": path]}.

    Every entry has an "out" (one table each; no --out) or none has (one group
    table at `group_out`). Returns (entries, notes on replaced thresholds).
    """
    try:
        items = json.loads(read_spec(text))
        if not isinstance(items, list) or not items:
            raise ValueError("expected a non-empty JSON list")
    except ValueError as err:
        raise ConfigError(f"--batch is invalid: {err}") from None
    shape = '{"config": {...}, "seeds": [start, stop]} (and "out": "path.parquet" in every entry or in none)'
    with_out = [isinstance(item, dict) and "out" in item for item in items]
    if any(with_out) and not all(with_out):
        raise ConfigError(f'--batch is invalid: entries {[i for i, w in enumerate(with_out) if not w]} have no '
                          f'"out" but others do; give {shape}')
    if all(with_out) and group_out is not None:
        raise ConfigError('--out is invalid with --batch entries that each have an "out"; drop one of them')
    if not all(with_out) and group_out is None:
        raise ConfigError('--out is required: the --batch entries have no "out", so all rows go into --out')
    entries, notes, outs = [], [], {}
    for i, item in enumerate(items):
        where = f"--batch entry {i}: "
        try:
            overrides = item["config"]
            start, stop = item["seeds"]
            if not isinstance(overrides, dict) or set(item) - {"config", "seeds", "out"}:
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"--batch entry {i} is invalid: give {shape}") from None
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, stop)):
            raise ConfigError(f"{where}seeds={[start, stop]!r} is invalid: give [start, stop] integers, 0 <= start < stop")
        config, note = resolve_config(TrainConfig.from_dict(overrides, where), where)
        out = None
        if "out" in item:
            if item["out"] in outs:
                raise ConfigError(f"{where}out={item['out']} is invalid: entry {outs[item['out']]} writes there "
                                  "too (one would overwrite the other); give every entry its own out")
            outs[item["out"]] = i
            out = check_output(str(item["out"]))
        seeds = parse_seeds(f"{start}:{stop}")
        for j, other in enumerate(entries):
            if config_hash(other.config) == config_hash(config) and set(other.seeds) & set(seeds):
                raise ConfigError(f"{where}seeds={[start, stop]} is invalid: entry {j} trains the same cell's "
                                  f"seeds {other.seeds.start}:{other.seeds.stop}; give each run once")
        entries.append(Entry(config, seeds, out))
        if note and note not in notes:
            notes.append(note)
    if len({program_family(e.config) for e in entries}) > 1:
        raise ConfigError("--batch is invalid: its cells differ in shapes or static settings (K, buffer, "
                          "budget, ...); batch only cells that differ in traced hyperparameters, boot/bootrp "
                          "or DeepSea's n")
    return entries, notes


def by_program(entries: list[Entry]) -> list[list[int]]:
    """Indices of `entries` by compiled program (`program_signature`; one per DeepSea n), in n order."""
    programs: dict[tuple, list[int]] = {}
    for i in sorted(range(len(entries)), key=lambda i: entries[i].config.hardness):
        programs.setdefault(program_signature(entries[i].config), []).append(i)
    return list(programs.values())


def env_label(config: TrainConfig) -> str:
    return f"n={config.hardness}" if config.is_deepsea else config.env_name


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        use_cpu_devices(args.cpu_devices)
        if args.batch is not None:
            if args.seeds is not None:
                raise ConfigError("--seeds is invalid with --batch: every entry gives its seeds")
            entries, notes = parse_batch(args.batch, args.out)
            group_out = check_output(args.out) if args.out is not None else None
        else:
            if args.seeds is None or args.out is None:
                raise ConfigError("--seeds and --out are required (or give --batch)")
            config, note = resolve_config(TrainConfig(**{name: getattr(args, name) for name in FIELDS}))
            entries, notes = [Entry(config, parse_seeds(args.seeds), check_output(args.out))], [note] if note else []
            group_out = None
    except ConfigError as err:
        parser.exit(2, f"{PROG}: error: {err}\n")

    from . import engine

    first = entries[0]
    label = f"{first.config.kind} K={first.config.members} {env_label(first.config)} seeds {first.seeds.start}:{first.seeds.stop}"
    programs = by_program(entries)
    if len(entries) > 1:
        sizes = sorted({e.config.hardness for e in entries})
        where = env_label(first.config) if len(sizes) == 1 or not first.config.is_deepsea else f"n={','.join(map(str, sizes))}"
        label = f"batch of {len(entries)} cells, K={first.config.members} {where}"
    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"[{label}] {msg}", flush=True))
    for note in notes:
        print(f"[{label}] note: {note}", flush=True)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    runs = sum(len(e.seeds) for e in entries)
    if len(programs) == 1:
        log(f"training {runs} runs x {first.config.num_vector_steps:,} vector steps in one program")
    else:
        log(f"training {runs} runs in {len(programs)} batches (one per n) that share one program")

    def batch_log(index):
        n = entries[programs[index][0]].config.hardness
        return log if len(programs) == 1 else (lambda msg: log(f"n={n}: {msg}"))

    done_programs = []
    batches = engine.train_groups([[(entries[i].config, entries[i].seeds) for i in program] for program in programs],
                                  progress=lambda msg: batch_log(len(done_programs))(msg),
                                  finished=lambda i, out: done_programs.append(i))
    results: list = [None] * len(entries)
    for program, out in zip(programs, batches):
        for i, result in zip(program, out):
            results[i] = result
    totals = {name: round(sum(getattr(batch[0], name) for batch in batches), 3)
              for name in ("compile_seconds", "run_seconds")}

    import jax

    from . import io

    def provenance(result) -> dict:
        return {
            "command": shlex.join([PROG, *argv]),
            "batched_runs": runs,
            "notes": notes,
            "versions": io.package_versions(),
            "host": io.host_facts(),
            "jax_backend": jax.default_backend(),
            "devices": result.devices,
            "engine_version": engine.ENGINE_VERSION,
            "programs": len(programs),  # batches (one per n), trained in turn by one training program
            **totals,  # every batch's together
            "wall_seconds": round(time.perf_counter() - t0, 3),
            "process_seconds": round(time.perf_counter() - PROCESS_T0, 3),  # with imports and set-up
            "vector_steps_per_second": round(first.config.num_vector_steps / max(result.run_seconds, 1e-9), 1),
            "started_utc": started.isoformat(timespec="seconds"),
            "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def describe(entry: Entry) -> dict:
        return {"config": entry.config.to_dict(), "config_hash": config_hash(entry.config),
                "seeds": [entry.seeds.start, entry.seeds.stop]}

    if group_out is not None:
        import pandas as pd

        table = pd.concat([rows(e.config, e.seeds, r.metrics) for e, r in zip(entries, results)], ignore_index=True)
        outputs = [(group_out, table, {**provenance(results[0]), "entries": [describe(e) for e in entries]})]
    else:
        outputs = [(e.out, rows(e.config, e.seeds, r.metrics), {**provenance(r), **describe(e)})
                   for e, r in zip(entries, results)]
    for out, table, sidecar in outputs:
        try:
            io.write_table_and_sidecar(table, sidecar, out)
        except OSError as err:
            parser.exit(1, f"{PROG}: error: cannot write {out} ({err.strerror or err}); nothing was kept for it, "
                           "rerun the command\n")
        log(f"wrote {out}: discovered {int(table['discovered'].sum())}/{len(table)}, "
            f"diverged {int(table['diverged'].sum())}; compile {totals['compile_seconds']:.1f}s, "
            f"run {totals['run_seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
