"""Endpoint distillation (Algorithm 1): the loss on hand-computable toy velocities, students of a linear
teacher reach its exact endpoint map, roll-out sources, and refused step pairs."""

import math

import pytest
import torch
from torch import nn

from kacdist.kac import KacProcess, integrate
from kacdist.train.batches import InMemoryBatches
from kacdist.train.distill import (
    DistillConfigError,
    distill_step_output,
    endpoint_loss,
    rollout_to_nodes,
    student_times,
    substeps,
    teacher_endpoint,
    train_distill,
)
from kacdist.train.loop import LoopSettings
from kacdist.train.randomness import StepDraws


class ConstantVelocity(nn.Module):
    """v(t, x) = b everywhere; a learnable scalar so the loop can also train it."""

    def __init__(self, b: float) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.tensor(float(b)))

    def forward(self, x, t, y=None):
        return self.b * torch.ones_like(x)


class NodeLinearVelocity(nn.Module):
    """v(t, x) = theta_k · x with one learnable scalar per student node k = round((1 - t)·M)."""

    def __init__(self, student_steps: int) -> None:
        super().__init__()
        self.m = student_steps
        self.theta = nn.Parameter(torch.zeros(student_steps))

    def forward(self, x, t, y=None):
        k = ((1 - t) * self.m).round().long().clamp(0, self.m - 1)
        return self.theta[k].reshape((-1,) + (1,) * (x.dim() - 1)) * x


def alpha(t):
    return 1.0 + t  # the linear teacher's rate: v(t, x) = alpha(t)·x


def linear_teacher(x, t, y=None):
    return alpha(t).reshape((-1,) + (1,) * (x.dim() - 1)) * x


def test_endpoint_loss_matches_a_hand_computed_value():
    # teacher v = 0.5, student v = 0.2 on 4 pixels, M = 4 (dt = 1/4): x* = x - 0.5/4, x_hat = x - 0.2/4, so
    # every sample's ||x_hat - x*||^2 = 4 · (0.3/4)^2 = 0.0225 whatever x, N or the integrator
    process = KacProcess(25.0, 2.0)
    x0 = torch.rand(6, 1, 2, 2) * 2 - 1
    student = ConstantVelocity(0.2)
    for integrator in ("euler", "midpoint", "ab2"):
        out = distill_step_output(student, lambda x, t, y: torch.full_like(x, 0.5), process, x0, None,
                                  StepDraws(0, 0, 0, 6, 4), student_steps=4, n=5, integrator=integrator,
                                  x_source="forward")
        assert out.loss.item() == pytest.approx(0.0225, rel=1e-5)
        assert out.velocity_norm.tolist() == pytest.approx([0.4] * 6)  # ||0.2 · 1||_2 over 4 pixels
    # the loss is the batch mean of per-sample squared norms summed over pixels
    a, b = torch.zeros(2, 1, 2, 2), torch.tensor([1.0, 2.0]).reshape(2, 1, 1, 1).expand(2, 1, 2, 2)
    assert endpoint_loss(a, b).item() == pytest.approx((4 * 1 + 4 * 4) / 2)


def test_teacher_endpoint_integrates_each_samples_own_segment():
    # v = x: N Euler substeps of size h/N shrink x by (1 - h/N)^N; midpoint by (1 - h/N + h²/(2N²))^N
    x = torch.ones(3, 1, 1, 1)
    k = torch.tensor([0, 1, 3])
    t0, t1 = student_times(k, 4)
    assert t0.tolist() == [1.0, 0.75, 0.25] and t1.tolist() == [0.75, 0.5, 0.0]
    euler = teacher_endpoint(lambda xx, tt, y: xx, x, None, t0, t1, 5, "euler")
    assert euler.flatten().tolist() == pytest.approx([(1 - 0.25 / 5) ** 5] * 3, rel=1e-6)
    mid = teacher_endpoint(lambda xx, tt, y: xx, x, None, t0, t1, 5, "midpoint")
    h = 0.25 / 5
    assert mid.flatten().tolist() == pytest.approx([(1 - h + h * h / 2) ** 5] * 3, rel=1e-6)


def test_rollout_stops_each_sample_at_its_own_node():
    x1 = torch.ones(4, 1, 1, 1)
    k = torch.tensor([0, 1, 2, 3])
    # each segment halves x: the state at node k is 2^-k; segment j only computes the samples with k > j
    seen = []

    def halve(x, a, b, index):
        seen.append(index.tolist())
        assert torch.all(a == 1 - len(seen[:-1]) / 4) and torch.all(b == a - 0.25)
        return x / 2

    out = rollout_to_nodes(halve, x1, k, 4)
    assert out.flatten().tolist() == [1.0, 0.5, 0.25, 0.125]
    assert seen == [[1, 2, 3], [2, 3], [3]]


@pytest.mark.parametrize("x_source", ["forward", "student_rollout", "teacher_rollout"])
def test_student_of_a_linear_teacher_reaches_the_exact_endpoint_map(tmp_path, x_source):
    """Teacher v = (1 + t)·x with N Euler substeps; the best one-Euler-step student on node k has
    theta_k = (1 - prod_j (1 - alpha(s_j)·h/N)) / h, and then its M-step map equals the teacher's N·M-step map."""
    m, teacher_steps = 4, 12
    n = substeps(teacher_steps, m)
    h = 1.0 / m
    exact = []
    for k in range(m):
        shrink = 1.0
        for j in range(n):
            s = 1.0 - k * h - j * h / n
            shrink *= 1.0 - (1.0 + s) * h / n
        exact.append((1.0 - shrink) / h)
    torch.manual_seed(0)
    x = torch.rand(64, 1, 2, 2) * 2 - 1
    student = NodeLinearVelocity(m)
    settings = LoopSettings(total_kimg=0.032 * 250, batch_size=32, lr=0.05, weight_decay=0.0, ema_decay=0.5,
                            checkpoint_every_kimg=100.0, log_every_kimg=2.0, name="toy")
    # a wide prior (c = 10) keeps the late-node states, and so the gradients, well above Adam's epsilon
    result = train_distill(settings, tmp_path / "run", student, linear_teacher, KacProcess(2.0, 10.0),
                           InMemoryBatches(x, torch.zeros(64, dtype=torch.long), 32, 0), "toy: true\n", torch.device("cpu"),
                           teacher_steps=teacher_steps, student_steps=m, integrator="euler", x_source=x_source)
    assert result.status == "finished"
    assert student.theta.detach().tolist() == pytest.approx(exact, abs=2e-3)
    x1 = torch.randn(8, 1, 2, 2)
    with torch.no_grad():
        student_map = integrate(lambda xx, tt: student(xx, tt), x1, m, "euler").x
    teacher_map = integrate(lambda xx, tt: linear_teacher(xx, tt), x1, teacher_steps, "euler").x
    assert torch.allclose(student_map, teacher_map, rtol=5e-3, atol=1e-4)
    # and the exact map is far from what the untrained student (theta = 0: identity) or a single Euler step does
    assert not torch.allclose(x1 * (1 - 1.5), teacher_map, rtol=0.05)
    assert math.prod(1 - t * h for t in exact) == pytest.approx(float(teacher_map[0].flatten()[0] / x1[0].flatten()[0]), rel=5e-3)


@pytest.mark.parametrize(
    "teacher_steps, student_steps, message",
    [(100, 3, "not a multiple"), (20, 20, "must be smaller"), (4, 8, "must be smaller"), (0, 1, "positive integer")],
)
def test_invalid_step_pairs_are_refused(teacher_steps, student_steps, message):
    with pytest.raises(DistillConfigError, match=message):
        substeps(teacher_steps, student_steps)
