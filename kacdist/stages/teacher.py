"""stage=teacher: train (or resume, or confirm) the Guided Kac Flow teacher, with sample grids, periodic FD
and early stopping (rank 0 samples and evaluates; the loop shares its decision). The evaluation table that
``eval.after_teacher`` asks for is run afterwards by ``kacdist.stages.dispatch``, in one process."""

from __future__ import annotations

import logging

import torch

from kacdist.config.schema import RunConfig
from kacdist.kac import KacProcess
from kacdist.sampling import generate, image_grid, save_png
from kacdist.stages.common import stage_dir
from kacdist.stages.sample import sample_labels
from kacdist.train.teacher import TeacherResult, train_teacher
from kacdist.train.workers import Workers

log = logging.getLogger(__name__)


def _snapshot(cfg: RunConfig):
    """Save a 10×10 grid of EMA samples (the sample.* integrator, steps and guidance) at a step."""
    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    shape = (cfg.dataset.channels, cfg.dataset.resolution, cfg.dataset.resolution)
    out = stage_dir(cfg, "teacher") / "samples"

    def snapshot(model: torch.nn.Module, step: int) -> None:
        device = next(model.parameters()).device
        n = min(100, cfg.sample.num_images)
        result = generate(model, process, shape, list(range(n)), sample_labels(cfg, n), cfg.sample.integrator,
                          cfg.sample.steps, cfg.sample.guidance, cfg.sample.batch_size, device)
        out.mkdir(parents=True, exist_ok=True)
        save_png(image_grid(result.uint8()), out / f"grid-{step:09d}.png")

    return snapshot


def _monitor(cfg: RunConfig):
    """Classifier FD of ``train.eval_samples`` EMA samples (AB-2, 20 steps, sample.guidance): digits only.

    The classifier and the reference statistics are loaded at the first evaluation (on rank 0 only)."""
    if cfg.dataset.source != "digits" or not cfg.train.eval_every_kimg:
        if cfg.train.eval_every_kimg:
            log.warning("train.eval_every_kimg is set but periodic FD is available for dataset=digits only; skipped")
        return None
    from pathlib import Path

    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    shape = (cfg.dataset.channels, cfg.dataset.resolution, cfg.dataset.resolution)
    n = cfg.train.eval_samples
    loaded: list = []

    def monitor(model: torch.nn.Module, step: int) -> float:
        from kacdist.eval.stats import compute_stats
        from kacdist.stages.evaluate import digits_reference

        if not loaded:
            classifier, reference, _, _ = digits_reference(
                Path(cfg.dataset.cache_dir).expanduser() / "eval", cfg.dataset.resolution, cfg.dataset.channels)
            loaded.extend([classifier, reference])
        classifier, reference = loaded
        device = next(model.parameters()).device
        result = generate(model, process, shape, list(range(n)), sample_labels(cfg, n), "ab2", 20,
                          cfg.sample.guidance, cfg.sample.batch_size, device)
        return compute_stats(classifier, result.images.cpu()).frechet_distance(reference)

    return monitor


def run_teacher(cfg: RunConfig, workers: Workers | None = None) -> TeacherResult:
    """Train the teacher of ``cfg`` (on this worker, one of ``workers``; None: the only one)."""
    result = train_teacher(cfg, stage_dir(cfg, "teacher"), workers=workers, monitor=_monitor(cfg), snapshot=_snapshot(cfg))
    if workers is None or workers.is_main:
        log.info("teacher %s: step %d, %.1f kimg, checkpoint %s", result.status, result.step, result.kimg, result.checkpoint)
    return result
