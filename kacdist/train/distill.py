"""Endpoint-only distillation (DistillKac §4, Algorithm 1) as functions over (student, teacher velocity,
config, batches, run dir).

For an M-step student on the uniform grid 1 = t_1 > … > t_{M+1} = 0 (here indexed k = 0..M, t_k = 1 − k/M):

* each sample b draws a student node k ~ U{0..M−1} and a state x at t_k (``x_source``, below);
* the frozen teacher integrates N = teacher_steps / student_steps uniform substeps from t_k to t_{k+1}
  (euler | midpoint | ab2), giving the endpoint x* (Alg. 1 line 5);
* the student takes one Euler step x̂ = x − v_θ(t_k, x; y)·Δt with Δt = 1/M (line 6);
* loss = (1/B)·Σ_b ‖x̂ − x*‖², summed over pixels (line 7).

Where x at t_k comes from is not said by the paper (kac-math.md §4); three sources are implemented:

* ``forward``: forward noising of data, x = f(t_k)·x0 + K_{g(t_k)} (the exact Kac process), as in
  progressive distillation. At t_1 = 1 this is the prior itself.
* ``student_rollout``: the current student (its EMA-free weights, no gradient) integrates Euler on its own
  grid from prior noise to t_k: at most M − 1 extra NFE per iteration, and x is distributed as the states the
  student will actually visit when it samples.
* ``teacher_rollout``: the frozen teacher integrates from prior noise to t_k segment by segment with the
  same N-substep integrator as the endpoint target: up to (M − 1)·N extra NFE per iteration (for 100→20
  about 20× the cost of the target itself), the states the teacher visits.

The teacher velocity is a callable ``velocity(x, t) -> v`` for fixed labels: the guided teacher with its
guidance w (eq. 6, one batched pass) or a previous student (plain conditional velocity). Teacher and
student start from the same weights (Alg. 1 line 2); the stage code does that.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from kacdist.kac import KacProcess, integrate
from kacdist.kac.guidance import guided_velocity
from kacdist.train.device import autocast
from kacdist.train.loop import LoopResult, LoopSettings, StepOutput, run_loop
from kacdist.train.randomness import StepDraws

log = logging.getLogger(__name__)

X_SOURCES = ("forward", "student_rollout", "teacher_rollout")
TEACHER_INTEGRATORS = ("euler", "midpoint", "ab2")

# velocity(x, t, y) for a batch: the frozen teacher with its labels and guidance, or a student
LabelledVelocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


class DistillConfigError(ValueError):
    """An impossible distillation set-up (step pair, source, integrator)."""


def substeps(teacher_steps: int, student_steps: int) -> int:
    """N = teacher_steps / student_steps (App. B.5); refuses pairs that do not divide or do not reduce."""
    for name, value in (("teacher_steps", teacher_steps), ("student_steps", student_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DistillConfigError(f"distill.{name}={value!r} is invalid: must be a positive integer")
    if student_steps >= teacher_steps:
        raise DistillConfigError(
            f"distill.student_steps={student_steps} must be smaller than distill.teacher_steps={teacher_steps}: "
            "a student takes fewer steps than its teacher"
        )
    if teacher_steps % student_steps:
        divisors = [d for d in range(1, teacher_steps) if teacher_steps % d == 0]
        raise DistillConfigError(
            f"distill.teacher_steps={teacher_steps} is not a multiple of distill.student_steps={student_steps}: each "
            f"student step must cover a whole number of teacher substeps; students of a {teacher_steps}-step teacher "
            f"can take {', '.join(map(str, divisors))} steps"
        )
    return teacher_steps // student_steps


def student_times(k: torch.Tensor, student_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(t_k, t_{k+1}) on the uniform student grid t_k = 1 − k/M, computed from k (not accumulated)."""
    kf = k.to(torch.float32)
    return 1.0 - kf / student_steps, 1.0 - (kf + 1.0) / student_steps


def student_euler_step(student: LabelledVelocity, x: torch.Tensor, t: torch.Tensor, y, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x̂ = x − v_θ(t, x; y)·Δt (Alg. 1 line 6) and the velocity itself (float32)."""
    v = student(x, t, y).float()
    return x - v * dt, v


def endpoint_loss(x_hat: torch.Tensor, x_star: torch.Tensor) -> torch.Tensor:
    """(1/B)·Σ_b ‖x̂_b − x*_b‖², the squared norm summed over all pixels (Alg. 1 line 7)."""
    return (x_hat - x_star).flatten(1).pow(2).sum(dim=1).mean()


@torch.no_grad()
def teacher_endpoint(
    teacher: LabelledVelocity, x: torch.Tensor, y, t_start: torch.Tensor, t_end: torch.Tensor, n: int, integrator: str
) -> torch.Tensor:
    """x* = the teacher's N uniform substeps from t_start to t_end per sample (Alg. 1 line 5, "Teacher")."""
    return integrate(lambda xx, tt: teacher(xx, tt, y).float(), x, n, integrator, t_start=t_start, t_end=t_end).x


@torch.no_grad()
def rollout_to_nodes(
    step_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    x1: torch.Tensor,
    k: torch.Tensor,
    student_steps: int,
) -> torch.Tensor:
    """The state at node k_b for each sample, rolled forward segment by segment from x1 at t = 1.

    ``step_fn(x, t_j, t_{j+1}, index)`` advances the samples ``index`` (a subset of the batch: labels must be
    taken from it) by one student segment. A sample stops once it reaches its node, so segment j only
    computes the samples still short of it: with k uniform the cost is about half of M·B passes.
    """
    x = x1.clone()
    for j in range(int(k.max()) if len(k) else 0):
        index = (k > j).nonzero().squeeze(1)
        t0 = torch.full((len(index),), 1.0 - j / student_steps, device=x.device)
        t1 = torch.full((len(index),), 1.0 - (j + 1) / student_steps, device=x.device)
        x[index] = step_fn(x[index], t0, t1, index)
    return x


def _take(y: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    return None if y is None else y[index]


def distill_step_output(
    student: nn.Module,
    teacher: LabelledVelocity,
    process: KacProcess,
    x0: torch.Tensor,
    y: torch.Tensor | None,
    draws: StepDraws,
    *,
    student_steps: int,
    n: int,
    integrator: str,
    x_source: str,
    amp_dtype: torch.dtype | None = None,
) -> StepOutput:
    """One Algorithm 1 loss for a batch of data x0 (used by ``forward``; only its shape otherwise).

    Each image's node k, its forward noise or its prior come from ``draws`` (a function of seed, step and
    the image's global index)."""
    device = x0.device
    k_all = draws.randint(student_steps)
    t_k_all, _ = student_times(k_all, student_steps)
    if x_source == "forward":
        x_all, _ = draws.per_block(lambda g, xx, tt: process.target(xx, tt, generator=g), draws.pad(x0), t_k_all)
    else:
        x_all = draws.per_block(lambda g, xx: process.prior(tuple(xx.shape), generator=g, device=device).to(xx.dtype), draws.pad(x0))
    k = draws.local(k_all)
    t_k, t_next = student_times(k, student_steps)

    def student_v(x: torch.Tensor, t: torch.Tensor, yy) -> torch.Tensor:
        with autocast(device, amp_dtype):
            return student(x, t, yy)

    if x_source == "forward":
        x = draws.local(x_all)
    else:
        x1 = draws.local(x_all)
        if x_source == "student_rollout":
            was_training = student.training
            student.eval()  # dropout off: the states the sampler would visit
            x = rollout_to_nodes(
                lambda xx, a, b, i: student_euler_step(student_v, xx, a, _take(y, i), 1.0 / student_steps)[0], x1, k, student_steps
            )
            student.train(was_training)
        elif x_source == "teacher_rollout":
            x = rollout_to_nodes(lambda xx, a, b, i: teacher_endpoint(teacher, xx, _take(y, i), a, b, n, integrator), x1, k, student_steps)
        else:
            raise DistillConfigError(f"distill.x_source={x_source!r} is invalid: allowed values are {', '.join(X_SOURCES)}")
    x = x.detach()
    x_star = teacher_endpoint(teacher, x, y, t_k, t_next, n, integrator)
    x_hat, v = student_euler_step(student_v, x, t_k, y, 1.0 / student_steps)
    return StepOutput(endpoint_loss(x_hat, x_star), t_k, v.detach().flatten(1).norm(dim=1))


def guided_teacher(model: nn.Module, guidance: float, null_label: int | None, amp_dtype: torch.dtype | None = None) -> LabelledVelocity:
    """The frozen guided Kac flow as a labelled velocity: eq. (6) with weight w, or the plain model without labels."""
    model.eval().requires_grad_(False)

    def velocity(x: torch.Tensor, t: torch.Tensor, y) -> torch.Tensor:
        with autocast(x.device, amp_dtype):
            if y is None or null_label is None:
                return model(x, t, None)
            return guided_velocity(model, x, t, y, guidance, null_label)

    return velocity


def student_teacher(model: nn.Module, amp_dtype: torch.dtype | None = None) -> LabelledVelocity:
    """A frozen earlier student as a teacher: its conditional velocity (guidance already distilled into it)."""
    model.eval().requires_grad_(False)

    def velocity(x: torch.Tensor, t: torch.Tensor, y) -> torch.Tensor:
        with autocast(x.device, amp_dtype):
            return model(x, t, y)

    return velocity


def train_distill(
    settings: LoopSettings,
    run_dir: Path,
    student: nn.Module,
    teacher: LabelledVelocity,
    process: KacProcess,
    batches,
    config_yaml: str,
    device: torch.device,
    *,
    teacher_steps: int,
    student_steps: int,
    integrator: str,
    x_source: str,
    amp_dtype: torch.dtype | None = None,
    **loop_options,
) -> LoopResult:
    """Distil ``teacher`` (frozen, teacher_steps) into ``student`` (student_steps) in ``run_dir``, or resume.

    ``loop_options`` go to ``run_loop`` (workers, engine, zero_stage, hooks): the student goes through the
    engine, the frozen teacher is a plain callable on every worker."""
    n = substeps(teacher_steps, student_steps)
    if integrator not in TEACHER_INTEGRATORS:
        raise DistillConfigError(f"distill.teacher_integrator={integrator!r} is invalid: allowed values are {', '.join(TEACHER_INTEGRATORS)}")
    if x_source not in X_SOURCES:
        raise DistillConfigError(f"distill.x_source={x_source!r} is invalid: allowed values are {', '.join(X_SOURCES)}")
    conditional = getattr(student, "null_label", None) is not None

    def loss_fn(net: nn.Module, x0: torch.Tensor, y: torch.Tensor, draws: StepDraws) -> StepOutput:
        return distill_step_output(
            net, teacher, process, x0, y if conditional else None, draws, student_steps=student_steps, n=n,
            integrator=integrator, x_source=x_source, amp_dtype=amp_dtype,
        )

    return run_loop(settings, run_dir, student, loss_fn, batches, config_yaml, device, kac_c=process.c, **loop_options)
