"""stage=eval: sample quality against NFE for each (integrator, steps, guidance, seed), every finished
DistillKac student, and the real-vs-real floor.

Protocol (dataset=digits): classifier Fréchet distance (FD), class-conditional accuracy and class
histogram. The 1,797 digits are split into two halves by index parity. The reference statistics come from
the even half (899 images) in the features of the project's digits classifier (trained on the train split,
kacdist.eval.classifier). The real-vs-real FD compares the odd half (898 images) with the reference; every
generated set has the same size as that comparison set (``eval.num_samples``, default 898 for digits) so
the numbers are comparable. ``eval.inception=true`` adds the standard Inception FID against the even half
(its first ``eval.reference_images`` images).

Protocol (dataset.source=shards): the standard Inception FID (kacdist.eval.inception, docs/eval.md). The
reference statistics are those of the first ``eval.reference_images`` images of the dataset's shards in
shard order (the training split; 50,000 for the paper's FID@50k; cached by name, count and model
fingerprint); the next ``eval.num_samples`` real images give the real-vs-real floor, and every generated
set has ``eval.num_samples`` images (when the shards hold no real images beyond the reference, as for
FID against all 50,000 CIFAR-10 training images, the floor is left out and the header says so). An FID is
comparable only at the same sample count and reference: both are in the table's header.

Labels cycle through the classes (none for an unconditional model); image i of seed s uses noise seed
s·1_000_003 + i, shared by every model and configuration (common random numbers).
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
from kacdist.progress import Progress
from kacdist.sampling import generate
from kacdist.stages.common import load_teacher, stage_dir
from kacdist.train.device import autocast_dtype, resolve_device
from kacdist.track.provenance import record_provenance

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


def _real_stream(ds):
    from kacdist.data.stream import make_eval_stream

    return make_eval_stream(ds.urls, batch_size=256, channels=ds.channels, resolution=ds.resolution)


def images_after(ds, skip: int, keep: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Images skip … skip+keep-1 of the dataset's shards in shard order (labels -1 where there are none) and
    how many images were read. Only the kept ones are held: the reference may be 50,000 LSUN images."""
    images, labels, seen = [], [], 0
    for x, y in _real_stream(ds):
        lo, hi = max(skip - seen, 0), min(skip + keep - seen, len(x))
        if hi > lo:
            images.append(x[lo:hi])
            labels.append(y[lo:hi] if torch.is_tensor(y) else torch.full((hi - lo,), -1, dtype=torch.long))
        seen += len(x)
        if seen >= skip + keep:
            break
    if not images:
        return torch.empty(0), torch.empty(0, dtype=torch.long), seen
    return torch.cat(images), torch.cat(labels), seen


def _judges(cfg: RunConfig, device: torch.device):
    """(judge(images, labels) -> metrics, floor images, floor labels, header) for the dataset's protocol."""
    ec, ds = cfg.eval, cfg.dataset
    cache = Path(ds.cache_dir).expanduser() / "eval"
    n = ec.num_samples
    judges = []
    if ds.source == "digits":
        classifier, reference, real_odd, real_labels = digits_reference(cache, ds.resolution, ds.channels)
        judges.append(lambda images, labels: quality_row(classifier, reference, images, labels))
        floor_images, floor_labels = real_odd[:n], real_labels[:n]
        header = f"classifier FD on {n} images against the even half of the digits"
        if ec.inception:
            from kacdist.eval.classifier import digits_tensors
            from kacdist.eval.inception import InceptionFID

            fid = InceptionFID(device=device)
            even = digits_tensors("all", ds.resolution, ds.channels)[0][0::2][: ec.reference_images]
            inception_ref = fid.reference_stats(f"digits{ds.resolution}-even{len(even)}", even, cache, max_samples=len(even),
                                                progress=True)
            judges.append(lambda images, labels: {"fid": inception_ref.frechet_distance(fid.stats(images))})
            header += f"; Inception FID against {len(even)} images of the even half"
    elif ds.source == "shards":
        from kacdist.eval.inception import InceptionFID

        m = ec.reference_images
        floor_images, floor_labels, seen = images_after(ds, m, n)
        if seen < m:  # checked before any Inception work, and also when the reference is cached
            raise ValueError(f"eval needs {m} real images from {ds.urls!r} but the shards hold {seen}: lower "
                             "eval.reference_images")
        fid = InceptionFID(device=device)
        # streamed in batches (only on a cache miss): the reference images are never all in memory
        reference = fid.reference_stats(f"{ds.name}{ds.resolution}-first{m}", lambda: (x for x, _ in _real_stream(ds)),
                                        cache, max_samples=m, progress=True)
        judges.append(lambda images, labels: {"fid": reference.frechet_distance(fid.stats(images)), "num_images": int(len(images))})
        header = f"Inception FID on {n} images against the first {m} images of {ds.urls}"
        if len(floor_images) < n:  # e.g. FID against all 50,000 CIFAR-10 training images: no held-out real set
            log.warning("no real-vs-real floor: the shards hold %d images, the reference takes %d and the floor "
                        "would need %d more", seen, m, n)
            floor_images = floor_labels = None
            header += " (no real-vs-real floor: no real images left over)"
    else:
        raise ValueError(f"stage=eval knows dataset.source digits and shards, not {ds.source!r}")

    def judge(images: torch.Tensor, labels: torch.Tensor | None) -> dict:
        row = {}
        for one in judges:
            row.update(one(images, labels))
        return row

    if floor_labels is not None and bool((floor_labels < 0).any()):
        floor_labels = None
    if floor_images is not None and not ds.num_classes:
        floor_labels = None
    return judge, floor_images, floor_labels, header


def run_eval(cfg: RunConfig) -> list[dict]:
    ec = cfg.eval
    record_provenance(stage_dir(cfg, "eval"), "eval")
    device = resolve_device(cfg.train.device)
    n = ec.num_samples
    judge, floor_images, floor_labels, header = _judges(cfg, device)
    rows = []
    if floor_images is not None:
        floor = judge(floor_images, floor_labels)
        log.info("real-vs-real at %d images: %s", len(floor_images), _metrics_text(floor))
        rows.append({"model": "real", "integrator": "", "steps": 0, "guidance": float("nan"), "seed": -1, "nfe": 0,
                     "images_per_s": float("nan"), "checkpoint": "", "header": header, **floor})
    model, ckpt = load_teacher(cfg, device, use_ema=True)
    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    shape = (cfg.dataset.channels, cfg.dataset.resolution, cfg.dataset.resolution)
    labels = torch.arange(n) % cfg.dataset.num_classes if cfg.dataset.num_classes else None
    amp = autocast_dtype(cfg.train.precision, device)
    settings = [(w, integrator, steps, seed) for w in ec.guidance for integrator in ec.integrators for steps in ec.steps
                if not (integrator in ("midpoint", "heun") and nfe_per_call(integrator, steps) > 2 * max(ec.steps))
                for seed in ec.seeds]
    students = finished_students(cfg) if ec.students else []
    # one bar over every image the table generates (sampling and judging them): its ETA is the table's
    with Progress(n * (len(settings) + len(students) * len(ec.seeds)), "eval", unit="img") as progress:
        for w, integrator, steps, seed in settings:
            seeds = [seed * 1_000_003 + i for i in range(n)]
            result = generate(model, process, shape, seeds, labels, integrator, steps, w, cfg.sample.batch_size, device, amp,
                              progress=progress)
            row = {"model": "teacher", "integrator": integrator, "steps": steps, "guidance": w, "seed": seed,
                   "nfe": result.nfe, "images_per_s": result.images_per_s, "checkpoint": str(ckpt),
                   **judge(result.images, labels)}
            rows.append(row)
            log.info("w=%g %-8s %3d steps (%3d NFE) seed %d: %s  %.0f img/s", w, integrator, steps,
                     result.nfe, seed, _metrics_text(row), result.images_per_s)  # above the bar (kacdist.progress)
        if students:
            rows += evaluate_students(cfg, judge, n, labels, device, amp, process, shape, progress)
    for row in rows:
        row["header"] = header
    out = stage_dir(cfg, "eval")
    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, out / "fd_vs_nfe.parquet")
    (out / "fd_vs_nfe.md").write_text(format_table(rows))
    print(format_table(rows))
    from kacdist.track.wandb_run import log_eval_table

    log_eval_table(cfg, out, rows)
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


def _metrics_text(row: dict) -> str:
    parts = []
    if "fd" in row:
        parts.append(f"FD {row['fd']:.3f}")
    if "accuracy" in row:
        parts.append(f"acc {row['accuracy']:.3f}")
    if "fid" in row:
        parts.append(f"FID {row['fid']:.2f}")
    return "  ".join(parts)


def evaluate_students(cfg, judge, n, labels, device, amp, process, shape, progress: Progress | None = None) -> list[dict]:
    """Each finished student, sampled as trained: Euler on its own grid, w = 1 (conditional velocity).
    ``progress`` is advanced by the images generated."""
    rows = []
    for name, steps in finished_students(cfg):
        model, ckpt = load_teacher(cfg, device, use_ema=True, stage=name)
        for seed in cfg.eval.seeds:
            seeds = [seed * 1_000_003 + i for i in range(n)]
            result = generate(model, process, shape, seeds, labels, "euler", steps, 1.0, cfg.sample.batch_size, device, amp,
                              progress=progress)
            row = {"model": name, "integrator": "euler", "steps": steps, "guidance": 1.0, "seed": seed, "nfe": result.nfe,
                   "images_per_s": result.images_per_s, "checkpoint": str(ckpt), **judge(result.images, labels)}
            rows.append(row)
            log.info("%s (Euler, %d NFE) seed %d: %s  %.0f img/s", name, result.nfe, seed, _metrics_text(row), result.images_per_s)
    return rows


def _cell(hit: list[dict]) -> str:
    """Mean over seeds: FD (accuracy) for the classifier protocol, FID for Inception, both when both ran."""
    parts = []
    if "fd" in hit[0]:
        text = f"{np.mean([r['fd'] for r in hit]):.2f}"
        if "accuracy" in hit[0]:
            text += f" ({np.mean([r['accuracy'] for r in hit]):.3f})"
        parts.append(text)
    if "fid" in hit[0]:
        parts.append(f"FID {np.mean([r['fid'] for r in hit]):.2f}" if "fd" in hit[0] else f"{np.mean([r['fid'] for r in hit]):.2f}")
    return " ".join(parts)


def format_table(rows: list[dict]) -> str:
    """The metric (mean over seeds) per steps × integrator for each guidance, real-vs-real floor on top."""
    real = next((r for r in rows if r["model"] == "real"), None)
    first = real or rows[0]
    metric = "FD (accuracy)" if "fd" in first else "FID"
    if "fd" in first and "fid" in first:
        metric += " and Inception FID"
    header = first.get("header") or f"classifier FD, {first['num_images']} images"
    lines = [f"{header}; real vs real: {_cell([real])}" if real else header, ""]
    gen = [r for r in rows if r["model"] == "teacher"]
    for w in sorted({r["guidance"] for r in gen}, reverse=True):
        sub = [r for r in gen if r["guidance"] == w]
        integrators = list(dict.fromkeys(r["integrator"] for r in sub))
        steps = sorted({r["steps"] for r in sub}, reverse=True)
        lines.append(f"w = {w:g}: {metric} by steps")
        lines.append("| steps | " + " | ".join(integrators) + " |")
        lines.append("|---" * (len(integrators) + 1) + "|")
        for s in steps:
            cells = []
            for integ in integrators:
                hit = [r for r in sub if r["integrator"] == integ and r["steps"] == s]
                cells.append(f"{_cell(hit)} [{hit[0]['nfe']} NFE]" if hit else "—")
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines.append("")
    students = [r for r in rows if r["model"] not in ("real", "teacher")]
    if students:
        lines.append(f"DistillKac students (Euler on their own grid, w = 1): {metric}, mean over seeds")
        lines.append(f"| stage | NFE | {metric} | seeds |")
        lines.append("|---|---|---|---|")
        for name in dict.fromkeys(r["model"] for r in students):
            hit = [r for r in students if r["model"] == name]
            lines.append(f"| {name} | {hit[0]['nfe']} | {_cell(hit)} | {len(hit)} |")
        lines.append("")
    return "\n".join(lines)
