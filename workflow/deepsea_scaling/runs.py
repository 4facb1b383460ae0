"""Group tables -> one run table of a study, every row checked against the plan.

The merge refuses anything it cannot vouch for, with one line naming the file
and how to rebuild it: a missing, truncated or unreadable table; a table that
lacks the seed or a metric column; rows of another configuration (config hash)
or other seeds than the group was planned with.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from .io import ShardError, read_shard

# What every analysis downstream reads from a run's row.
REQUIRED_COLUMNS = (
    "kind", "ensemble_size", "hardness", "seed", "config_hash", "members",
    "discovered", "episodes_to_discovery", "all_members_discovered", "episodes_to_all_members",
    "final_return", "diverged", "total_episodes", "diversity",
)


def _stale_numerics(frame: pd.DataFrame) -> str | None:
    """Why the rows' numerics are not this engine's (`engine.numerics_version`), or None. A table from
    before the column has version 1's; its configs are read back from its config columns."""
    from .config import FIELDS, TrainConfig
    from .engine import numerics_version

    recorded = frame["numerics"] if "numerics" in frame.columns else pd.Series(1, index=frame.index)
    for _, row in frame.drop_duplicates("config_hash").iterrows():
        fields = {name: getattr(row[name], "item", lambda: row[name])() for name in FIELDS if name in row.index}
        try:
            wanted = numerics_version(TrainConfig.from_dict(fields))
        except Exception:  # a config this engine cannot build: nothing to compare
            continue
        have = int(recorded.loc[row.name]) if pd.notna(recorded.loc[row.name]) else 1
        if have != wanted:
            return f"numerics version {have}, this engine's {wanted}"
    return None


def merge_group_tables(expected: Mapping[str, Sequence[Sequence]], study: str) -> pd.DataFrame:
    """Concatenate group tables into one run table with `study` and `variant` columns.

    expected: group table path -> [[config hash, start, stop, variant], ...], one
    entry per member cell (`groups.TrainGroup.expected_rows`). Each table must
    hold exactly the seeds start..stop-1 of each of its members' hashes.
    """
    frames = []
    for path, members in expected.items():
        rebuild = (f"rebuild it: rerun your snakemake command with `--forcerun {path}` added "
                   "(or delete the file and rerun)")
        frame = read_shard(path, rebuild_hint=rebuild)
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing or len(frame) == 0:
            what = f"lacks column(s) {', '.join(missing)}" if missing else "has no rows"
            raise ShardError(f"{path}: {what}; {rebuild}")
        found = sorted(zip(frame["config_hash"].astype(str), frame["seed"].astype(int)))
        wanted = sorted((str(h), s) for h, start, stop, _ in members for s in range(int(start), int(stop)))
        if found != wanted:
            extra = sorted(set(found) - set(wanted))[:3]
            lacking = sorted(set(wanted) - set(found))[:3]
            raise ShardError(
                f"{path}: rows (config hash, seed) differ from the plan: unexpected {extra or 'none'}, "
                f"missing {lacking or 'none'} (duplicates: {len(found) - len(set(found))}); {rebuild}"
            )
        stale = _stale_numerics(frame)
        if stale:
            raise ShardError(f"{path}: trained by an engine whose numerics differ from this one's for its "
                             f"cells ({stale}; docs/ENGINE.md, 'Engine versions'); {rebuild}")
        variant_of = {str(h): v for h, _, _, v in members}
        frame.insert(0, "variant", frame["config_hash"].astype(str).map(variant_of))
        frame.insert(0, "study", study)
        frames.append(frame)
    if not frames:
        raise ShardError(f"study {study}: no group tables to merge")
    runs = pd.concat(frames, ignore_index=True)
    return runs.sort_values(["kind", "variant", "ensemble_size", "hardness", "seed"], kind="stable",
                            ignore_index=True)
