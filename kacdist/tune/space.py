"""The settings a sweep trains: DistillKac Table B-2's grid, or log-uniform draws, plus the proposal."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from kacdist.config.schema import TuneConfig

# DistillKac Appendix B.2, Table B-2 (CelebA-64, lightweight UNet, FID@2k): the settings searched per g
PAPER_GRID = {
    "t": [(25, 1), (25, 2), (25, 3), (25, 4), (100, 5), (900, 10)],
    "t2": [(900, 10), (1500, 10), (1500, 12), (3000, 10), (3000, 20), (6000, 20)],
}


@dataclass(frozen=True)
class Setting:
    a: float
    c: float
    g: str
    seed: int = 0
    origin: str = "grid"  # grid | random | given | proposal | spread

    @property
    def label(self) -> str:
        """A trial's name and directory: stable across restores, so a restored trial finds its checkpoints."""
        return f"a{self.a:g}-c{self.c:g}-g{self.g}-seed{self.seed}"


def sweep_settings(tc: TuneConfig, proposal: Setting | None = None) -> list[Setting]:
    """The settings of the sweep, in order, without repeats (a proposal equal to a grid point is that point)."""
    if tc.settings:
        found = []
        for text in tc.settings:
            a, c, g = str(text).split("/")
            found.append(Setting(float(a), float(c), g.strip(), origin="given"))
    elif tc.space == "paper":
        found = [Setting(float(a), float(c), g) for g in tc.schedules for a, c in PAPER_GRID[g]]
    else:
        rng = random.Random(tc.seed)
        found = []
        for g in tc.schedules:
            for _ in range(tc.trials):
                a = math.exp(rng.uniform(math.log(tc.a_min), math.log(tc.a_max)))
                c = math.exp(rng.uniform(math.log(tc.c_min), math.log(tc.c_max)))
                found.append(Setting(float(f"{a:.3g}"), float(f"{c:.3g}"), g, origin="random"))
    if proposal is not None and all((s.a, s.c, s.g) != (proposal.a, proposal.c, proposal.g) for s in found):
        found.append(proposal)
    return found
