"""Exact draws of the Kac process K_s (kac-math.md §1) with no precomputed table.

Two exact samplers:

* ``"envelope"`` (the default): the atoms ±c·s are chosen with their exact mass e^{-lam}, lam = a·s; the
  absolutely continuous part is drawn by rejection from a piecewise-uniform envelope built, per call, for
  the few distinct times of the batch (one row per leading index). Because the density of |u|, u = K/(c·s),
  decreases on [0, 1) (law.unit_ac_density_unnormalised), the density at the left end of a bin bounds it on
  the whole bin and the density at the right end is a lower bound: most draws are accepted by that
  "squeeze" without evaluating a Bessel function, and the rest by the exact density. The bins are laid at
  approximate quantiles so that every bin carries the same envelope area; the approximation affects only
  speed, never the law. The envelope costs O(rows × bins), i.e. memory proportional to the batch.
* ``"poisson_beta"``: N ~ Poisson(lam) flips; given N = n the fraction of time spent in the initial
  direction is Beta(⌊n/2⌋+1, ⌈n/2⌉) (uniform spacings), so K = e·c·s·(2B − 1). Simple and independent of
  the envelope, kept as a cross-check and a baseline for the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kacdist.kac.checks import check_leading_times, check_nonnegative_times, check_rate_and_speed
from kacdist.kac.law import unit_ac_density_unnormalised

SAMPLERS = ("envelope", "poisson_beta")

# Envelope layout: BODY bins at equal quantile levels j/BODY, then TAIL bins at levels 1 - 2^-i/BODY so
# the Gaussian-like tail of the diffusive regime is covered by bins of the same envelope area, then one
# last bin to u = 1 (the front). A few hundred bins keep the squeeze failure rate at a few percent.
_TAIL_BINS = 14
_FINE_POINTS_PER_BIN = 2
# Beyond this many standard deviations of u (sd ≈ lam^-1/2 in the diffusive regime) the fine grid used
# to place the bins stops; the bins themselves always reach u = 1, so this only affects speed.
_FINE_GRID_SDS = 16.0
_MAX_ROUNDS = 64


@dataclass(frozen=True)
class _Envelope:
    """Per-row bins: left edge, width, squeeze threshold (float32, rounded down) and width / area."""

    left: torch.Tensor  # [R, S] float64
    width: torch.Tensor  # [R, S] float64
    squeeze: torch.Tensor  # [R, S] float32: q(right edge)·width/area, accept below this without Bessel
    width_over_area: torch.Tensor  # [R, S] float64: accept iff V < q(u)·width/area
    bins: int


def _body_bins(values_per_row: int) -> int:
    # Table cost is O(rows × bins) and per-value cost does not depend on the bin count, so small rows
    # get fewer bins: the squeeze then fails a little more often, on few values.
    return int(min(256, max(32, values_per_row // 16)))


def _build_envelope(lam: torch.Tensor, body: int) -> _Envelope:
    """Bins for rows with lam > 0 (float64 [R]); see the module docstring."""
    rows = lam.shape[0]
    dev = lam.device
    # 1. approximate quantiles of |u| from a fine trapezoid CDF on [0, u_hi]
    fine = body * _FINE_POINTS_PER_BIN + 1
    u_hi = torch.clamp(_FINE_GRID_SDS / torch.sqrt(lam), max=1.0)
    grid = u_hi[:, None] * torch.linspace(0.0, 1.0, fine, dtype=torch.float64, device=dev)[None, :]
    dens = unit_ac_density_unnormalised(grid, lam[:, None])
    steps = 0.5 * (dens[:, 1:] + dens[:, :-1]) * (grid[:, 1:] - grid[:, :-1])
    cdf = torch.cat([torch.zeros(rows, 1, dtype=torch.float64, device=dev), torch.cumsum(steps, dim=1)], dim=1)
    cdf = cdf / cdf[:, -1:]
    body_levels = torch.arange(1, body, dtype=torch.float64, device=dev) / body
    tail_levels = 1 - torch.pow(2.0, -torch.arange(1, _TAIL_BINS + 1, dtype=torch.float64, device=dev)) / body
    levels = torch.cat([body_levels, tail_levels])[None, :].expand(rows, -1).contiguous()
    hi = torch.searchsorted(cdf, levels).clamp(1, fine - 1)
    c_lo, c_hi = cdf.gather(1, hi - 1), cdf.gather(1, hi)
    g_lo, g_hi = grid.gather(1, hi - 1), grid.gather(1, hi)
    frac = ((levels - c_lo) / (c_hi - c_lo).clamp_min(1e-300)).clamp(0, 1)
    inner = g_lo + frac * (g_hi - g_lo)
    zeros = torch.zeros(rows, 1, dtype=torch.float64, device=dev)
    ones = torch.ones(rows, 1, dtype=torch.float64, device=dev)
    knots = torch.cat([zeros, inner, ones], dim=1)
    knots = torch.cummax(knots, dim=1).values  # guard against rounding making them non-monotone
    # 2. exact envelope: q at each left edge bounds q on its bin; every bin gets the same area A
    q_knots = unit_ac_density_unnormalised(knots, lam[:, None])
    width = knots[:, 1:] - knots[:, :-1]
    area = (q_knots[:, :-1] * width).amax(dim=1, keepdim=True)
    squeeze = (q_knots[:, 1:] * width / area).to(torch.float32)
    squeeze = torch.nextafter(squeeze, torch.zeros_like(squeeze))  # round down: the squeeze stays a lower bound
    return _Envelope(
        left=knots[:, :-1].contiguous(),
        width=width.contiguous(),
        squeeze=squeeze.contiguous(),
        width_over_area=(width / area).contiguous(),
        bins=width.shape[1],
    )


def _draw_from_envelope(
    env: _Envelope, lam: torch.Tensor, row: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw |u| for the flat list of values whose envelope row is ``row``. Returns (|u| float64, sign ±1)."""
    n = row.shape[0]
    dev = row.device
    out_abs = torch.empty(n, dtype=torch.float64, device=dev)
    out_sign = torch.empty(n, dtype=torch.float32, device=dev)
    pending = torch.arange(n, device=dev)
    bins = env.bins
    left, width = env.left.reshape(-1), env.width.reshape(-1)
    squeeze, woa = env.squeeze.reshape(-1), env.width_over_area.reshape(-1)
    for _ in range(_MAX_ROUNDS):
        m = pending.shape[0]
        r = row[pending]
        # one float64 uniform picks the sign, the bin and the position inside it (53 bits are plenty)
        pick = torch.empty(m, dtype=torch.float64, device=dev).uniform_(generator=generator) * (2 * bins)
        slot2 = pick.floor()
        frac = pick - slot2
        slot2 = slot2.long()
        sign = 1 - 2 * (slot2 & 1).to(torch.float32)
        flat = r * bins + (slot2 >> 1)
        u_abs = torch.take(left, flat) + frac * torch.take(width, flat)
        accept_draw = torch.empty(m, dtype=torch.float32, device=dev).uniform_(generator=generator)
        ok = accept_draw < torch.take(squeeze, flat)
        unsure = (~ok).nonzero().squeeze(1)
        if unsure.numel():
            q = unit_ac_density_unnormalised(u_abs[unsure], lam[r[unsure]])
            ok[unsure] = accept_draw[unsure].to(torch.float64) < q * torch.take(woa, flat[unsure])
        done = pending[ok]
        out_abs[done] = u_abs[ok]
        out_sign[done] = sign[ok]
        pending = pending[~ok]
        if pending.numel() == 0:
            return out_abs, out_sign
    raise RuntimeError(f"Kac envelope sampler: {pending.numel()} values still rejected after {_MAX_ROUNDS} rounds")


def sample_kac_unit(
    lam: torch.Tensor,
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None = None,
    method: str = "envelope",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact draws of u = K_s/(c·s) ∈ [-1, 1] with lam = a·s given per leading index ([B], float).

    Returns (u float32 of ``shape``, is_atom bool of ``shape``). The law of u depends on lam alone.
    """
    if method not in SAMPLERS:
        raise ValueError(f"unknown Kac sampler {method!r}; choose one of {', '.join(SAMPLERS)}")
    shape = tuple(shape)
    check_leading_times(lam, shape, "lam")
    check_nonnegative_times(lam, "lam")
    if method == "poisson_beta":
        return _sample_unit_poisson_beta(lam, shape, generator)
    dev = lam.device
    lam64 = lam.to(torch.float64)
    rows = shape[0]
    per_row = 1
    for d in shape[1:]:
        per_row *= d
    u = torch.empty(rows, per_row, dtype=torch.float32, device=dev)
    is_atom = torch.zeros(rows, per_row, dtype=torch.bool, device=dev)
    p_atom = torch.exp(-lam64)
    # Atoms: only rows where the no-flip probability is representable can have them (2^-60 ≈ 8.7e-19).
    atom_rows = (p_atom > 2.0**-60).nonzero().squeeze(1)
    if atom_rows.numel():
        draw = torch.empty(atom_rows.numel(), per_row, dtype=torch.float64, device=dev).uniform_(generator=generator)
        pa = p_atom[atom_rows, None]
        hit = draw < pa
        # conditional on a hit, draw/pa is uniform: its first bit is the atom's sign
        sign = torch.where(draw < 0.5 * pa, 1.0, -1.0).to(torch.float32)
        u[atom_rows] = torch.where(hit, sign, torch.zeros_like(sign))
        is_atom[atom_rows] = hit
    ac = ~is_atom
    ac_rows = (lam64 > 0).nonzero().squeeze(1)
    if ac_rows.numel():
        env = _build_envelope(lam64[ac_rows], _body_bins(per_row))
        # flat positions of the values that need an absolutely continuous draw, and their envelope row
        local = torch.full((rows,), -1, dtype=torch.long, device=dev)
        local[ac_rows] = torch.arange(ac_rows.numel(), device=dev)
        if atom_rows.numel():
            flat_pos = ac.reshape(-1).nonzero().squeeze(1)
            env_row = local[flat_pos // per_row]
        else:
            flat_pos = None
            env_row = local[:, None].expand(rows, per_row).reshape(-1)
        u_abs, sign = _draw_from_envelope(env, lam64[ac_rows], env_row, generator)
        vals = (sign.to(torch.float64) * u_abs).to(torch.float32)
        if flat_pos is None:
            u = vals.reshape(rows, per_row)
        else:
            u.reshape(-1)[flat_pos] = vals
    return u.reshape(shape), is_atom.reshape(shape)


def _sample_unit_poisson_beta(
    lam: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Poisson flip count, then the Beta time fraction from two Gamma draws (module docstring)."""
    view = (shape[0],) + (1,) * (len(shape) - 1)
    rate = lam.to(torch.float32).reshape(view).expand(shape).contiguous()
    flips = torch.poisson(rate, generator=generator)
    direction = torch.where(torch.rand(shape, generator=generator, device=lam.device) < 0.5, 1.0, -1.0)
    alpha = torch.floor(flips / 2) + 1
    beta = torch.ceil(flips / 2)
    is_atom = flips == 0
    g1 = torch._standard_gamma(alpha, generator=generator)
    g2 = torch._standard_gamma(beta.clamp_min(1.0), generator=generator)
    g2 = torch.where(is_atom, torch.zeros_like(g2), g2)
    frac = (g1 - g2) / (g1 + g2)  # 2B - 1 with B = g1/(g1 + g2)
    return direction * frac, is_atom


def sample_kac(
    s: torch.Tensor,
    a: float,
    c: float,
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None = None,
    method: str = "envelope",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact draws of K_s, one time s per leading index of ``shape``, broadcast over the rest.

    Returns (k, is_atom): k float32 with |k| ≤ c·s, is_atom True where the path never flipped before s
    (k = ±c·s exactly). ``s`` is the Kac clock, i.e. g(t) for the image process (note §3).
    """
    check_rate_and_speed(a, c)
    if not torch.is_tensor(s):
        raise TypeError(f"s must be a torch.Tensor, got {type(s).__name__}")
    u, is_atom = sample_kac_unit(a * s, shape, generator=generator, method=method)
    front = (c * s.to(torch.float32)).reshape((shape[0],) + (1,) * (len(shape) - 1))
    return u * front, is_atom
