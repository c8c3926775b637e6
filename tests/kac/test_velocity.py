"""Tests of the Kac-flow velocity v(s, x) = E[dK_s/ds | K_s = x] (kacdist.kac.velocity).

Checked against: Monte Carlo paths that keep their current direction (E[c·D_s | K_s] by bins), the
continuity equation ∂_s p_ac + ∂_x(p_ac v) = 0 by finite differences, the mass balance at the front,
the independent scipy formula c·x·I1(βr)/(r·I0(βr) + c·s·I1(βr)) (tests/kac/reference.py), and the
front, diffusive and ballistic limits of kac-math.md §2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from kacdist.kac.law import kac_ac_density
from kacdist.kac.velocity import kac_velocity, unit_velocity
from tests.kac import reference as ref

T64 = dict(dtype=torch.float64)
N_BINS = 20


def lib_v(s, x, a, c, dtype=torch.float64, is_atom=None):
    """kac_velocity on numpy/float inputs, returned as a float64 numpy array."""
    st = torch.as_tensor(np.asarray(s), dtype=dtype)
    xt = torch.as_tensor(np.asarray(x), dtype=dtype)
    return kac_velocity(st, xt, a, c, is_atom=is_atom).double().numpy()


# ---------------------------------------------------------------------------------------------------------
# 6. Velocity vs Monte Carlo paths
# ---------------------------------------------------------------------------------------------------------


def binned_mc_statistics(k: np.ndarray, velocity_term: np.ndarray, v: np.ndarray):
    """z-scores of mean(c·D_s - v(K_s)) in N_BINS equal-count bins of K_s, and the chi-square p-value.

    Under the null E[c·D_s | K_s] = v(K_s), every bin mean of c·D_s - v(K_s) is 0.
    """
    edges = np.quantile(k, np.linspace(0, 1, N_BINS + 1))
    b = np.clip(np.searchsorted(edges, k, side="right") - 1, 0, N_BINS - 1)
    w = velocity_term - v
    z = np.empty(N_BINS)
    for i in range(N_BINS):
        wi = w[b == i]
        z[i] = wi.mean() / (wi.std(ddof=1) / math.sqrt(wi.size))
    return z, stats.chi2.sf(float(np.sum(z * z)), N_BINS)


MC_CASES = [(25.0, 2.0, 0.2, 400_000), (9.0, 3.0, 0.5, 400_000), (3000.0, 20.0, 0.01, 300_000)]


def mc_paths(a, c, s, n):
    """Brute-force paths: off-atom positions K_s and the instantaneous velocity c·D_s."""
    k, direction, flips = ref.simulate_telegraph(s, a, c, n, np.random.default_rng(5))
    off = flips > 0
    return k[off], c * direction[off].astype(np.float64)


@pytest.mark.parametrize("a, c, s, n", MC_CASES, ids=["a25-c2-s0.2", "a9-c3-s0.5", "a3000-c20-s0.01"])
def test_velocity_is_conditional_mean_of_path_velocity(a, c, s, n):
    """E[c·D_s | K_s = x] = kac_velocity(s, x): per-bin mean of c·D_s - v(K_s) over simulated paths is 0
    (|z| < 4.5 in each of 20 bins, chi-square p > 1e-3); on the atoms (no flip) D_s = sign(K_s), v = ±c."""
    k, cd = mc_paths(a, c, s, n)
    v = lib_v(s, k, a, c)
    z, p = binned_mc_statistics(k, cd, v)
    assert np.abs(z).max() < 4.5 and p > 1e-3, f"bin z-scores {np.round(z, 2)}, chi-square p={p:.2e}"
    # the atoms: a path that never flipped moves with velocity sign(K)·c, which is what v says there
    front = np.array([c * s, -c * s])
    np.testing.assert_array_equal(lib_v(s, front, a, c), [c, -c])


@pytest.mark.parametrize("a, c, s, n", MC_CASES, ids=["a25-c2-s0.2", "a9-c3-s0.5", "a3000-c20-s0.01"])
def test_monte_carlo_velocity_check_has_power(a, c, s, n):
    """The same statistic rejects plausible wrong velocities: the path average x/s, I0/I1 evaluated at r
    instead of βr (dropping β = a/c), and, outside the diffusive regime, the Brownian limit x/(2s)."""
    k, cd = mc_paths(a, c, s, n)
    wrong = {
        "x/s": k / s,
        "no beta": ref.velocity(s, k, a, a) * (c / a),  # = c·x·I1(r)/(r·I0(r) + c·s·I1(r)) with β → 1
    }
    if a * s < 10:
        wrong["x/(2s)"] = k / (2 * s)
    for name, v in wrong.items():
        z, p = binned_mc_statistics(k, cd, v)
        assert np.abs(z).max() > 6 or p < 1e-6, f"{name}: not rejected (max|z|={np.abs(z).max():.2f}, p={p:.2e})"


# ---------------------------------------------------------------------------------------------------------
# 7. Continuity equation and mass balance at the front
# ---------------------------------------------------------------------------------------------------------

CONTINUITY_CASES = [
    (25.0, 2.0, 0.1),
    (25.0, 2.0, 1.0),
    (9.0, 3.0, 0.5),
    (3000.0, 20.0, 0.01),
    (3000.0, 20.0, 1.0),
    (1.0, 1.0, 1e-3),
]


@pytest.mark.parametrize("a, c, s", CONTINUITY_CASES)
def test_continuity_equation_holds_in_the_interior(a, c, s):
    """∂_s p_ac + ∂_x(p_ac·v) = 0 inside the cone (central differences, float64), relative to max|∂_s p_ac|."""
    front = c * s
    sd = math.sqrt(ref.variance(s, a, c))
    half_width = min(0.95 * front, 8 * sd)
    x = torch.linspace(-half_width, half_width, 161, **T64)
    hs = 1e-4 * s
    hx = 1e-4 * min(front, sd)

    def p(s_, x_):
        return kac_ac_density(torch.tensor(s_, **T64), x_, a, c)

    def flux(x_):
        return p(s, x_) * kac_velocity(torch.tensor(s, **T64), x_, a, c)

    dp_ds = (p(s + hs, x) - p(s - hs, x)) / (2 * hs)
    dflux_dx = (flux(x + hx) - flux(x - hx)) / (2 * hx)
    residual = dp_ds + dflux_dx
    scale = float(dp_ds.abs().max())
    assert scale > 0
    worst = float(residual.abs().max()) / scale
    assert worst < 1e-6, f"relative continuity residual {worst:.2e}"


@pytest.mark.parametrize(
    "a, c, s",  # e^{-as} must not underflow, so (3000, 20) stops at s = 0.1 (e^{-300})
    [(25.0, 2.0, 0.1), (25.0, 2.0, 1.0), (9.0, 3.0, 0.5), (3000.0, 20.0, 1e-6), (3000.0, 20.0, 0.01),
     (3000.0, 20.0, 0.1), (1.0, 1.0, 1e-3)],
)
def test_front_flux_equals_atom_mass_loss_rate(a, c, s):
    """Mass balance at the front: 2·p_ac(s, c·s⁻)·(c - v(s, c·s⁻)) = a·e^{-as}, the rate at which the
    atoms ±c·s lose mass (d/ds of 2·e^{-as}/2)."""
    front = torch.tensor([c * s], **T64)
    x_in = torch.nextafter(front, torch.zeros_like(front))  # the last float64 inside the cone
    st = torch.tensor(s, **T64)
    p_front = float(kac_ac_density(st, x_in, a, c))
    v_front = float(kac_velocity(st, x_in, a, c))
    lhs = 2 * p_front * (c - v_front)
    rhs = a * math.exp(-a * s)
    assert abs(lhs / rhs - 1) < 1e-8, f"front flux {lhs!r} vs atom loss rate {rhs!r}"


# ---------------------------------------------------------------------------------------------------------
# 8. Front limit, bounds, no NaN
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("a, c", [(3000.0, 20.0), (25.0, 2.0), (9.0, 3.0)])
@pytest.mark.parametrize("s", [1e-6, 1e-3, 0.01, 0.2, 1.0])
def test_interior_velocity_tends_to_front_limit(a, c, s):
    """v(s, c·s(1 - δ)) increases to c·a·s/(a·s + 2) < c as δ → 0; on the atom (|x| = c·s) it is ±c."""
    lam = a * s
    limit = c * lam / (lam + 2)
    deltas = 10.0 ** -np.arange(1, 15)
    x = c * s * (1 - deltas)
    v = lib_v(s, x, a, c)
    assert np.all(np.diff(v) >= 0), "v is not increasing towards the front"
    assert np.all(v <= limit * (1 + 1e-15))
    assert abs(v[-1] / limit - 1) < 1e-9, f"v at δ=1e-14: {v[-1]!r}, limit {limit!r}"
    np.testing.assert_array_equal(lib_v(s, -x, a, c), -v)  # odd in x
    np.testing.assert_array_equal(lib_v(s, [c * s, -c * s], a, c), [c, -c])
    # with the atom flag: True gives ±c anywhere, False on the front gives the interior limit
    xs = torch.tensor([0.3 * c * s, -0.3 * c * s, c * s], **T64)
    st = torch.tensor(s, **T64)
    flagged = kac_velocity(st, xs, a, c, is_atom=torch.tensor([True, True, False])).numpy()
    np.testing.assert_allclose(flagged, [c, -c, limit], rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("a, c", [(3000.0, 20.0), (25.0, 2.0)])
def test_velocity_bounded_by_c_near_the_front(a, c, dtype):
    """|v| ≤ c on dense grids x = c·s(1 - 10^-k) near the front, and |v| < c wherever |x| < c·s."""
    s = torch.logspace(-6, 0, 61, dtype=dtype)[:, None]
    k = torch.arange(0, 17, dtype=dtype)[None, :]
    front = c * s
    x = front * (1 - 10.0 ** (-k))
    x = torch.cat([x, -x, torch.nextafter(front, torch.zeros_like(front)), front], dim=1)
    v = kac_velocity(s, x, a, c)
    assert v.dtype == dtype
    assert torch.all(torch.isfinite(v))
    assert torch.all(v.abs() <= c)
    inside = x.abs() < front.expand_as(x)
    assert torch.all(v.abs()[inside] < c), "interior velocity reached c"
    assert torch.all(v.abs()[~inside] == c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_nan_or_inf_for_3000_20_with_quadratic_clock(dtype):
    """(3000, 20), s = g(t) = t² for t on a log grid 1e-6..1 (and t = 0): finite everywhere, |v| ≤ c, odd,
    at x = 0, tiny x, the bulk, near the front, on the front and beyond it."""
    a, c = 3000.0, 20.0
    t = torch.cat([torch.zeros(1, dtype=dtype), torch.logspace(-6, 0, 241, dtype=dtype)])
    s = (t * t)[:, None]
    front = c * s
    fracs = torch.tensor(
        [0.0, 1e-30, 1e-12, 1e-6, 1e-3, 0.01, 0.1, 0.5, 0.9, 0.99, 1 - 1e-4, 1 - 1e-6, 1 - 1e-7, 1 - 1e-9, 1.0, 1.5],
        dtype=dtype,
    )[None, :]
    x = torch.cat([front * fracs, -front * fracs, torch.full_like(s, 1e-30), torch.full_like(s, 5.0)], dim=1)
    v = kac_velocity(s, x, a, c)
    assert torch.all(torch.isfinite(v)), "non-finite velocity"
    assert torch.all(v.abs() <= c)
    n = fracs.shape[1]
    assert torch.equal(v[:, n : 2 * n], -v[:, :n]), "v is not odd in x"
    # x = 0: v = 0; at s = 0 the law is a single atom at 0 and every x ≠ 0 is outside the cone (±c)
    assert torch.all(v[:, 0] == 0)
    assert torch.all(v[0, : 2 * n] == 0)  # at s = 0 the grid collapses onto x = 0
    assert torch.all(v[0, 2 * n :] == c)  # x = 1e-30 and x = 5 lie outside the cone {0}
    # unit_velocity on the same grid (lam = a·s, u = x/(c·s)) is finite and bounded by 1
    u = torch.linspace(-1, 1, 2001, dtype=dtype)[None, :]
    vu = unit_velocity(u, a * s)
    assert torch.all(torch.isfinite(vu)) and torch.all(vu.abs() <= 1)


# ---------------------------------------------------------------------------------------------------------
# 9. Against the independent scipy formula; diffusive and ballistic limits
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("a, c", [(25.0, 2.0), (3000.0, 20.0), (9.0, 3.0)])
def test_velocity_matches_independent_scipy_formula(a, c):
    """kac_velocity = c·x·I1(βr)/(r·I0(βr) + c·s·I1(βr)) on random interior points (s log-uniform in
    [1e-4, 1], |x/(c s)| ≤ 0.9999): relative error < 1e-10 with float64 inputs, < 1e-5 with float32 inputs
    (the reference is evaluated at the exact float32 values)."""
    rng = np.random.default_rng(99)
    n = 100_000
    s = 10.0 ** rng.uniform(-4, 0, n)
    u = rng.uniform(-0.9999, 0.9999, n)
    x = c * s * u
    expected = ref.velocity(s, x, a, c)
    got = lib_v(s, x, a, c)
    nz = expected != 0
    assert np.all(np.abs(got[nz] / expected[nz] - 1) < 1e-10)
    s32, x32 = s.astype(np.float32), x.astype(np.float32)
    inside = np.abs(x32.astype(np.float64)) < np.float32(c) * s32
    s32, x32 = s32[inside], x32[inside]
    expected32 = ref.velocity(s32.astype(np.float64), x32.astype(np.float64), a, c)
    got32 = lib_v(s32, x32, a, c, dtype=torch.float32)
    nz = expected32 != 0
    rel = np.abs(got32[nz] / expected32[nz] - 1)
    assert rel.max() < 1e-5, f"float32 relative error {rel.max():.2e}"


def test_velocity_at_sampled_points_matches_scipy_formula():
    """At actual off-atom draws of K_s (float32, the training-target use), relative error < 1e-5."""
    from kacdist.kac.sampler import sample_kac

    for a, c in [(25.0, 2.0), (3000.0, 20.0)]:
        times = torch.tensor([1e-3, 0.01, 0.1, 0.5, 1.0], dtype=torch.float32)
        k, atom = sample_kac(times, a, c, (5, 20_000), generator=torch.Generator().manual_seed(17))
        s = times[:, None].expand_as(k)
        got = kac_velocity(times[:, None], k, a, c, is_atom=atom).double().numpy()
        expected = ref.velocity(s.double().numpy(), k.double().numpy(), a, c)
        off = ~atom.numpy() & (expected != 0)
        rel = np.abs(got[off] / expected[off] - 1)
        assert rel.max() < 1e-5, f"(a,c)=({a},{c}): float32 relative error {rel.max():.2e}"
        np.testing.assert_array_equal(got[atom.numpy()], c * np.sign(k.numpy()[atom.numpy()]))


def test_diffusive_limit_is_brownian_probability_flow():
    """For a·s ≫ 1, v → x/(2s) within ±4 sd of the law; the relative gap shrinks as a·s grows
    (≈ u²/4 + 1/(4as)), below 1e-3 at a·s = 1e4."""
    a, c = 3000.0, 20.0
    gaps = []
    for lam in (1e2, 1e3, 1e4):
        s = lam / a
        sd = math.sqrt(ref.variance(s, a, c))
        x = np.linspace(-4 * sd, 4 * sd, 201)
        x = x[x != 0]
        rel = np.abs(lib_v(s, x, a, c) / (x / (2 * s)) - 1)
        gaps.append(rel.max())
    assert gaps[0] > gaps[1] > gaps[2], f"gap not shrinking: {gaps}"
    assert gaps[2] < 1e-3, f"gap at a·s=1e4: {gaps[2]:.2e}"


@pytest.mark.parametrize("lam", [1e-6, 1e-4, 1e-2])
def test_ballistic_interior_velocity_is_a_x_over_2(lam):
    """For a·s ≪ 1 the interior velocity is ≈ a·x/2 (one flip at a uniform time), relative gap ≤ a·s."""
    a, c = 25.0, 2.0
    s = lam / a
    x = c * s * np.linspace(-0.999, 0.999, 401)
    x = x[x != 0]
    rel = np.abs(lib_v(s, x, a, c) / (a * x / 2) - 1)
    assert rel.max() <= lam, f"relative gap {rel.max():.2e} at a·s={lam:g}"


# ---------------------------------------------------------------------------------------------------------
# 11. Bad input
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(a=0.0), ValueError, r"a \(flip rate\) must be a positive finite number"),
        (dict(a=-3.0), ValueError, r"a \(flip rate\) must be a positive finite number"),
        (dict(a=float("nan")), ValueError, r"a \(flip rate\) must be a positive finite number"),
        (dict(c=0.0), ValueError, r"c \(speed\) must be a positive finite number"),
        (dict(c=-1.0), ValueError, r"c \(speed\) must be a positive finite number"),
        (dict(s=torch.tensor([[0.1], [-0.2]])), ValueError, r"s must be finite and >= 0"),
        (dict(s=torch.tensor([[0.1], [float("nan")]])), ValueError, r"s must be finite and >= 0"),
        (dict(s=torch.tensor([0.1, 0.2, 0.3])), ValueError, r"does not broadcast against x"),
        (dict(x=torch.tensor([[1, 2], [3, 4]])), TypeError, r"x must be a floating-point tensor"),
        (dict(is_atom=torch.tensor([True, False])), ValueError, r"is_atom has shape \(2,\), expected \(2, 2\)"),
    ],
    ids=["a0", "a-neg", "a-nan", "c0", "c-neg", "s-neg", "s-nan", "s-x-mismatch", "x-int", "is_atom-shape"],
)
def test_kac_velocity_refuses_bad_input(kwargs, error, match):
    """Bad a, c, s, x or atom flags are refused with a message that names the problem."""
    args = dict(s=torch.tensor([[0.1], [0.2]]), x=torch.zeros(2, 2), a=25.0, c=2.0, is_atom=None)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        kac_velocity(**args)
