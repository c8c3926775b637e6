"""A data-driven (a, c, g) before any training, from the data's pixel statistics and the Kac law.

Three facts of the law (kac-math.md §1, §3) and two of the data (pixels in [-1, 1]):

* The prior is x_1 = K_{g(1)} = K_1 per coordinate, with Var K_1 = (c²/a)·(1 - (1 - e^{-2a})/(2a)) (§1): the
  proposal makes the prior's spread equal to the data's pixel spread σ_x, so noise and data have one scale,
  as in the paper's settings (σ = c/√a = 0.40 for CIFAR-10's (25, 2), 0.37 for (3000, 20); pixel sd ≈ 0.5).
* The reach of the finite-speed process is c·g(1) = c: a path moves at most c from its start, so joining
  any data value to any prior value needs c ≥ the data's range (max - min of the pixels, ≤ 2).
* The atoms (paths without a flip) keep e^{-a·g(1)} of the prior's mass on ±c (§1, atom time scale 1/a):
  a ≥ ln(10⁴) ≈ 9.2 leaves at most 10⁻⁴ of it there.

So c = the data's range, and a solves Var K_1(a, c) = σ_x² (at least 9.2). g = t (the diffusive clock, which
the paper uses for its small-image setting). The search range around it spans a/4..4a and c/2..2c.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kacdist.kac.law import kac_variance
from kacdist.tune.space import Setting

MIN_RATE = math.log(1e4)  # e^{-a} <= 1e-4 of the prior's mass on the atoms


@dataclass(frozen=True)
class Proposal:
    setting: Setting
    pixel_sd: float
    pixel_range: float
    prior_sd: float  # sd of K_1 at the proposal
    a_range: tuple[float, float]
    c_range: tuple[float, float]

    def describe(self) -> str:
        s = self.setting
        return (f"proposal from the data: a={s.a:g} c={s.c:g} g={s.g} (pixel sd {self.pixel_sd:.3f}, range "
                f"{self.pixel_range:.2f}; prior sd at t=1 {self.prior_sd:.3f}, reach c={s.c:g}, atom mass "
                f"e^-a={math.exp(-s.a):.1e}); search range a {self.a_range[0]:g}..{self.a_range[1]:g}, "
                f"c {self.c_range[0]:g}..{self.c_range[1]:g}")


def _prior_sd(a: float, c: float) -> float:
    return float(kac_variance(torch.tensor([1.0], dtype=torch.float64), a, c)[0]) ** 0.5


def propose(images: torch.Tensor) -> Proposal:
    """The proposal for ``images`` (N, C, H, W) in [-1, 1]."""
    x = images.double()
    pixel_sd = float(x.std())
    pixel_range = float(x.max() - x.min())
    c = max(round(pixel_range, 1), 0.5)
    # Var K_1 decreases in a (for fixed c): bisection on log a for prior sd = pixel sd
    lo, hi = math.log(1e-3), math.log(1e6)
    for _ in range(200):
        mid = (lo + hi) / 2
        if _prior_sd(math.exp(mid), c) > pixel_sd:
            lo = mid
        else:
            hi = mid
    a = max(math.exp((lo + hi) / 2), MIN_RATE)
    a = float(f"{a:.3g}")
    return Proposal(Setting(a, c, "t", origin="proposal"), pixel_sd, pixel_range, _prior_sd(a, c),
                    (float(f"{a / 4:.3g}"), float(f"{a * 4:.3g}")), (c / 2, c * 2))
