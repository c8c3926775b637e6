"""ODE integrators for dx/dt = v(t, x) on a uniform grid, from t_start (1: noise) to t_end (0: data).

"M steps" means M steps: the grid is t_k = t_start + (t_end - t_start)·k/M, k = 0..M (the reference
code's linspace(1, 0, 100) is 99 steps; note §4). With dt = (t_end - t_start)/M < 0 going down, an Euler
step is x + dt·v(t, x) = x - |dt|·v, DistillKac Alg. 1's x̂ = x - v·Δt.

* euler     1 NFE/step, order 1.
* midpoint  2 NFE/step (RK2: v at the half step), order 2.
* heun      2 NFE/step (trapezoid predictor-corrector; evaluates v at t_end), order 2.
* ab2       1 NFE/step Adams–Bashforth 2: x + dt·(3/2·v_k - 1/2·v_{k-1}). Its first step has no history:
            ``ab2_start="euler"`` (default; M NFE in all, the paper's "one evaluation per step") or
            ``"midpoint"`` (M + 1 NFE, second order from the first step).

t_start and t_end may be floats or per-sample tensors of shape (B,), which is what the distillation
teacher needs (each sample integrates its own segment [t_{k+1}, t_k]). Every call returns the number of
velocity evaluations it actually made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
INTEGRATORS = ("euler", "midpoint", "heun", "ab2")
AB2_STARTS = ("euler", "midpoint")


def nfe_per_call(method: str, steps: int, ab2_start: str = "euler") -> int:
    """The NFE an integration will spend (the integrators also count them as they go)."""
    check_integrator(method, steps, ab2_start)
    if method in ("midpoint", "heun"):
        return 2 * steps
    if method == "ab2" and ab2_start == "midpoint":
        return steps + 1
    return steps


def check_integrator(method: str, steps: int, ab2_start: str = "euler") -> None:
    if method not in INTEGRATORS:
        raise ValueError(f"unknown integrator {method!r}; valid: {', '.join(INTEGRATORS)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if ab2_start not in AB2_STARTS:
        raise ValueError(f"unknown ab2_start {ab2_start!r}; valid: {', '.join(AB2_STARTS)}")


@dataclass
class IntegrationResult:
    x: torch.Tensor
    nfe: int


def integrate(
    velocity: Velocity,
    x: torch.Tensor,
    steps: int,
    method: str = "euler",
    t_start: float | torch.Tensor = 1.0,
    t_end: float | torch.Tensor = 0.0,
    ab2_start: str = "euler",
) -> IntegrationResult:
    """Integrate dx/dt = velocity(x, t) from t_start to t_end in ``steps`` uniform steps."""
    check_integrator(method, steps, ab2_start)
    batch = x.shape[0]
    t0 = torch.as_tensor(t_start, dtype=x.dtype, device=x.device).expand(batch).clone()
    t1 = torch.as_tensor(t_end, dtype=x.dtype, device=x.device).expand(batch)
    dt = (t1 - t0) / steps  # per sample, negative when integrating towards the data
    view = (-1,) + (1,) * (x.dim() - 1)
    dtx = dt.reshape(view)
    nfe = 0

    def v(xx: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        return velocity(xx, tt)

    def midpoint_step(xx: torch.Tensor, tt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k1 = v(xx, tt)
        return xx + dtx * v(xx + 0.5 * dtx * k1, tt + 0.5 * dt), k1

    previous: torch.Tensor | None = None
    for k in range(steps):
        # t_k from the grid formula, not by accumulating dt, so the last step lands on t_end exactly
        tk = t0 + (t1 - t0) * (k / steps)
        if method == "euler":
            x = x + dtx * v(x, tk)
        elif method == "midpoint":
            x, _ = midpoint_step(x, tk)
        elif method == "heun":
            k1 = v(x, tk)
            x_pred = x + dtx * k1
            k2 = v(x_pred, t0 + (t1 - t0) * ((k + 1) / steps))
            x = x + 0.5 * dtx * (k1 + k2)
        else:  # ab2
            if previous is None:
                if ab2_start == "midpoint":
                    x, current = midpoint_step(x, tk)
                else:
                    current = v(x, tk)
                    x = x + dtx * current
            else:
                current = v(x, tk)
                x = x + dtx * (1.5 * current - 0.5 * previous)
            previous = current
    return IntegrationResult(x=x, nfe=nfe)
