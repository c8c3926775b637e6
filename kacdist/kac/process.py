"""The mean-reverting Kac process used for images and its regression target (kac-math.md §3–4).

M_t = f(t)·x0 + K_{g(t)} per pixel and channel, each coordinate with its own independent Kac process, all
coordinates of an image sharing the image's time t. The conditional velocity (the training target) is

    u(t, x | x0) = f'(t)·x0 + g'(t)·v_K(g(t), K) = -x0 + g'(t)·v_K(g(t), K),

and it is computed **from the drawn noise K and its atom flag**, never by re-deriving K = x_t - f·x0:
that subtraction loses the atoms when c·g(t) is tiny (note §3, "Float pitfall": 44% of atoms misclassified
at t = 1e-3 for (3000, 20), g = t²).
"""

from __future__ import annotations

import torch

from kacdist.kac.checks import check_leading_times, check_rate_and_speed, check_unit_times
from kacdist.kac.sampler import SAMPLERS, sample_kac_unit
from kacdist.kac.schedules import get_schedule
from kacdist.kac.velocity import unit_velocity

# Rows are processed in blocks of about this many values: every elementwise pass then works on data that
# fits in cache (the same trick as in the sampler).
_BLOCK_VALUES = 1 << 19


class KacProcess:
    """The Kac forward process with flip rate ``a``, speed ``c`` and clock ``g`` ("t" or "t2")."""

    def __init__(self, a: float, c: float, g: str = "t", sampler: str = "envelope") -> None:
        check_rate_and_speed(a, c)
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown Kac sampler {sampler!r}; valid: {', '.join(SAMPLERS)}")
        self.a, self.c = float(a), float(c)
        self.schedule = get_schedule(g)
        self.sampler = sampler

    def __repr__(self) -> str:
        return f"KacProcess(a={self.a:g}, c={self.c:g}, g={self.schedule.name!r}, sampler={self.sampler!r})"

    def target(
        self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw x_t ~ M_t | x0 and return (x_t, u(t, x_t | x0)) for a batch x0 of shape (B, ...), t of shape (B,).

        x0 is expected in [-1, 1]. Works in x0's dtype (float32 or float64) on x0's device.
        """
        if not torch.is_tensor(x0) or not x0.is_floating_point():
            raise TypeError("x0 must be a floating-point tensor")
        check_leading_times(t, x0.shape, "t")
        check_unit_times(t)
        t = t.to(device=x0.device, dtype=x0.dtype)
        s = self.schedule.g(t)
        lam = self.a * s.to(torch.float64)
        dg = self.schedule.dg(t)
        rows = x0.shape[0]
        x_flat = x0.reshape(rows, -1)
        per_row = x_flat.shape[1]
        x_t = torch.empty_like(x_flat)
        u_t = torch.empty_like(x_flat)
        step = max(1, _BLOCK_VALUES // max(per_row, 1))
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            unit, is_atom = sample_kac_unit(lam[r0:r1], (r1 - r0, per_row), generator=generator, method=self.sampler)
            unit = unit.to(x0.dtype)
            x0_b = x_flat[r0:r1]
            lam_b = lam[r0:r1, None].to(x0.dtype)
            front = (self.c * s[r0:r1])[:, None]
            # x_t = f(t)·x0 + K with K = c·g(t)·u  (note §3)
            x_t[r0:r1] = torch.addcmul((1 - t[r0:r1])[:, None] * x0_b, front, unit)
            # u = f'·x0 + g'·v_K, with v_K = c·(v/c) from the drawn u and its atom flag (note §3)
            v_unit = unit_velocity(unit, lam_b, is_atom)
            u_t[r0:r1] = torch.addcmul(-x0_b, (self.c * dg[r0:r1])[:, None], v_unit)
        return x_t.reshape(x0.shape), u_t.reshape(x0.shape)

    def prior(
        self, shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """x_1 = K_{g(1)} per coordinate: the data-independent starting point of sampling (note §4)."""
        shape = tuple(shape)
        ones = torch.ones(shape[0], dtype=torch.float64, device=device)
        s1 = self.schedule.g(ones)
        unit, _ = sample_kac_unit(self.a * s1, shape, generator=generator, method=self.sampler)
        return unit * float(self.c * s1[0])

    def conditional_velocity(self, t: torch.Tensor, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """u(t, x | x0) from a position (for diagnostics): atoms are recognised by |x - f·x0| ≥ c·g(t).

        Prefer ``target``, which knows the atom flag; this form inherits the float pitfall of note §3.
        """
        from kacdist.kac.velocity import kac_velocity

        check_leading_times(t, x.shape, "t")
        check_unit_times(t)
        view = (-1,) + (1,) * (x.dim() - 1)
        tt = t.to(x.dtype).reshape(view)
        k = x - (1 - tt) * x0
        return -x0 + self.schedule.dg(tt) * kac_velocity(self.schedule.g(tt), k, self.a, self.c)
