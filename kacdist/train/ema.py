"""Exponential moving average of the weights, kept in float32 and saved separately from the raw weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, updates: int) -> float:
        """Warmed-up decay min(decay, (1 + n)/(10 + n)) after n earlier updates: without the warm-up a
        0.9999 average would still be mostly the initial (zero-output) weights for the first ~10k steps,
        which is a whole run at the digits scale."""
        return min(self.decay, (1 + updates) / (10 + updates))

    @torch.no_grad()
    def update(self, model: nn.Module, updates: int) -> None:
        """Fold ``model`` in; ``updates`` is the number of earlier updates (the optimizer step)."""
        decay = self.decay_at(updates)
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
