"""A study's design, round by round: which seed shards of which cells to train next.

The designs themselves (`designs.py`) speak of cells (kind, K, n) and seed
counts; this module maps them onto a study's cells (per sweep variant, with
their config hashes) and seed shards, which is what the workflow trains. A
round's *plan* is a plain dict, written as JSON by the workflow's checkpoint
`plan_round`:

    {"round": r, "done": bool, "units": [[hash, start, stop], ...],   # new this round
     "trained": [[hash, start, stop], ...],                           # every unit so far
     "placed": {hash: round}, # the round that first trained each cell
     "decisions": [{"variant", "kind", "ensemble_size", "hardness", "hash", "decision", "round"}, ...]}

`decisions` is filled when the plan is done: every cell of the grid, with
`trained`, `assumed_solved`, `assumed_unsolved` (the reference protocol's
skips, with the value it assumed) or `not_trained` (frontier). Units of a
round never repeat a unit already trained: a rerun or a later round reuses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .study import Cell, Study

NOT_TRAINED = "not_trained"
MAX_ROUNDS = 200  # a guard for the workflow's loop over checkpoints; no design comes near it


def outcomes(rows: Iterable[Mapping]) -> dict[str, tuple[int, int]]:
    """config hash -> (successes, trials) from run-table rows (diverged runs count as failures)."""
    found: dict[str, list[int]] = {}
    for row in rows:
        s_t = found.setdefault(str(row["config_hash"]), [0, 0])
        s_t[0] += int(bool(row["discovered"]) and not bool(row.get("diverged", False)))
        s_t[1] += 1
    return {h: (s, t) for h, (s, t) in found.items()}


def _by_variant(study: Study) -> dict[str, list[Cell]]:
    cells: dict[str, list[Cell]] = {}
    for cell in study.cells():
        cells.setdefault(cell.variant, []).append(cell)
    return cells


def _units(study: Study, cell: Cell, seeds: int, have: int = 0) -> list[list]:
    """Shards of `cell` that bring it from `have` to at least `seeds` seeds."""
    return [[cell.hash, a, b] for a, b in study.shards() if b > have and a < seeds]


def plan_round(study: Study, round_index: int, outcome: Mapping[str, tuple[int, int]],
               trained: Iterable[Iterable], placed: Mapping[str, int] | None = None) -> dict:
    """The plan of round `round_index` given the outcomes (by config hash) of the units `trained`.

    placed: the previous plan's `placed` (config hash -> round that first trained the cell).
    """
    trained = [list(u) for u in trained]
    placed = dict(placed or {})
    seeds_of = {}
    for h, a, b in trained:
        seeds_of[h] = max(seeds_of.get(h, 0), int(b))
    new: list[list] = []
    decisions: list[dict] = []
    for variant, cells in _by_variant(study).items():
        for kind in dict.fromkeys(c.kind for c in cells):
            mine = [c for c in cells if c.kind == kind]
            units, kind_decisions = _plan_kind(study, mine, round_index, outcome, seeds_of)
            new += [u for u in units if u not in trained]
            decisions += kind_decisions
    # Nothing new to train: the next round would see the same outcomes and plan
    # the same nothing, so the design is done.
    done = not new
    for h, _, _ in new:
        placed.setdefault(h, round_index)
    for row in decisions:
        row["round"] = placed.get(row["hash"])
    plan = {"round": round_index, "done": done, "units": new, "trained": trained + new, "placed": placed,
            "decisions": decisions if done else []}
    if round_index >= MAX_ROUNDS and not done:
        raise RuntimeError(f"study {study.name}: design {study.design} still open after {MAX_ROUNDS} rounds")
    return plan


def _plan_kind(study: Study, cells: list[Cell], round_index: int, outcome, seeds_of) -> tuple[list, list]:
    """(new units, decisions once nothing is new) of one kind of one variant."""
    # Imported here, not at the top: the Snakefile imports this module whenever it starts, and the
    # designs bring scipy and statsmodels (about 2 s of every snakemake command, a study with no design too).
    from . import designs

    by_key = {(c.kind, c.ensemble_size, c.hardness): c for c in cells}
    ks = sorted({c.ensemble_size for c in cells})
    ns = sorted({c.hardness for c in cells})
    known = {key: outcome[c.hash] for key, c in by_key.items() if c.hash in outcome and seeds_of.get(c.hash)}
    kind = cells[0].kind

    def row(c: Cell, decision: str) -> dict:
        return {"variant": c.variant, "kind": c.kind, "ensemble_size": c.ensemble_size,
                "hardness": c.hardness, "hash": c.hash, "decision": decision}

    if study.design == "grid" or (study.design == "frontier" and len(ks) == 1 and ks[0] == 1):
        # every cell at once (also a frontier study's K = 1 baseline, cheap and with no K to fit)
        units = [u for c in cells for u in _units(study, c, study.seeds_per_cell, seeds_of.get(c.hash, 0))]
        return units, [row(c, designs.TRAINED) for c in cells]

    if study.design == "reference":
        state = designs.reference_protocol([kind], ks, ns, study.reference_limit, known)
        if state.done:
            return [], [row(by_key[d.cell], d.action) for d in state.decisions]
        wanted = designs.speculative_round([kind], ks, ns, study.reference_limit, known,
                                           trials=study.seeds_per_cell)
        units = [u for key in wanted for u in _units(study, by_key[key], study.seeds_per_cell,
                                                        seeds_of.get(by_key[key].hash, 0))]
        return units, []

    settings = study.frontier_settings(kind)
    if round_index == 0:
        wanted = designs.frontier_start(kind, ks, ns, settings)  # the pilot, or planned under a prior ψ
    else:
        wanted = designs.frontier_round(kind, ks, ns, known, round_index, settings).seeds
    units = [u for key, seeds in wanted.items()
             for u in _units(study, by_key[key], seeds, seeds_of.get(by_key[key].hash, 0))]
    decisions = [row(c, designs.TRAINED if seeds_of.get(c.hash) else NOT_TRAINED) for c in cells]
    return units, decisions
