"""Per-run discovery bookkeeping, updated inside the training step, and its summary.

Definitions (docs/SCIENCE.md, "Metrics"):
- discovered: some training episode had return >= the discovery threshold;
  `episodes_to_discovery` counts episodes (over all parallel envs, in order of
  completion, ties broken by env index) up to and including the first such one.
- all members discovered: every member had such an episode while it was the
  acting member; `episodes_to_all_members` is the episode at which the last did.
- final return: mean return of the episodes that ended in the last 10% of steps.
- diverged: a non-finite loss or Q-value occurred; a diverged run counts as not
  discovered.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Tracker:
    episodes: jax.Array  # int32 scalar: episodes completed so far
    member_first_discovery: jax.Array  # (K,) float32: episode of each member's first discovery, inf if none
    last_return_sum: jax.Array  # float32 scalar, over episodes ending in the last 10% of training
    last_return_count: jax.Array  # int32 scalar
    diverged: jax.Array  # bool scalar
    diversity: jax.Array  # (L,) float32 Q-diversity curve, NaN where not measured


def tracker_init(members: int, num_log_points: int) -> Tracker:
    return Tracker(
        episodes=jnp.int32(0),
        member_first_discovery=jnp.full((members,), jnp.inf, jnp.float32),
        last_return_sum=jnp.float32(0.0),
        last_return_count=jnp.int32(0),
        diverged=jnp.bool_(False),
        diversity=jnp.full((num_log_points,), jnp.nan, jnp.float32),
    )


def record_episodes(
    tracker: Tracker,
    done: jax.Array,
    episode_return: jax.Array,
    active: jax.Array,
    threshold: jax.Array,
    in_last_tenth: jax.Array,
) -> Tracker:
    """Account for the episodes that ended in this vector step.

    done, episode_return, active: (E,) -- which envs ended an episode, their
    returns, and the member that acted in each.
    """
    episode_number = (tracker.episodes + jnp.cumsum(done)).astype(jnp.float32)  # (E,)
    discovering = done & (episode_return >= threshold)
    candidate = jnp.where(discovering, episode_number, jnp.inf)
    member_first = tracker.member_first_discovery.at[active].min(candidate)
    ended_returns = jnp.where(done, episode_return, 0.0)
    return tracker.replace(
        episodes=tracker.episodes + jnp.sum(done, dtype=jnp.int32),
        member_first_discovery=member_first,
        last_return_sum=tracker.last_return_sum + jnp.where(in_last_tenth, jnp.sum(ended_returns), 0.0),
        last_return_count=tracker.last_return_count + jnp.where(in_last_tenth, jnp.sum(done, dtype=jnp.int32), 0),
    )


def summarize(tracker: Tracker, xp=jnp) -> dict:
    """The per-run metrics of the run table (leaves may carry a leading seed axis).

    `xp` is the array module: jax.numpy inside a program, numpy on the host for a
    finished run's tracker (the engine: one program fewer to compile per job; min,
    max, select and one correctly rounded division, so both give the same bits).
    """
    first = xp.min(tracker.member_first_discovery, axis=-1)
    last_member = xp.max(tracker.member_first_discovery, axis=-1)
    ok = ~tracker.diverged
    discovered = xp.isfinite(first) & ok
    all_members = xp.isfinite(last_member) & ok
    count = tracker.last_return_count
    return {
        "discovered": discovered,
        "episodes_to_discovery": xp.where(discovered, first, xp.float32(xp.nan)),
        "all_members_discovered": all_members,
        "episodes_to_all_members": xp.where(all_members, last_member, xp.float32(xp.nan)),
        "final_return": xp.where(
            count > 0,
            tracker.last_return_sum / xp.maximum(count, 1).astype(tracker.last_return_sum.dtype),
            xp.float32(xp.nan),
        ),
        "diverged": tracker.diverged,
        "total_episodes": tracker.episodes,
        "diversity": tracker.diversity,
    }
