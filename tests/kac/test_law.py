"""Tests of the law of K_s (kacdist.kac.law): atom mass, ac density, variance, Bessel front term.

The library's closed forms are compared with the independent numpy/scipy reference (tests/kac/reference.py),
with quad integrals, with the doc's tabulated values (kac-math.md §1) and with histograms of exact draws.
The reference itself is checked against brute-force telegraph paths first, so it is not taken on trust.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from kacdist.kac.law import (
    FAST_DENSITY_REL_ERROR,
    bessel_front_term,
    kac_ac_density,
    kac_atom_mass,
    kac_variance,
    unit_ac_density_fast,
    unit_ac_density_unnormalised,
)
from kacdist.kac.sampler import sample_kac
from tests.kac import reference as ref

T64 = dict(dtype=torch.float64)

DENSITY_CASES = [
    (25.0, 2.0, 4e-8),
    (25.0, 2.0, 0.01),
    (25.0, 2.0, 0.1),
    (25.0, 2.0, 1.0),
    (3000.0, 20.0, 1e-6),
    (3000.0, 20.0, 1e-3),
    (3000.0, 20.0, 0.03),
    (3000.0, 20.0, 1.0),
    (3000.0, 20.0, 10.0 / 3.0),  # a·s = 1e4
    (9.0, 3.0, 0.5),
]


def case_id(case) -> str:
    a, c, s = case
    return f"a{a:g}-c{c:g}-s{s:g}"


def lib_density(s: float, a: float, c: float):
    """Scalar wrapper of kac_ac_density for quad."""
    st = torch.tensor(s, **T64)
    return lambda x: float(kac_ac_density(st, torch.tensor(x, **T64), a, c))


def quad_over_cone(f, s: float, a: float, c: float) -> float:
    """∫_{-cs}^{cs} f for an even f, split at the core of the law so quad sees the peak."""
    front = c * s
    sd = math.sqrt(ref.variance(s, a, c))
    core = min(front, 40 * sd)
    total = integrate.quad(f, 0.0, core, epsabs=0.0, epsrel=1e-12, limit=200)[0]
    if core < front:
        total += integrate.quad(f, core, front, epsabs=0.0, epsrel=1e-12, limit=200)[0]
    return 2 * total


# ---------------------------------------------------------------------------------------------------------
# The reference against brute force (so the reference is not taken on trust)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("a, c, s", [(25.0, 2.0, 0.1), (9.0, 3.0, 1.0), (3000.0, 20.0, 1e-3)])
def test_reference_formulas_agree_with_brute_force_paths(a, c, s):
    """Simulated telegraph paths: atom fraction e^{-as}, E K² = Var formula, off-atom law = quad CDF."""
    n = 20_000
    k, direction, flips = ref.simulate_telegraph(s, a, c, n, np.random.default_rng(2024))
    assert set(np.unique(direction)) <= {-1, 1}
    atom = flips == 0
    assert np.all(np.abs(k[atom]) == c * s) and np.all(np.abs(k[~atom]) < c * s)
    assert stats.binomtest(int(atom.sum()), n, math.exp(-a * s)).pvalue > 1e-3
    k2 = k * k
    assert abs(k2.mean() - ref.variance(s, a, c)) < 4 * k2.std() / math.sqrt(n)
    assert stats.kstest(k[~atom], ref.ac_cdf(s, a, c)).pvalue > 1e-3


# ---------------------------------------------------------------------------------------------------------
# Atom mass
# ---------------------------------------------------------------------------------------------------------


def test_atom_mass_is_half_the_no_flip_probability():
    """kac_atom_mass(s, a) = e^{-as}/2 for each of the two atoms, from s = 0 (1/2) to deep underflow."""
    s = torch.tensor([0.0, 1e-9, 1e-3, 0.3, 1.0, 10.0], **T64)
    for a in (1.0, 25.0, 3000.0):
        got = kac_atom_mass(s, a).numpy()
        expected = np.array([0.5 * math.exp(-a * v) for v in s.tolist()])
        np.testing.assert_allclose(got, expected, rtol=1e-14, atol=0)
    assert float(kac_atom_mass(torch.tensor([0.0]), 25.0)) == 0.5


# ---------------------------------------------------------------------------------------------------------
# Absolutely continuous density
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", DENSITY_CASES, ids=case_id)
def test_ac_density_matches_independent_closed_form(case):
    """kac_ac_density = e^{-as}/(2c)·[a I0(βr) + a c s I1(βr)/r] (scipy ive, float64) to 1e-10 relative."""
    a, c, s = case
    front = c * s
    u = np.concatenate([np.linspace(-1, 1, 401)[1:-1], 1 - np.logspace(-15, -1, 30), -(1 - np.logspace(-15, -1, 30))])
    x = front * u
    got = kac_ac_density(torch.tensor(s, **T64), torch.tensor(x, **T64), a, c).numpy()
    expected = ref.ac_density(s, x, a, c)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("case", DENSITY_CASES, ids=case_id)
def test_ac_density_front_limit_and_zero_outside_the_cone(case):
    """p_ac → e^{-as}·a(1 + as/2)/(2c) at the front; p_ac = 0 on and outside |x| = c·s."""
    a, c, s = case
    front = c * s
    st = torch.tensor(s, **T64)
    near = kac_ac_density(st, torch.tensor([front * (1 - 1e-13), -front * (1 - 1e-13)], **T64), a, c).numpy()
    np.testing.assert_allclose(near, ref.ac_front_value(s, a, c), rtol=1e-8, atol=1e-300)
    outside = kac_ac_density(st, torch.tensor([front, -front, 1.5 * front, -3 * front, 1e6], **T64), a, c)
    assert torch.all(outside == 0)


@pytest.mark.parametrize("case", DENSITY_CASES, ids=case_id)
def test_ac_density_integrates_to_one_minus_atom_mass(case):
    """∫ p_ac dx over the open cone (quad) = 1 - e^{-as}, so atoms + ac part carry total mass 1."""
    a, c, s = case
    total = quad_over_cone(lib_density(s, a, c), s, a, c)
    expected = -math.expm1(-a * s)
    assert abs(total / expected - 1) < 1e-8, f"∫p_ac = {total!r}, expected 1 - e^(-as) = {expected!r}"
    atoms = 2 * float(kac_atom_mass(torch.tensor([s], **T64), a)[0])
    assert abs(total + atoms - 1) < 1e-9


@pytest.mark.parametrize("lam", [1e-6, 1e-3, 0.1, 1.0, 7.5, 30.0, 300.0, 3000.0, 1e4])
def test_unit_density_normalisation_and_monotone_in_abs_u(lam):
    """q(u) = unit_ac_density_unnormalised: ∫_0^1 q du = (1 - e^{-lam})/lam, and q decreases in |u|
    (the envelope sampler's squeeze relies on this)."""
    lt = torch.tensor(lam, **T64)
    f = lambda u: float(unit_ac_density_unnormalised(torch.tensor(u, **T64), lt))  # noqa: E731
    core = min(1.0, 40 / math.sqrt(lam))
    total = integrate.quad(f, 0.0, core, epsabs=0.0, epsrel=1e-12, limit=200)[0]
    if core < 1.0:
        total += integrate.quad(f, core, 1.0, epsabs=0.0, epsrel=1e-12, limit=200)[0]
    expected = -math.expm1(-lam) / lam
    assert abs(total / expected - 1) < 1e-8
    u = torch.linspace(0, 1, 20001, **T64)
    q = unit_ac_density_unnormalised(u, lt)
    assert torch.all(torch.isfinite(q))
    # non-increasing up to float64 rounding (q is flat to 1e-6 at lam = 1e-6, so ulp-size wiggles are allowed)
    pos = q[:-1] > 0
    assert torch.all(q[1:][~pos] == 0), "q comes back from an underflow to 0"
    worst = float(((q[1:][pos] - q[:-1][pos]) / q[:-1][pos]).max())
    assert worst <= 1e-14, f"q increases in |u| by a relative {worst:.2e}"
    # and it is symmetric in u
    assert torch.equal(unit_ac_density_unnormalised(-u, lt), q)


@pytest.mark.parametrize("method", ["envelope", "poisson_beta"])
@pytest.mark.parametrize("a, c, s", [(25.0, 2.0, 0.1), (3000.0, 20.0, 0.03), (9.0, 3.0, 1.0), (25.0, 2.0, 0.01)])
def test_ac_density_matches_histogram_of_draws(a, c, s, method):
    """Histogram of off-atom draws vs bin masses ∫_bin kac_ac_density/(1 - e^{-as}): chi-square p > 1e-3."""
    s = float(np.float32(s))
    n = 100_000
    gen = torch.Generator().manual_seed(77)
    k, atom = sample_kac(torch.tensor([s], dtype=torch.float32), a, c, (1, n), generator=gen, method=method)
    x = k[0][~atom[0]].double().numpy()
    front = c * s
    sd = math.sqrt(ref.variance(s, a, c))
    inner = min(0.98 * front, 3.5 * sd)
    edges = np.concatenate([[-front], np.linspace(-inner, inner, 41), [front]])
    dens = lib_density(s, a, c)
    mass = -math.expm1(-a * s)
    probs = np.array(
        [integrate.quad(dens, lo, hi, epsabs=0.0, epsrel=1e-10)[0] for lo, hi in zip(edges[:-1], edges[1:])]
    )
    assert abs(probs.sum() / mass - 1) < 1e-8
    expected = x.size * probs / probs.sum()
    assert expected.min() > 5
    observed, _ = np.histogram(x, bins=edges)
    assert observed.sum() == x.size
    res = stats.chisquare(observed, expected)
    assert res.pvalue > 1e-3, f"chi-square {res.statistic:.1f} on {len(observed) - 1} dof, p={res.pvalue:.2e}"


# ---------------------------------------------------------------------------------------------------------
# Variance
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", DENSITY_CASES, ids=case_id)
def test_variance_formula_equals_second_moment_of_the_law(case):
    """kac_variance = (c s)²·e^{-as} + ∫ x² p_ac dx (quad of the reference density), to 1e-9 relative."""
    a, c, s = case
    got = float(kac_variance(torch.tensor(s, **T64), a, c))
    second_moment = (c * s) ** 2 * ref.unit_moment(a * s, 2)
    assert abs(got / second_moment - 1) < 1e-9
    assert abs(got / ref.variance(s, a, c) - 1) < 1e-12


def test_variance_values_from_the_design_note_and_tiny_as():
    """Var K_1 = 0.1568 (25,2), 0.1333 (3000,20), 0.944 (9,3); for a·s → 0, Var K ≈ (cs)²(1 - 2as/3)."""
    one = torch.tensor(1.0, **T64)
    assert abs(float(kac_variance(one, 25.0, 2.0)) - 0.1568) < 5e-5
    assert abs(float(kac_variance(one, 3000.0, 20.0)) - 0.1333) < 5e-5
    assert abs(float(kac_variance(one, 9.0, 3.0)) - 0.944) < 5e-4
    for lam in (1e-12, 1e-9, 1e-6):
        a, c = 25.0, 2.0
        s = lam / a
        got = float(kac_variance(torch.tensor(s, **T64), a, c))
        series = (c * s) ** 2 * (1 - 2 * lam / 3 + lam * lam / 3)
        assert abs(got / series - 1) < 1e-9, f"a·s={lam:g}: {got!r} vs series {series!r} (cancellation?)"


# ---------------------------------------------------------------------------------------------------------
# Bessel front term
# ---------------------------------------------------------------------------------------------------------


def test_bessel_front_term_matches_scipy():
    """bessel_front_term(z) = z·I0(z)/I1(z): 2 at z = 0, scipy ive ratio elsewhere (float64 1e-12, float32 1e-6)."""
    z = np.concatenate([[0.0], np.logspace(-12, 4, 400), [3000.0, 1e5]])
    safe = np.where(z > 0, z, 1.0)
    expected = np.where(z > 0, safe * special.ive(0, safe) / special.ive(1, safe), 2.0)
    got64 = bessel_front_term(torch.tensor(z, **T64)).numpy()
    np.testing.assert_allclose(got64, expected, rtol=1e-12)
    z32 = z.astype(np.float32).astype(np.float64)  # the float32 inputs, exactly
    safe32 = np.where(z32 > 0, z32, 1.0)
    exp32 = np.where(z32 > 0, safe32 * special.ive(0, safe32) / special.ive(1, safe32), 2.0)
    got32 = bessel_front_term(torch.tensor(z32, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(got32, exp32, rtol=1e-6)
    assert float(bessel_front_term(torch.tensor([0.0], **T64))[0]) == 2.0


def test_fast_unit_density_within_its_stated_error_of_scipy():
    """unit_ac_density_fast (Hankel series where z = lam·rho ≥ 30) against scipy's scaled Bessel functions in
    float64, on u ∈ [0, 1] (dense near the front) and lam from 1e-6 to 3e4: relative error below
    FAST_DENSITY_REL_ERROR wherever the density is a normal float64, and the float32 form within 5e-5."""
    u = np.unique(np.concatenate([np.linspace(0.0, 1.0, 2001), 1 - np.logspace(-12, -1, 200)]))
    lam = np.logspace(-6, np.log10(3e4), 61)
    uu, ll = np.meshgrid(u, lam)
    rho = np.sqrt((1 - uu) * (1 + uu))
    z = ll * rho
    zs = np.where(z > 0, z, 1.0)
    i1_over_z = np.where(z > 0, special.ive(1, zs) / zs, 0.5)
    expected = np.exp(-ll * uu * uu / (1 + rho)) * (special.ive(0, z) + ll * i1_over_z)
    got = unit_ac_density_fast(torch.tensor(uu, **T64), torch.tensor(ll, **T64)).numpy()
    normal = expected > 1e-290
    rel = np.abs(got[normal] - expected[normal]) / expected[normal]
    assert rel.max() < FAST_DENSITY_REL_ERROR, f"max relative error {rel.max():.2e}"
    assert np.all(got[~normal] <= 1e-280)
    got32 = unit_ac_density_fast(torch.tensor(uu, dtype=torch.float32), torch.tensor(ll, dtype=torch.float32)).double().numpy()
    # float32: compare with the float64 value at the float32 inputs; the exponent's rounding dominates
    u32, l32 = uu.astype(np.float32).astype(np.float64), ll.astype(np.float32).astype(np.float64)
    ref32 = unit_ac_density_fast(torch.tensor(u32, **T64), torch.tensor(l32, **T64)).numpy()
    ok = ref32 > 1e-30
    assert (np.abs(got32[ok] - ref32[ok]) / ref32[ok]).max() < 5e-5


# ---------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: kac_variance(torch.tensor([1.0]), 0.0, 2.0), ValueError, r"a \(flip rate\) must be a positive"),
        (lambda: kac_variance(torch.tensor([1.0]), float("nan"), 2.0), ValueError, r"a \(flip rate\) must be a positive"),
        (lambda: kac_variance(torch.tensor([1.0]), 25.0, -2.0), ValueError, r"c \(speed\) must be a positive"),
        (lambda: kac_variance(torch.tensor([-1.0]), 25.0, 2.0), ValueError, r"s must be finite and >= 0"),
        (lambda: kac_ac_density(torch.tensor([1.0]), torch.tensor([0.0]), -25.0, 2.0), ValueError, r"a \(flip rate\)"),
        (lambda: kac_ac_density(torch.tensor([1.0]), torch.tensor([0.0]), 25.0, 0.0), ValueError, r"c \(speed\)"),
        (lambda: kac_ac_density(torch.tensor([float("nan")]), torch.tensor([0.0]), 25.0, 2.0), ValueError, r"s must be finite and >= 0"),
        (lambda: kac_atom_mass(torch.tensor([-0.1]), 25.0), ValueError, r"s must be finite and >= 0"),
        (lambda: kac_atom_mass(torch.tensor([0.1]), 0.0), ValueError, r"a \(flip rate\) must be a positive"),
        (lambda: kac_atom_mass(torch.tensor([0.1]), -25.0), ValueError, r"a \(flip rate\) must be a positive"),
        (lambda: kac_atom_mass(torch.tensor([0.1]), float("nan")), ValueError, r"a \(flip rate\) must be a positive"),
        (lambda: kac_variance([1.0], 25.0, 2.0), TypeError, r"s must be a torch.Tensor"),
    ],
    ids=[
        "var-a0", "var-a-nan", "var-c-neg", "var-s-neg", "dens-a-neg", "dens-c0", "dens-s-nan",
        "atom-s-neg", "atom-a0", "atom-a-neg", "atom-a-nan", "var-s-list",
    ],
)
def test_law_functions_refuse_bad_input(call, error, match):
    """Non-positive or NaN a, non-positive c, negative or NaN s are refused with a message naming them."""
    with pytest.raises(error, match=match):
        call()
