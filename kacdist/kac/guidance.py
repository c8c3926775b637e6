"""Classifier-free guidance in velocity space, DistillKac eq. (6):

    ṽ(t, x; y) = v(t, x) + w(t)·[v(t, x; y) - v(t, x)],

w = 0 is unconditional, w = 1 purely conditional. The conditional and unconditional velocities come from
one batched forward pass of the network (the batch doubled, the second half carrying the "null" label),
so guidance costs one network evaluation per velocity, counted as one NFE.
"""

from __future__ import annotations

from typing import Callable, Protocol, Union

import torch

GuidanceWeight = Union[float, Callable[[torch.Tensor], torch.Tensor]]


class ConditionalVelocityModel(Protocol):
    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


def guidance_weight(w: GuidanceWeight, t: torch.Tensor) -> torch.Tensor:
    """w(t) per sample as a tensor of shape (B,): a constant, or a function of t."""
    if callable(w):
        wt = torch.as_tensor(w(t), dtype=t.dtype, device=t.device)
        return wt.expand(t.shape) if wt.dim() == 0 else wt
    return torch.full_like(t, float(w))


def guided_velocity(
    model: ConditionalVelocityModel,
    x: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor,
    w: GuidanceWeight,
    null_label: int,
) -> torch.Tensor:
    """ṽ of eq. (6) for a batch (x, t, y) with one forward pass of ``model``.

    A constant w of exactly 0 or 1 needs only one half, so the batch is not doubled then.
    """
    if x.shape[0] != t.shape[0] or x.shape[0] != y.shape[0]:
        raise ValueError(f"x, t and y must share the batch size; got {x.shape[0]}, {t.shape[0]}, {y.shape[0]}")
    if not callable(w) and float(w) == 0.0:
        return model(x, t, torch.full_like(y, null_label))
    if not callable(w) and float(w) == 1.0:
        return model(x, t, y)
    both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)]))
    v_cond, v_uncond = both.chunk(2)
    wt = guidance_weight(w, t).to(both.dtype).reshape((-1,) + (1,) * (x.dim() - 1))
    return v_uncond + wt * (v_cond - v_uncond)


class GuidedVelocity:
    """velocity(x, t) for the integrators: a conditional model, fixed labels and a guidance weight."""

    def __init__(self, model: ConditionalVelocityModel, y: torch.Tensor, w: GuidanceWeight, null_label: int) -> None:
        self.model, self.y, self.w, self.null_label = model, y, w, null_label

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return guided_velocity(self.model, x, t, self.y, self.w, self.null_label)
