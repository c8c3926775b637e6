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

# Envelope layout (per row, i.e. per distinct time of the batch):
# * BODY bins at equal quantile levels of |u|; every body bin is one "slot" of envelope area A;
# * the TAIL beyond the last body knot, whose mass is TAIL_SLOTS body masses, gets TAIL_SLOTS slots; a
#   draw that lands there picks a fine tail bin by a search over the tail's cumulative envelope. This
#   keeps the last body bins away from the fast-falling tail, where one bin's density drops a lot.
# Each slot exists twice, for u > 0 and u < 0, so one uniform picks the sign, the slot and (its
# fractional part) the position inside the bin.
# The fine grid that places the knots stops this many standard deviations of u out (sd ≈ lam^-1/2 in
# the diffusive regime); bins always reach u = 1, so this choice affects only speed, never the law.
_FINE_GRID_SDS = 16.0
_TAIL_UNIFORM_BINS = 32
_TAIL_FILL = 0.88
_TAIL_DEEP_BINS = 20  # geometric levels P·2^-i reaching far into the tail, then one bin to u = 1
_MAX_ROUNDS = 64
_VALUES_PER_BIN = 32
_BODY_PER_TAIL_SLOT = 16
_CHUNK = 1 << 18
_BELOW_ONE = 1.0 - 2.0**-24  # the largest float32 below 1
_TAIL_MARK = -1.0  # squeeze value of tail slots: never accepted at once, sent to the tail sampler


@dataclass(frozen=True)
class _Envelope:
    """Flattened per-row tables. Slot tables have 2·(body + tail_slots) entries per row."""

    slot_left: torch.Tensor  # signed left edge of the bin (0 for tail slots)
    slot_width: torch.Tensor  # signed width (0 for tail slots)
    slot_squeeze: torch.Tensor  # float32, rounded down; _TAIL_MARK for tail slots
    slot_scale: torch.Tensor  # width / A: accept iff V < q(|u|)·scale
    tail_key: torch.Tensor  # row + cumulative share of the tail envelope: one globally sorted array
    tail_left: torch.Tensor
    tail_width: torch.Tensor
    tail_squeeze: torch.Tensor  # float32
    tail_scale: torch.Tensor
    slots: int  # body + tail_slots (per sign)


def _body_bins(values_per_row: int) -> int:
    # Table cost is O(rows × bins); per-value cost does not depend on the bin count. Small rows get fewer
    # bins: the squeeze then fails a little more often, on few values.
    return int(min(256, max(32, values_per_row // _VALUES_PER_BIN)))


def _interp_rows(levels: torch.Tensor, cdf: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Per row, the grid position where the (piecewise linear) cdf reaches each level."""
    fine = cdf.shape[1]
    hi = torch.searchsorted(cdf, levels).clamp(1, fine - 1)
    c_lo, c_hi = cdf.gather(1, hi - 1), cdf.gather(1, hi)
    g_lo, g_hi = grid.gather(1, hi - 1), grid.gather(1, hi)
    frac = ((levels - c_lo) / (c_hi - c_lo).clamp_min(1e-300)).clamp(0, 1)
    return g_lo + frac * (g_hi - g_lo)


def _round_down_f32(x: torch.Tensor) -> torch.Tensor:
    """float32 copy that never exceeds x, so a squeeze threshold stays a lower bound."""
    y = x.to(torch.float32)
    return torch.where(y.to(torch.float64) > x, torch.nextafter(y, torch.full_like(y, -1.0)), y)


def _build_envelope(lam: torch.Tensor, body: int) -> _Envelope:
    """Envelope tables for rows with lam > 0 (float64 [R]); see the layout note above."""
    rows, dev, f64 = lam.shape[0], lam.device, torch.float64
    tail_slots = max(4, body // _BODY_PER_TAIL_SLOT)
    # The tail's envelope exceeds its mass by a few percent (its bins are coarse where the density falls
    # fast), so it gets a little less mass than its slots: then the body, not the tail, sets the area A.
    mass = 1.0 / (body + _TAIL_FILL * tail_slots)  # body bin mass
    tail_mass = _TAIL_FILL * tail_slots * mass
    # 1. approximate quantiles of |u| from a trapezoid CDF on a fine grid over [0, u_hi]
    fine = 2 * body + 33
    u_hi = torch.clamp(_FINE_GRID_SDS / torch.sqrt(lam), max=1.0)
    grid = u_hi[:, None] * torch.linspace(0.0, 1.0, fine, dtype=f64, device=dev)[None, :]
    dens = unit_ac_density_unnormalised(grid, lam[:, None])
    steps = 0.5 * (dens[:, 1:] + dens[:, :-1]) * (grid[:, 1:] - grid[:, :-1])
    upper = torch.flip(torch.cumsum(torch.flip(steps, [1]), dim=1), [1])  # mass above each grid point
    zeros = torch.zeros(rows, 1, dtype=f64, device=dev)
    survival = torch.cat([upper, zeros], dim=1) / upper[:, :1]
    cdf = 1 - survival  # built from the top so the tail levels keep relative precision
    body_levels = torch.arange(1, body + 1, dtype=f64, device=dev) * mass
    tail_uniform = 1 - tail_mass * (1 - torch.arange(1, _TAIL_UNIFORM_BINS, dtype=f64, device=dev) / _TAIL_UNIFORM_BINS)
    deep = 1 - (tail_mass / _TAIL_UNIFORM_BINS) * torch.pow(2.0, -torch.arange(0, _TAIL_DEEP_BINS, dtype=f64, device=dev))
    levels = torch.cat([body_levels, tail_uniform, deep])[None, :].expand(rows, -1).contiguous()
    ones = torch.ones(rows, 1, dtype=f64, device=dev)
    knots = torch.cat([zeros, _interp_rows(levels, cdf, grid), ones], dim=1)
    knots = torch.cummax(knots, dim=1).values  # rounding must never make them decrease
    # 2. exact envelope: q(left edge) bounds q on the bin (q decreases in |u|); q(right edge) is a squeeze
    q = unit_ac_density_unnormalised(knots, lam[:, None])
    width = knots[:, 1:] - knots[:, :-1]
    q_left, q_right = q[:, :-1], q[:, 1:]
    body_area = q_left[:, :body] * width[:, :body]
    tail_area = q_left[:, body:] * width[:, body:]
    tail_total = tail_area.sum(dim=1, keepdim=True)
    # every slot (a body bin, or one of the tail's tail_slots shares) has the same envelope area A
    area = torch.maximum(body_area.amax(dim=1, keepdim=True), tail_total / tail_slots)
    body_scale = width[:, :body] / area
    # tail: bin i is picked with probability tail_area_i / tail_total, then accepted with
    # probability q(u)/q_left_i · tail_total/(tail_slots·A) ≤ 1
    tail_scale = (tail_total / (tail_slots * area)) / q_left[:, body:].clamp_min(1e-300)
    tail_cum = torch.cumsum(tail_area, dim=1) / tail_total
    tail_cum[:, -1] = 1.0
    row_ids = torch.arange(rows, dtype=f64, device=dev)[:, None]
    pad = torch.zeros(rows, tail_slots, dtype=f64, device=dev)
    left = torch.cat([knots[:, :body], pad], dim=1)
    wid = torch.cat([width[:, :body], pad], dim=1)
    squeeze = torch.cat([_round_down_f32(q_right[:, :body] * body_scale), torch.full_like(pad, _TAIL_MARK, dtype=torch.float32)], dim=1)
    scale = torch.cat([body_scale, pad], dim=1)
    return _Envelope(
        slot_left=torch.cat([left, -left], dim=1).reshape(-1),
        slot_width=torch.cat([wid, -wid], dim=1).reshape(-1),
        slot_squeeze=torch.cat([squeeze, squeeze], dim=1).reshape(-1),
        slot_scale=torch.cat([scale, scale], dim=1).reshape(-1),
        tail_key=(row_ids + tail_cum).reshape(-1),
        tail_left=knots[:, body:-1].reshape(-1),
        tail_width=width[:, body:].reshape(-1),
        tail_squeeze=_round_down_f32(q_right[:, body:] * tail_scale).reshape(-1),
        tail_scale=tail_scale.reshape(-1),
        slots=body + tail_slots,
    )


def _settle(
    env: _Envelope,
    lam: torch.Tensor,
    slot: torch.Tensor,
    frac: torch.Tensor,
    u: torch.Tensor,
    accept_draw: torch.Tensor,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Finish proposals the squeeze did not accept: returns the accept mask and fills ``u`` in place.

    Body slots take the exact test. Tail slots first get their position from the tail sampler (a search
    over the row's cumulative tail envelope), then the squeeze and the exact test.
    """
    two_s = 2 * env.slots
    row = torch.div(slot, two_s, rounding_mode="floor")
    tail = torch.take(env.slot_squeeze, slot) == _TAIL_MARK
    tail_idx = tail.nonzero().squeeze(1)
    squeeze = torch.take(env.slot_squeeze, slot)
    scale = torch.take(env.slot_scale, slot)
    if tail_idx.numel():
        r = row[tail_idx]
        key = r.to(torch.float64) + torch.empty(r.numel(), dtype=torch.float64, device=r.device).uniform_(generator=generator)
        bin_ = torch.searchsorted(env.tail_key, key, right=True).clamp(max=env.tail_key.numel() - 1)
        negative = (slot[tail_idx] - r * two_s) >= env.slots
        pos = env.tail_left[bin_] + frac[tail_idx] * env.tail_width[bin_]
        u[tail_idx] = torch.where(negative, -pos, pos)
        squeeze[tail_idx] = env.tail_squeeze[bin_]
        scale[tail_idx] = env.tail_scale[bin_]
    ok = accept_draw < squeeze
    exact = (~ok).nonzero().squeeze(1)
    if exact.numel():
        # float32 for the exact test: with 1 - rho computed without cancellation (law.py) the acceptance
        # probability carries a relative error of about 1e-5 at lam = 1e4 and far less at the usual lam
        q = unit_ac_density_unnormalised(u[exact].abs().to(torch.float32), lam[row[exact]].to(torch.float32))
        ok[exact] = accept_draw[exact] < q * scale[exact].to(torch.float32)
    return ok


def _draw_block(
    env: _Envelope,
    lam: torch.Tensor,
    p_atom: torch.Tensor,
    rows: torch.Tensor,
    width: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a block of ``len(rows) × width`` values, row r of the block belonging to envelope row rows[r]."""
    dev = rows.device
    two_s = 2 * env.slots
    pa = p_atom[rows][:, None]
    has_atoms = bool((pa > 0).any())
    # One float64 uniform per value: below p_atom it is an atom (its sign from pick < p_atom/2);
    # above, (pick - p_atom)/(1 - p_atom) is uniform and, scaled by 2S and shifted to the row's slots,
    # its integer part is the slot and its fractional part the position in the bin.
    pick = torch.empty(rows.numel(), width, dtype=torch.float64, device=dev).uniform_(generator=generator)
    base = (rows.to(torch.float64) * two_s)[:, None]
    if has_atoms:
        # rows with p_atom = 1 (lam below float64 resolution) are all atoms: give them y = base
        certain = pa >= 1
        denom = torch.where(certain, torch.ones_like(pa), 1 - pa)
        coef = torch.where(certain, torch.zeros_like(pa), two_s / denom)
        offset = torch.where(certain, base, base - two_s * pa / denom)
        y = torch.maximum(pick * coef + offset, base)
    else:
        y = pick * two_s + base
    slot_f = y.floor()
    frac = y - slot_f
    slot = slot_f.long().clamp_(max=int(base[-1, 0]) + two_s - 1)
    u = torch.take(env.slot_left, slot) + frac * torch.take(env.slot_width, slot)
    accept_draw = torch.empty(rows.numel(), width, dtype=torch.float32, device=dev).uniform_(generator=generator)
    ok = accept_draw < torch.take(env.slot_squeeze, slot)
    if has_atoms:
        is_atom = pick < pa
        ok |= is_atom
    else:
        is_atom = torch.zeros_like(ok)
    u, ok, slot, frac, accept_draw = u.reshape(-1), ok.reshape(-1), slot.reshape(-1), frac.reshape(-1), accept_draw.reshape(-1)
    unsure = (~ok).nonzero().squeeze(1)
    if unsure.numel():
        u_uns = u[unsure]
        ok_uns = _settle(env, lam, slot[unsure], frac[unsure], u_uns, accept_draw[unsure], generator)
        u[unsure] = u_uns
        pending = unsure[~ok_uns]
        pending_slot_row = torch.div(slot[pending], two_s, rounding_mode="floor")
        for _ in range(_MAX_ROUNDS):
            if pending.numel() == 0:
                break
            m = pending.numel()
            y = torch.empty(m, dtype=torch.float64, device=dev).uniform_(generator=generator) * two_s
            y = y + (pending_slot_row.to(torch.float64) * two_s)
            s_f = y.floor()
            fr = y - s_f
            sl = s_f.long()
            uu = torch.take(env.slot_left, sl) + fr * torch.take(env.slot_width, sl)
            vv = torch.empty(m, dtype=torch.float32, device=dev).uniform_(generator=generator)
            ok_p = _settle(env, lam, sl, fr, uu, vv, generator)
            u[pending[ok_p]] = uu[ok_p]
            pending = pending[~ok_p]
            pending_slot_row = pending_slot_row[~ok_p]
        else:
            raise RuntimeError(f"Kac envelope sampler: {pending.numel()} values still rejected after {_MAX_ROUNDS} rounds")
    # a continuous draw within 2^-25 of the front would round to exactly ±1 in float32, i.e. onto an
    # atom; keep it strictly inside
    u = u.to(torch.float32).clamp_(-_BELOW_ONE, _BELOW_ONE).reshape(rows.numel(), width)
    if has_atoms:
        u = torch.where(is_atom, torch.where(pick < 0.5 * pa, 1.0, -1.0).to(torch.float32), u)
    return u, is_atom


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
    n_rows = shape[0]
    per_row = 1
    for d in shape[1:]:
        per_row *= d
    u = torch.empty(n_rows, per_row, dtype=torch.float32, device=dev)
    is_atom = torch.empty(n_rows, per_row, dtype=torch.bool, device=dev)
    if n_rows == 0 or per_row == 0:
        return u.reshape(shape), is_atom.reshape(shape)
    # lam = 0 (s = 0) is a single atom at 0: p_atom = 1 and the envelope row is never used
    p_atom = torch.exp(-lam64)
    p_atom = torch.where(p_atom > 2.0**-60, p_atom, torch.zeros_like(p_atom))  # below that, no atom is representable
    env = _build_envelope(lam64.clamp_min(1e-12), _body_bins(per_row))
    # Work in cache-sized blocks: elementwise passes over 100 MB arrays are memory-bound on CPU, and the
    # same passes over ~2 MB pieces run several times faster (5.5x measured on the 2-core box).
    rows_per_block = max(1, _CHUNK // per_row)
    piece = min(per_row, _CHUNK)
    for r0 in range(0, n_rows, rows_per_block):
        r1 = min(n_rows, r0 + rows_per_block)
        rows = torch.arange(r0, r1, device=dev)
        for c0 in range(0, per_row, piece):
            c1 = min(per_row, c0 + piece)
            u[r0:r1, c0:c1], is_atom[r0:r1, c0:c1] = _draw_block(env, lam64, p_atom, rows, c1 - c0, generator)
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
    frac = ((g1 - g2) / (g1 + g2)).clamp(-_BELOW_ONE, _BELOW_ONE)  # 2B - 1 with B = g1/(g1 + g2)
    frac = torch.where(is_atom, torch.ones_like(frac), frac)
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
    check_leading_times(s, tuple(shape), "s")
    check_nonnegative_times(s, "s")
    u, is_atom = sample_kac_unit(a * s, shape, generator=generator, method=method)
    front = (c * s.to(torch.float32)).reshape((shape[0],) + (1,) * (len(shape) - 1))
    return u * front, is_atom
