"""Velocity-space classifier-free guidance, DistillKac eq. (6), in one batched forward pass."""

import pytest
import torch

from kacdist.kac.guidance import GuidedVelocity, guided_velocity
from kacdist.kac.integrators import integrate

NULL = 10


class CountingModel:
    """A conditional velocity whose class effect is known: v(t, x; y) = -x + t·(y + 1) (y = NULL means none)."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, y):
        self.calls.append(x.shape[0])
        shift = torch.where(y == NULL, torch.zeros_like(t), (y + 1).to(t.dtype))
        return -x + (t * shift).reshape(-1, *([1] * (x.dim() - 1)))


def test_formula_and_single_forward_pass():
    model = CountingModel()
    x = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.1, 0.5, 0.9, 1.0])
    y = torch.tensor([0, 3, 7, 9])
    w = 1.7
    out = guided_velocity(model, x, t, y, w, NULL)
    assert model.calls == [8]  # one call on the doubled batch
    v_u = -x
    v_c = -x + (t * (y + 1)).reshape(-1, 1, 1, 1)
    assert torch.allclose(out, v_u + w * (v_c - v_u))


def test_w_zero_and_one_need_no_doubled_batch():
    model = CountingModel()
    x, t, y = torch.ones(2, 1), torch.tensor([0.5, 0.5]), torch.tensor([1, 2])
    assert torch.allclose(guided_velocity(model, x, t, y, 0.0, NULL), -x)
    assert torch.allclose(guided_velocity(model, x, t, y, 1.0, NULL), -x + torch.tensor([[1.0], [1.5]]))
    assert model.calls == [2, 2]


def test_time_dependent_weight():
    model = CountingModel()
    x, t, y = torch.zeros(3, 1), torch.tensor([0.2, 0.5, 1.0]), torch.tensor([0, 0, 0])
    out = guided_velocity(model, x, t, y, lambda tt: 2 * tt, NULL)
    assert torch.allclose(out[:, 0], 2 * t * t)  # w(t)·(v_c - v_u) with v_c - v_u = t


def test_guided_sampler_counts_one_nfe_per_evaluation():
    model = CountingModel()
    y = torch.tensor([1, 2])
    out = integrate(GuidedVelocity(model, y, 1.2, NULL), torch.zeros(2, 1), 5, "ab2")
    assert out.nfe == 5 and len(model.calls) == 5 and set(model.calls) == {4}


def test_mismatched_batch_is_refused():
    with pytest.raises(ValueError, match="share the batch size"):
        guided_velocity(CountingModel(), torch.zeros(2, 1), torch.zeros(3), torch.zeros(2, dtype=torch.long), 1.5, NULL)
