"""Fréchet distance: closed forms, symmetry, agreement of the eigh / sqrtm / low-rank / streaming paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kacdist.eval.frechet import (
    RunningStats,
    feature_stats,
    frechet_distance,
    frechet_distance_from_features,
    psd_sqrt,
)

METHODS = ("eigh", "sqrtm")


def random_spd(rng: np.random.Generator, d: int, scale: float = 1.0) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return scale * (a @ a.T / d + 0.1 * np.eye(d))


@pytest.mark.parametrize("method", METHODS)
def test_fd_of_a_set_with_itself_is_zero(method: str) -> None:
    feats = np.random.default_rng(0).normal(size=(500, 16)) * 3.0 + 1.0
    mu, sigma = feature_stats(feats)
    assert abs(frechet_distance(mu, sigma, mu, sigma, method=method)) < 1e-9


def test_fd_of_a_rank_deficient_set_with_itself_is_zero() -> None:
    """Fewer samples than dimensions: singular covariance, no NaN, still ~0 (the eigh path)."""
    feats = np.random.default_rng(1).normal(size=(10, 64))
    mu, sigma = feature_stats(feats)
    value = frechet_distance(mu, sigma, mu, sigma)
    assert np.isfinite(value) and value < 1e-8 * np.trace(sigma)


@pytest.mark.parametrize("method", METHODS)
def test_fd_of_commuting_gaussians_matches_closed_form(method: str) -> None:
    """Shared eigenvectors: FD = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2."""
    rng = np.random.default_rng(2)
    d = 12
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a = rng.uniform(0.1, 5.0, size=d)
    b = rng.uniform(0.1, 5.0, size=d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    for basis in (np.eye(d), q):
        s1, s2 = basis @ np.diag(a) @ basis.T, basis @ np.diag(b) @ basis.T
        assert frechet_distance(mu1, s1, mu2, s2, method=method) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_fd_of_non_commuting_2d_gaussians_matches_closed_form(method: str) -> None:
    """In 2-D, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for M = S1 S2 (positive eigenvalues)."""
    s1 = np.array([[2.0, 0.9], [0.9, 1.0]])
    s2 = np.array([[0.5, -0.3], [-0.3, 3.0]])
    assert not np.allclose(s1 @ s2, s2 @ s1)
    mu1, mu2 = np.array([0.3, -1.0]), np.array([2.0, 0.5])
    m = s1 @ s2
    tr_sqrt = np.sqrt(np.trace(m) + 2.0 * np.sqrt(np.linalg.det(m)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2, method=method) == pytest.approx(expected, rel=1e-6)


def test_fd_is_symmetric_and_positive_for_different_sets() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 32))
    y = rng.normal(size=(300, 32)) @ np.diag(np.linspace(0.5, 2.0, 32)) + 0.2
    sx, sy = feature_stats(x), feature_stats(y)
    forward, backward = frechet_distance(*sx, *sy), frechet_distance(*sy, *sx)
    assert forward > 1.0
    assert forward == pytest.approx(backward, rel=1e-10)
    assert frechet_distance(*sx, *sy, method="sqrtm") == pytest.approx(forward, rel=1e-8)


def test_eigh_and_sqrtm_agree_on_random_covariances() -> None:
    rng = np.random.default_rng(4)
    d = 64
    s1, s2 = random_spd(rng, d), random_spd(rng, d, scale=2.0)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a = frechet_distance(mu1, s1, mu2, s2, method="eigh")
    b = frechet_distance(mu1, s1, mu2, s2, method="sqrtm")
    assert a == pytest.approx(b, rel=1e-8)
    # a cached square root of sigma1 gives the same number
    assert frechet_distance(mu1, s1, mu2, s2, sqrt_sigma1=psd_sqrt(s1)) == pytest.approx(a, rel=1e-12)


def test_empirical_fd_of_gaussian_samples_approaches_closed_form() -> None:
    rng = np.random.default_rng(5)
    d, n = 4, 200_000
    a, b = np.array([1.0, 2.0, 0.5, 3.0]), np.array([2.0, 1.0, 1.5, 0.2])
    mu2 = np.array([0.5, 0.0, -0.5, 1.0])
    x = rng.normal(size=(n, d)) * np.sqrt(a)
    y = rng.normal(size=(n, d)) * np.sqrt(b) + mu2
    expected = np.sum(mu2**2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(*feature_stats(x), *feature_stats(y)) == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("n1,n2,d,rel", [(7, 12, 40, 1e-6), (300, 250, 20, 1e-9)])
def test_low_rank_path_matches_covariance_path(n1: int, n2: int, d: int, rel: float) -> None:
    """On singular covariances the D x D path carries sqrt(round-off) ~ 1e-8 per null eigenvalue."""
    rng = np.random.default_rng(6)
    f1 = rng.normal(size=(n1, d))
    f2 = rng.normal(size=(n2, d)) * 1.5 + 0.3
    direct = frechet_distance(*feature_stats(f1), *feature_stats(f2))
    assert frechet_distance_from_features(f1, f2) == pytest.approx(direct, rel=rel)
    assert frechet_distance_from_features(torch.from_numpy(f1).float(), torch.from_numpy(f1).float()) < 1e-4


def test_running_stats_match_feature_stats() -> None:
    rng = np.random.default_rng(7)
    feats = rng.normal(size=(1000, 8)) * 0.01 + 1e4  # large offset: the naive formula would cancel
    running = RunningStats()
    for chunk in np.array_split(feats, 7):
        running.update(torch.from_numpy(chunk))
    mu, sigma = running.finalize()
    mu_ref, sigma_ref = feature_stats(feats)
    assert running.n == 1000
    np.testing.assert_allclose(mu, mu_ref, rtol=1e-12)
    np.testing.assert_allclose(sigma, sigma_ref, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(sigma_ref, np.cov(feats, rowvar=False), rtol=1e-9)


def test_bad_inputs_raise() -> None:
    mu, sigma = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError):
        frechet_distance(mu, sigma, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError):
        frechet_distance(mu, sigma, mu, np.full((3, 3), np.nan))
    with pytest.raises(ValueError):
        frechet_distance(mu, sigma, mu, sigma, method="nope")
    with pytest.raises(ValueError):
        feature_stats(np.zeros((1, 3)))
