"""The Guided Kac Flow teacher loop (DistillKac §5, App. B.1) as a function of (config, run dir, model, batches).

One step: t ~ U(0, 1) per image → (x_t, u) from the exact Kac process → labels replaced by the null label
with probability ``label_dropout`` (classifier-free guidance) → MSE(model(x_t, t, y), u) → AdamW (weight
decay 0.01), gradient clip, warmup/flat/cosine learning rate → EMA.

Rerunning the same command resumes from the newest readable checkpoint (model, EMA, optimizer, schedule,
step, RNG states, resolved config); a finished run (DONE present) does nothing. A non-finite loss stops the
run with the step and leaves the last good checkpoint as it is. All durations are counted in images.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from kacdist.config.loader import save_config, to_yaml
from kacdist.config.schema import RunConfig
from kacdist.kac import KacProcess
from kacdist.train.checkpoint import load_latest_checkpoint, save_checkpoint
from kacdist.train.device import autocast, autocast_dtype, resolve_device
from kacdist.train.ema import EMA
from kacdist.train.lr_schedule import lr_factor
from kacdist.train.metrics_log import MetricsLog

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before touching any checkpoint."""


@dataclass
class TeacherResult:
    status: str  # "finished" | "already_done" | "early_stopped"
    step: int
    kimg: float
    checkpoint: Path | None


def build_model(cfg: RunConfig) -> nn.Module:
    from kacdist.models.presets import get_preset
    from kacdist.models.unet import build_unet

    overrides = dict(
        image_size=cfg.dataset.resolution,
        in_channels=cfg.dataset.channels,
        num_classes=cfg.dataset.num_classes or None,
        use_checkpoint=cfg.model.use_checkpoint,
    )
    if cfg.model.dropout is not None:
        overrides["dropout"] = cfg.model.dropout
    return build_unet(get_preset(cfg.model.preset, **overrides))


def total_steps(cfg: RunConfig, world_size: int = 1) -> int:
    return math.ceil(cfg.train.total_kimg * 1000 / (cfg.train.batch_size * world_size))


def teacher_loss(
    model: nn.Module,
    process: KacProcess,
    x0: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
    label_dropout: float,
    null_label: int | None,
    amp_dtype: torch.dtype | None,
) -> torch.Tensor:
    """MSE between the network velocity and the exact conditional Kac velocity at a random t per image."""
    t = torch.rand(x0.shape[0], generator=generator, device=x0.device)
    x_t, target = process.target(x0, t, generator=generator)
    if null_label is not None:
        drop = torch.rand(x0.shape[0], generator=generator, device=x0.device) < label_dropout
        y = torch.where(drop, torch.full_like(y, null_label), y)
    with autocast(x0.device, amp_dtype):
        pred = model(x_t, t, y if null_label is not None else None)
    return F.mse_loss(pred.float(), target)


def train_teacher(
    cfg: RunConfig,
    run_dir: Path,
    *,
    model: nn.Module | None = None,
    batches=None,
    rank: int = 0,
    world_size: int = 1,
    on_checkpoint: Callable[[int, Path], None] | None = None,
    monitor: Callable[[nn.Module, int], float] | None = None,
    snapshot: Callable[[nn.Module, int], None] | None = None,
) -> TeacherResult:
    """Train (or resume, or confirm finished) the teacher of ``cfg`` in ``run_dir``.

    ``monitor(ema_model, step) -> FD`` runs every ``train.eval_every_kimg`` (lower is better) and drives early
    stopping after ``train.early_stop_patience`` evaluations without improvement; ``snapshot(ema_model,
    step)`` runs every ``train.sample_every_kimg`` and at the end (e.g. a sample grid). Both are optional.
    """
    tc = cfg.train
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / "checkpoints"
    done_file = run_dir / "DONE"
    if done_file.exists():
        info = json.loads(done_file.read_text())
        log.info("teacher in %s already finished at step %d (%s); nothing to do", run_dir, info["step"], done_file)
        return TeacherResult("already_done", info["step"], info["kimg"], Path(info["checkpoint"]) if info.get("checkpoint") else None)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = resolve_device(tc.device)
    amp_dtype = autocast_dtype(tc.precision, device)
    torch.manual_seed(tc.seed + rank)
    model = (model if model is not None else build_model(cfg)).to(device)
    null_label = getattr(model, "null_label", None) if cfg.dataset.num_classes else None
    ema = EMA(model, tc.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    steps = total_steps(cfg, world_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps, tc.warmup_frac, tc.flat_frac)
    )
    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    generator = torch.Generator(device=device).manual_seed(tc.seed * 1_000_003 + rank)
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
        log.info("resumed from %s at step %d (%.1f kimg)", last_ckpt, step, state["kimg"])
    if rank == 0:
        save_config(cfg, run_dir / "config.yaml")
    images_per_step = tc.batch_size * world_size
    if batches is None:
        from kacdist.train.batches import make_batches

        batches = make_batches(cfg.dataset, tc.batch_size, tc.seed, step, rank, world_size, device)
    metrics = MetricsLog(run_dir / "metrics.parquet")
    ckpt_every = max(1, round(tc.checkpoint_every_kimg * 1000 / images_per_step))
    log_every = max(1, round(tc.log_every_kimg * 1000 / images_per_step))
    eval_every = max(1, round(tc.eval_every_kimg * 1000 / images_per_step)) if tc.eval_every_kimg else 0
    sample_every = max(1, round(tc.sample_every_kimg * 1000 / images_per_step)) if tc.sample_every_kimg else 0
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
            "config": to_yaml(cfg),
            "data_position": {"kind": type(batches).__name__, "step": at_step},
        }
        path = save_checkpoint(ckpt_dir, at_step, state, tc.keep_checkpoints)
        metrics.flush()
        if on_checkpoint is not None:
            on_checkpoint(at_step, path)
        return path

    model.train()
    window_loss, window_n, window_start = 0.0, 0, time.perf_counter()
    while step < steps:
        x0, y = batches.batch(step)
        loss = teacher_loss(model, process, x0, y, generator, tc.label_dropout, null_label, amp_dtype)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss is {loss.item()} at step {step} ({step * images_per_step / 1000:.1f} kimg); stopped without "
                f"saving. Last good checkpoint: {last_ckpt or 'none'}"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        scheduler.step()
        ema.update(model, step)
        step += 1
        window_loss += loss.item()
        window_n += 1
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
            }
            metrics.append(row)
            if rank == 0:
                log.info(
                    "step %d  kimg %.1f  loss %.4f  lr %.2e  %.0f img/s  %.3f s/step",
                    step, row["kimg"], row["loss"], row["lr"], row["images_per_s"], row["s_per_step"],
                )
            window_loss, window_n, window_start = 0.0, 0, time.perf_counter()
        stop_early = False
        if monitor is not None and eval_every and step % eval_every == 0:
            fd = float(monitor(ema.model, step))
            fd_history.append((step, fd))
            metrics.append({"step": step, "kimg": step * images_per_step / 1000, "fd": fd})
            best_at = min(range(len(fd_history)), key=lambda i: fd_history[i][1])
            stale = len(fd_history) - 1 - best_at
            log.info("step %d: FD %.4f (best %.4f at step %d)", step, fd, fd_history[best_at][1], fd_history[best_at][0])
            stop_early = bool(tc.early_stop_patience) and stale >= tc.early_stop_patience
            model.train()
        if snapshot is not None and sample_every and step % sample_every == 0:
            snapshot(ema.model, step)
        if step % ckpt_every == 0 or step == steps or stop_early:
            last_ckpt = checkpoint(step)
        if stop_early:
            log.info("early stop at step %d: FD has not improved for %d evaluations", step, tc.early_stop_patience)
            break
    kimg = step * images_per_step / 1000
    status = "finished" if step >= steps else "early_stopped"
    if snapshot is not None and not (sample_every and step % sample_every == 0):
        snapshot(ema.model, step)
    if rank == 0:
        done_file.write_text(json.dumps({"step": step, "kimg": kimg, "checkpoint": str(last_ckpt), "status": status}))
    return TeacherResult(status, step, kimg, last_ckpt)
