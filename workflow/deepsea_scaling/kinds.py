"""The agent kinds, as one table of data that every stage reads.

Config validation, the agent, the engine, study expansion and the figures read
the fields of a `Kind`; none compares kind names. Adding a kind is a row here,
its network or agent code where a field cannot express it, and its tests.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str  # the value of TrainConfig.kind and of the run table's `kind` column
    label: str  # in figures and tables
    description: str  # in the command line's help
    ensemble: bool  # trains `ensemble_size` members; False: one network (K forced to 1)
    has_prior: bool  # each member's Q adds prior_scale times a fixed random prior network
    explores_by: str  # "member": greedy with the member drawn per episode; "epsilon": epsilon-greedy
    colour: str  # Okabe-Ito, safe for the common colour-vision deficiencies

    def __post_init__(self):
        if self.explores_by not in ("member", "epsilon"):
            raise ValueError(f"Kind {self.name}: explores_by must be 'member' or 'epsilon'")



KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("boot", "BDQN", "bootstrapped DQN ensemble", ensemble=True, has_prior=False,
             explores_by="member", colour="#0072B2"),
        Kind("bootrp", "RP-BDQN", "BDQN with randomized prior functions", ensemble=True, has_prior=True,
             explores_by="member", colour="#D55E00"),
        Kind("eps", "ε-greedy DQN", "one DQN exploring epsilon-greedily", ensemble=False, has_prior=False,
             explores_by="epsilon", colour="#555555"),
    )
}


def program_kind(kind: Kind, obs_is_index: bool) -> Kind:
    """The kind whose compiled program `kind` runs.

    Where observations are cell indices (DeepSea) the prior is a table, and a kind without a prior runs the program
    of the kind that differs from it only by having one, with the prior scaled
    by 0: the runs are unchanged (the prior's draws use a key of their own), and
    both kinds batch into one program. (Trained alone, with scale 0 for the whole
    batch, boot's program builds no prior: `agent.Agent.adds_prior`.)
    """
    if obs_is_index and not kind.has_prior:
        for other in KINDS.values():
            if other.has_prior and (other.ensemble, other.explores_by) == (kind.ensemble, kind.explores_by):
                return other
    return kind
