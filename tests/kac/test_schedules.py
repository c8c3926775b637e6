"""Schedules f(t) = 1 - t (not the paper's typo f = t), g = t or t² (kac-math.md §3)."""

import pytest
import torch

from kacdist.kac.schedules import SCHEDULES, get_schedule


def test_mean_reversion_endpoints_and_derivatives():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    h = 1e-6
    for name in ("t", "t2"):
        s = get_schedule(name)
        assert float(s.f(torch.tensor(0.0))) == 1 and float(s.f(torch.tensor(1.0))) == 0
        assert float(s.g(torch.tensor(0.0))) == 0 and float(s.g(torch.tensor(1.0))) == 1
        inner = t[1:-1]
        assert torch.allclose((s.g(inner + h) - s.g(inner - h)) / (2 * h), s.dg(inner), atol=1e-8)
        assert torch.allclose((s.f(inner + h) - s.f(inner - h)) / (2 * h), s.df(inner), atol=1e-8)
    assert sorted(SCHEDULES) == ["t", "t2"]


def test_unknown_schedule_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid: t, t2"):
        get_schedule("cosine")
