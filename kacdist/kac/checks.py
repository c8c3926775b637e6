"""Argument checks shared by the Kac library: refuse bad input with a message naming the argument."""

from __future__ import annotations

import math

import torch


def check_rate_and_speed(a: float, c: float) -> None:
    """The flip rate a and the speed c must be positive finite numbers (kac-math.md §1)."""
    _check_positive_numbers((("a (flip rate)", a), ("c (speed)", c)))


def check_rate(a: float) -> None:
    _check_positive_numbers((("a (flip rate)", a),))


def _check_positive_numbers(named: tuple[tuple[str, object], ...]) -> None:
    for name, value in named:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def check_unit_times(t: torch.Tensor, name: str = "t") -> None:
    """Times live on [0, 1] (data at 0, noise at 1; kac-math.md §0)."""
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if t.numel() == 0:
        return
    bad = ~((t >= 0) & (t <= 1))  # also catches NaN
    if bool(bad.any()):
        lo, hi = float(t.min()), float(t.max())
        raise ValueError(f"{name} must lie in [0, 1]; got values in [{lo:g}, {hi:g}] (NaN counts as outside)")


def check_nonnegative_times(t: torch.Tensor, name: str = "t") -> None:
    """The raw Kac process K_t is defined for every t >= 0 (it does not need t <= 1)."""
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if t.numel() and bool((~(t >= 0) | ~torch.isfinite(t)).any()):
        raise ValueError(f"{name} must be finite and >= 0; got min {float(t.min()):g}")


def check_leading_times(t: torch.Tensor, shape: tuple[int, ...] | torch.Size, name: str = "t") -> None:
    """One time per leading index: t has shape (B,) and the batch shape starts with B."""
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D with one time per leading index, got shape {tuple(t.shape)}")
    if len(shape) == 0 or shape[0] != t.shape[0]:
        raise ValueError(
            f"{name} has {t.shape[0]} times but the shape {tuple(shape)} has leading size "
            f"{shape[0] if len(shape) else 'none'}; they must match"
        )
