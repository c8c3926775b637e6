"""stage=teacher: train (or resume, or confirm) the Guided Kac Flow teacher, with sample grids, periodic FD
and early stopping (rank 0 samples and evaluates; the loop shares its decision). The evaluation table that
``eval.after_teacher`` asks for is run afterwards by ``kacdist.stages.dispatch``, in one process.

Rank 0 records each attempt in ``teacher/provenance.json`` and tracks the stage as one wandb run
(``kacdist.track``: offline files under ``teacher/wandb/`` by default)."""

from __future__ import annotations

import logging

import torch

from kacdist.config.schema import RunConfig
from kacdist.kac import KacProcess
from kacdist.sampling import generate, image_grid, save_png
from kacdist.stages.common import stage_dir
from kacdist.stages.sample import sample_labels
from kacdist.track.wandb_run import track_stage
from kacdist.train.device import autocast_dtype
from kacdist.train.loop import read_done
from kacdist.train.teacher import TeacherResult, train_teacher
from kacdist.train.workers import Workers

log = logging.getLogger(__name__)


def _snapshot(cfg: RunConfig):
    """Save a 10×10 grid of EMA samples (the sample.* integrator, steps and guidance; the run's precision) at a
    step."""
    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    shape = (cfg.dataset.channels, cfg.dataset.resolution, cfg.dataset.resolution)
    out = stage_dir(cfg, "teacher") / "samples"

    def snapshot(model: torch.nn.Module, step: int) -> None:
        device = next(model.parameters()).device
        n = min(100, cfg.sample.num_images)
        result = generate(model, process, shape, list(range(n)), sample_labels(cfg, n), cfg.sample.integrator,
                          cfg.sample.steps, cfg.sample.guidance, cfg.sample.batch_size, device,
                          autocast_dtype(cfg.train.precision, device))
        out.mkdir(parents=True, exist_ok=True)
        save_png(image_grid(result.uint8()), out / f"grid-{step:09d}.png")

    return snapshot


def _monitor(cfg: RunConfig):
    """The quality of ``train.eval_samples`` EMA samples (AB-2, 20 steps, sample.guidance, sampling seeds
    0..n-1, the same for every run): the classifier FD on digits, the Inception FID against the first
    ``eval.reference_images`` images (cached statistics) on shards. Loaded at the first evaluation, on rank 0."""
    if not cfg.train.eval_every_kimg:
        return None
    from pathlib import Path

    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    shape = (cfg.dataset.channels, cfg.dataset.resolution, cfg.dataset.resolution)
    n = cfg.train.eval_samples
    cache = Path(cfg.dataset.cache_dir).expanduser() / "eval"
    loaded: list = []

    def score(images: torch.Tensor) -> float:
        from kacdist.eval.stats import compute_stats

        if cfg.dataset.source == "digits":
            if not loaded:
                from kacdist.stages.evaluate import digits_reference

                classifier, reference, _, _ = digits_reference(cache, cfg.dataset.resolution, cfg.dataset.channels)
                loaded.extend([classifier, reference])
            classifier, reference = loaded
            return compute_stats(classifier, images.cpu()).frechet_distance(reference)
        if not loaded:
            from kacdist.eval.inception import InceptionFID
            from kacdist.stages.evaluate import _real_stream

            ds, m = cfg.dataset, cfg.eval.reference_images
            fid = InceptionFID(device=images.device)
            reference = fid.reference_stats(f"{ds.name}{ds.resolution}-first{m}", lambda: (x for x, _ in _real_stream(ds)),
                                            cache, max_samples=m)
            loaded.extend([fid, reference])
        fid, reference = loaded
        return reference.frechet_distance(fid.stats(images))

    def monitor(model: torch.nn.Module, step: int) -> float:
        device = next(model.parameters()).device
        result = generate(model, process, shape, list(range(n)), sample_labels(cfg, n), "ab2", 20,
                          cfg.sample.guidance, cfg.sample.batch_size, device, autocast_dtype(cfg.train.precision, device))
        return float(score(result.images))

    return monitor


def monitor_name(cfg: RunConfig) -> str:
    """What ``_monitor`` measures, for tables and logs."""
    if cfg.dataset.source == "digits":
        return f"classifier FD, {cfg.train.eval_samples} samples (AB-2 20 steps, w={cfg.sample.guidance:g})"
    return (f"Inception FID, {cfg.train.eval_samples} samples (AB-2 20 steps, w={cfg.sample.guidance:g}) against the "
            f"first {cfg.eval.reference_images} images")


def run_teacher(cfg: RunConfig, workers: Workers | None = None) -> TeacherResult:
    """Train the teacher of ``cfg`` (on this worker, one of ``workers``; None: the only one)."""
    out = stage_dir(cfg, "teacher")
    main = workers is None or workers.is_main
    training = read_done(out) is None  # a finished stage is confirmed, not tracked or recorded again
    if main and training:
        from kacdist.track.provenance import record_provenance

        record_provenance(out, "teacher")
    with track_stage(cfg, out, "teacher", enabled=main and training) as tracking:
        result = train_teacher(cfg, out, workers=workers, monitor=_monitor(cfg), snapshot=_snapshot(cfg),
                               on_metrics=tracking.send_committed if tracking else None)
    if main:
        log.info("teacher %s: step %d, %.1f kimg, checkpoint %s", result.status, result.step, result.kimg, result.checkpoint)
    return result
