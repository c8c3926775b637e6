"""Feature statistics from batches and the atomic on-disk reference cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kacdist.eval.frechet import feature_stats
from kacdist.eval.stats import FeatureStats, cached_reference_stats, compute_stats, reference_stats_path


class ProjectionFeatures:
    """A small real feature extractor: a fixed random projection of the pixels followed by tanh."""

    def __init__(self, in_dim: int = 64, out_dim: int = 8, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(in_dim, out_dim, generator=g, dtype=torch.float64) / in_dim**0.5
        self.fingerprint = f"proj{in_dim}x{out_dim}-seed{seed}"
        self.calls = 0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.tanh(x.flatten(1).double() @ self.weight)


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_compute_stats_over_batches_equals_stats_of_all_features() -> None:
    extractor = ProjectionFeatures()
    x = images(100, 0)
    labels = torch.zeros(100, dtype=torch.long)
    batches = [(x[i : i + 30], labels[i : i + 30]) for i in range(0, 100, 30)]  # (images, labels) tuples
    stats = compute_stats(extractor, batches)
    mu, sigma = feature_stats(extractor.features(x))
    assert stats.n == 100 and stats.fingerprint == extractor.fingerprint
    np.testing.assert_allclose(stats.mu, mu, rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, sigma, rtol=1e-9, atol=1e-15)


def test_max_samples_cuts_exactly_and_too_few_raises() -> None:
    extractor = ProjectionFeatures()
    x = images(100, 1)
    stats = compute_stats(extractor, [x[:40], x[40:80], x[80:]], max_samples=50)
    mu, sigma = feature_stats(extractor.features(x[:50]))
    assert stats.n == 50
    np.testing.assert_allclose(stats.mu, mu, rtol=1e-12)
    with pytest.raises(ValueError, match="only 100"):
        compute_stats(extractor, x, max_samples=101)


def test_reference_stats_are_computed_once_and_cached(tmp_path) -> None:
    extractor = ProjectionFeatures()
    x = images(64, 2)
    first = cached_reference_stats(extractor, "toy-real", lambda: [x[:32], x[32:]], tmp_path, max_samples=64)
    assert extractor.calls == 2
    path = reference_stats_path(tmp_path, "toy-real", extractor.fingerprint)
    assert path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left behind

    def must_not_run():
        raise AssertionError("the real data was read again although statistics were cached")

    second = cached_reference_stats(extractor, "toy-real", must_not_run, tmp_path, max_samples=64)
    assert extractor.calls == 2
    np.testing.assert_array_equal(first.mu, second.mu)
    np.testing.assert_array_equal(first.sigma, second.sigma)
    assert (second.n, second.name, second.fingerprint) == (64, "toy-real", extractor.fingerprint)
    with pytest.raises(ValueError, match="64 samples"):
        cached_reference_stats(extractor, "toy-real", must_not_run, tmp_path, max_samples=32)
    # another extractor gets its own file, never the cached numbers of the first
    other = ProjectionFeatures(seed=1)
    third = cached_reference_stats(other, "toy-real", [x], tmp_path)
    assert not np.allclose(third.mu, first.mu)
    with pytest.raises(ValueError, match="different extractors"):
        first.frechet_distance(third)


def test_feature_stats_save_load_round_trip_and_fd(tmp_path) -> None:
    extractor = ProjectionFeatures()
    a = compute_stats(extractor, images(50, 3), name="a")
    b = compute_stats(extractor, images(50, 4) * 0.5, name="b")
    loaded = FeatureStats.load(a.save(tmp_path / "sub" / "a.npz"))
    np.testing.assert_array_equal(loaded.mu, a.mu)
    np.testing.assert_array_equal(loaded.sigma, a.sigma)
    assert (loaded.n, loaded.name, loaded.fingerprint) == (a.n, a.name, a.fingerprint)
    assert a.frechet_distance(a) < 1e-10
    assert a.frechet_distance(b) > 0.01
    assert a.frechet_distance(b) == pytest.approx(b.frechet_distance(a), rel=1e-9)


def test_bad_reference_name_raises(tmp_path) -> None:
    with pytest.raises(ValueError):
        reference_stats_path(tmp_path, "../escape", "x")
