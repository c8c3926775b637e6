"""Time schedules of the mean-reverting Kac process M_t = f(t)·x0 + K_{g(t)} (kac-math.md §3).

f(t) = 1 - t for every schedule: DistillKac's Table B-1 prints "f(t) = t", which contradicts its own
f(0) = 1, f(1) = 0 (note §7.1). g is the Kac clock: g(t) = t (CIFAR-10) or g(t) = t² (CelebA-64, LSUN),
with T = 1. The network is conditioned on the original t, never on g(t).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class KacSchedule:
    """f, f', g, g' as functions of t ∈ [0, 1]."""

    name: str
    g: Callable[[torch.Tensor], torch.Tensor]
    dg: Callable[[torch.Tensor], torch.Tensor]

    @staticmethod
    def f(t: torch.Tensor) -> torch.Tensor:
        return 1 - t

    @staticmethod
    def df(t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, -1.0)


SCHEDULES: dict[str, KacSchedule] = {
    "t": KacSchedule("t", g=lambda t: t, dg=lambda t: torch.ones_like(t)),
    "t2": KacSchedule("t2", g=lambda t: t * t, dg=lambda t: 2 * t),
}


def get_schedule(name: str) -> KacSchedule:
    """The schedule called ``name`` ("t" or "t2"); anything else is refused naming the valid ones."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown Kac schedule g={name!r}; valid: {', '.join(sorted(SCHEDULES))}")
    return SCHEDULES[name]
