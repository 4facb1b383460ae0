"""The paper's published figures (docs/SCIENCE.md, "Published results"), one place for every comparison."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    psi: float
    psi_pm: float  # the published ± on psi
    r2: float
    dispersion: float  # Pearson dispersion of the published fit (32-seed cells)


PUBLISHED = {
    "boot": Published(psi=0.80, psi_pm=0.01, r2=0.84, dispersion=4.1),
    "bootrp": Published(psi=0.87, psi_pm=0.02, r2=0.69, dispersion=8.1),
}
PUBLISHED_EPISODES = 50_000  # the training budget of the published fits
