"""stage=sample: images from the teacher (or any stage, ``sample.source=distill-20-4``) with a chosen
integrator, step count and guidance. A DistillKac student — any checkpoint carrying a "distill" record,
also one passed as ``sample.checkpoint`` — is sampled as it was trained: Euler on its own grid with w = 1
(its conditional velocity already carries the teacher's guidance), unless ``sample.as_trained=false``.

Writes runs/<run>/sample/[<source>-]<integrator>-<steps>-w<guidance>.{png,npz,json}: the grid, the uint8 images with
their labels and seeds, and the throughput (images/s, NFE per image).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from kacdist.config.schema import RunConfig
from kacdist.kac import KacProcess
from kacdist.progress import Progress
from kacdist.track.provenance import record_provenance
from kacdist.sampling import generate, image_grid, save_png
from kacdist.stages.common import load_stage_state, model_from_state, stage_dir
from kacdist.train.device import autocast_dtype, resolve_device

log = logging.getLogger(__name__)


def number_token(value: float) -> str:
    """A float as the shortest text that reads back as the same float ("1.2", "1", "0.0001"): file names
    built from it never merge two settings, as a fixed number of digits would."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def sample_stem(source: str, integrator: str, steps: int, guidance: float, seed: int = 0) -> str:
    """``[<source>-]<integrator>-<steps>-w<guidance>[-seed<seed>]``: one name per setting."""
    prefix = "" if source == "teacher" else f"{source}-"
    return f"{prefix}{integrator}-{steps}-w{number_token(guidance)}" + (f"-seed{seed}" if seed else "")


def _with(stem: Path, suffix: str) -> Path:
    # not Path.with_suffix: it takes the ".2" of "w1.2" for a suffix and replaces it
    return stem.parent / (stem.name + suffix)


def sample_labels(cfg: RunConfig, n: int) -> torch.Tensor | None:
    if not cfg.dataset.num_classes:
        return None
    if cfg.sample.labels:
        base = torch.tensor(cfg.sample.labels, dtype=torch.long)
        return base.repeat((n + len(base) - 1) // len(base))[:n]
    return torch.arange(n) % cfg.dataset.num_classes


def run_sample(cfg: RunConfig) -> dict:
    sc = cfg.sample
    device = resolve_device(cfg.train.device)
    state, ckpt = load_stage_state(cfg, device, sc.checkpoint, sc.source)
    record_provenance(stage_dir(cfg, "sample"), "sample")
    model = model_from_state(cfg, state, device, sc.use_ema)
    student = state.get("distill")  # the record a DistillKac stage writes into its checkpoints
    del state
    if student and sc.as_trained:
        as_trained = {"integrator": "euler", "steps": int(student["student_steps"]), "guidance": 1.0}
        changed = {k: (getattr(sc, k), v) for k, v in as_trained.items() if getattr(sc, k) != v}
        if changed:
            log.info("%s is a %d-step DistillKac student: sampled as trained (%s); sample.as_trained=false keeps "
                     "the settings given", ckpt, as_trained["steps"],
                     ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items()))
        sc = replace(sc, **as_trained)
    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    shape = (cfg.dataset.channels, cfg.dataset.resolution, cfg.dataset.resolution)
    seeds = [sc.seed * 1_000_003 + i for i in range(sc.num_images)]
    labels = sample_labels(cfg, sc.num_images)
    with Progress(sc.num_images, f"sample {sc.integrator}-{sc.steps}", unit="img") as progress:
        result = generate(
            model, process, shape, seeds, labels, sc.integrator, sc.steps, sc.guidance, sc.batch_size, device,
            autocast_dtype(cfg.train.precision, device), progress=progress,
        )
    out = stage_dir(cfg, "sample")
    out.mkdir(parents=True, exist_ok=True)
    stem = out / sample_stem(sc.source, sc.integrator, sc.steps, sc.guidance, sc.seed)
    images = result.uint8()
    save_png(image_grid(images[: min(len(images), 100)]), _with(stem, ".png"))
    np.savez_compressed(_with(stem, ".npz"), images=images, labels=result.labels.numpy(), seeds=np.array(seeds))
    summary = {
        "checkpoint": str(ckpt),
        "source": sc.source,
        "student": student or None,
        "integrator": sc.integrator,
        "steps": sc.steps,
        "guidance": sc.guidance,
        "num_images": sc.num_images,
        "nfe_per_image": result.nfe,
        "images_per_s": result.images_per_s,
        "seconds": result.seconds,
    }
    _with(stem, ".json").write_text(json.dumps(summary, indent=2))
    log.info("%d images, %d NFE each, %.1f images/s -> %s.{png,npz,json}", sc.num_images, result.nfe, result.images_per_s, stem)
    return summary
