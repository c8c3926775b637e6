"""Learning-rate factor: linear warmup, flat, then cosine decay to zero (DistillKac App. B.1: 2% / 58% / 40%)."""

from __future__ import annotations

import math


def lr_factor(step: int, total_steps: int, warmup_frac: float = 0.02, flat_frac: float = 0.58) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based) of ``total_steps``."""
    warmup = max(1, round(warmup_frac * total_steps)) if warmup_frac > 0 else 0
    flat_end = warmup + round(flat_frac * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    if step < flat_end:
        return 1.0
    decay = max(1, total_steps - flat_end)
    progress = min(1.0, (step - flat_end) / decay)
    return 0.5 * (1 + math.cos(math.pi * progress))
