"""Independent numpy/scipy reference implementations of the Kac (telegraph) process, for the tests only.

Nothing here imports kacdist. The formulas are those of kac-math.md §1-§2, written again from scratch:

* ``simulate_telegraph``: brute-force paths with exponential flip times (rate a), returning K_s, the current
  direction D_s and the flip count, for many paths at once (vectorised over paths, blocks of flips).
* ``ac_density``: p_ac(s, x) = e^{-as}/(2c)·[a·I0(βr) + a·c·s·I1(βr)/r], β = a/c, r = sqrt(c²s² - x²), written
  with scipy.special.ive so that nothing overflows.
* ``AcCdf``: the CDF of the absolutely continuous part, conditional on "not an atom", obtained by
  scipy.integrate.quad of ``ac_density`` between fine nodes and interpolated by cubic Hermite pieces whose
  node slopes are the exact density (error O(h^4), far below any KS resolution used here).
* ``velocity``: v(s, x) = c·x·I1(βr)/(r·I0(βr) + c·s·I1(βr)) inside the cone, ±c on the atoms, in float64.
* ``variance``: Var K_s = (c²/a)·(s - (1 - e^{-2as})/(2a)).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import integrate, special
from scipy.interpolate import CubicHermiteSpline

# Above this many float64 entries per block the path simulation processes paths in chunks.
_MAX_BLOCK_ENTRIES = 2_000_000


def simulate_telegraph(
    s: float, a: float, c: float, n_paths: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate n_paths telegraph paths up to time s by drawing exponential flip gaps.

    Returns (k, direction, flips): K_s (float64), the direction D_s ∈ {-1, +1} in force at time s (so the
    instantaneous velocity is c·D_s), and the number of flips before s (0 means the path is an atom).
    """
    s = float(s)
    d0 = rng.integers(0, 2, size=n_paths) * 2 - 1
    signed_time = np.zeros(n_paths)  # ∫_0^s (D_t / D_0) dt
    flips = np.zeros(n_paths, dtype=np.int64)
    block = int(a * s + 6 * math.sqrt(a * s) + 16)
    chunk = max(1, _MAX_BLOCK_ENTRIES // block)
    for lo in range(0, n_paths, chunk):
        idx = np.arange(lo, min(n_paths, lo + chunk))
        now = np.zeros(idx.size)
        while idx.size:
            gaps = rng.exponential(1.0 / a, size=(idx.size, block))
            times = now[:, None] + np.cumsum(gaps, axis=1)  # successive flip times
            ends = np.minimum(times, s)
            starts = np.concatenate([now[:, None], ends[:, :-1]], axis=1)
            # segment j of this block is travelled after flips[idx] + j flips
            parity = (flips[idx, None] + np.arange(block)[None, :]) % 2
            signed_time[idx] += ((ends - starts) * (1 - 2 * parity)).sum(axis=1)
            flips[idx] += (times < s).sum(axis=1)
            now = ends[:, -1]
            going = times[:, -1] < s
            idx, now = idx[going], now[going]
    k = c * d0 * signed_time
    direction = d0 * (1 - 2 * (flips % 2))
    return k, direction, flips


def _x_plus_expm1_neg(x: float) -> float:
    """x - 1 + e^{-x} without cancellation: its Taylor series Σ_{k≥2} (-x)^k/k! for x < 1/2."""
    if x >= 0.5:
        return x + math.expm1(-x)
    total, term = 0.0, -x
    for k in range(2, 40):
        term *= -x / k
        total += term
    return total


def variance(s: float, a: float, c: float) -> float:
    """Var K_s = (c²/a)·(s - (1 - e^{-2as})/(2a)) = (c²/(2a²))·(2as - 1 + e^{-2as}), stable for tiny a·s."""
    return c * c / (2 * a * a) * _x_plus_expm1_neg(2 * a * s)


def unit_variance(lam: float) -> float:
    """Var of u = K_s/(c·s) with lam = a·s: (lam - (1 - e^{-2 lam})/2) / lam²."""
    return _x_plus_expm1_neg(2 * lam) / (2 * lam * lam)


def _i1_over_z(z: np.ndarray) -> np.ndarray:
    """e^{-z}·I1(z)/z with its limit 1/2 at z = 0."""
    safe = np.where(z > 0, z, 1.0)
    return np.where(z > 0, special.ive(1, safe) / safe, 0.5)


def ac_density(s: float, x, a: float, c: float) -> np.ndarray:
    """Closed-form density of the absolutely continuous part of K_s (zero outside |x| < c·s)."""
    x = np.asarray(x, dtype=np.float64)
    beta = a / c
    ax = np.abs(x)
    inside = ax < c * s
    r = np.sqrt(np.clip((c * s - ax) * (c * s + ax), 0.0, None))
    z = beta * r
    # e^{-as}·I0(z) = ive(0, z)·e^{z - as};  a·c·s·I1(z)/r = a·c·s·β·I1(z)/z
    body = a * special.ive(0, z) + a * c * s * beta * _i1_over_z(z)
    return np.where(inside, np.exp(z - a * s) / (2 * c) * body, 0.0)


def ac_front_value(s: float, a: float, c: float) -> float:
    """Limit of p_ac at the front |x| → c·s: e^{-as}·a·(1 + a·s/2)/(2c)."""
    return math.exp(-a * s) * a * (1 + a * s / 2) / (2 * c)


def unit_ac_density(lam: float, u) -> np.ndarray:
    """Density of u = K/(c·s) for the ac part (unconditional; integrates to 1 - e^{-lam})."""
    return ac_density(1.0, u, lam, 1.0)


class AcCdf:
    """CDF of K_s conditional on being off the atoms, from quad of ``ac_density`` between nodes."""

    def __init__(self, s: float, a: float, c: float, body_nodes: int = 800, core_nodes: int = 400):
        self.s, self.a, self.c = float(s), float(a), float(c)
        lam = a * s
        front = c * s
        u = np.unique(
            np.concatenate(
                [
                    np.linspace(0.0, 1.0, body_nodes + 1),
                    np.linspace(0.0, min(1.0, 12.0 / math.sqrt(lam)), core_nodes + 1),
                ]
            )
        )
        xs = front * u
        xs[-1] = front
        pieces = np.empty(xs.size - 1)
        dens = lambda y: float(ac_density(self.s, y, self.a, self.c))  # noqa: E731
        for i in range(xs.size - 1):
            pieces[i] = integrate.quad(dens, xs[i], xs[i + 1], epsabs=0.0, epsrel=1e-12, limit=100)[0]
        half = np.concatenate([[0.0], np.cumsum(pieces)])
        #: total ac mass (both signs): must equal 1 - e^{-as}
        self.mass = 2 * half[-1]
        slopes = ac_density(self.s, xs, self.a, self.c)
        slopes[-1] = ac_front_value(self.s, self.a, self.c)
        self._half = CubicHermiteSpline(xs, half / self.mass, slopes / self.mass)
        self._front = front

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        ax = np.clip(np.abs(x), 0.0, self._front)
        return np.clip(0.5 + np.sign(x) * self._half(ax), 0.0, 1.0)


@functools.lru_cache(maxsize=None)
def ac_cdf(s: float, a: float, c: float) -> AcCdf:
    """Cached ``AcCdf`` (building one costs ~1e3 quad calls)."""
    return AcCdf(s, a, c)


def unit_moment(lam: float, power: int) -> float:
    """E[u^power] for u = K/(c·s), lam = a·s (even power): atoms e^{-lam} plus quad of the ac density."""
    core = min(1.0, 40.0 / math.sqrt(lam))
    f = lambda u: float(u**power * unit_ac_density(lam, u))  # noqa: E731
    total = integrate.quad(f, 0.0, core, epsabs=0.0, epsrel=1e-12, limit=200)[0]
    if core < 1.0:
        total += integrate.quad(f, core, 1.0, epsabs=0.0, epsrel=1e-12, limit=200)[0]
    return 2 * total + math.exp(-lam)


def velocity(s, x, a: float, c: float) -> np.ndarray:
    """v(s, x) = c·x·I1(βr)/(r·I0(βr) + c·s·I1(βr)) for |x| < c·s (scaled Bessel ratios), ±c on |x| ≥ c·s.

    At r = 0 exactly the interior limit c·a·s/(a·s + 2) is used (the formula is 0/0 there).
    """
    s = np.asarray(s, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    s, x = np.broadcast_arrays(s, x)
    beta = a / c
    ax = np.abs(x)
    front = c * s
    r = np.sqrt(np.clip((front - ax) * (front + ax), 0.0, None))
    z = beta * r
    i0, i1 = special.ive(0, z), special.ive(1, z)
    denom = r * i0 + c * s * i1
    safe = np.where(denom > 0, denom, 1.0)
    interior = np.where(denom > 0, c * x * i1 / safe, np.sign(x) * c * a * s / (a * s + 2))
    return np.where(ax >= front, np.sign(x) * c, interior)
