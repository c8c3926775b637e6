"""Trajectory diagnostics (DistillKac App. B.6, Figures B-2/B-3): recorded states, teacher-student
discrepancies on hand-computable flows, the linear fit, rows and the PNG plots."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from kacdist.eval.trajectory import (
    TrajectoryComparison,
    compare_trajectories,
    plot_discrepancy_vs_time,
    plot_endpoint_vs_mean,
    trajectory_states,
)
from kacdist.kac.integrators import integrate

from . import single_threaded


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_threaded():
        yield


def linear(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """v = x: dx/dt = x integrated from t = 1 down to 0, so x(0) = x1·e^{-1}; Euler gives x1·(1 - 1/M)^k."""
    return x


def nonlinear(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.sin(x) * t.reshape(-1, 1, 1, 1) + 0.3 * x


def zero(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


def noise(batch: int = 5, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, 3, 3, generator=generator)


# --- trajectory_states ------------------------------------------------------------------------------------


def test_euler_states_of_linear_flow_are_powers() -> None:
    x1 = noise()
    steps = 8
    states = trajectory_states(linear, x1, steps)
    assert states.shape == (steps + 1, *x1.shape)
    for k in range(steps + 1):
        torch.testing.assert_close(states[k], x1 * (1 - 1 / steps) ** k)
    # many Euler steps approach the exact solution x1·e^{-1}
    fine = trajectory_states(linear, x1, 2000, record_every=2000)
    assert fine.shape == (2, *x1.shape)
    torch.testing.assert_close(fine[-1], x1 * math.exp(-1), atol=2e-3, rtol=0)


def test_record_every_subsamples_one_long_run() -> None:
    x1 = noise(seed=1)
    for method in ("euler", "midpoint", "heun", "ab2"):
        full = trajectory_states(nonlinear, x1, 12, method)
        sparse = trajectory_states(nonlinear, x1, 12, method, record_every=4)
        assert sparse.shape == (4, *x1.shape)
        torch.testing.assert_close(sparse, full[::4], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(full[0], x1, atol=0, rtol=0)
        torch.testing.assert_close(full[-1], integrate(nonlinear, x1, 12, method).x, atol=1e-6, rtol=1e-6)


def test_ab2_states_keep_the_multistep_history() -> None:
    # For v = x and h = 1/M: x_1 = (1 - h)·x_0 (Euler start), then x_{k+1} = x_k - h·(1.5·x_k - 0.5·x_{k-1}).
    x1 = noise(seed=2)
    steps = 6
    h = 1 / steps
    coefficients = [1.0, 1 - h]
    for _ in range(steps - 1):
        coefficients.append(coefficients[-1] - h * (1.5 * coefficients[-1] - 0.5 * coefficients[-2]))
    states = trajectory_states(linear, x1, steps, "ab2")
    for k, c in enumerate(coefficients):
        torch.testing.assert_close(states[k], x1 * c)
    # restarting the history at each node would have been Euler, which differs from step 2 on
    assert not torch.allclose(states[2], x1 * (1 - h) ** 2)


def test_trajectory_states_validates_arguments() -> None:
    x1 = noise()
    with pytest.raises(ValueError, match="multiple of record_every"):
        trajectory_states(linear, x1, 10, record_every=3)
    with pytest.raises(ValueError, match="record_every"):
        trajectory_states(linear, x1, 10, record_every=0)
    with pytest.raises(ValueError, match="steps"):
        trajectory_states(linear, x1, 0)
    with pytest.raises(ValueError, match="unknown integrator"):
        trajectory_states(linear, x1, 4, "rk4")


def test_trajectory_states_run_without_grad() -> None:
    x1 = noise().requires_grad_(True)
    weight = torch.tensor(0.5, requires_grad=True)
    states = trajectory_states(lambda x, t: weight * x, x1, 4)
    assert not states.requires_grad


# --- compare_trajectories ---------------------------------------------------------------------------------


def test_identical_teacher_and_student_have_no_discrepancy() -> None:
    x1 = noise(seed=3)
    c = compare_trajectories(nonlinear, nonlinear, x1, teacher_steps=6, student_steps=6)
    assert c.times.shape == (6,) and c.mean_sq_per_node.shape == (6,)
    assert c.endpoint.shape == (5,) and c.mean_traj.shape == (5,)
    np.testing.assert_allclose(c.times, 1 - np.arange(1, 7) / 6)
    np.testing.assert_allclose(c.mean_sq_per_node, 0.0, atol=1e-6)
    np.testing.assert_allclose(c.endpoint, 0.0, atol=1e-6)
    np.testing.assert_allclose(c.mean_traj, 0.0, atol=1e-6)
    assert math.isnan(c.pearson_r) and math.isnan(c.r2)  # no spread: correlation undefined
    assert c.teacher_nfe == 6 and c.student_nfe == 6


def test_resting_teacher_and_constant_student_velocity() -> None:
    # Teacher v = 0 stays at x1; student v = b moves as x̂(t) = x1 - (1 - t)·b, so ||x(t) - x̂(t)|| = (1 - t)·||b||.
    batch, n_teacher, n_student = 6, 12, 4
    x1 = noise(batch, seed=4)
    generator = torch.Generator().manual_seed(5)
    b = torch.randn(batch, 2, 3, 3, generator=generator) * torch.arange(1, batch + 1).reshape(-1, 1, 1, 1)
    norms = b.double().flatten(1).norm(dim=1).numpy()

    c = compare_trajectories(zero, lambda x, t: b, x1, n_teacher, n_student, teacher_integrator="heun")

    np.testing.assert_allclose(c.endpoint, norms, rtol=1e-5)
    # mean over teacher nodes j = 1..N of (1 - t_j) = mean of j/N = (N + 1) / (2N) = 13/24
    assert (n_teacher + 1) / (2 * n_teacher) == pytest.approx(13 / 24)
    np.testing.assert_allclose(c.mean_traj, norms * 13 / 24, rtol=1e-5)
    k = np.arange(1, n_student + 1)
    np.testing.assert_allclose(c.mean_sq_per_node, (k / n_student) ** 2 * np.mean(norms**2), rtol=1e-5)
    assert c.pearson_r == pytest.approx(1.0, abs=1e-9)
    assert c.r2 == pytest.approx(1.0, abs=1e-9)
    assert c.slope == pytest.approx(13 / 24, rel=1e-5)
    assert c.intercept == pytest.approx(0.0, abs=1e-5)
    assert c.teacher_nfe == 2 * n_teacher and c.student_nfe == n_student  # heun: 2 evaluations per step


def test_heun_teacher_against_interpolated_euler_student() -> None:
    # v = x for both. Heun with h = 1/4 multiplies by a = 1 - h + h²/2 per step; the Euler student with two
    # steps is x1·(1, 1/2, 1/4) at its nodes and, linearly interpolated, x1·c_j at the teacher's nodes.
    x1 = noise(seed=6)
    a = 1 - 1 / 4 + 1 / 32
    c_j = [1.0, 0.75, 0.5, 0.375, 0.25]
    norms = x1.double().flatten(1).norm(dim=1).numpy()

    c = compare_trajectories(linear, linear, x1, teacher_steps=4, student_steps=2, teacher_integrator="heun")

    np.testing.assert_allclose(c.times, [0.5, 0.0])
    np.testing.assert_allclose(c.endpoint, abs(a**4 - 0.25) * norms, rtol=1e-5)
    mean_gap = np.mean([abs(a**j - c_j[j]) for j in range(1, 5)])
    np.testing.assert_allclose(c.mean_traj, mean_gap * norms, rtol=1e-5)
    expected_sq = [(a ** (2 * k) - 0.5**k) ** 2 * np.mean(norms**2) for k in (1, 2)]
    np.testing.assert_allclose(c.mean_sq_per_node, expected_sq, rtol=1e-5)
    assert c.pearson_r == pytest.approx(1.0, abs=1e-9)
    assert c.teacher_nfe == 8 and c.student_nfe == 2


def test_teacher_steps_must_be_a_multiple_of_student_steps() -> None:
    with pytest.raises(ValueError, match=r"teacher_steps \(10\).*student_steps \(4\)"):
        compare_trajectories(linear, linear, noise(), teacher_steps=10, student_steps=4)
    with pytest.raises(ValueError, match="student_steps"):
        compare_trajectories(linear, linear, noise(), teacher_steps=10, student_steps=0)


def test_ab2_teacher_spends_one_evaluation_per_step() -> None:
    c = compare_trajectories(nonlinear, linear, noise(seed=7), teacher_steps=9, student_steps=3, teacher_integrator="ab2")
    assert c.teacher_nfe == 9 and c.student_nfe == 3
    assert np.all(c.endpoint > 0) and np.all(c.mean_traj > 0)
    assert -1.0 <= c.pearson_r <= 1.0 and c.r2 == pytest.approx(c.pearson_r**2)


# --- rows and plots ---------------------------------------------------------------------------------------


def example() -> TrajectoryComparison:
    return compare_trajectories(nonlinear, linear, noise(batch=8, seed=8), teacher_steps=8, student_steps=4)


def test_rows_round_trip_through_arrow() -> None:
    c = example()
    table = pa.Table.from_pylist(c.rows())
    assert table.num_rows == 8 + 4
    assert set(table.column_names) == {"kind", "sample", "endpoint", "mean_traj", "node", "time", "mean_sq"}
    rows = table.to_pylist()
    samples = [r for r in rows if r["kind"] == "sample"]
    nodes = [r for r in rows if r["kind"] == "node"]
    assert [r["sample"] for r in samples] == list(range(8))
    np.testing.assert_allclose([r["endpoint"] for r in samples], c.endpoint)
    np.testing.assert_allclose([r["mean_traj"] for r in samples], c.mean_traj)
    assert all(r["time"] is None and r["node"] is None for r in samples)
    assert [r["node"] for r in nodes] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["time"] for r in nodes], c.times)
    np.testing.assert_allclose([r["mean_sq"] for r in nodes], c.mean_sq_per_node)
    assert all(r["endpoint"] is None for r in nodes)


def test_plots_write_readable_pngs(tmp_path) -> None:
    c = example()
    perfect = compare_trajectories(linear, linear, noise(batch=3), teacher_steps=4, student_steps=4)
    written = [
        plot_discrepancy_vs_time({"student": c}, tmp_path / "b2_log.png"),
        plot_discrepancy_vs_time({"student": c, "perfect": perfect}, tmp_path / "b2_linear.png"),  # zeros: linear y
        plot_endpoint_vs_mean(c, tmp_path / "sub" / "b3.png", title="toy"),
        plot_endpoint_vs_mean(perfect, tmp_path / "b3_undefined.png"),  # NaN fit: scatter only
    ]
    for path in written:
        assert path.stat().st_size > 0
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(p.name for p in written)
    with pytest.raises(ValueError, match="empty"):
        plot_discrepancy_vs_time({}, tmp_path / "none.png")
