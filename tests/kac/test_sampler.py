"""Statistical tests of the exact Kac samplers (kacdist.kac.sampler) against independent references.

Every test uses fixed seeds, so it is deterministic; each compares with a law computed independently in
tests/kac/reference.py (brute-force telegraph paths with exponential flip times, or the closed-form density
integrated by quad), never with the library's own formulas.

Times are taken as float32 values (``f32``) so that the atoms ±c·s of the sampler (float32 output) and of
the brute-force simulation (float64) coincide exactly after division by the same front c·s.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from kacdist.kac.sampler import sample_kac, sample_kac_unit
from tests.kac import reference as ref

METHODS = ("envelope", "poisson_beta")

# (a, c, s): CIFAR (25, 2) and CelebA/LSUN (3000, 20) settings of DistillKac, plus the reference default (9, 3)
LAW_CASES = [
    (25.0, 2.0, 0.01),
    (25.0, 2.0, 0.1),
    (25.0, 2.0, 1.0),
    (3000.0, 20.0, 1e-3),
    (3000.0, 20.0, 0.03),
    (3000.0, 20.0, 1.0),
    (9.0, 3.0, 0.5),
]
P_MIN = 1e-3  # a correct sampler passes every fixed-seed test at this level
P_REJECT = 1e-6  # a wrong law must be rejected at least this strongly


def f32(x: float) -> float:
    """The float32 value nearest to x, as a Python float."""
    return float(np.float32(x))


def front32(s: float, c: float) -> float:
    """c·s as the sampler forms it: float32 product of c and the float32 time."""
    return float(np.float32(c) * np.float32(s))


def draw(s: float, a: float, c: float, n: int, method: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n draws of K_s from the library (one row), as (k float64, is_atom)."""
    gen = torch.Generator().manual_seed(seed)
    k, atom = sample_kac(torch.tensor([s], dtype=torch.float32), a, c, (1, n), generator=gen, method=method)
    return k[0].double().numpy(), atom[0].numpy()


@functools.lru_cache(maxsize=None)
def brute_force_unit(a: float, c: float, s: float, n_paths: int = 4000, seed: int = 7) -> np.ndarray:
    """u = K_s/(c·s) of brute-force paths (atoms land exactly on ±1)."""
    k, _, _ = ref.simulate_telegraph(s, a, c, n_paths, np.random.default_rng(seed))
    return k / (c * s)


def case_id(case) -> str:
    a, c, s = case
    return f"a{a:g}-c{c:g}-s{s:g}"


# ---------------------------------------------------------------------------------------------------------
# 1. Law of K_s: two-sample KS against brute force, one-sample KS against the closed-form ac CDF
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", LAW_CASES, ids=case_id)
def test_sampler_matches_brute_force_telegraph_paths(case, method):
    """Full law of K_s (atoms included): sampler draws vs simulated paths, two-sample KS, p > 1e-3."""
    a, c, s = case
    s = f32(s)
    k, _ = draw(s, a, c, 40_000, method, seed=11)
    u = k / front32(s, c)
    u_bf = brute_force_unit(a, c, s)
    res = stats.ks_2samp(u, u_bf)
    assert res.pvalue > P_MIN, f"KS vs brute force: D={res.statistic:.4f}, p={res.pvalue:.2e}"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "a, c, times", [(25.0, 2.0, (0.01, 0.1, 1.0)), (3000.0, 20.0, (1e-3, 0.03, 1.0)), (9.0, 3.0, (0.5,))]
)
def test_sampler_ac_part_matches_closed_form_cdf(a, c, times, method):
    """Off-atom draws follow p_ac/(1 - e^{-as}) (CDF by quad of the closed form), one multi-row call.

    All times of one (a, c) are drawn in a single call (one s per leading index) so the per-row
    handling of the batch is exercised too.
    """
    times = [f32(t) for t in times]
    gen = torch.Generator().manual_seed(23)
    k, atom = sample_kac(
        torch.tensor(times, dtype=torch.float32), a, c, (len(times), 40_000), generator=gen, method=method
    )
    for row, s in enumerate(times):
        x = k[row][~atom[row]].double().numpy()
        assert x.size > 5000
        res = stats.kstest(x, ref.ac_cdf(s, a, c))
        assert res.pvalue > P_MIN, f"s={s:g}: KS vs closed-form ac CDF D={res.statistic:.4f}, p={res.pvalue:.2e}"


@pytest.mark.parametrize("method", METHODS)
def test_ks_tests_have_power_against_a_wrong_law(method):
    """The same KS tests reject draws from a different (a, c): p < 1e-6, so passing them means something."""
    # two-sample test against brute force: flip rate 1.5x too high
    for a, c, s in [(25.0, 2.0, 1.0), (3000.0, 20.0, f32(1e-3)), (9.0, 3.0, 0.5)]:
        k, _ = draw(s, 1.5 * a, c, 40_000, method, seed=11)
        p = stats.ks_2samp(k / front32(s, c), brute_force_unit(a, c, s)).pvalue
        assert p < P_REJECT, f"two-sample KS failed to reject a'=1.5a at (a,c,s)=({a},{c},{s}): p={p:.2e}"
    # closed-form CDF test: flip rate 1.25x too high, or speed 1.1x too high
    for (a, c, s), (a_wrong, c_wrong) in [
        ((25.0, 2.0, f32(0.1)), (31.25, 2.0)),
        ((3000.0, 20.0, 1.0), (3750.0, 20.0)),
        ((9.0, 3.0, 0.5), (9.0, 3.3)),
    ]:
        k, atom = draw(s, a_wrong, c_wrong, 40_000, method, seed=23)
        p = stats.kstest(k[~atom], ref.ac_cdf(s, a, c)).pvalue
        assert p < P_REJECT, f"CDF KS failed to reject (a',c')=({a_wrong},{c_wrong}) vs ({a},{c}) at s={s}: p={p:.2e}"


# ---------------------------------------------------------------------------------------------------------
# 2. Atoms: masses e^{-as}/2 each, exactly on ±c·s; the rest strictly inside the cone
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "a, s, n",
    [(1.0, 1e-6, 200_000), (25.0, 0.3, 400_000), (25.0, 0.01, 100_000), (3000.0, 1e-3, 100_000)],
    ids=["lam1e-6", "a25-s0.3", "a25-s0.01", "a3000-s1e-3"],
)
def test_atom_fractions_match_no_flip_probability(a, s, n, method):
    """P(atom) = e^{-as} and P(K = +c·s) = P(K = -c·s) = e^{-as}/2, by exact binomial tests (p > 1e-3)."""
    s = f32(s)
    c = 2.0
    k, atom = draw(s, a, c, n, method, seed=31)
    p_atom = math.exp(-a * s)
    n_atom = int(atom.sum())
    n_plus = int((atom & (k > 0)).sum())
    n_minus = int((atom & (k < 0)).sum())
    assert n_plus + n_minus == n_atom
    for name, count, p in [("atoms", n_atom, p_atom), ("+front", n_plus, p_atom / 2), ("-front", n_minus, p_atom / 2)]:
        pv = stats.binomtest(count, n, p).pvalue
        assert pv > P_MIN, f"{name}: {count}/{n} observed, expected {n * p:.1f} (p-value {pv:.2e})"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("a, c", [(25.0, 2.0), (3000.0, 20.0), (9.0, 3.0)])
def test_atoms_on_the_front_and_the_rest_strictly_inside(a, c, method):
    """is_atom ⇔ |K| = c·s exactly (float32 front), and every non-atom draw has |K| < c·s strictly."""
    times = [f32(t) for t in (1e-7 / a, 1e-3 / a, 0.3 / a, 1.0 / a, 3.0 / a, 0.5, 1.0)]
    gen = torch.Generator().manual_seed(41)
    k, atom = sample_kac(
        torch.tensor(times, dtype=torch.float32), a, c, (len(times), 50_000), generator=gen, method=method
    )
    assert k.dtype == torch.float32 and atom.dtype == torch.bool
    for row, s in enumerate(times):
        front = np.float32(front32(s, c))
        kr, ar = k[row].numpy(), atom[row].numpy()
        assert np.all(np.isfinite(kr))
        assert np.all(np.abs(kr[ar]) == front), f"s={s:g}: an atom is off ±c·s"
        inside = np.abs(kr[~ar])
        assert np.all(inside < front), f"s={s:g}: non-atom at |k|={inside.max()!r} >= c·s={front!r}"


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_no_off_atom_draw_lands_on_the_front_in_a_large_batch(method):
    """Off-atom draws stay strictly inside the cone even in 30M draws (3 rows of 1e7, lam = 0.5, 1, 2).

    An off-atom u within 2^-25 of ±1 must not be rounded onto ±1 by the float32 output: it would then be
    indistinguishable by position from an atom (and get velocity ±c instead of c·lam/(lam + 2)).
    """
    lam = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    u, atom = sample_kac_unit(lam, (3, 10_000_000), generator=torch.Generator().manual_seed(1), method=method)
    on_front = (u.abs() >= 1) & ~atom
    assert not bool(on_front.any()), (
        f"{int(on_front.sum())} off-atom draws equal ±1 exactly (per row {on_front.sum(1).tolist()}, lam=0.5,1,2)"
    )


# ---------------------------------------------------------------------------------------------------------
# 3. Variance formula
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "a, c, s",
    [(25.0, 2.0, 1.0), (3000.0, 20.0, 1.0), (9.0, 3.0, 1.0), (25.0, 2.0, 0.1), (3000.0, 20.0, 1e-3)],
)
def test_sample_variance_matches_closed_form(a, c, s, method):
    """mean(K²) (E K = 0 by symmetry) matches (c²/a)(s - (1 - e^{-2as})/(2a)) within 4 standard errors."""
    s = f32(s)
    n = 200_000
    k, _ = draw(s, a, c, n, method, seed=53)
    k2 = k * k
    est, se = k2.mean(), k2.std(ddof=1) / math.sqrt(n)
    expected = ref.variance(s, a, c)
    assert abs(est - expected) < 4 * se, f"sample var {est:.6g} vs formula {expected:.6g} (se {se:.2g})"
    assert abs(k.mean()) < 5 * math.sqrt(expected / n), "sample mean is not 0"


# ---------------------------------------------------------------------------------------------------------
# 4. Exact for every a·s from 1e-6 to 1e4
# ---------------------------------------------------------------------------------------------------------

LAM_GRID = np.logspace(-6, 4, 21)


@pytest.mark.parametrize("method", METHODS)
def test_unit_sampler_exact_for_every_lam(method):
    """For lam = a·s on a log grid 1e-6..1e4 (one row each, one call): u ∈ [-1, 1], no NaN, atoms exactly
    at ±1 with frequency e^{-lam} (binomial p > 1e-4 per row), and mean(u²) matches
    Var u = (lam - (1 - e^{-2 lam})/2)/lam² within 4.5 standard errors (standard error from E[u⁴] by quad)."""
    n = 20_000
    lam = torch.tensor(LAM_GRID, dtype=torch.float64)
    gen = torch.Generator().manual_seed(61)
    u, atom = sample_kac_unit(lam, (lam.numel(), n), generator=gen, method=method)
    assert u.shape == (lam.numel(), n) and atom.shape == u.shape
    u64 = u.double().numpy()
    atom = atom.numpy()
    assert np.all(np.isfinite(u64))
    assert np.all(np.abs(u64) <= 1.0)
    for row, lv in enumerate(LAM_GRID):
        ur, ar = u64[row], atom[row]
        assert np.all(np.abs(ur[ar]) == 1.0) and np.all(np.abs(ur[~ar]) < 1.0), f"lam={lv:g}: atom flag mismatch"
        pv = stats.binomtest(int(ar.sum()), n, math.exp(-lv)).pvalue
        assert pv > 1e-4, f"lam={lv:g}: {int(ar.sum())} atoms of {n}, expected {n * math.exp(-lv):.1f} (p={pv:.1e})"
        var = ref.unit_variance(lv)
        se = math.sqrt(max(ref.unit_moment(lv, 4) - var * var, 0.0) / n)
        est = float(np.mean(ur * ur))
        assert abs(est - var) <= 4.5 * se + 1e-12, f"lam={lv:g}: mean(u²)={est:.8g} vs Var u={var:.8g} (se {se:.2g})"


@pytest.mark.parametrize("method", METHODS)
def test_sample_kac_for_every_lam_at_3000_20(method):
    """sample_kac at (3000, 20) with s = lam/a down to 3e-10: finite, |K| ≤ c·s, atoms on the front."""
    a, c = 3000.0, 20.0
    times = [f32(lv / a) for lv in LAM_GRID]
    gen = torch.Generator().manual_seed(67)
    k, atom = sample_kac(torch.tensor(times, dtype=torch.float32), a, c, (len(times), 4000), generator=gen, method=method)
    for row, s in enumerate(times):
        front = np.float32(front32(s, c))
        kr, ar = k[row].numpy(), atom[row].numpy()
        assert np.all(np.isfinite(kr)), f"s={s:g}: non-finite draws"
        assert np.all(np.abs(kr) <= front), f"s={s:g}: draw outside the cone"
        assert np.all(np.abs(kr[ar]) == front) and np.all(np.abs(kr[~ar]) < front), f"s={s:g}: atom flag mismatch"


@pytest.mark.parametrize("method", METHODS)
def test_time_zero_is_a_single_atom_at_zero(method):
    """At s = 0 no flip can have happened: K_0 = 0 for every draw, flagged as an atom."""
    gen = torch.Generator().manual_seed(3)
    k, atom = sample_kac(torch.zeros(2), 25.0, 2.0, (2, 1000), generator=gen, method=method)
    assert torch.all(k == 0)
    assert torch.all(atom)


@pytest.mark.parametrize("method", METHODS)
def test_one_time_per_leading_index_broadcast_over_the_rest(method):
    """shape (B, C, H, W): each image row uses its own s, so |K| ≤ c·s_b and the spread scales with s_b."""
    a, c = 25.0, 2.0
    times = torch.tensor([0.0, 1e-3, 0.1, 1.0], dtype=torch.float32)
    gen = torch.Generator().manual_seed(5)
    k, atom = sample_kac(times, a, c, (4, 3, 16, 16), generator=gen, method=method)
    assert k.shape == (4, 3, 16, 16) and atom.shape == (4, 3, 16, 16)
    for b, s in enumerate(times.tolist()):
        front = np.float32(front32(s, c))
        assert np.all(np.abs(k[b].numpy()) <= front)
    # s = 1e-3: lam = 0.025, so ~97.5% atoms; s = 1: essentially none (e^{-25})
    assert atom[1].float().mean() > 0.9
    assert not bool(atom[3].any())
    # the spread of row b follows its own variance, not the neighbours'
    for b in (2, 3):
        sd = float(k[b].double().std())
        expected = math.sqrt(ref.variance(float(times[b]), a, c))
        assert abs(sd / expected - 1) < 0.15, f"row {b}: sd {sd:.4g} vs {expected:.4g}"


# ---------------------------------------------------------------------------------------------------------
# 5. Determinism
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_draws_different_seed_different_draws(method):
    """A torch.Generator with the same seed reproduces the draws bit for bit; another seed changes them."""
    s = torch.tensor([1e-3, 0.05, 1.0])

    def run(seed):
        return sample_kac(s, 25.0, 2.0, (3, 5000), generator=torch.Generator().manual_seed(seed), method=method)

    k1, a1 = run(123)
    k2, a2 = run(123)
    k3, a3 = run(124)
    assert torch.equal(k1, k2) and torch.equal(a1, a2)
    assert not torch.equal(k1, k3)
    assert (k1[2] != k3[2]).float().mean() > 0.99  # the continuous row differs almost everywhere


# ---------------------------------------------------------------------------------------------------------
# 11. Bad input
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(a=0.0), ValueError, r"a \(flip rate\) must be a positive finite number"),
        (dict(a=-1.0), ValueError, r"a \(flip rate\) must be a positive finite number"),
        (dict(a=float("nan")), ValueError, r"a \(flip rate\) must be a positive finite number"),
        (dict(a=float("inf")), ValueError, r"a \(flip rate\) must be a positive finite number"),
        (dict(c=0.0), ValueError, r"c \(speed\) must be a positive finite number"),
        (dict(c=-2.0), ValueError, r"c \(speed\) must be a positive finite number"),
        (dict(s=torch.tensor([0.1, -0.5])), ValueError, r"must be finite and >= 0"),
        (dict(s=torch.tensor([0.1, float("nan")])), ValueError, r"must be finite and >= 0"),
        (dict(s=torch.tensor([0.1, 0.2, 0.3])), ValueError, r"has 3 times but the shape \(2, 10\) has leading size 2"),
        (dict(s=torch.tensor([[0.1], [0.2]])), ValueError, r"must be 1-D with one time per leading index"),
        (dict(method="inverse_cdf"), ValueError, r"unknown Kac sampler 'inverse_cdf'; choose one of envelope, poisson_beta"),
        (dict(s=[0.1, 0.2]), TypeError, r"s must be a torch.Tensor"),
    ],
    ids=["a0", "a-neg", "a-nan", "a-inf", "c0", "c-neg", "s-neg", "s-nan", "s-shape-mismatch", "s-2d", "method", "s-list"],
)
def test_sample_kac_refuses_bad_input(kwargs, error, match):
    """Bad a, c, s, shape or method name is refused with a message that names the problem."""
    args = dict(s=torch.tensor([0.1, 0.2]), a=25.0, c=2.0, shape=(2, 10), method="envelope")
    args.update(kwargs)
    with pytest.raises(error, match=match):
        sample_kac(**args)


def test_sample_kac_unit_refuses_bad_input():
    """The unit sampler refuses negative lam, a lam/shape mismatch and an unknown method."""
    with pytest.raises(ValueError, match=r"must be finite and >= 0"):
        sample_kac_unit(torch.tensor([-1.0]), (1, 4))
    with pytest.raises(ValueError, match=r"they must match"):
        sample_kac_unit(torch.tensor([1.0, 2.0]), (3, 4))
    with pytest.raises(ValueError, match=r"unknown Kac sampler"):
        sample_kac_unit(torch.tensor([1.0]), (1, 4), method="table")


# ---------------------------------------------------------------------------------------------------------
# 7. The envelope itself (what makes the default sampler exact) and its work buffers
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bins", [64, 128, 256])
def test_envelope_bounds_and_squeezes_the_density_on_every_bin(bins):
    """For lam = 1e-8 … 1e6 (inside and outside the cached knot grid): knots rise from 0 to 1; on every bin
    the acceptance probability q(u)·width/A, with q the float64 Bessel density, never exceeds 1 (the
    envelope bounds the density) and never falls below the squeeze; and the envelope wastes little:
    mass / (bins·A) ≥ 0.9 (speed only, but a regression here would show as a slow sampler)."""
    from kacdist.kac import sampler as S
    from kacdist.kac.law import unit_ac_density_unnormalised

    lam = torch.logspace(-8, 6, 85, dtype=torch.float64)  # 6 per decade, past both ends of the knot grid
    env = S._build_envelope(lam, bins)
    per_row = 2 * bins
    left = env.slot_left.view(len(lam), per_row)[:, :bins].double()
    right = left + env.slot_width.view(len(lam), per_row)[:, :bins].double()
    right[:, :-1] = left[:, 1:]  # the float32 width is rounded; the bin ends where the next one starts
    right[:, -1] = 1.0
    width = right - left
    scale = env.slot_scale.view(len(lam), per_row)[:, :bins]
    squeeze = env.slot_squeeze.view(len(lam), per_row)[:, :bins].double() * 2.0**-31
    knots = torch.cat([left, (left + width)[:, -1:]], dim=1)
    assert torch.all(knots[:, 0] == 0) and torch.all(knots[:, -1] == 1)
    assert torch.all(width >= 0)
    frac = torch.linspace(0.0, 1.0, 41, dtype=torch.float64)
    u = (left[:, :, None] + frac * width[:, :, None]).clamp(max=1 - 1e-16)
    q = unit_ac_density_unnormalised(u, lam[:, None, None])
    accept = q * scale[:, :, None]
    assert float(accept.max()) <= 1 + 1e-6, f"envelope below the density: max acceptance {float(accept.max()):.8f}"
    slack = (squeeze[:, :, None] - accept).max()
    assert float(slack) <= 1e-6, f"squeeze above the density by {float(slack):.2e}"
    area = torch.where(width > 0, width / scale, 0.0).amax(dim=1)  # A, from the bins with width > 0
    mass = -torch.expm1(-lam) / lam  # ∫ q over [0, 1)
    efficiency = mass / (bins * area)
    assert float(efficiency.min()) >= 0.9, f"envelope efficiency {efficiency.tolist()}"


def test_work_buffers_never_alias_returned_draws():
    """The sampler reuses per-thread work buffers between calls: earlier results must stay untouched."""
    gen = torch.Generator().manual_seed(5)
    lam = torch.tensor([0.3, 4.0, 90.0], dtype=torch.float64)
    u1, a1 = sample_kac_unit(lam, (3, 5000), generator=gen)
    kept_u, kept_a = u1.clone(), a1.clone()
    for shape in [(3, 5000), (3, 7000), (3, 100)]:
        sample_kac_unit(lam, shape, generator=gen)
    assert torch.equal(u1, kept_u) and torch.equal(a1, kept_a)


def test_rows_with_the_same_time_share_an_envelope_and_keep_their_law():
    """Rows with equal lam use one envelope row (the prior's case): interleaved rows lam = 2, 50, 2, 50, 0.5
    each match Var u = (lam - (1 - e^{-2 lam})/2)/lam² within 4.5 standard errors, and equal-lam rows agree
    with each other (two-sample KS, p > 1e-3)."""
    lam = torch.tensor([2.0, 50.0, 2.0, 50.0, 0.5], dtype=torch.float64)
    n = 40_000
    u, _ = sample_kac_unit(lam, (lam.numel(), n), generator=torch.Generator().manual_seed(71))
    u64 = u.double().numpy()
    for row, lv in enumerate(lam.tolist()):
        var = ref.unit_variance(lv)
        se = math.sqrt(max(ref.unit_moment(lv, 4) - var * var, 0.0) / n)
        assert abs(float(np.mean(u64[row] ** 2)) - var) <= 4.5 * se, f"row {row} (lam={lv:g})"
    assert stats.ks_2samp(u64[0], u64[2]).pvalue > P_MIN and stats.ks_2samp(u64[1], u64[3]).pvalue > P_MIN
