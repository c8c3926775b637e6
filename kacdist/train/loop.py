"""The training loop shared by the teacher and the distillation students, as a function of
(settings, run dir, model, loss, batches).

What it owns: AdamW, the warmup/flat/cosine learning rate, gradient clipping, EMA, atomic checkpoints
(model, EMA, optimizer, scheduler, step, RNG states, resolved config, data position), resume from the
newest readable checkpoint, the DONE marker, the metrics table, periodic snapshots and evaluations with
early stopping, and the non-finite-loss stop. What a stage brings: the model and the loss. A loss is
``loss_fn(model, x0, y, generator) -> StepOutput``; the teacher's is the Kac velocity MSE, a student's the
endpoint MSE of Algorithm 1. Everything is counted in images (kimg) or steps.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from kacdist.atomic import atomic_write_bytes
from kacdist.train.checkpoint import load_latest_checkpoint, save_checkpoint
from kacdist.train.ema import EMA
from kacdist.train.lr_schedule import lr_factor
from kacdist.train.metrics_log import MetricsLog

log = logging.getLogger(__name__)

# time bins of the velocity-norm log (DistillKac eq. 4: ||v_t||_{L2(mu_t)} <= c·sqrt(d))
VELOCITY_BINS = 10


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before touching any checkpoint."""


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar, differentiable
    t: torch.Tensor  # (B,) the time each sample's velocity was evaluated at
    velocity_norm: torch.Tensor  # (B,) ||v_theta(t, x)||_2 over all pixels, detached


@dataclass
class LoopSettings:
    total_kimg: float
    batch_size: int
    lr: float
    weight_decay: float = 0.01
    warmup_frac: float = 0.02
    flat_frac: float = 0.58
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    checkpoint_every_kimg: float = 50.0
    keep_checkpoints: int = 3
    log_every_kimg: float = 5.0
    sample_every_kimg: float = 0.0
    eval_every_kimg: float = 0.0
    early_stop_patience: int = 0
    seed: int = 0
    name: str = "train"  # for log lines: "teacher", "distill-100-20", ...
    extra_state: dict = field(default_factory=dict)  # saved into every checkpoint (e.g. where a student came from)

    def total_steps(self, world_size: int = 1) -> int:
        return math.ceil(self.total_kimg * 1000 / (self.batch_size * world_size))


@dataclass
class LoopResult:
    status: str  # "finished" | "already_done" | "early_stopped"
    step: int
    kimg: float
    checkpoint: Path | None


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], StepOutput]


def read_done(run_dir: Path) -> LoopResult | None:
    """The result recorded by a finished run in ``run_dir``, or None if it has not finished."""
    done_file = run_dir / "DONE"
    if not done_file.exists():
        return None
    info = json.loads(done_file.read_text())
    ckpt = Path(info["checkpoint"]) if info.get("checkpoint") not in (None, "None") else None
    return LoopResult("already_done", info["step"], info["kimg"], ckpt)


def velocity_norm_row(sq_norm_sum: torch.Tensor, count: torch.Tensor, dim: int, c: float) -> dict:
    """Metrics columns: the L2(mu_t) velocity norm per time bin, sqrt(E||v||²), and the c·sqrt(d) bound."""
    row: dict = {"velocity_bound": c * math.sqrt(dim)}
    for i in range(VELOCITY_BINS):
        n = int(count[i])
        row[f"velocity_l2_bin{i}"] = math.sqrt(float(sq_norm_sum[i]) / n) if n else None
    return row


def run_loop(
    settings: LoopSettings,
    run_dir: Path,
    model: nn.Module,
    loss_fn: LossFn,
    batches,
    config_yaml: str,
    device: torch.device,
    *,
    rank: int = 0,
    world_size: int = 1,
    kac_c: float = 1.0,
    on_checkpoint: Callable[[int, Path], None] | None = None,
    monitor: Callable[[nn.Module, int], float] | None = None,
    snapshot: Callable[[nn.Module, int], None] | None = None,
) -> LoopResult:
    """Train ``model`` (already on ``device``) with ``loss_fn`` on ``batches`` in ``run_dir``, or resume.

    ``batches.batch(step) -> (x0, y)``, or a callable ``batches(start_step)`` returning such an object, called once
    the resume step is known (a data stream is then positioned there). ``monitor(ema_model, step) -> FD`` runs every ``eval_every_kimg``
    (lower is better) and drives early stopping after ``early_stop_patience`` evaluations without
    improvement; ``snapshot(ema_model, step)`` runs every ``sample_every_kimg`` and at the end.
    """
    s = settings
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / "checkpoints"
    done = read_done(run_dir)
    if done is not None:
        log.info("%s in %s already finished at step %d; nothing to do", s.name, run_dir, done.step)
        return done
    torch.manual_seed(s.seed + rank)
    ema = EMA(model, s.ema_decay)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.lr, weight_decay=s.weight_decay)
    steps = s.total_steps(world_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: lr_factor(k, steps, s.warmup_frac, s.flat_frac))
    generator = torch.Generator(device=device).manual_seed(s.seed * 1_000_003 + rank)
    step = 0
    last_ckpt: Path | None = None
    resumed = load_latest_checkpoint(ckpt_dir, map_location=device)
    if resumed is not None:
        state, last_ckpt = resumed
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        step = int(state["step"])
        log.info("%s: resumed from %s at step %d (%.1f kimg)", s.name, last_ckpt, step, state["kimg"])
    if not hasattr(batches, "batch"):
        batches = batches(step)
    images_per_step = s.batch_size * world_size
    metrics = MetricsLog(run_dir / "metrics.parquet")

    def every(kimg: float) -> int:
        return max(1, round(kimg * 1000 / images_per_step)) if kimg else 0

    ckpt_every, log_every = every(s.checkpoint_every_kimg), every(s.log_every_kimg)
    eval_every, sample_every = every(s.eval_every_kimg), every(s.sample_every_kimg)
    # early-stopping history survives restarts through the metrics file
    fd_history = [(r["step"], r["fd"]) for r in metrics.rows if r.get("fd") is not None and r["step"] <= step]

    def checkpoint(at_step: int) -> Path:
        state = {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "step": at_step,
            "kimg": at_step * images_per_step / 1000,
            "config": config_yaml,
            "data_position": {"kind": type(batches).__name__, "step": at_step},
            **s.extra_state,
        }
        path = save_checkpoint(ckpt_dir, at_step, state, s.keep_checkpoints)
        metrics.flush()
        if on_checkpoint is not None:
            on_checkpoint(at_step, path)
        return path

    bins = torch.zeros(VELOCITY_BINS, dtype=torch.float64)
    counts = torch.zeros(VELOCITY_BINS, dtype=torch.long)
    dim = 0
    model.train()
    window_loss, window_n, window_start = 0.0, 0, time.perf_counter()
    while step < steps:
        x0, y = batches.batch(step)
        out = loss_fn(model, x0, y, generator)
        loss = out.loss
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"{s.name}: loss is {loss.item()} at step {step} ({step * images_per_step / 1000:.1f} kimg); stopped "
                f"without saving. Last good checkpoint: {last_ckpt or 'none'}"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        optimizer.step()
        scheduler.step()
        ema.update(model, step)
        step += 1
        window_loss += loss.item()
        window_n += 1
        dim = x0[0].numel()
        which = (out.t.detach().float().cpu() * VELOCITY_BINS).long().clamp(0, VELOCITY_BINS - 1)
        bins.index_add_(0, which, out.velocity_norm.detach().double().cpu() ** 2)
        counts.index_add_(0, which, torch.ones_like(which))
        if step % log_every == 0 or step == steps:
            elapsed = time.perf_counter() - window_start
            row = {
                "step": step,
                "kimg": step * images_per_step / 1000,
                "loss": window_loss / window_n,
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                "images_per_s": window_n * images_per_step / elapsed,
                "s_per_step": elapsed / window_n,
                **velocity_norm_row(bins, counts, dim, kac_c),
            }
            metrics.append(row)
            if rank == 0:
                log.info(
                    "%s step %d  kimg %.1f  loss %.4f  lr %.2e  %.0f img/s  %.3f s/step",
                    s.name, step, row["kimg"], row["loss"], row["lr"], row["images_per_s"], row["s_per_step"],
                )
            window_loss, window_n, window_start = 0.0, 0, time.perf_counter()
            bins.zero_()
            counts.zero_()
        stop_early = False
        if monitor is not None and eval_every and step % eval_every == 0:
            fd = float(monitor(ema.model, step))
            fd_history.append((step, fd))
            metrics.append({"step": step, "kimg": step * images_per_step / 1000, "fd": fd})
            best_at = min(range(len(fd_history)), key=lambda i: fd_history[i][1])
            stale = len(fd_history) - 1 - best_at
            log.info("%s step %d: FD %.4f (best %.4f at step %d)", s.name, step, fd, fd_history[best_at][1], fd_history[best_at][0])
            stop_early = bool(s.early_stop_patience) and stale >= s.early_stop_patience
            model.train()
        if snapshot is not None and sample_every and step % sample_every == 0:
            snapshot(ema.model, step)
            model.train()
        if step % ckpt_every == 0 or step == steps or stop_early:
            last_ckpt = checkpoint(step)
        if stop_early:
            log.info("%s: early stop at step %d: FD has not improved for %d evaluations", s.name, step, s.early_stop_patience)
            break
    kimg = step * images_per_step / 1000
    status = "finished" if step >= steps else "early_stopped"
    if snapshot is not None and not (sample_every and step % sample_every == 0):
        snapshot(ema.model, step)
    if rank == 0:
        done_info = {"step": step, "kimg": kimg, "checkpoint": str(last_ckpt), "status": status}
        atomic_write_bytes(run_dir / "DONE", json.dumps(done_info).encode())
    return LoopResult(status, step, kimg, last_ckpt)
