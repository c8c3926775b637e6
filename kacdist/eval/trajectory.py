"""Trajectory diagnostics for distillation: how far a student's sampling path strays from its teacher's.

DistillKac App. B.6, Figures B-2/B-3. A teacher and a student velocity start from the same noise x1 at
t = 1 and are integrated down to the data end t = 0 (time convention of README "Conventions": an Euler
step on the grid t_k = 1 - k/M is x_{k+1} = x_k - (1/M)·v(x_k, t_k)). The student runs Euler on its own
coarse grid of M steps; the teacher runs its integrator on a finer grid of N = r·M steps, so every
student node is also a teacher node.

* Figure B-2 – ``mean_sq_per_node``: at each student node t_k (k = 1..M) the mean over samples of
  ||x_k - x̂_k||² (sum over pixels). It shows where along the path the student's error builds up.
* Figure B-3 – per sample, the endpoint discrepancy ||x_N - x̂_M|| (at t = 0) against the mean trajectory
  discrepancy, "the average of ||x_k - x̂_k|| over all teacher time steps" (k = 1..N). The student's
  state between its own nodes is the linear interpolation of its Euler path, which is exactly the
  path an Euler step traces (x̂ is linear in t on each step). A tight linear relation (Pearson r, R² of
  the least-squares line) says that matching endpoints, what DistillKac trains, also keeps the whole
  trajectory close.

Everything here is pure torch + numpy; only the two plot functions write files (PNG, atomically).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kacdist.atomic import atomic_output
from kacdist.kac.integrators import Velocity, check_integrator, integrate

__all__ = [
    "TrajectoryComparison",
    "compare_trajectories",
    "plot_discrepancy_vs_time",
    "plot_endpoint_vs_mean",
    "trajectory_states",
]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _grid_time(k: int, steps: int) -> float:
    """t_k = 1 - k/steps, computed from the formula (not accumulated) so the last node is exactly 0."""
    return 1.0 - k / steps


def _record_multistep(velocity: Velocity, x1: torch.Tensor, steps: int, method: str) -> tuple[list[torch.Tensor], int]:
    """All states of ONE run of a multistep integrator (ab2), recorded from the velocity's inputs.

    Cutting an AB2 run into segments would restart its history (each segment's first step is Euler),
    which is a different integrator. AB2 with the default Euler start evaluates the velocity exactly
    once per step, at (x_k, t_k), so the inputs of those calls are the states x_0..x_{M-1} of the single
    long run and the result is x_M. The call pattern is checked, so a change in the integrator fails
    loudly instead of recording the wrong points.
    """
    inputs: list[torch.Tensor] = []
    times: list[torch.Tensor] = []

    def recording(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        inputs.append(x)  # the integrator never updates x in place, so a reference is enough
        times.append(t)
        return velocity(x, t)

    result = integrate(recording, x1, steps, method)
    expected = torch.tensor([_grid_time(k, steps) for k in range(steps)], dtype=torch.float64)
    seen = torch.stack([t.detach().double().cpu() for t in times]) if times else torch.empty(0, 1)
    if len(inputs) != steps or not torch.allclose(seen, expected[:, None].expand_as(seen), atol=1e-5):
        raise RuntimeError(f"{method}: expected one velocity call per step at the grid nodes; cannot record states")
    return [*inputs, result.x], result.nfe


def _states_and_nfe(
    velocity: Velocity, x1: torch.Tensor, steps: int, integrator: str, record_every: int
) -> tuple[torch.Tensor, int]:
    steps = _positive_int(steps, "steps")
    record_every = _positive_int(record_every, "record_every")
    if steps % record_every:
        raise ValueError(f"steps ({steps}) must be a multiple of record_every ({record_every})")
    check_integrator(integrator, steps)
    with torch.no_grad():
        if integrator == "ab2":
            every, nfe = _record_multistep(velocity, x1, steps, integrator)
            return torch.stack(every[::record_every]), nfe
        # One-step methods: each recorded segment is an exact integrator call on the sub-grid
        # t_k..t_{k+record_every}, so the recorded states are those of one long run (up to rounding).
        states = [x1]
        nfe = 0
        x = x1
        for k in range(0, steps, record_every):
            result = integrate(
                velocity,
                x,
                record_every,
                integrator,
                t_start=_grid_time(k, steps),
                t_end=_grid_time(k + record_every, steps),
            )
            x = result.x
            nfe += result.nfe
            states.append(x)
        return torch.stack(states), nfe


def trajectory_states(
    velocity: Velocity, x1: torch.Tensor, steps: int, integrator: str = "euler", record_every: int = 1
) -> torch.Tensor:
    """States (steps // record_every + 1, B, ...) at t = 1 - k/steps for k = 0, record_every, ..., steps.

    Row 0 is ``x1`` itself and the last row is the sample at t = 0. For "euler", "midpoint" and "heun"
    the run is done segment by segment (one :func:`integrate` call per recorded interval); for "ab2" it is
    one run whose intermediate states are recorded, so the multistep history is never restarted.
    """
    states, _ = _states_and_nfe(velocity, x1, steps, integrator, record_every)
    return states


def _sample_norms(diff: torch.Tensor) -> torch.Tensor:
    """||·|| per (node, sample) of a (nodes, B, ...) difference, in float64."""
    return diff.double().flatten(start_dim=2).norm(dim=2)


def _student_at(student: torch.Tensor, teacher_steps: int) -> torch.Tensor:
    """The student's Euler path (M + 1 nodes) evaluated at the teacher's nodes j = 0..N by linear interpolation.

    Teacher node j lies at a fraction (j mod r)/r of student step j // r, where r = N/M; on that step the
    Euler path x̂(t) = x̂_k - (t_k - t)·v(x̂_k, t_k) is linear in t, so interpolation is exact.
    """
    student_steps = student.shape[0] - 1
    ratio = teacher_steps // student_steps
    j = torch.arange(teacher_steps + 1)
    lo = torch.clamp(j // ratio, max=student_steps - 1)  # j = N uses the last step with fraction 1
    frac = ((j - lo * ratio).double() / ratio).to(student.device)
    frac = frac.reshape((-1,) + (1,) * (student.dim() - 1))
    s = student.double()
    return (1.0 - frac) * s[lo] + frac * s[lo + 1]


def _linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """(pearson_r, r2, slope, intercept) of the least-squares line y ~ a·x + b; NaN where undefined.

    Undefined means fewer than two samples, or no spread in x (no line) or in y (no correlation, R² = 0/0).
    """
    nan = float("nan")
    if x.size < 2:
        return nan, nan, nan, nan
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy, sxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
    if sxx <= 0.0:
        return nan, nan, nan, nan
    slope = sxy / sxx
    intercept = float(y.mean() - slope * x.mean())
    if syy <= 0.0:
        return nan, nan, slope, intercept
    pearson = sxy / np.sqrt(sxx * syy)
    residual = y - (slope * x + intercept)
    r2 = 1.0 - float(residual @ residual) / syy
    return float(pearson), r2, slope, intercept


@dataclass
class TrajectoryComparison:
    """Teacher-vs-student discrepancies of one pair of runs from shared noise (see the module docstring)."""

    times: np.ndarray  # (M,) student nodes t_k = 1 - k/M, k = 1..M
    mean_sq_per_node: np.ndarray  # (M,) mean over samples of ||x_k - x̂_k||² (Figure B-2)
    endpoint: np.ndarray  # (B,) ||x_N - x̂_M|| at t = 0
    mean_traj: np.ndarray  # (B,) mean over teacher nodes k = 1..N of ||x_k - x̂(t_k)||
    pearson_r: float
    r2: float
    slope: float
    intercept: float
    teacher_nfe: int  # velocity evaluations per image actually spent
    student_nfe: int
    teacher_steps: int
    student_steps: int
    teacher_integrator: str

    def rows(self) -> list[dict[str, Any]]:
        """Flat rows for ``pyarrow.Table.from_pylist``: one per sample ("sample"), then one per node ("node").

        Every row has every column; a column a row does not have is None.
        """
        empty: dict[str, Any] = {
            "kind": None,
            "sample": None,
            "endpoint": None,
            "mean_traj": None,
            "node": None,
            "time": None,
            "mean_sq": None,
        }
        out = [
            {**empty, "kind": "sample", "sample": i, "endpoint": float(e), "mean_traj": float(m)}
            for i, (e, m) in enumerate(zip(self.endpoint, self.mean_traj))
        ]
        out += [
            {**empty, "kind": "node", "node": k, "time": float(t), "mean_sq": float(v)}
            for k, (t, v) in enumerate(zip(self.times, self.mean_sq_per_node), start=1)
        ]
        return out


def compare_trajectories(
    teacher_velocity: Velocity,
    student_velocity: Velocity,
    x1: torch.Tensor,
    teacher_steps: int,
    student_steps: int,
    teacher_integrator: str = "euler",
) -> TrajectoryComparison:
    """Run teacher (``teacher_integrator``, ``teacher_steps``) and student (Euler, ``student_steps``) from x1.

    ``teacher_steps`` must be a multiple of ``student_steps`` so that every student node is a teacher node.
    ``pearson_r`` / ``r2`` are NaN when they are undefined (e.g. identical teacher and student: all zero).
    """
    teacher_steps = _positive_int(teacher_steps, "teacher_steps")
    student_steps = _positive_int(student_steps, "student_steps")
    if teacher_steps % student_steps:
        raise ValueError(
            f"teacher_steps ({teacher_steps}) must be a multiple of student_steps ({student_steps}) "
            "so that every student node is also a teacher node"
        )
    if x1.dim() < 1 or x1.shape[0] < 1:
        raise ValueError(f"x1 must be a batch (B, ...) with B >= 1, got shape {tuple(x1.shape)}")
    teacher, teacher_nfe = _states_and_nfe(teacher_velocity, x1, teacher_steps, teacher_integrator, 1)
    student, student_nfe = _states_and_nfe(student_velocity, x1, student_steps, "euler", 1)

    ratio = teacher_steps // student_steps
    # Figure B-2: both paths at the student's nodes (teacher node k·r is student node k); t = 1 is skipped,
    # both are x1 there.
    at_nodes = _sample_norms(teacher[ratio::ratio].double() - student[1:].double())
    mean_sq = (at_nodes**2).mean(dim=1)
    endpoint = at_nodes[-1]
    # Figure B-3: the average over all teacher steps, with the student's path interpolated to them.
    along = _sample_norms(teacher[1:].double() - _student_at(student, teacher_steps)[1:])
    mean_traj = along.mean(dim=0)

    endpoint_np = endpoint.cpu().numpy()
    mean_traj_np = mean_traj.cpu().numpy()
    pearson, r2, slope, intercept = _linear_fit(endpoint_np, mean_traj_np)
    return TrajectoryComparison(
        times=np.array([_grid_time(k, student_steps) for k in range(1, student_steps + 1)]),
        mean_sq_per_node=mean_sq.cpu().numpy(),
        endpoint=endpoint_np,
        mean_traj=mean_traj_np,
        pearson_r=pearson,
        r2=r2,
        slope=slope,
        intercept=intercept,
        teacher_nfe=teacher_nfe,
        student_nfe=student_nfe,
        teacher_steps=teacher_steps,
        student_steps=student_steps,
        teacher_integrator=teacher_integrator,
    )


def _new_figure(width: float = 5.0, height: float = 4.0) -> Any:
    """A figure bound to the Agg canvas, headless and independent of pyplot's global figure list."""
    import matplotlib

    # Select Agg only if pyplot has not been imported: switching then would close an interactive user's
    # open figures. The explicit Agg canvas below makes rendering headless either way.
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Any, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    with atomic_output(target) as temp:
        fig.savefig(temp, format="png", dpi=120)
    return target


def plot_discrepancy_vs_time(curves: dict[str, TrajectoryComparison], path: str | os.PathLike[str]) -> Path:
    """PNG of the mean squared discrepancy vs t for each named student (Figure B-2); t runs from 1 to 0."""
    if not curves:
        raise ValueError("curves is empty: nothing to plot")
    fig = _new_figure()
    ax = fig.add_subplot()
    for name, comparison in curves.items():
        ax.plot(comparison.times, comparison.mean_sq_per_node, marker="o", markersize=3, label=name)
    values = np.concatenate([np.asarray(c.mean_sq_per_node, dtype=np.float64) for c in curves.values()])
    if values.size and np.all(values > 0):  # a log axis cannot show zeros (a perfect student)
        ax.set_yscale("log")
    ax.set_xlim(1.0, 0.0)  # sampling goes from noise (t = 1) to data (t = 0), left to right
    ax.set_xlabel("t")
    ax.set_ylabel("mean ||x_k - x̂_k||²")
    ax.set_title("Teacher-student discrepancy along the trajectory")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save_png(fig, path)


def plot_endpoint_vs_mean(comparison: TrajectoryComparison, path: str | os.PathLike[str], title: str = "") -> Path:
    """PNG scatter of the mean trajectory discrepancy (y) vs the endpoint discrepancy (x) (Figure B-3)."""
    fig = _new_figure()
    ax = fig.add_subplot()
    x, y = comparison.endpoint, comparison.mean_traj
    ax.scatter(x, y, s=10, alpha=0.6, label="samples")
    stats = f"r = {comparison.pearson_r:.3f}, R² = {comparison.r2:.3f}"
    if np.isfinite(comparison.slope) and x.size:
        xs = np.array([x.min(), x.max()], dtype=np.float64)
        ax.plot(
            xs,
            comparison.slope * xs + comparison.intercept,
            color="C3",
            label=f"least-squares fit: y = {comparison.slope:.3g}·x + {comparison.intercept:.3g}",
        )
    ax.set_xlabel("endpoint discrepancy ||x_N - x̂_M||")
    ax.set_ylabel("mean trajectory discrepancy")
    ax.set_title(f"{title}\n{stats}" if title else stats)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _save_png(fig, path)
