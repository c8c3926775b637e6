"""The Guided Kac Flow teacher loop (DistillKac §5, App. B.1) as a function of (config, run dir, model, batches).

One step: t ~ U(0, 1) per image → (x_t, u) from the exact Kac process → labels replaced by the null label
with probability ``label_dropout`` (classifier-free guidance) → MSE(model(x_t, t, y), u) → AdamW (weight
decay 0.01), gradient clip, warmup/flat/cosine learning rate → EMA. Every random number of an image is a
function of (seed, step, global image index), so 1 or N data-parallel workers train the same way.

Rerunning the same command resumes from the newest readable checkpoint (model, EMA, optimizer, schedule,
step, RNG states, resolved config); a finished run (DONE present) does nothing. A non-finite loss stops the
run with the step and leaves the last good checkpoint as it is. All durations are counted in images.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from kacdist.config.loader import save_config, to_yaml
from kacdist.config.schema import RunConfig
from kacdist.kac import KacProcess
from kacdist.train.device import autocast, autocast_dtype, resolve_device
from kacdist.train.loop import LoopResult, LoopSettings, NonFiniteLossError, StepOutput, read_done, run_loop
from kacdist.train.randomness import StepDraws
from kacdist.train.workers import Workers

log = logging.getLogger(__name__)


TeacherResult = LoopResult  # status "finished" | "already_done" | "early_stopped", step, kimg, checkpoint
__all__ = ["NonFiniteLossError", "TeacherResult", "build_model", "teacher_loss", "total_steps", "train_teacher"]


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


def teacher_settings(cfg: RunConfig) -> LoopSettings:
    tc = cfg.train
    return LoopSettings(
        total_kimg=tc.total_kimg, batch_size=tc.batch_size, lr=tc.lr, weight_decay=tc.weight_decay,
        warmup_frac=tc.warmup_frac, flat_frac=tc.flat_frac, grad_clip=tc.grad_clip, ema_decay=tc.ema_decay,
        checkpoint_every_kimg=tc.checkpoint_every_kimg, keep_checkpoints=tc.keep_checkpoints,
        log_every_kimg=tc.log_every_kimg, sample_every_kimg=tc.sample_every_kimg, eval_every_kimg=tc.eval_every_kimg,
        early_stop_patience=tc.early_stop_patience, seed=tc.seed, rng_block=tc.rng_block, name="teacher",
    )


def total_steps(cfg: RunConfig) -> int:
    return teacher_settings(cfg).total_steps()


def resolve_engine(cfg: RunConfig) -> str:
    """train.engine=auto: the plain torch loop in-process, DeepSpeed under Ray (see the README's benchmark)."""
    if cfg.train.engine != "auto":
        return cfg.train.engine
    return "deepspeed" if cfg.cluster.workers >= 1 else "torch"


def teacher_loss(
    model: nn.Module,
    process: KacProcess,
    x0: torch.Tensor,
    y: torch.Tensor,
    draws: StepDraws,
    label_dropout: float,
    null_label: int | None,
    amp_dtype: torch.dtype | None,
) -> StepOutput:
    """MSE between the network velocity and the exact conditional Kac velocity at a random t per image."""
    t_all = draws.rand()
    x_t_all, target_all = draws.per_block(lambda g, x, tt: process.target(x, tt, generator=g), draws.pad(x0), t_all)
    drop_all = draws.rand() < label_dropout
    t, x_t, target = draws.local(t_all), draws.local(x_t_all), draws.local(target_all)
    if null_label is not None:
        y = torch.where(draws.local(drop_all), torch.full_like(y, null_label), y)
    with autocast(x0.device, amp_dtype):
        pred = model(x_t, t, y if null_label is not None else None)
    pred = pred.float()
    return StepOutput(F.mse_loss(pred, target), t, pred.detach().flatten(1).norm(dim=1))


def train_teacher(
    cfg: RunConfig,
    run_dir: Path,
    *,
    model: nn.Module | None = None,
    batches=None,
    workers: Workers | None = None,
    on_checkpoint: Callable[[int, Path], None] | None = None,
    on_metrics: Callable[[list[dict]], None] | None = None,
    monitor: Callable[[nn.Module, int], float] | None = None,
    snapshot: Callable[[nn.Module, int], None] | None = None,
) -> TeacherResult:
    """Train (or resume, or confirm finished) the teacher of ``cfg`` in ``run_dir``.

    ``monitor(ema_model, step) -> FD`` runs every ``train.eval_every_kimg`` (lower is better) and drives early
    stopping after ``train.early_stop_patience`` evaluations without improvement; ``snapshot(ema_model,
    step)`` runs every ``train.sample_every_kimg`` and at the end (e.g. a sample grid). Both are optional and
    run on rank 0 only, as does ``on_metrics(rows)`` (the committed metrics rows at each checkpoint, for an
    experiment tracker; ``kacdist.stages.teacher`` passes the wandb run's). ``workers``: this process's place
    among data-parallel workers (None: the only one).
    """
    tc = cfg.train
    w = workers if workers is not None else Workers()
    done = read_done(run_dir)
    if done is not None:
        if w.is_main:
            log.info("teacher in %s already finished at step %d; nothing to do", run_dir, done.step)
        return done
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = w.device if w.device is not None else resolve_device(tc.device)
    amp_dtype = autocast_dtype(tc.precision, device)
    torch.manual_seed(tc.seed)  # initial weights; several workers then take rank 0's (the loop broadcasts them)
    model = (model if model is not None else build_model(cfg)).to(device)
    null_label = getattr(model, "null_label", None) if cfg.dataset.num_classes else None
    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    run_dir.mkdir(parents=True, exist_ok=True)
    if w.is_main:
        save_config(cfg, run_dir / "config.yaml")
    if batches is None:
        from kacdist.train.batches import make_batches

        def batches(start_step: int):  # built by the loop once the resume step is known
            return make_batches(cfg.dataset, tc.batch_size // w.world_size, tc.seed, start_step, w.rank, w.world_size, device)

    def loss_fn(net: nn.Module, x0: torch.Tensor, y: torch.Tensor, draws: StepDraws) -> StepOutput:
        return teacher_loss(net, process, x0, y, draws, tc.label_dropout, null_label, amp_dtype)

    return run_loop(
        teacher_settings(cfg), run_dir, model, loss_fn, batches, to_yaml(cfg), device,
        workers=w, engine=resolve_engine(cfg), zero_stage=tc.zero_stage, compile_mode=tc.compile, kac_c=cfg.kac.c,
        on_checkpoint=on_checkpoint, on_metrics=on_metrics, monitor=monitor, snapshot=snapshot,
    )
