"""Benchmark: your own images, end to end, with the commands a user types and nothing else.

    python benchmarks/own_data.py [--work runs/own-data-bench] [--samples 500] [--seeds 0 1 2] [--compile all] [--precision auto]

The data: a labelled folder of 28x28 greyscale PNGs (ten class sub-folders) made on this machine from
scikit-learn's handwritten digits, harder than the digits the main job trains on: every digit of the training
split (index % 6 != 5, 1,498 images) is drawn four times at 28x28 with a random rotation (±12°), scale
(0.85-1.1), shift (±2 px) and stroke width (thinner, as is, or thicker), 5,992 images in all. The held-out
reference is the same recipe applied ten times to the 299 test digits (2,990 images, other seeds).

The commands (printed as they run; no recipe override is passed, the folder preset carries it; the two
execution settings are saved with the run, so the ladder and the sampling below use them too: train.compile=all
compiles every network (the trained ones, the ladder's frozen teachers, sampling) and train.precision=bf16 runs
every network under bf16 autocast, 1.4-1.6x faster here than fp32 (--precision auto picks it on a CPU with bf16
instructions, fp32 elsewhere, where emulated bf16 is slower; benchmarks/cpu_precision.py):

    python -m data_tools.from_folder <work>/folder --out <work>/shards        # 28x28, grey, 10 classes, from the images
    python jobs/launch.py stage=teacher dataset=folder dataset.path=<work>/shards runs_dir=<work>/runs run_name=own \
        train.compile=all train.precision=bf16
    python jobs/launch.py stage=ladder runs_dir=<work>/runs run_name=own        # 100 -> 20 -> 4 -> 2, 4 -> 1

Quality, per sampling seed (per-image noise seeds seed·1,000,003 + i, labels cycling through the classes):
the Fréchet distance in the features of a small CNN trained on the folder's images (kacdist.eval.classifier,
the digits protocol of docs/eval.md at 28x28) between --samples generated images and the reference, and the
classifier's accuracy on them. The real-vs-real floor is --samples real training images against the same
reference. Teacher: AB-2 at 100, 4 and 1 steps, w = 1.2; students: Euler on their own grid, w = 1.
Goals (issue 15): teacher@100 <= 2x the floor, student@1 <= 1.3x teacher@100, student@4 <= 1.15x, accuracy
>= 97%. Writes benchmarks/results/own_data.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SIZE = 28
# images per sampling batch: with guidance the network sees twice as many; on this 2-core CPU the tiny UNet at
# 28x28 runs about 290 evaluations/s at a forward batch of 64 and 160/s at 1,000 (cache), so small batches
SAMPLE_BATCH = 32


def draw_digit(image8: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """One 8x8 digit (0..16) as a 28x28 grey image with a random pose and stroke width."""
    grey = Image.fromarray((image8 * 255 / 16).astype(np.uint8), mode="L").resize((20, 20), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (SIZE, SIZE), 0)
    canvas.paste(grey, (4, 4))
    scale = rng.uniform(0.85, 1.1)
    angle = np.deg2rad(rng.uniform(-12, 12))
    dx, dy = rng.uniform(-2, 2, size=2)
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    centre = SIZE / 2
    # inverse map output -> input about the centre (PIL's affine takes the inverse matrix)
    matrix = (cos, sin, centre - cos * (centre + dx) - sin * (centre + dy),
              -sin, cos, centre + sin * (centre + dx) - cos * (centre + dy))
    out = canvas.transform((SIZE, SIZE), Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR)
    stroke = rng.integers(3)
    if stroke == 0:
        out = out.filter(ImageFilter.MinFilter(3))
    elif stroke == 2:
        out = out.filter(ImageFilter.MaxFilter(3))
    return out


def write_folder(root: Path, split: str, variants: int, seed: int) -> int:
    from sklearn.datasets import load_digits

    if root.exists() and any(root.iterdir()):
        return sum(1 for _ in root.rglob("*.png"))
    digits = load_digits()
    rng = np.random.default_rng(seed)
    count = 0
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        if (i % 6 == 5) != (split == "test"):
            continue
        (root / f"{label}").mkdir(parents=True, exist_ok=True)
        for v in range(variants):
            draw_digit(image, rng).save(root / f"{label}" / f"{i:04d}-{v}.png")
            count += 1
    return count


def folder_tensors(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    files = sorted(root.rglob("*.png"))
    images = np.stack([np.asarray(Image.open(f), dtype=np.float32) for f in files]) / 127.5 - 1
    labels = [int(f.parent.name) for f in files]
    return torch.from_numpy(images)[:, None], torch.tensor(labels)


def run(command: list[str]) -> float:
    print("+", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True)
    return time.perf_counter() - start


def score(classifier, reference, model, process, integrator: str, steps: int, w: float, seed: int, n: int, amp):
    """(FD against the reference, classifier accuracy, images/s) of n samples of one sampling seed: per-image noise
    seeds seed·1,000,003 + i, labels cycling through the ten classes."""
    from kacdist.eval.stats import compute_stats
    from kacdist.sampling import generate

    labels = torch.arange(n) % 10
    result = generate(model, process, (1, SIZE, SIZE), [seed * 1_000_003 + i for i in range(n)], labels, integrator,
                      steps, w, SAMPLE_BATCH, torch.device("cpu"), amp)
    return (compute_stats(classifier, result.images).frechet_distance(reference),
            classifier.accuracy(result.images, labels), result.images_per_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/own-data-bench")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--compile", default="all", choices=["none", "inference", "all"], help="train.compile of the run")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="train.precision of the run; auto: bf16 where the CPU has bf16 instructions, else fp32")
    args = parser.parse_args()
    if args.precision == "auto":  # emulated bf16 is many times slower than fp32 on a CPU without the instructions
        from kacdist.train.device import cpu_bf16_native

        args.precision = "bf16" if cpu_bf16_native() else "fp32"
    work = (REPO / args.work).resolve()
    started = time.perf_counter()
    n_train = write_folder(work / "folder", "train", 4, seed=0)
    n_ref = write_folder(work / "reference", "test", 10, seed=1)
    times = {"convert": run([sys.executable, "-m", "data_tools.from_folder", str(work / "folder"), "--out", str(work / "shards")])}
    run_args = [f"runs_dir={work / 'runs'}", "run_name=own"]
    times["teacher"] = run([sys.executable, "jobs/launch.py", "stage=teacher", "dataset=folder", f"dataset.path={work / 'shards'}",
                            *run_args, f"train.compile={args.compile}", f"train.precision={args.precision}"])
    times["ladder"] = run([sys.executable, "jobs/launch.py", "stage=ladder", *run_args])

    from kacdist.config import load_config
    from kacdist.eval.classifier import ClassifierSpec, train_classifier
    from kacdist.eval.stats import compute_stats
    from kacdist.kac import KacProcess
    from kacdist.stages.common import load_teacher
    from kacdist.stages.distill import distill_stage_name
    from kacdist.train.device import autocast_dtype

    torch.set_num_threads(2)
    cfg = load_config(["stage=eval", *run_args])
    train_x, train_y = folder_tensors(work / "folder")
    ref_x, ref_y = folder_tensors(work / "reference")
    t0 = time.perf_counter()
    classifier, report = train_classifier(train_x, train_y, spec=ClassifierSpec(1, SIZE, 10), val=(ref_x, ref_y))
    times["classifier"] = time.perf_counter() - t0
    reference = compute_stats(classifier, ref_x)
    device = torch.device("cpu")
    amp = autocast_dtype(cfg.train.precision, device)  # the run's saved precision
    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    n = args.samples
    teacher, _ = load_teacher(cfg, device)
    # the teacher at 100 steps (the anchor) and, for comparison, at the students' 4 and 1 NFE; its 20 and 2
    # would add about 4 min per seed to a benchmark that has to fit in an hour
    models = [("teacher", teacher, "ab2", s, cfg.sample.guidance) for s in (100, 4, 1)]
    stages = [(distill_stage_name(hi, lo, cfg.distill.tag), lo) for hi, lo in cfg.distill.rungs()]
    models += [(name, load_teacher(cfg, device, stage=name)[0], "euler", lo, 1.0) for name, lo in stages]
    rows = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        pick = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))[:n]
        rows.append({"model": "real", "seed": seed, "steps": 0,
                     "fd": compute_stats(classifier, train_x[pick]).frechet_distance(reference),
                     "accuracy": classifier.accuracy(train_x[pick], train_y[pick])})
        print(f"seed {seed} real vs real: FD {rows[-1]['fd']:.3f} acc {rows[-1]['accuracy']:.3f}", flush=True)
        for name, model, integrator, steps, w in models:
            fd, accuracy, images_per_s = score(classifier, reference, model, process, integrator, steps, w, seed, n, amp)
            rows.append({"model": name, "seed": seed, "steps": steps, "integrator": integrator, "guidance": w,
                         "fd": fd, "accuracy": accuracy, "images_per_s": images_per_s})
            print(f"seed {seed} {name} {integrator} {steps}: FD {rows[-1]['fd']:.3f} acc {rows[-1]['accuracy']:.3f}", flush=True)
    times["sampling"] = time.perf_counter() - t0  # and scoring
    times["total"] = time.perf_counter() - started
    write(rows, times, report, n, n_train, n_ref, args.seeds, f"train.compile={args.compile}, train.precision={args.precision}")


def write(rows: list[dict], times: dict, report, n: int, n_train: int, n_ref: int, seeds: list[int], execution: str) -> None:
    def summary(model: str, steps: int) -> dict:
        hit = [r for r in rows if r["model"] == model and r["steps"] == steps]
        fd = [r["fd"] for r in hit]
        return {"fd": statistics.mean(fd), "fd_std": statistics.pstdev(fd), "accuracy": statistics.mean(r["accuracy"] for r in hit)}

    # a finished stage is reused by the command that would train it (seconds instead of minutes): say which
    reused = [stage for stage in ("teacher", "ladder") if times[stage] < 60]
    reused = f" ({' and '.join(reused)} reused from an earlier run of this command)" if reused else ""
    floor = summary("real", 0)
    teacher = summary("teacher", 100)
    w = next(r["guidance"] for r in rows if r["model"] == "teacher")  # the run's sample.guidance
    table = [("real vs real", "", floor)] + [(f"teacher AB-2, w = {w:g}", s, summary("teacher", s)) for s in (100, 4, 1)]
    students = sorted({(r["model"], r["steps"]) for r in rows if r["model"].startswith("distill")}, key=lambda x: -x[1])
    table += [(f"student {m}, Euler, w = 1", s, summary(m, s)) for m, s in students]
    lines = [
        f"28x28 grey augmented digits: {n_train} training images in 10 class folders, reference {n_ref} held-out images; "
        f"classifier FD and accuracy of {n} images per seed, seeds {seeds} (mean ± std); classifier held-out accuracy "
        f"{report.val_accuracy:.3f}. Wall: convert {times['convert']:.0f} s, teacher {times['teacher']:.0f} s, "
        f"ladder {times['ladder']:.0f} s{reused}, classifier {times['classifier']:.0f} s, sampling and scoring "
        f"{times['sampling']:.0f} s, total {times['total'] / 60:.1f} min; {execution}.", "",
        "| model | steps (NFE) | FD | accuracy | FD / teacher@100 |", "|---|---|---|---|---|"]
    for name, steps, s in table:
        lines.append(f"| {name} | {steps} | {s['fd']:.3f} ± {s['fd_std']:.3f} | {s['accuracy']:.3f} | {s['fd'] / teacher['fd']:.2f} |")
    student = {s: m for m, s in students}  # the ladder's student of each step count
    s1 = summary(student[1], 1)["fd"] / teacher["fd"]
    s4 = summary(student[4], 4)["fd"] / teacher["fd"]
    acc = min(summary(m, s)["accuracy"] for m, s in [("teacher", 100)] + students)
    goals = {"teacher@100 / floor <= 2": teacher["fd"] / floor["fd"], "student@1 / teacher@100 <= 1.3": s1,
             "student@4 / teacher@100 <= 1.15": s4, "lowest accuracy (teacher@100, students) >= 0.97": acc}
    lines += ["", "| goal | measured |", "|---|---|"] + [f"| {k} | {v:.3f} |" for k, v in goals.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "own_data.md").write_text(text)
    (RESULTS / "own_data.json").write_text(json.dumps({"rows": rows, "times": times, "goals": goals, "execution": execution}, indent=1))


if __name__ == "__main__":
    main()
