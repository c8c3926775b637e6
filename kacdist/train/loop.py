"""The training loop shared by the teacher and the distillation students, as a function of
(settings, run dir, model, loss, batches), on one worker or on each of several data-parallel workers.

What it owns: the EMA, atomic checkpoints (model, EMA, optimizer, scheduler, step, resolved config, data
position), resume from the newest readable checkpoint, the DONE marker, the metrics table, periodic
snapshots and evaluations with early stopping, and the non-finite-loss stop. How a step is taken (AdamW,
the warmup/flat/cosine learning rate, gradient clipping, DDP or DeepSpeed) is the engine's
(``kacdist.train.engine``). What a stage brings: the model and the loss. A loss is
``loss_fn(model, x0, y, draws) -> StepOutput`` where ``draws`` (``kacdist.train.randomness``) gives every
per-image random number as a function of (seed, step, global image index); the teacher's is the Kac
velocity MSE, a student's the endpoint MSE of Algorithm 1. Everything is counted in images (kimg) or steps.

Several workers (``workers``, ``kacdist.train.workers``): ``batch_size`` is the global batch and each
worker takes batch/workers of it, so steps, kimg, the schedule and the draws do not depend on the number
of workers. Rank 0 alone writes checkpoints, metrics, DONE, samples and log lines; the logged loss and the
velocity norms are means over all workers; a non-finite loss and early stopping are decided for all.

A stop request (``Workers.stop_requested``: a scheduler's preemption or time-limit signal, seen by the
execution layer) is agreed across ranks with the step's loss, so every rank finishes the same step; the loop
then writes a checkpoint at that step boundary and raises ``StopRequested``. The requeued job resumes there.

Progress (rank 0): a bar on a terminal, else the periodic log line every ``log_every_kimg`` carries the kimg
done of the total, the rate and the time left (``kacdist.progress``). Metrics rows reach an experiment tracker
(``on_metrics``) only once committed with a checkpoint, so a resumed run sends each step once.
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
from kacdist.progress import Progress, format_eta
from kacdist.train.checkpoint import load_latest_checkpoint, save_checkpoint
from kacdist.train.ema import EMA
from kacdist.train.engine import make_engine
from kacdist.train.metrics_log import MetricsLog
from kacdist.train.randomness import StepDraws, mix_seed
from kacdist.train.workers import Workers

log = logging.getLogger(__name__)

# time bins of the velocity-norm log (DistillKac eq. 4: ||v_t||_{L2(mu_t)} <= c·sqrt(d))
VELOCITY_BINS = 10


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before touching any checkpoint."""


class StopRequested(Exception):
    """Training stopped early on request (preemption, time limit) after checkpointing at a step boundary;
    rerunning the stage resumes from ``checkpoint`` without losing or repeating a step."""

    def __init__(self, name: str, step: int, checkpoint: Path | None):
        super().__init__(f"{name}: stopped on request at step {step}; checkpoint {checkpoint}")
        self.name, self.step, self.checkpoint = name, step, checkpoint


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
    rng_block: int = 32  # images per random stream (kacdist.train.randomness)
    name: str = "train"  # for log lines: "teacher", "distill-100-20", ...
    extra_state: dict = field(default_factory=dict)  # saved into every checkpoint (e.g. where a student came from)

    def total_steps(self) -> int:
        """Optimizer steps of the run; ``batch_size`` is the global batch, whatever the number of workers."""
        return math.ceil(self.total_kimg * 1000 / self.batch_size)


@dataclass
class LoopResult:
    status: str  # "finished" | "already_done" | "early_stopped"
    step: int
    kimg: float
    checkpoint: Path | None


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, StepDraws], StepOutput]


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
    workers: Workers | None = None,
    engine: str = "torch",
    zero_stage: int = 0,
    compile_mode: str = "none",
    kac_c: float = 1.0,
    on_checkpoint: Callable[[int, Path], None] | None = None,
    on_metrics: Callable[[list[dict]], None] | None = None,
    monitor: Callable[[nn.Module, int], float] | None = None,
    snapshot: Callable[[nn.Module, int], None] | None = None,
) -> LoopResult:
    """Train ``model`` (already on ``device``) with ``loss_fn`` on ``batches`` in ``run_dir``, or resume.

    ``batches.batch(step) -> (x0, y)`` gives this worker's share of step ``step``'s global batch, or
    ``batches`` is a callable ``batches(start_step)`` returning such an object, called once the resume step
    is known (a data stream is then positioned there). ``monitor(ema_model, step) -> FD`` runs on rank 0
    every ``eval_every_kimg`` (lower is better) and drives early stopping after ``early_stop_patience``
    evaluations without improvement; ``snapshot(ema_model, step)`` runs on rank 0 every
    ``sample_every_kimg`` and at the end. ``on_checkpoint(step, path)`` runs on rank 0 after each save.
    ``on_metrics(rows)`` runs on rank 0 each time ``metrics.parquet`` is written, with all its rows (the
    committed history, in step order; rows after the last checkpoint are not in it, since a resume replays
    them): an experiment tracker sends the steps it has not sent yet.
    """
    s = settings
    w = workers if workers is not None else Workers()
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / "checkpoints"
    done = read_done(run_dir)
    if done is not None:
        if w.is_main:
            log.info("%s in %s already finished at step %d; nothing to do", s.name, run_dir, done.step)
        return done
    if s.batch_size % w.world_size:
        raise ValueError(f"{s.name}: the global batch of {s.batch_size} images does not split over {w.world_size} workers")
    local_batch = s.batch_size // w.world_size
    steps = s.total_steps()
    # rank 0 picks the newest readable checkpoint (also one written but never reported to Ray: a hard crash
    # between the two) and every rank loads that same file
    found = load_latest_checkpoint(ckpt_dir, map_location="cpu") if w.is_main else None
    path = w.broadcast_object(str(found[1]) if found else None)
    state = None
    if path is not None:
        state = found[0] if w.is_main else torch.load(path, map_location="cpu", weights_only=True)
    found = None  # the loaded state is dropped once the engine holds it (an LSUN checkpoint is ~9 GB)
    step = int(state["step"]) if state else 0
    last_ckpt = Path(path) if path else None
    if state is not None:
        model.load_state_dict(state["model"])
        if w.is_main:
            log.info("%s: resumed from %s at step %d (%.1f kimg)", s.name, last_ckpt, step, state["kimg"])
    else:
        w.broadcast_module(model)  # identical initial weights on every rank: rank 0's
    ema = EMA(model, s.ema_decay)
    if state is not None:
        ema.load_state_dict(state["ema"])
    eng = make_engine(engine, model, s, steps, w, device, state, zero_stage, compile_mode)
    del state
    if not hasattr(batches, "batch"):
        batches = batches(step)
    metrics = MetricsLog(run_dir / "metrics.parquet") if w.is_main else None
    if metrics is not None:
        metrics.drop_after(step)  # the steps after the checkpoint are replayed and logged again

    def every(kimg: float) -> int:
        return max(1, round(kimg * 1000 / s.batch_size)) if kimg else 0

    ckpt_every, log_every = every(s.checkpoint_every_kimg), every(s.log_every_kimg)
    eval_every, sample_every = every(s.eval_every_kimg), every(s.sample_every_kimg)
    # early-stopping history survives restarts through the metrics file
    fd_history = [(r["step"], r["fd"]) for r in metrics.rows if r.get("fd") is not None] if metrics else []

    def checkpoint(at_step: int) -> Path | None:
        state = eng.state_dict()  # every rank: a collective under ZeRO
        saved = None
        if w.is_main:
            state.update({
                "ema": ema.state_dict(),
                "step": at_step,
                "kimg": at_step * s.batch_size / 1000,
                "config": config_yaml,
                # randomness is a function of (seed, step, image), data a function of the step: the step is
                # the whole data and RNG position
                "data_position": {"kind": type(batches).__name__, "step": at_step},
                **s.extra_state,
            })
            saved = save_checkpoint(ckpt_dir, at_step, state, s.keep_checkpoints)
            metrics.flush()
            if on_metrics is not None:
                on_metrics(metrics.rows)
            if on_checkpoint is not None:
                on_checkpoint(at_step, saved)
        w.event("checkpoint_written", at_step)
        if w.report is not None:
            w.report(at_step, saved)
        return saved

    bins = torch.zeros(VELOCITY_BINS, dtype=torch.float64)
    counts = torch.zeros(VELOCITY_BINS, dtype=torch.float64)
    dim = 0
    model.train()
    window_loss, window_n, window_start = 0.0, 0, time.perf_counter()
    # rank 0 only; in log mode the periodic metrics line below carries the ETA, so no lines of its own
    progress = Progress(steps * s.batch_size, s.name, unit="img", initial=step * s.batch_size, enabled=w.is_main,
                        interval_s=None)
    with progress:
        while step < steps:
            # dropout masks (the only draws outside StepDraws): a function of (seed, step, rank)
            torch.manual_seed(mix_seed(s.seed, step, w.rank))
            x0, y = batches.batch(step)
            draws = StepDraws(s.seed, step, w.rank * local_batch, local_batch, s.rng_block, device)
            out = loss_fn(eng.model, x0, y, draws)
            loss_value, stop_requested = _agreed_loss(out.loss, w)
            if not math.isfinite(loss_value):
                raise NonFiniteLossError(
                    f"{s.name}: loss is {loss_value} at step {step} ({step * s.batch_size / 1000:.1f} kimg); stopped "
                    f"without saving. Last good checkpoint: {last_ckpt or 'none'}"
                )
            eng.backward(out.loss)
            grad_norm = eng.step()
            ema.update(model, step)
            step += 1
            w.event("step", step)
            progress.update(s.batch_size)
            progress.postfix(loss=loss_value)
            window_loss += loss_value
            window_n += 1
            dim = x0[0].numel()
            which = (out.t.detach().float().cpu() * VELOCITY_BINS).long().clamp(0, VELOCITY_BINS - 1)
            bins.index_add_(0, which, out.velocity_norm.detach().double().cpu() ** 2)
            counts.index_add_(0, which, torch.ones(len(which), dtype=torch.float64))
            if step % log_every == 0 or step == steps:
                totals = w.all_sum(torch.cat([bins, counts]))
                elapsed = time.perf_counter() - window_start
                if w.is_main:
                    row = {
                        "step": step,
                        "kimg": step * s.batch_size / 1000,
                        "loss": window_loss / window_n,
                        "lr": eng.lr,
                        "grad_norm": grad_norm,
                        "images_per_s": window_n * s.batch_size / elapsed,
                        "s_per_step": elapsed / window_n,
                        **memory_row(eng, device),
                        **velocity_norm_row(totals[:VELOCITY_BINS], totals[VELOCITY_BINS:], dim, kac_c),
                    }
                    metrics.append(row)
                    log.info(
                        "%s step %d/%d  kimg %s/%s  loss %.4f  lr %.2e  %.0f img/s  %.3f s/step  ETA %s",
                        s.name, step, steps, _kimg(row["kimg"], s.total_kimg), _kimg(s.total_kimg, s.total_kimg),
                        row["loss"], row["lr"], row["images_per_s"], row["s_per_step"], format_eta(progress.eta_s()),
                    )
                window_loss, window_n, window_start = 0.0, 0, time.perf_counter()
                bins.zero_()
                counts.zero_()
            stop_early = False
            if monitor is not None and eval_every and step % eval_every == 0:
                if w.is_main:
                    fd = float(monitor(ema.model, step))
                    fd_history.append((step, fd))
                    metrics.append({"step": step, "kimg": step * s.batch_size / 1000, "fd": fd})
                    best_at = min(range(len(fd_history)), key=lambda i: fd_history[i][1])
                    stale = len(fd_history) - 1 - best_at
                    log.info("%s step %d: FD %.4f (best %.4f at step %d)", s.name, step, fd, fd_history[best_at][1],
                             fd_history[best_at][0])
                    stop_early = bool(s.early_stop_patience) and stale >= s.early_stop_patience
                    model.train()
                stop_early = w.broadcast_object(stop_early)  # rank 0's FD decides for every rank
            if snapshot is not None and sample_every and step % sample_every == 0 and w.is_main:
                snapshot(ema.model, step)
                model.train()
            if step % ckpt_every == 0 or step == steps or stop_early or stop_requested:
                last_ckpt = checkpoint(step) or last_ckpt
            if stop_requested and step < steps and not stop_early:
                if w.is_main:
                    log.info("%s: stop requested; checkpoint at step %d (%.1f kimg) written, stopping", s.name, step,
                             step * s.batch_size / 1000)
                w.barrier()  # the checkpoint exists before any rank leaves
                raise StopRequested(s.name, step, last_ckpt)
            if stop_early:
                if w.is_main:
                    log.info("%s: early stop at step %d: FD has not improved for %d evaluations", s.name, step,
                             s.early_stop_patience)
                break

    kimg = step * s.batch_size / 1000
    status = "finished" if step >= steps else "early_stopped"
    if w.is_main:
        if snapshot is not None and not (sample_every and step % sample_every == 0):
            snapshot(ema.model, step)
        done_info = {"step": step, "kimg": kimg, "checkpoint": str(last_ckpt), "status": status}
        atomic_write_bytes(run_dir / "DONE", json.dumps(done_info).encode())
    w.barrier()  # no rank returns before DONE exists
    return LoopResult(status, step, kimg, last_ckpt)


def _kimg(value: float, total: float) -> str:
    """kimg for log lines: one decimal for real runs, enough digits for a test's fraction of a kimg."""
    return f"{value:.1f}" if total >= 10 else f"{value:.3f}"


def memory_row(engine, device: torch.device) -> dict:
    """Metrics columns: rank 0's optimizer state (its ZeRO partition) and its process's peak memory."""
    row = {"optimizer_state_mib": engine.optimizer_state_bytes() / 2**20}
    try:
        import resource

        row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except ImportError:  # not a Unix
        pass
    if device.type == "cuda":
        row["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def _agreed_loss(loss: torch.Tensor, workers: Workers) -> tuple[float, bool]:
    """The batch loss averaged over workers and whether any worker was asked to stop: the same values on every
    rank (so a non-finite loss or a stop request anywhere stops every rank at the same step). One small
    all-reduce per step carries both; ``loss.item()`` synchronised anyway."""
    stop = workers.stop_requested is not None and bool(workers.stop_requested())
    if not workers.distributed:
        return loss.item(), stop
    both = torch.stack([loss.detach().float().reshape(()), torch.tensor(float(stop), device=loss.device)])
    total = workers.all_sum(both)
    return total[0].item() / workers.world_size, bool(total[1].item() > 0)
