"""Warmup 2% → flat 58% → cosine 40% (DistillKac App. B.1)."""

import math

import pytest

from kacdist.train.lr_schedule import lr_factor


def test_shape_of_the_schedule():
    total = 1000
    f = [lr_factor(s, total) for s in range(total)]
    assert f[0] == pytest.approx(1 / 20) and f[19] == pytest.approx(1.0)  # 20 warmup steps
    assert all(v == 1.0 for v in f[20:600])
    assert f[600] == pytest.approx(1.0) and f[800] == pytest.approx(0.5, abs=0.01)
    assert f[-1] < 1e-3 and all(a >= b for a, b in zip(f[600:], f[601:]))
    assert lr_factor(0, 10, warmup_frac=0.0, flat_frac=0.0) == pytest.approx(1.0)
    assert lr_factor(5, 10, 0.0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
