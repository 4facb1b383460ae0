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
        variant_of = {str(h): v for h, _, _, v in members}
        frame.insert(0, "variant", frame["config_hash"].astype(str).map(variant_of))
        frame.insert(0, "study", study)
        frames.append(frame)
    if not frames:
        raise ShardError(f"study {study}: no group tables to merge")
    runs = pd.concat(frames, ignore_index=True)
    return runs.sort_values(["kind", "variant", "ensemble_size", "hardness", "seed"], kind="stable",
                            ignore_index=True)
