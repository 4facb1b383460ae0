"""Training groups: which cells' seeds one training job trains in one compiled program.

A *group* is the same seed range [start, stop) of one or more cells of a
study. With `train_grouping: shape`, every cell that shares a program
signature (`config.program_signature`: boot with bootrp on DeepSea, the sweep
values of traced hyperparameters) joins one group; with `cell`, each cell's
shard is a group of one. A sequential design groups each round's units the
same way (`round_groups`): the cells of one round that share a program train
in one job. The group's name carries a digest of its members'
config hashes and seed range, so its table is content-addressed: a changed
hyperparameter or a new member makes a new name, never a stale file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from . import cost
from .config import HASH_BASELINE, TrainConfig, config_hash, program_family, program_signature
from .study import CELL_FIELDS, Cell, Study

GROUP_PATTERN = "results/{study}/runs/{group}.parquet"
GROUP_NAME_REGEX = r"K\d+_n\d+(?:-\d+)?_s\d+-\d+_[0-9a-f]{12}"
ROW_GROUP_SECONDS = 60.0  # train_grouping: row -- a job's projected training, CPU-core seconds (cost model)


@dataclass(frozen=True)
class TrainGroup:
    """Seeds [start, stop) of every cell in `cells`, trained by one job."""

    study: str
    cells: tuple[Cell, ...]
    start: int
    stop: int

    @property
    def name(self) -> str:
        """`K8_n12_s0-32_<12 hex>`: readable, and a digest of every member's hash and the seeds."""
        members = ",".join(sorted(cell.hash for cell in self.cells))
        digest = hashlib.sha256(f"{members}:{self.start}-{self.stop}".encode()).hexdigest()[:12]
        first = self.cells[0].config
        sizes = sorted({cell.config.hardness for cell in self.cells})
        n = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
        return f"K{first.members}_n{n}_s{self.start}-{self.stop}_{digest}"

    @property
    def table(self) -> str:
        return GROUP_PATTERN.format(study=self.study, group=self.name)

    @property
    def sidecar(self) -> str:
        return str(Path(self.table).with_suffix(".json"))

    @property
    def runs(self) -> int:
        return len(self.cells) * (self.stop - self.start)

    def batch_spec(self) -> str:
        """The `--batch` JSON of `python -m deepsea_scaling.train` (rows go to one `--out`).

        Per cell its grid values and the fields that differ from TrainConfig's
        defaults (with the fidelity options at `HASH_BASELINE`, the engine's
        original behaviour), so the command stays short and reads as the study; also
        those that differ from the cell's `fidelity` preset (an option toggled
        back to this engine's value under `fidelity: reference`, which the
        preset would otherwise fill in again). Every entry is checked to parse
        back to its cell's hash: a command that would train another cell is a
        bug, raised here, before anything trains. (The text of a command that
        was right stays the same: a changed text would retrain it, since
        Snakemake re-runs a job whose params change.)
        """
        defaults = TrainConfig(**HASH_BASELINE).to_dict()  # fixed, so a change of the defaults moves no text

        def options(cell: Cell) -> dict:
            preset = TrainConfig(fidelity=cell.config.fidelity).to_dict()
            return {k: v for k, v in cell.config.to_dict().items()
                    if k in CELL_FIELDS or v != defaults[k] or v != preset[k]}

        entries = [{"config": options(cell), "seeds": [self.start, self.stop]} for cell in self.cells]
        for entry, cell in zip(entries, self.cells):
            if config_hash(TrainConfig.from_dict(entry["config"])) != cell.hash:
                raise RuntimeError(f"group {self.name}: the training command of cell {cell.hash} "
                                   f"({cell.variant}) would train another cell: {entry['config']}")
        return json.dumps(entries, separators=(",", ":"))

    def expected_rows(self) -> list[list]:
        """[config hash, start, stop, variant] per member: what the merge checks the table against."""
        return [[cell.hash, self.start, self.stop, cell.variant] for cell in self.cells]

    def programs(self) -> list[list[Cell]]:
        """The members by program (`program_signature`; one per n of a row group), in n order."""
        by_signature: dict[tuple, list[Cell]] = {}
        for cell in sorted(self.cells, key=lambda c: c.config.hardness):
            by_signature.setdefault(program_signature(cell.config), []).append(cell)
        return list(by_signature.values())

    def parts(self) -> list[tuple]:
        """(config, runs, prior) per program, as `cost.row_job_seconds` prices them."""
        return [(cells[0].config, len(cells) * (self.stop - self.start), cost.has_prior([c.config for c in cells]))
                for cells in self.programs()]

    def runtime_minutes(self, attempt: int = 1) -> int:
        parts = self.parts()
        if len(parts) == 1:
            return cost.runtime_minutes(*parts[0][:2], attempt, prior=parts[0][2])
        return cost.runtime_minutes_of(cost.row_parts_seconds(parts), attempt)

    def mem_mb(self, attempt: int = 1) -> int:
        return max(cost.mem_mb(cells[0].config, len(cells) * (self.stop - self.start), attempt)
                   for cells in self.programs())


def _grouped(study: Study, units: Iterable[tuple[Cell, int, int]], alone: bool) -> list[TrainGroup]:
    buckets: dict[tuple, list[Cell]] = {}
    row = study.train_grouping == "row" and not alone
    for cell, start, stop in units:
        key = (cell.hash, start, stop) if alone else (program_signature(cell.config), start, stop)
        if row:
            key = (program_family(cell.config), start, stop)
        buckets.setdefault(key, []).append(cell)
    groups = []
    for key, members in buckets.items():
        chunks = _row_chunks(members, key[-1] - key[-2]) if row else [members]
        groups += [TrainGroup(study.name, tuple(chunk), key[-2], key[-1]) for chunk in chunks]
    return groups


def _row_chunks(cells: list[Cell], seeds: int) -> list[list[Cell]]:
    """train_grouping: row -- a K row's cells, by n, in jobs of at most ROW_GROUP_SECONDS of projected
    training (a program per n, all compiled as one: `engine.train_groups`); a job holds whole programs."""
    programs = TrainGroup("", tuple(cells), 0, seeds).programs()
    chunks, chunk, seconds = [], [], 0.0
    for program in programs:
        price = cost.train_seconds(program[0].config, len(program) * seeds,
                                   prior=cost.has_prior([cell.config for cell in program]))
        if chunk and seconds + price > ROW_GROUP_SECONDS:
            chunks.append(chunk)
            chunk, seconds = [], 0.0
        chunk, seconds = chunk + program, seconds + price
    return chunks + [chunk]


def train_groups(study: Study, cells: Iterable[Cell] | None = None) -> list[TrainGroup]:
    """The training jobs of `cells` (default: every cell of the study), in cell order.

    A sequential design's are one per cell shard (what a round may plan); the
    jobs of a round are `round_groups`.
    """
    cells = study.cells() if cells is None else list(cells)
    alone = study.train_grouping == "cell" or study.sequential
    return _grouped(study, ((cell, start, stop) for cell in cells for start, stop in study.shards()), alone)


def round_groups(study: Study, units: Iterable[Iterable]) -> list[TrainGroup]:
    """The training jobs of one round of a sequential design: its units ([cell hash, start, stop],
    as a plan lists them), grouped as `train_grouping` says, members in the study's cell order.

    With `cell` these are `train_groups`' groups of one, so a study's committed tables keep their names.
    """
    cells = study.cells()
    index = {cell.hash: i for i, cell in enumerate(cells)}
    try:
        units = sorted((index[h], start, stop) for h, start, stop in units)
    except KeyError as err:
        raise ValueError(f"studies.{study.name}: a round plans cell {err.args[0]}, which the study "
                         "does not define (its config changed since the plan was written?)") from None
    return _grouped(study, ((cells[i], start, stop) for i, start, stop in units), study.train_grouping == "cell")


def groups_by_name(groups: Iterable[TrainGroup]) -> dict[str, TrainGroup]:
    return {group.name: group for group in groups}
