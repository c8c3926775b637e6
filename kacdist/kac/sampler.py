"""Exact draws of the Kac process K_s (kac-math.md §1) with no precomputed table of the law.

Two exact samplers:

* ``"envelope"`` (the default): the atoms ±c·s are chosen with their exact mass e^{-lam}, lam = a·s; the
  absolutely continuous part is drawn by rejection from a piecewise-uniform envelope built, per call, for
  the distinct times of the batch (one envelope row each). Because the density q of |u|,
  u = K/(c·s), decreases on [0, 1) (law.unit_ac_density_unnormalised), q at the left end of a bin bounds it
  on the whole bin and q at the right end is a lower bound: most draws are accepted by that "squeeze"
  without evaluating a Bessel function, and the rest by the density itself. The envelope costs
  O(rows × bins), i.e. memory proportional to the batch; it is exact for any choice of bins.
* ``"poisson_beta"``: N ~ Poisson(lam) flips; given N = n the fraction of time spent in the initial
  direction is Beta(⌊n/2⌋+1, ⌈n/2⌉) (uniform spacings), so K = e·c·s·(2B − 1). Simple and independent of
  the envelope, kept as a cross-check and a baseline for the benchmark.

Where the bins go only decides the speed. They are laid so that every bin has the same envelope area
q(left)·width (the layout of a ziggurat): then one uniform picks a bin with the right probability with no
search, and the share of proposals that the squeeze cannot settle, or that are rejected, is about 1/bins.
Such knots depend on lam alone, so they are computed once per process for a log grid of lam (a few hundred
KB, the same for every (a, c)) and interpolated in log lam for each call; the envelope values at the knots
are then computed for each row's own lam, which is what makes the envelope exact.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import torch

from kacdist.kac.checks import check_leading_times, check_nonnegative_times, check_rate_and_speed
from kacdist.kac.law import FAST_DENSITY_REL_ERROR, unit_ac_density_fast, unit_ac_density_unnormalised

SAMPLERS = ("envelope", "poisson_beta")

# Knot grid: lam = 2^-12 .. 2^15 at 4 points per octave. Outside it the nearest row is used, scaled by the
# fine-grid limit: u·sqrt(lam) settles to a fixed law for large lam, and u to a fixed law for small lam.
_KNOT_GRID_LOG2 = (-12.0, 15.0)
_KNOT_GRID_PER_OCTAVE = 4
# The fine grid on which the knots are laid stops this many standard deviations of u out (sd ≈ lam^-1/2 in
# the diffusive regime); beyond it the density is below e^-128 of its peak and one bin reaches u = 1.
_FINE_GRID_SDS = 16.0
_FINE_GRID_POINTS = 4097
# Bins per sign: more bins cost O(rows × bins) per call, fewer cost exact tests; a row of one 3×32×32
# image (3,072 values) gets 256, which measured a little faster than 128 on the 2-core box.
_BIN_CHOICES = (64, 128, 256)
_VALUES_PER_BIN = 12
_MAX_ROUNDS = 64
# A value whose first proposal fails the squeeze gets this many more proposals, tested beside it (see
# _settle): with acceptance above 0.9 one round then almost always settles every value.
_SPARE_PROPOSALS = 2
# Values are drawn in blocks of about this many: every elementwise pass then works on data that stays in
# cache (passes over 100 MB arrays are memory-bound on CPU; 5.5x slower measured on the 2-core box).
_CHUNK = 1 << 19
_BELOW_ONE = 1.0 - 2.0**-24  # the largest float32 below 1


@dataclass(frozen=True)
class _Envelope:
    """Flattened per-row tables, 2·bins slots per row: bins for u ≥ 0, then their mirror images."""

    slot_left: torch.Tensor  # float32 signed left edge of the bin (exact: the knots are float32 numbers)
    slot_width: torch.Tensor  # float32 signed width
    slot_squeeze: torch.Tensor  # int32 floor(q(right)·width/A·2^31): V_int below it is accepted at once
    slot_scale: torch.Tensor  # float64 width/A: accept iff V < q(|u|)·scale, V = V_int·2^-31
    lam32: torch.Tensor  # float32 lam per row, for the exact test
    bins: int


def _bins_for(values_per_row: int) -> int:
    fitting = [b for b in _BIN_CHOICES if b * _VALUES_PER_BIN <= values_per_row]
    return fitting[-1] if fitting else _BIN_CHOICES[0]


def _fine_grid_limit(lam: torch.Tensor) -> torch.Tensor:
    """u_hi = (1 + (lam/S²)²)^(-1/4), S = _FINE_GRID_SDS: about S standard deviations (S/sqrt(lam)) for large
    lam, just below 1 for small lam, smooth in between, so that knot rows interpolate well in lam."""
    return torch.pow(1 + torch.square(lam / _FINE_GRID_SDS**2), -0.25)


def _equal_area_knots(lam: torch.Tensor, bins: int) -> torch.Tensor:
    """Interior knots k_1 ≤ ... ≤ k_{bins-1} in x = u/u_hi, with equal q(k_i)·(k_{i+1} - k_i) per bin.

    The chain k_{i+1} = k_i + A/q(k_i) runs from x = 0 to x = 1 in bins - 1 steps; the last bin is
    [u_hi, 1] in u, on which the density is negligible (below e^-128 of its peak for large lam, a sliver
    next to the front for small lam), so it adds nothing to the area whatever lam, also past the end of the
    grid, and every row has the same structure, so rows interpolate. For each lam, A is the smallest area
    whose chain arrives in time, found by a 32-way search run as one batch of chains; q is interpolated on a
    fine grid, which only steers the speed.
    """
    rows, f64 = lam.shape[0], torch.float64
    x = torch.linspace(0.0, 1.0, _FINE_GRID_POINTS, dtype=f64)
    u_hi = _fine_grid_limit(lam)
    q = unit_ac_density_unnormalised(u_hi[:, None] * x[None, :], lam[:, None]) * u_hi[:, None]
    q = q / torch.trapezoid(q, x, dim=1)[:, None]  # density of x, unit mass on [0, 1]
    last = _FINE_GRID_POINTS - 1

    def chain(area: torch.Tensor) -> torch.Tensor:
        """Knots [rows, m, bins] of the chains with areas [rows, m]."""
        k = torch.zeros(*area.shape, bins, dtype=f64)
        flat_q = q[:, None, :].expand(-1, area.shape[1], -1)
        for i in range(bins - 1):
            pos = k[..., i] * last
            j = pos.long().clamp_(max=last - 1)
            qk = torch.lerp(flat_q.gather(2, j[..., None])[..., 0], flat_q.gather(2, j[..., None] + 1)[..., 0], pos - j)
            k[..., i + 1] = torch.clamp(k[..., i] + area / qk.clamp_min(1e-300), max=1.0)
        return k

    # the envelope's area is at least the mass (A·bins ≥ 1); widen the top of the bracket until it arrives
    lo = torch.full((rows,), 1.0 / bins, dtype=f64)
    hi = torch.full((rows,), 2.0 / bins, dtype=f64)
    for _ in range(64):
        short = chain(hi[:, None])[:, 0, -1] < 1.0
        if not bool(short.any()):
            break
        lo, hi = torch.where(short, hi, lo), torch.where(short, 2 * hi, hi)
    ways = 32
    frac = torch.arange(1, ways + 1, dtype=f64) / ways
    for _ in range(5):  # the bracket shrinks 32-fold per round: 3e-8 of its width after five
        areas = lo[:, None] + (hi - lo)[:, None] * frac[None, :]
        arrived = chain(areas)[..., -1] >= 1.0  # monotone in the area; the last column always arrives
        first = arrived.to(torch.uint8).argmax(dim=1)
        hi = areas.gather(1, first[:, None])[:, 0]
        lo = torch.where(first > 0, areas.gather(1, (first - 1).clamp_min(0)[:, None])[:, 0], lo)
    return chain(hi[:, None])[:, 0, 1:]


@functools.lru_cache(maxsize=16)
def _knot_table(bins: int, device: torch.device) -> torch.Tensor:
    lo, hi = _KNOT_GRID_LOG2
    count = int(round((hi - lo) * _KNOT_GRID_PER_OCTAVE)) + 1
    lam = torch.pow(2.0, torch.linspace(lo, hi, count, dtype=torch.float64))
    return _equal_area_knots(lam, bins).to(device)


def _knots(lam: torch.Tensor, bins: int) -> torch.Tensor:
    """Knots 0 = k_0 ≤ ... ≤ k_bins = 1 in u for each row (lam float64 [R]), from the cached table."""
    table = _knot_table(bins, lam.device)
    lo, _ = _KNOT_GRID_LOG2
    pos = ((torch.log2(lam) - lo) * _KNOT_GRID_PER_OCTAVE).clamp(0, table.shape[0] - 1)
    i = pos.floor().long().clamp(max=table.shape[0] - 2)
    interior = torch.lerp(table[i], table[i + 1], (pos - i)[:, None]) * _fine_grid_limit(lam)[:, None]
    interior = interior.clamp_(max=1.0)
    zeros = torch.zeros(lam.shape[0], 1, dtype=lam.dtype, device=lam.device)
    return torch.cat([zeros, interior, torch.ones_like(zeros)], dim=1)


def _build_envelope(lam: torch.Tensor, bins: int) -> _Envelope:
    """Envelope tables for rows with lam > 0 (float64 [R])."""
    # knots rounded to float32 so that a bin's left edge is exactly representable in the output dtype
    knots = _knots(lam, bins).to(torch.float32).to(torch.float64)
    # q(left edge) bounds q on the bin (q decreases in |u|), q(right edge) is a squeeze; q comes from the
    # fast form, widened by its error bound in the safe direction for each use
    q = unit_ac_density_fast(knots, lam[:, None])
    width = knots[:, 1:] - knots[:, :-1]
    area = (q[:, :-1] * (1 + FAST_DENSITY_REL_ERROR) * width).amax(dim=1, keepdim=True)
    scale = width / area  # every bin is picked with the same probability: its envelope is A, not its area
    squeeze = torch.floor(q[:, 1:] * (1 - FAST_DENSITY_REL_ERROR) * scale * 2.0**31).clamp_(0, 2**31 - 1).to(torch.int32)
    left = knots[:, :-1].to(torch.float32)
    width = width.to(torch.float32)
    return _Envelope(
        slot_left=torch.cat([left, -left], dim=1).reshape(-1),
        slot_width=torch.cat([width, -width], dim=1).reshape(-1),
        slot_squeeze=torch.cat([squeeze, squeeze], dim=1).reshape(-1),
        slot_scale=torch.cat([scale, scale], dim=1).reshape(-1),
        lam32=lam.to(torch.float32),
        bins=bins,
    )


def _exact_accept(env: _Envelope, slot: torch.Tensor, u: torch.Tensor, accept_int: torch.Tensor) -> torch.Tensor:
    """The acceptance test V < q(|u|)·width/A, V = V_int·2^-31, for proposals the squeeze did not settle.

    float32 for q: its relative error is about 1e-5 at lam = 1e4 (the rounding of the exponent
    lam·u²/(1 + rho)) and far less at the usual lam.
    """
    row = torch.div(slot, 2 * env.bins, rounding_mode="floor")
    q = unit_ac_density_fast(u.abs(), env.lam32[row])
    return accept_int.to(torch.float64) * 2.0**-31 < q * torch.take(env.slot_scale, slot)


def _propose(env: _Envelope, row: torch.Tensor, generator: torch.Generator | None, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """k fresh proposals for each envelope row in ``row`` ([m] → [m·k], row-major): the slot (long) and
    u = left + position·width. The in-row part y = V·2·bins is exact (a power of two) and below 2·bins, so
    the row's offset is added to the integer slot, where no rounding can carry it into the next row."""
    two_b = 2 * env.bins
    y = torch.empty(row.numel(), k, dtype=torch.float64, device=row.device).uniform_(generator=generator).mul_(two_b)
    slot_f = y.floor()
    slot = slot_f.long().add_((row * two_b)[:, None]).view(-1)
    cand = torch.take(env.slot_left, slot).addcmul_(y.sub_(slot_f).view(-1).to(torch.float32), torch.take(env.slot_width, slot))
    return slot, cand


def _draw_int(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """31 random bits per value (int32 in [0, 2^31)): the acceptance uniform V = V_int·2^-31."""
    return torch.empty(shape, dtype=torch.int32, device=device).random_(generator=generator)


def _settle(
    env: _Envelope,
    u: torch.Tensor,
    pending: torch.Tensor,
    slot: torch.Tensor,
    cand: torch.Tensor,
    draw: torch.Tensor,
    generator: torch.Generator | None,
) -> None:
    """Finish the values at flat positions ``pending`` whose first proposal (slot, cand, draw) the squeeze
    did not accept: that proposal takes the exact test, and _SPARE_PROPOSALS fresh proposals from the same
    row are tested beside it; each value keeps the first accepted proposal in that order, which is
    rejection sampling one proposal at a time, with the rounds batched. Values with none accepted go again.
    """
    dev = u.device
    two_b = 2 * env.bins
    k = _SPARE_PROPOSALS
    row = torch.div(slot, two_b, rounding_mode="floor")
    for _ in range(_MAX_ROUNDS):
        m = pending.numel()
        spare_slot, spare_cand = _propose(env, row, generator, k)
        spare_draw = _draw_int((m * k,), dev, generator)
        slots = torch.cat([slot[:, None], spare_slot.view(m, k)], dim=1).view(-1)
        cands = torch.cat([cand[:, None], spare_cand.view(m, k)], dim=1).view(-1)
        draws = torch.cat([draw[:, None], spare_draw.view(m, k)], dim=1).view(-1)
        ok = draws < torch.take(env.slot_squeeze, slots)
        ok.view(m, k + 1)[:, 0] = False  # the first proposals already failed the squeeze
        unsure = (~ok).nonzero().squeeze(1)
        ok[unsure] = _exact_accept(env, slots[unsure], cands[unsure], draws[unsure])
        ok = ok.view(m, k + 1)
        settled = ok.any(dim=1)
        first = ok.to(torch.uint8).argmax(dim=1)  # the first accepted proposal of each value
        done = settled.nonzero().squeeze(1)
        u[pending[done]] = cands.view(m, k + 1)[done, first[done]]
        keep = (~settled).nonzero().squeeze(1)
        if keep.numel() == 0:
            return
        # the values left over start again with a fresh proposal that goes straight to the exact test
        pending, row = pending[keep], row[keep]
        slot, cand = _propose(env, row, generator)
        draw = _draw_int((keep.numel(),), dev, generator)
        fast = draw < torch.take(env.slot_squeeze, slot)
        u[pending[fast]] = cand[fast]
        slow = (~fast).nonzero().squeeze(1)
        pending, row, slot, cand, draw = pending[slow], row[slow], slot[slow], cand[slow], draw[slow]
        if pending.numel() == 0:
            return
    raise RuntimeError(f"Kac envelope sampler: {pending.numel()} values still rejected after {_MAX_ROUNDS} rounds")


class _Scratch(threading.local):
    """Per-thread CPU work buffers reused from call to call, at most one block (_CHUNK values) each.

    On CPU a fresh multi-MB temporary is mapped anew and costs page faults on first touch, which took
    about a quarter of the draw's time on the 2-core box; the buffers never leave _draw_block.
    """

    def __init__(self) -> None:
        self.buffers: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(self, name: str, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        if device.type != "cpu":  # the CUDA caching allocator already reuses memory
            return torch.empty(n, dtype=dtype, device=device)
        buf = self.buffers.get((name, dtype))
        if buf is None or buf.numel() < n:
            buf = torch.empty(n, dtype=dtype)
            self.buffers[(name, dtype)] = buf
        return buf[:n]


_SCRATCH = _Scratch()


def _draw_block(
    env: _Envelope,
    p_atom: torch.Tensor,
    rows: torch.Tensor,
    u_out: torch.Tensor,
    atom_out: torch.Tensor,
    generator: torch.Generator | None,
) -> None:
    """Fill u_out (float32 [R, W]) and atom_out (bool [R, W]): row r has atom mass p_atom[r] and envelope
    row rows[r]."""
    dev = rows.device
    two_b = 2 * env.bins
    n_rows, width = u_out.shape
    n = n_rows * width
    f64 = torch.float64
    pa = p_atom[:, None]
    has_atoms = bool((pa > 0).any())
    # One float64 uniform per value: below p_atom it is an atom (its sign from pick < p_atom/2);
    # above, (pick - p_atom)/(1 - p_atom) is uniform and, scaled by 2·bins and shifted to the row's slots,
    # its integer part is the slot and its fractional part the position in the bin.
    pick = _SCRATCH.get("pick", n, f64, dev).view(n_rows, width).uniform_(generator=generator)
    # the acceptance uniform as 31 random bits, V = V_int·2^-31: the squeeze test is then an integer
    # comparison, and an int32 draw costs two thirds of a float32 one
    accept_int = _SCRATCH.get("accept", n, torch.int32, dev).random_(generator=generator)
    y = _SCRATCH.get("y", n, f64, dev).view(n_rows, width)
    if has_atoms:
        # the atom test only where an atom is possible (with g = t², most rows have p_atom = 0)
        atom_rows = (pa[:, 0] > 0).nonzero().squeeze(1)
        if atom_rows.numel() == n_rows:
            sub, hit = pick, (pick < pa).nonzero(as_tuple=True)
            atoms = hit
        else:
            sub = pick.index_select(0, atom_rows)
            hit = (sub < pa[atom_rows]).nonzero(as_tuple=True)
            atoms = (atom_rows[hit[0]], hit[1])
        atom_positive = sub[hit] < 0.5 * pa[atoms[0], 0]
        atom_out.zero_().index_put_(atoms, torch.tensor(True, device=dev))
        accept_int.view(n_rows, width).index_put_(atoms, torch.tensor(-1, dtype=torch.int32, device=dev))  # atoms pass the squeeze
        # rows with p_atom = 1 (lam below float64 resolution) are all atoms: their y is clamped to 0
        certain = pa >= 1
        coef = torch.where(certain, torch.zeros_like(pa), two_b / torch.where(certain, torch.ones_like(pa), 1 - pa))
        torch.addcmul(-pa * coef, pick, coef, out=y).clamp_(0.0, two_b - 2.0**-20)  # rounding may reach 2·bins
    else:
        atom_out.zero_()
        torch.mul(pick, two_b, out=y)  # exact (a power of two) and below 2·bins
    spare = torch.floor(y, out=pick).view(-1)  # pick is free from here on
    slot = _SCRATCH.get("slot", n, torch.long, dev)
    slot.view(n_rows, width).copy_(spare.view(n_rows, width)).add_(rows[:, None] * two_b)  # the row's slots
    frac = _SCRATCH.get("frac", n, torch.float32, dev).copy_(y.view(-1).sub_(spare))  # (a float64 → float32 sub is slower)
    # u = left + frac·width in float32 (within an ulp of the bin: below the float32 exact test's error)
    u = u_out.view(-1) if u_out.is_contiguous() else torch.empty(n, dtype=torch.float32, device=dev)
    torch.take(env.slot_left, slot, out=u).addcmul_(frac, torch.take(env.slot_width, slot, out=_SCRATCH.get("width", n, torch.float32, dev)))
    squeeze = torch.take(env.slot_squeeze, slot, out=_SCRATCH.get("squeeze", n, torch.int32, dev))
    unsure = torch.ge(accept_int, squeeze, out=_SCRATCH.get("flag", n, torch.bool, dev)).nonzero().squeeze(1)
    if unsure.numel():
        _settle(env, u, unsure, slot[unsure], u[unsure], accept_int[unsure], generator)
    if not u_out.is_contiguous():
        u_out.copy_(u.view(n_rows, width))
    # a continuous draw within 2^-25 of the front would round to exactly ±1 in float32, i.e. onto an
    # atom; keep it strictly inside
    u_out.clamp_(-_BELOW_ONE, _BELOW_ONE)
    if has_atoms and atoms[0].numel():
        u_out.index_put_(atoms, atom_positive.to(torch.float32) * 2 - 1)


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
    # the float64 pick resolves probabilities down to 2^-53: rows below that have no atom (mass < 1.1e-16)
    p_atom = torch.where(p_atom >= 2.0**-53, p_atom, torch.zeros_like(p_atom))
    # one envelope row per distinct lam (the prior at t = 1 has a single one for the whole batch)
    distinct, env_row = torch.unique(lam64, return_inverse=True)
    env = _build_envelope(distinct.clamp_min(1e-12), _bins_for(per_row))
    rows_per_block = max(1, _CHUNK // per_row)
    piece = min(per_row, _CHUNK)
    for r0 in range(0, n_rows, rows_per_block):
        r1 = min(n_rows, r0 + rows_per_block)
        for c0 in range(0, per_row, piece):
            c1 = min(per_row, c0 + piece)
            _draw_block(env, p_atom[r0:r1], env_row[r0:r1], u[r0:r1, c0:c1], is_atom[r0:r1, c0:c1], generator)
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
    return u.mul_(front), is_atom  # u is ours: scale it in place
