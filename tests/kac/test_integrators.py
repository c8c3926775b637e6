"""Integrators: convergence orders on an ODE with a known solution, NFE accounting, grids, bad input."""

import math

import pytest
import torch

from kacdist.kac.integrators import INTEGRATORS, integrate, nfe_per_call


def _velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    # dx/dt = cos(t)·x + sin(3t): stiff enough to show the order, smooth enough to be in the asymptotic range
    return torch.cos(t)[:, None] * x + torch.sin(3 * t)[:, None]


def _exact_at_zero(x1: torch.Tensor) -> torch.Tensor:
    """x(0) for x(1) = x1, from a high-accuracy RK4 backwards in float64 (independent of the code under test)."""
    x = x1.clone().double()
    n = 20000
    h = -1.0 / n
    for k in range(n):
        t = 1.0 + k * h
        tt = torch.full((x.shape[0],), t, dtype=torch.float64)
        k1 = _velocity(x, tt)
        k2 = _velocity(x + 0.5 * h * k1, tt + 0.5 * h)
        k3 = _velocity(x + 0.5 * h * k2, tt + 0.5 * h)
        k4 = _velocity(x + h * k3, tt + h)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


@pytest.fixture(scope="module")
def reference():
    x1 = torch.tensor([[0.7], [-1.3]], dtype=torch.float64)
    return x1, _exact_at_zero(x1)


@pytest.mark.parametrize(
    "method,ab2_start,expected_order",
    [("euler", "euler", 1.0), ("midpoint", "euler", 2.0), ("heun", "euler", 2.0), ("ab2", "euler", 2.0), ("ab2", "midpoint", 2.0)],
)
def test_convergence_order(reference, method, ab2_start, expected_order):
    x1, exact = reference
    errors = []
    for steps in (16, 32, 64, 128):
        out = integrate(_velocity, x1, steps, method, ab2_start=ab2_start)
        errors.append(float((out.x - exact).abs().max()))
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]
    assert abs(orders[-1] - expected_order) < 0.15, (method, errors, orders)


@pytest.mark.parametrize("method", INTEGRATORS)
def test_nfe_is_counted_not_assumed(method):
    calls = []

    def v(x, t):
        calls.append(float(t[0]))
        return -x

    out = integrate(v, torch.ones(3, 2), 7, method)
    assert out.nfe == len(calls) == nfe_per_call(method, 7)
    assert nfe_per_call("ab2", 7, "midpoint") == 8
    assert integrate(v, torch.ones(3, 2), 7, "ab2", ab2_start="midpoint").nfe == 8


def test_hundred_steps_means_hundred_evaluations_on_the_uniform_grid():
    times = []

    def v(x, t):
        times.append(float(t[0]))
        return torch.zeros_like(x)

    integrate(v, torch.zeros(1, 1, dtype=torch.float64), 100, "euler")
    assert len(times) == 100
    expected = [1 - k / 100 for k in range(100)]
    assert max(abs(a - b) for a, b in zip(times, expected)) < 1e-12
    assert min(times) > 0  # Euler never evaluates at t = 0


def test_per_sample_segments_match_separate_integrations():
    """The distillation teacher integrates each sample over its own [t_{k+1}, t_k]."""
    x = torch.tensor([[0.3], [1.1], [-0.4]], dtype=torch.float64)
    starts = torch.tensor([1.0, 0.6, 0.2], dtype=torch.float64)
    ends = torch.tensor([0.8, 0.4, 0.0], dtype=torch.float64)
    batched = integrate(_velocity, x, 5, "midpoint", t_start=starts, t_end=ends).x
    for i in range(3):
        alone = integrate(_velocity, x[i : i + 1], 5, "midpoint", t_start=float(starts[i]), t_end=float(ends[i])).x
        assert torch.allclose(batched[i], alone[0], atol=1e-14)


def test_euler_step_is_x_minus_v_dt():
    """Alg. 1's student step: x̂ = x - v·Δt when integrating from t_k down to t_{k+1}."""
    x = torch.tensor([[2.0]], dtype=torch.float64)
    out = integrate(lambda xx, t: torch.full_like(xx, 3.0), x, 1, "euler", t_start=0.75, t_end=0.5)
    assert float(out.x) == pytest.approx(2.0 - 3.0 * 0.25)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"method": "rk45"}, "unknown integrator 'rk45'; valid: euler, midpoint, heun, ab2"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"steps": 2.5}, "steps must be a positive integer"),
        ({"ab2_start": "rk4"}, "unknown ab2_start"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    args = {"velocity": lambda x, t: x, "x": torch.ones(1, 1), "steps": 4, "method": "ab2"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        integrate(**args)
