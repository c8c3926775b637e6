"""The law of the 1-D Kac (telegraph) process K_s (kac-math.md §1, DistillKac §2.3).

K_0 = 0, speed c, initial direction ±1 with probability 1/2, direction flips at the events of a Poisson
process of rate a. Everything here is written in the normalised position u = K_s / (c s) ∈ [-1, 1] and
the expected flip count lam = a s, because the shape of the law depends on lam alone: the atoms sit at
u = ±1 with mass e^{-lam}/2 each, and the absolutely continuous part has a density in u that is a smooth
function of rho = sqrt(1 - u^2).

Bessel functions enter only through the exponentially scaled i0e/i1e, so nothing overflows for lam up to
1e4 and beyond (kac-math.md §2, "Numerics").
"""

from __future__ import annotations

import torch

from kacdist.kac.checks import check_nonnegative_times, check_rate, check_rate_and_speed

# Below this argument, z·I0(z)/I1(z) is taken from its series 2 + z²/4 - z⁴/96: the next term is O(z⁶),
# far under float64 rounding at z = 1e-3, and it avoids 0/0 at z = 0.
_SERIES_BELOW = 1e-3
_ASYMPTOTIC_FROM = 30.0


def unit_rho(u: torch.Tensor) -> torch.Tensor:
    """rho = sqrt(1 - u²), written as sqrt((1-|u|)(1+|u|)) so it keeps its digits near the front |u| → 1."""
    au = u.abs()
    return torch.sqrt(((1 - au) * (1 + au)).clamp_min(0))


def _front_term_bessel(z: torch.Tensor) -> torch.Tensor:
    small = z < _SERIES_BELOW
    zs = torch.where(small, torch.ones_like(z), z)  # keep the division away from 0/0 on the unused branch
    ratio = zs * torch.special.i0e(zs) / torch.special.i1e(zs)
    z2 = z * z
    series = 2 + z2 / 4 - z2 * z2 / 96
    return torch.where(small, series, ratio)


def _hankel_series(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(1/z, p0, p1) with i0e(z) ≈ p0/sqrt(2πz) and i1e(z) ≈ p1/sqrt(2πz): Hankel's expansions to 1/z⁴
    (A&S 9.7.1); the first omitted terms are 0.23/z⁵ and 0.28/z⁵ relative, i.e. < 1.2e-8 for z ≥ 30."""
    w = 1 / z
    p0 = 1 + w * (1 / 8 + w * (9 / 128 + w * (225 / 3072 + w * (11025 / 98304))))
    p1 = 1 - w * (3 / 8 + w * (15 / 128 + w * (315 / 3072 + w * (14175 / 98304))))
    return w, p0, p1


def _front_term_asymptotic(z: torch.Tensor) -> torch.Tensor:
    # relative error of the ratio < 3e-8 for z ≥ 30, below float32 resolution, ~5x cheaper than i0e on CPU
    _, p0, p1 = _hankel_series(z)
    return z * p0 / p1


def bessel_front_term(z: torch.Tensor) -> torch.Tensor:
    """h(z) = z·I0(z)/I1(z), from the scaled functions (ratio i0e/i1e cancels the e^z; note §2).

    h(0) = 2 (the front limit) and h(z) ≈ z + 1/2 for large z (the diffusive limit). Float64 inputs always
    use the Bessel functions; float32 inputs use the asymptotic series where z ≥ 30.
    """
    if z.dtype == torch.float64 or z.numel() == 0:
        return _front_term_bessel(z)
    large = z >= _ASYMPTOTIC_FROM
    n_large = int(large.sum())
    if n_large == 0:
        return _front_term_bessel(z)
    if n_large == z.numel():
        return _front_term_asymptotic(z)
    out = _front_term_asymptotic(z.clamp_min(_ASYMPTOTIC_FROM))
    small = (~large).nonzero(as_tuple=True)
    out[small] = _front_term_bessel(z[small])
    return out


def i1_over_z_scaled(z: torch.Tensor) -> torch.Tensor:
    """e^{-z}·I1(z)/z, with the series e^{-z}·(1 + z²/8)/2 for tiny z (limit 1/2 at z = 0)."""
    small = z < _SERIES_BELOW
    zs = torch.where(small, torch.ones_like(z), z)
    return torch.where(small, 0.5 * torch.exp(-z) * (1 + z * z / 8), torch.special.i1e(zs) / zs)


def unit_ac_density_unnormalised(u: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """q(u) ∝ density of |u| on [0, 1) for the absolutely continuous part, up to the factor lam·e^0.

    From p_ac(s, x) = e^{-as}/(2c)·[a·I0(βr) + a·c·s·I1(βr)/r] (note §1) with x = c·s·u, r = c·s·rho,
    βr = lam·rho:   density of |u|  =  lam · e^{-lam(1-rho)} · [i0e(z) + lam·i1e(z)/z],  z = lam·rho.
    The returned value omits the leading lam. It decreases in |u| (both bracket terms do), which the exact
    sampler relies on. Its integral over [0, 1) is (1 - e^{-lam}) / lam.
    """
    rho = unit_rho(u)
    z = lam * rho
    # 1 - rho written as u²/(1 + rho): no cancellation near u = 0, where lam·(1 - rho) matters most
    return torch.exp(-lam * (u * u / (1 + rho))) * (torch.special.i0e(z) + lam * i1_over_z_scaled(z))


def _bracket_asymptotic(z: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    # i0e(z) + lam·i1e(z)/z: a sum of positive terms, so its relative error is at most that of either
    # series (< 1.2e-8 for z ≥ 30)
    w, p0, p1 = _hankel_series(z)
    return torch.rsqrt(2 * torch.pi * z) * (p0 + lam * w * p1)


# Relative error bound of unit_ac_density_fast against the Bessel form, with room for float64 rounding of
# the exponential (callers that need a one-sided bound widen by this factor).
FAST_DENSITY_REL_ERROR = 1e-7


def unit_ac_density_fast(u: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """unit_ac_density_unnormalised with the Bessel bracket from its asymptotic series where z = lam·rho ≥ 30.

    Same function to a relative error below 1.2e-8 from the truncation (plus the rounding of the working
    dtype), about 5× cheaper where z is large; the exact sampler uses it with a margin
    (FAST_DENSITY_REL_ERROR) for its envelope and in float32 for its acceptance test.
    """
    u, lam = torch.broadcast_tensors(u, lam)
    rho = unit_rho(u)
    z = lam * rho
    small = (z < _ASYMPTOTIC_FROM).nonzero(as_tuple=True)
    n_small = small[0].numel()
    if n_small == z.numel():  # all on the Bessel side: no indexing
        bracket = torch.special.i0e(z) + lam * i1_over_z_scaled(z)
    else:
        bracket = _bracket_asymptotic(z.clamp_min(_ASYMPTOTIC_FROM), lam)
        if n_small:
            zs, ls = z[small], lam[small]
            bracket.index_put_(small, torch.special.i0e(zs) + ls * i1_over_z_scaled(zs))
    return torch.exp(-lam * (u * u / (1 + rho))) * bracket


def kac_atom_mass(s: torch.Tensor, a: float) -> torch.Tensor:
    """Mass of each atom ±c·s: the probability of no flip before s, halved (note §1)."""
    check_rate(a)
    check_nonnegative_times(s, "s")
    return 0.5 * torch.exp(-a * s)


def kac_variance(s: torch.Tensor, a: float, c: float) -> torch.Tensor:
    """Var K_s = (c²/a)·(s - (1 - e^{-2as})/(2a)) (note §1); expm1 keeps digits when a·s is tiny."""
    check_rate_and_speed(a, c)
    check_nonnegative_times(s, "s")
    s64 = s.to(torch.float64)
    x = 2 * a * s64
    # Var = c²/(2a²)·(x - 1 + e^{-x}), x = 2as; below x = 1e-3 the series x²/2 - x³/6 + x⁴/24 keeps the
    # digits that the closed form loses to cancellation (its next term, x⁵/120, is below 1e-17 of x²).
    closed = (c * c / (2 * a * a)) * (x + torch.expm1(-x))
    series = (c * c) * s64 * s64 * (1 - x / 3 + x * x / 12)
    return torch.where(x < 1e-3, series, closed)


def kac_ac_density(s: torch.Tensor, x: torch.Tensor, a: float, c: float) -> torch.Tensor:
    """Density of the absolutely continuous part of K_s at x (zero outside the open cone |x| < c·s).

    p_ac(s, x) = e^{-as}/(2c)·[a·I0(βr) + a·c·s·I1(βr)/r],  β = a/c,  r = sqrt(c²s² - x²)  (note §1).
    Computed in float64 through the scaled form; s and x broadcast.
    """
    check_rate_and_speed(a, c)
    check_nonnegative_times(s, "s")
    s64, x64 = torch.broadcast_tensors(s.to(torch.float64), x.to(torch.float64))
    inside = x64.abs() < c * s64
    s_safe = torch.where(inside, s64, torch.ones_like(s64))
    u = torch.where(inside, x64 / (c * s_safe), torch.zeros_like(x64))
    lam = a * s_safe
    q = lam * unit_ac_density_unnormalised(u, lam)  # density of |u|
    # density of x: halve for the sign, divide by the Jacobian c·s
    return torch.where(inside, q / (2 * c * s_safe), torch.zeros_like(x64))
