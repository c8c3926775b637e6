"""Benchmark: DistillKac on the digits default — students at 20/4/2/1 NFE next to the teacher at the same NFE
(the paper's Table 2 / Figure 2 pattern), multi-stage against single-stage (Table B-7), the x-source
variants, sampling throughput at 1/2/4/20/100 NFE in one run (Figure 3), and the trajectory diagnostics
(Figures B-2/B-3).

    python benchmarks/distill_digits.py [--sources forward student_rollout] [--seeds 0 1 2] [--samples 500]
                                        [--no-single] [key=value ...]

Trains the teacher first if the run has none (the README's main job), then for each x source runs the
ladder distill.ladder with distill.tag=<source> (finished stages are reused), plus 100→1 and 4→1 from the
first source's chain. Every model is sampled on the same noise seeds (image i of seed s: s·1_000_003 + i,
labels cycling through the classes): teacher with AB-2 and Euler at w = distill.guidance, students with
Euler on their own grid (w = 1). Measures, averaged over seeds:
  * classifier FD against the even half of the digits, and class accuracy (docs/eval.md protocol);
  * "teacher gap": RMS pixel distance to the 100-step AB-2 teacher sample from the same noise and label,
    which keeps separating models after the 16×16 FD has saturated at its floor.
Writes benchmarks/results/distill_digits.{md,json} and benchmarks/results/distill_digits/*.png|parquet.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from kacdist.config import load_config
from kacdist.eval.trajectory import compare_trajectories, plot_discrepancy_vs_time, plot_endpoint_vs_mean
from kacdist.kac import GuidedVelocity, KacProcess
from kacdist.sampling import generate, prior_noise
from kacdist.stages.common import load_teacher, setup_logging, stage_dir
from kacdist.stages.distill import distill_stage_name, run_distill, run_ladder
from kacdist.stages.evaluate import digits_reference, quality_row
from kacdist.stages.teacher import run_teacher

log = logging.getLogger("distill_digits")
OUT = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", nargs="+", default=["forward", "student_rollout"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--no-single", action="store_true", help="skip the single-stage 100→1 and 4→1 students")
    parser.add_argument("--report-only", action="store_true",
                        help="re-render the table from benchmarks/results/distill_digits.json and the run's metrics")
    parser.add_argument("overrides", nargs="*", help="key=value overrides as for jobs/launch.py")
    args = parser.parse_args()
    setup_logging()
    base = ["dataset=digits", "eval.after_teacher=false"] + args.overrides
    cfg = load_config(["stage=teacher"] + base)
    if args.report_only:
        saved = json.loads((OUT / "distill_digits.json").read_text())
        report(cfg, saved["rows"], saved["timings_s"], args)
        return
    run_teacher(cfg)  # returns at once when the teacher has finished
    timings: dict[str, float] = {}
    ladder = list(cfg.distill.ladder)
    students: list[tuple[str, int]] = []
    for source in args.sources:
        lcfg = load_config(["stage=ladder", f"distill.x_source={source}", f"distill.tag={source}"] + base)
        t0 = time.perf_counter()
        run_ladder(lcfg)
        timings[f"ladder {source}"] = time.perf_counter() - t0
        students += [(distill_stage_name(hi, lo, source), lo) for hi, lo in lcfg.distill.rungs()]
    if not args.no_single:
        first = args.sources[0]
        for hi, lo, init in [(ladder[0], 1, "teacher"), (4, 1, distill_stage_name(20, 4, first))]:
            if hi not in ladder or (init != "teacher" and 20 not in ladder):
                continue
            scfg = load_config(["stage=distill", f"distill.x_source={first}", f"distill.tag={first}-single"] + base)
            t0 = time.perf_counter()
            run_distill(scfg, hi, lo, init)
            timings[f"{hi}->{lo} {first}"] = time.perf_counter() - t0
            students.append((distill_stage_name(hi, lo, f"{first}-single"), lo))
    rows = evaluate(cfg, students, args.seeds, args.samples)
    diagnostics(cfg, students, args.sources[0])
    report(cfg, rows, timings, args)


def evaluate(cfg, students, seeds, n) -> list[dict]:
    device = torch.device("cpu")
    cache = Path(cfg.dataset.cache_dir).expanduser() / "eval"
    classifier, reference, real_odd, real_labels = digits_reference(cache, cfg.dataset.resolution, cfg.dataset.channels)
    rows = [{"model": "real", "integrator": "", "steps": 0, "nfe": 0, "seed": -1, **quality_row(classifier, reference, real_odd[:n], real_labels[:n])}]
    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    shape = (cfg.dataset.channels, cfg.dataset.resolution, cfg.dataset.resolution)
    labels = torch.arange(n) % cfg.dataset.num_classes
    w = cfg.distill.guidance
    teacher, _ = load_teacher(cfg, device)
    models = [("teacher", teacher, "ab2", steps, w) for steps in (100, 20, 4, 2, 1)]
    models += [("teacher", teacher, "euler", steps, w) for steps in (20, 4, 2, 1)]
    for name, steps in students:
        models.append((name, load_teacher(cfg, device, stage=name)[0], "euler", steps, 1.0))
    for seed in seeds:
        noise_seeds = [seed * 1_000_003 + i for i in range(n)]
        reference_images = None
        for name, model, integ, steps, guidance in models:
            result = generate(model, process, shape, noise_seeds, labels, integ, steps, guidance, 500, device)
            if reference_images is None:  # the first model is the 100-step AB-2 teacher
                reference_images = result.images
            gap = float((result.images - reference_images).pow(2).mean().sqrt())
            row = {"model": name, "integrator": integ, "steps": steps, "nfe": result.nfe, "seed": seed,
                   "images_per_s": result.images_per_s, "teacher_gap": gap,
                   **quality_row(classifier, reference, result.images, labels)}
            rows.append(row)
            log.info("%-32s %-5s %3d NFE seed %d: FD %.3f acc %.3f gap %.4f %.0f img/s", name, integ, result.nfe, seed,
                     row["fd"], row["accuracy"], gap, result.images_per_s)
    return rows


def diagnostics(cfg, students, source) -> None:
    """Figures B-2/B-3: each ladder student against the 100-step guided teacher, and 4-step vs 20-step student."""
    out = OUT / "distill_digits"
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu")
    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    shape = (cfg.dataset.channels, cfg.dataset.resolution, cfg.dataset.resolution)
    n = 100
    x1 = prior_noise(process, shape, list(range(n)))
    y = torch.arange(n) % cfg.dataset.num_classes
    teacher, _ = load_teacher(cfg, device)
    teacher_v = GuidedVelocity(teacher, y, cfg.distill.guidance, teacher.null_label)
    curves, rows = {}, []
    ladder = [(name, steps) for name, steps in students if name.endswith(f"-{source}") and "single" not in name]
    with torch.no_grad():
        for name, steps in ladder:
            student, _ = load_teacher(cfg, device, stage=name)
            comp = compare_trajectories(teacher_v, lambda x, t, s=student: s(x, t, y), x1, cfg.distill.ladder[0], steps, "ab2")
            curves[f"{name} ({steps} NFE)"] = comp
            rows += [{"pair": f"teacher100-{name}", **r} for r in comp.rows()]
            log.info("%s vs teacher: endpoint-vs-mean r = %.4f, R² = %.4f", name, comp.pearson_r, comp.r2)
        plot_discrepancy_vs_time(curves, out / "trajectory_mismatch.png")
        first = next(iter(curves.values()), None)
        if first is not None:
            plot_endpoint_vs_mean(first, out / "endpoint_vs_mean_teacher_vs_20.png",
                                  title=f"teacher (100 AB-2) vs {ladder[0][0]}")
        named = dict(ladder)
        s20, s4 = distill_stage_name(100, 20, source), distill_stage_name(20, 4, source)
        if s20 in named and s4 in named:
            a, _ = load_teacher(cfg, device, stage=s20)
            b, _ = load_teacher(cfg, device, stage=s4)
            comp = compare_trajectories(lambda x, t: a(x, t, y), lambda x, t: b(x, t, y), x1, 20, 4, "euler")
            plot_endpoint_vs_mean(comp, out / "endpoint_vs_mean_20_vs_4.png", title=f"{s20} vs {s4}")
            rows += [{"pair": f"{s20}-{s4}", **r} for r in comp.rows()]
            log.info("%s vs %s: r = %.4f, R² = %.4f", s20, s4, comp.pearson_r, comp.r2)
    pq.write_table(pa.Table.from_pylist(rows), out / "trajectories.parquet")
    summary = {k: {"pearson_r": v.pearson_r, "r2": v.r2, "mean_sq_per_node": v.mean_sq_per_node.tolist()} for k, v in curves.items()}
    (out / "trajectories.json").write_text(json.dumps(summary, indent=1))


def stage_seconds(cfg) -> dict[str, float]:
    """Training seconds of every finished distill-* stage of the run, from its metrics log."""
    out = {}
    root = stage_dir(cfg, "teacher").parent
    for d in sorted(root.glob("distill-*")):
        if not (d / "DONE").exists() or not (d / "metrics.parquet").exists():
            continue
        rows = [r for r in pq.read_table(d / "metrics.parquet").to_pylist() if r.get("s_per_step") is not None]
        total, previous = 0.0, 0
        for r in sorted(rows, key=lambda r: r["step"]):
            total += r["s_per_step"] * (r["step"] - previous)
            previous = r["step"]
        out[d.name] = total
    return out


def report(cfg, rows, timings, args) -> None:
    real = next(r for r in rows if r["model"] == "real")
    gen = [r for r in rows if r["model"] != "real"]
    keys = list(dict.fromkeys((r["model"], r["integrator"], r["steps"]) for r in gen))
    lines = [
        f"digits 16×16, {args.samples} samples per model and seed, seeds {args.seeds}; classifier FD (real-vs-real "
        f"floor {real['fd']:.3f}, accuracy {real['accuracy']:.3f}); teacher gap = RMS pixel distance to the 100-step "
        f"AB-2 teacher image from the same noise (pixels in [-1, 1]). Teacher w = {cfg.distill.guidance:g}; students "
        "Euler, w = 1. Mean ± std over seeds.",
        "",
        "| model | sampler | NFE | FD | accuracy | teacher gap | images/s |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = []
    for model, integ, steps in keys:
        hit = [r for r in gen if (r["model"], r["integrator"], r["steps"]) == (model, integ, steps)]
        fd = np.array([r["fd"] for r in hit])
        acc = np.array([r["accuracy"] for r in hit])
        gap = np.array([r["teacher_gap"] for r in hit])
        ips = np.median([r["images_per_s"] for r in hit])
        summary.append({"model": model, "integrator": integ, "steps": steps, "nfe": hit[0]["nfe"], "fd_mean": fd.mean(),
                        "fd_std": fd.std(), "accuracy": acc.mean(), "teacher_gap": gap.mean(), "images_per_s": ips})
        lines.append(f"| {model} | {integ} | {hit[0]['nfe']} | {fd.mean():.2f} ± {fd.std():.2f} | {acc.mean():.3f} | "
                     f"{gap.mean():.4f} | {ips:.0f} |")
    lines += ["", "Wall time of this invocation per distillation run (s; 0 = reused from an earlier run): "
              + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())]
    lines += ["", "Training time per stage from its metrics (s, sum of logged s/step × steps; batch "
              f"{cfg.distill.batch_size}, {cfg.distill.total_kimg:g} kimg each):"]
    lines += [f"* {name}: {seconds:.0f}" for name, seconds in stage_seconds(cfg).items()]
    text = "\n".join(lines)
    OUT.mkdir(exist_ok=True)
    (OUT / "distill_digits.md").write_text(text + "\n")
    (OUT / "distill_digits.json").write_text(json.dumps({"summary": summary, "rows": rows, "timings_s": timings,
                                                         "argv": sys.argv[1:]}, indent=1, default=float))
    print(text)


if __name__ == "__main__":
    main()
