"""Conditional velocity of the Kac process, v(s, x) = E[dK_s/ds | K_s = x] (kac-math.md §2).

Inside the cone |x| < c·s:   v = x / (s + (r/c)·I0(βr)/I1(βr))  (note §2).
In the normalised position u = x/(c·s) and lam = a·s this is

    v = c·lam·u / (lam + h(lam·rho)),   h(z) = z·I0(z)/I1(z),   rho = sqrt(1 - u²),

whose denominator is ≥ lam + 2 > lam, so |v| < c strictly inside, the interior limit at the front is
c·lam/(lam + 2), and nothing overflows (h uses i0e/i1e). On the atoms x = ±c·s the velocity is ±c.
"""

from __future__ import annotations

import torch

from kacdist.kac.checks import check_nonnegative_times, check_rate_and_speed
from kacdist.kac.law import bessel_front_term, unit_rho


def unit_velocity(u: torch.Tensor, lam: torch.Tensor, is_atom: torch.Tensor | None = None) -> torch.Tensor:
    """v / c at normalised position u ∈ [-1, 1] with lam = a·s (broadcast). Atoms give ±1 = sign(u)."""
    vel = lam * u / (lam + bessel_front_term(lam * unit_rho(u)))
    if is_atom is not None:
        vel = torch.where(is_atom, torch.sign(u), vel)
    return vel


def kac_velocity(
    s: torch.Tensor,
    x: torch.Tensor,
    a: float,
    c: float,
    is_atom: torch.Tensor | None = None,
) -> torch.Tensor:
    """E[dK/ds | K_s = x] for the Kac process with flip rate a and speed c.

    s broadcasts against x (pass s[:, None, None, None] for images). Points with |x| ≥ c·s are on the
    atoms and get ±c, unless ``is_atom`` is given: then the flag decides (use it whenever the draw is at
    hand; classifying by position fails when c·s is tiny, note §3 "Float pitfall"). Float32 inputs are
    evaluated in float32: the formula has no cancellation, and |v| ≤ c holds exactly after the clamp.
    At s = 0 the law is a single atom at 0 and the velocity is taken as c·sign(x) (0 at x = 0).
    """
    check_rate_and_speed(a, c)
    check_nonnegative_times(s, "s")
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor")
    try:
        s_b, x_b = torch.broadcast_tensors(s.to(x.dtype), x)
    except RuntimeError as err:
        raise ValueError(f"s of shape {tuple(s.shape)} does not broadcast against x of shape {tuple(x.shape)}") from err
    front = c * s_b
    on_front = x_b.abs() >= front
    if is_atom is not None:
        if is_atom.shape != x_b.shape:
            raise ValueError(f"is_atom has shape {tuple(is_atom.shape)}, expected {tuple(x_b.shape)}")
        on_front = is_atom
    positive = front > 0
    u = torch.where(positive, x_b / torch.where(positive, front, torch.ones_like(front)), torch.zeros_like(x_b))
    u = u.clamp(-1.0, 1.0)
    inner = c * unit_velocity(u, a * s_b)
    # |v| ≤ c: rounding in the last bit could only push the interior value up to c, never past it.
    inner = inner.clamp(-c, c)
    return torch.where(on_front, c * torch.sign(x_b), inner)
