"""stage=eval: sample quality against NFE — classifier Fréchet distance (FD), class-conditional accuracy
and class histogram for each (integrator, steps, guidance, seed), plus the real-vs-real FD floor.

Protocol (digits): the 1,797 digits are split into two halves by index parity. The reference statistics
come from the even half (899 images) in the features of the project's digits classifier (trained on the
train split, kacdist.eval.classifier). The real-vs-real FD compares the odd half (898 images) with the
reference; every generated set has the same size as that comparison set (``eval.num_samples``, default
898 for digits) so the numbers are comparable. Labels cycle through the classes; image i of seed s uses
noise seed s·1_000_003 + i, shared by every model and configuration (common random numbers).
Writes runs/<run>/eval/{fd_vs_nfe.parquet, fd_vs_nfe.md}.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from kacdist.config.schema import RunConfig
from kacdist.kac import KacProcess, nfe_per_call
from kacdist.sampling import generate
from kacdist.stages.common import load_teacher, stage_dir
from kacdist.train.device import autocast_dtype, resolve_device

log = logging.getLogger(__name__)


def digits_reference(cache_dir: Path, resolution: int, channels: int):
    """(classifier, reference stats of the even half, odd-half images) for the digits protocol."""
    from kacdist.eval.classifier import digits_classifier, digits_tensors
    from kacdist.eval.stats import compute_stats

    classifier, _ = digits_classifier(cache_dir, resolution, channels)
    images, labels = digits_tensors("all", resolution, channels)
    even, odd = images[0::2], images[1::2]
    reference = compute_stats(classifier, even, name=f"digits{resolution}-even")
    return classifier, reference, odd, labels[1::2]


def quality_row(classifier, reference, images: torch.Tensor, labels: torch.Tensor | None) -> dict:
    from kacdist.eval.stats import compute_stats

    stats = compute_stats(classifier, images)
    row = {"fd": stats.frechet_distance(reference), "num_images": int(len(images))}
    pred = classifier.predict(images)
    hist = torch.bincount(pred, minlength=classifier.spec.num_classes if hasattr(classifier, "spec") else 10)
    row["class_histogram"] = hist.tolist()
    if labels is not None:
        row["accuracy"] = float((pred == labels).float().mean())
    return row


def run_eval(cfg: RunConfig) -> list[dict]:
    if cfg.dataset.source != "digits":
        raise ValueError("stage=eval measures the digits protocol only so far (dataset=digits); Inception FID on shards is not wired in yet")
    ec = cfg.eval
    device = resolve_device(cfg.train.device)
    cache = Path(cfg.dataset.cache_dir).expanduser() / "eval"
    classifier, reference, real_odd, real_labels = digits_reference(cache, cfg.dataset.resolution, cfg.dataset.channels)
    n = ec.num_samples
    floor = quality_row(classifier, reference, real_odd[:n], real_labels[:n])
    log.info("real-vs-real FD at %d images: %.3f (accuracy %.3f)", len(real_odd[:n]), floor["fd"], floor["accuracy"])
    rows = [{"model": "real", "integrator": "", "steps": 0, "guidance": float("nan"), "seed": -1, "nfe": 0,
             "images_per_s": float("nan"), "checkpoint": "", **floor}]
    model, ckpt = load_teacher(cfg, device, use_ema=True)
    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    shape = (cfg.dataset.channels, cfg.dataset.resolution, cfg.dataset.resolution)
    labels = torch.arange(n) % cfg.dataset.num_classes if cfg.dataset.num_classes else None
    amp = autocast_dtype(cfg.train.precision, device)
    for w in ec.guidance:
        for integrator in ec.integrators:
            for steps in ec.steps:
                if integrator in ("midpoint", "heun") and nfe_per_call(integrator, steps) > 2 * max(ec.steps):
                    continue
                for seed in ec.seeds:
                    seeds = [seed * 1_000_003 + i for i in range(n)]
                    result = generate(model, process, shape, seeds, labels, integrator, steps, w, cfg.sample.batch_size, device, amp)
                    row = {"model": "teacher", "integrator": integrator, "steps": steps, "guidance": w, "seed": seed,
                           "nfe": result.nfe, "images_per_s": result.images_per_s, "checkpoint": str(ckpt),
                           **quality_row(classifier, reference, result.images, labels)}
                    rows.append(row)
                    log.info("w=%g %-8s %3d steps (%3d NFE) seed %d: FD %.3f  acc %.3f  %.0f img/s", w, integrator, steps,
                             result.nfe, seed, row["fd"], row.get("accuracy", float("nan")), result.images_per_s)
    if ec.students:
        rows += evaluate_students(cfg, classifier, reference, n, labels, device, amp, process, shape)
    out = stage_dir(cfg, "eval")
    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, out / "fd_vs_nfe.parquet")
    (out / "fd_vs_nfe.md").write_text(format_table(rows))
    print(format_table(rows))
    return rows


def finished_students(cfg: RunConfig) -> list[tuple[str, int]]:
    """(stage name, student steps) of every finished distill-* stage of the run, by name."""
    import json

    from kacdist.stages.common import run_root

    root = run_root(cfg)
    found = []
    for d in sorted(root.glob("distill-*")) if root.is_dir() else []:
        if (d / "DONE").exists() and (d / "source.json").exists():
            found.append((d.name, int(json.loads((d / "source.json").read_text())["student_steps"])))
    return found


def evaluate_students(cfg, classifier, reference, n, labels, device, amp, process, shape) -> list[dict]:
    """Each finished student, sampled as trained: Euler on its own grid, w = 1 (conditional velocity)."""
    rows = []
    for name, steps in finished_students(cfg):
        model, ckpt = load_teacher(cfg, device, use_ema=True, stage=name)
        for seed in cfg.eval.seeds:
            seeds = [seed * 1_000_003 + i for i in range(n)]
            result = generate(model, process, shape, seeds, labels, "euler", steps, 1.0, cfg.sample.batch_size, device, amp)
            row = {"model": name, "integrator": "euler", "steps": steps, "guidance": 1.0, "seed": seed, "nfe": result.nfe,
                   "images_per_s": result.images_per_s, "checkpoint": str(ckpt),
                   **quality_row(classifier, reference, result.images, labels)}
            rows.append(row)
            log.info("%s (Euler, %d NFE) seed %d: FD %.3f  acc %.3f  %.0f img/s", name, result.nfe, seed, row["fd"],
                     row.get("accuracy", float("nan")), result.images_per_s)
    return rows


def format_table(rows: list[dict]) -> str:
    """FD (mean over seeds) per steps × integrator for each guidance, real-vs-real floor on top."""
    real = next(r for r in rows if r["model"] == "real")
    lines = [f"classifier FD, {real['num_images']} images; real-vs-real FD {real['fd']:.3f}; accuracy of real {real['accuracy']:.3f}", ""]
    gen = [r for r in rows if r["model"] == "teacher"]
    for w in sorted({r["guidance"] for r in gen}, reverse=True):
        sub = [r for r in gen if r["guidance"] == w]
        integrators = list(dict.fromkeys(r["integrator"] for r in sub))
        steps = sorted({r["steps"] for r in sub}, reverse=True)
        lines.append(f"w = {w:g}: FD (accuracy) by steps")
        lines.append("| steps | " + " | ".join(integrators) + " |")
        lines.append("|---" * (len(integrators) + 1) + "|")
        for s in steps:
            cells = []
            for integ in integrators:
                hit = [r for r in sub if r["integrator"] == integ and r["steps"] == s]
                if hit:
                    fd = np.mean([r["fd"] for r in hit])
                    acc = np.mean([r.get("accuracy", np.nan) for r in hit])
                    cells.append(f"{fd:.2f} ({acc:.3f}) [{hit[0]['nfe']} NFE]")
                else:
                    cells.append("—")
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines.append("")
    students = [r for r in rows if r["model"] not in ("real", "teacher")]
    if students:
        lines.append("DistillKac students (Euler on their own grid, w = 1): FD (accuracy), mean over seeds")
        lines.append("| stage | NFE | FD | accuracy | seeds |")
        lines.append("|---|---|---|---|---|")
        for name in dict.fromkeys(r["model"] for r in students):
            hit = [r for r in students if r["model"] == name]
            fd = np.mean([r["fd"] for r in hit])
            acc = np.mean([r.get("accuracy", np.nan) for r in hit])
            lines.append(f"| {name} | {hit[0]['nfe']} | {fd:.2f} | {acc:.3f} | {len(hit)} |")
        lines.append("")
    return "\n".join(lines)
