"""Benchmark: what the distributed layer costs per training step, on this machine, side by side in one run.

    python benchmarks/distributed.py [--presets tiny,lightweight] [--rounds 2] [--quick]

Every configuration trains the real teacher stage (`kacdist.cluster.execute`, the same call as
`jobs/launch.py`) on digits for a few steps, logging every step; a configuration's figure is the median
s/step of its steps after the warm-up, pooled over --rounds rounds that interleave the configurations (the
machine is shared and noisy: ratios measured side by side are the numbers that hold). Global batch: 128
images for `tiny` (16x16 grey digits), 8 for `lightweight` (Table B-3, digits upscaled to 64x64).

1. Execution paths, as ratios to the plain in-process loop: DeepSpeed engine in-process; Ray Train with 1
   worker (DDP path = the torch engine, and DeepSpeed); Ray Train with 2 workers (DDP, DeepSpeed). A worker
   gets cores / workers threads, so 1 worker has both cores, 2 workers one each. Ray's fixed start-up (one
   `ray.init`, then per fit the worker group, process group, engine set-up and data) is reported apart:
   wall time of the stage minus its training steps.
2. Per-image randomness (kacdist.train.randomness): the plain loop with train.rng_block = the whole batch
   (one random stream per step, the cost before this layer existed), 32 (default) and 8; and the draws alone
   for one of 2 workers' halves of a 128-image batch: its own 64 images in blocks of 32, against the
   alternative of drawing the whole global batch on every worker and keeping its half.
3. ZeRO 0/1/2 with 2 Ray workers (DeepSpeed): s/step, the optimizer state held by one worker (Adam's two
   moments; under ZeRO 1/2 only its partition) and the peak RSS of a worker process (rank 0, from the
   metrics table).

Writes benchmarks/results/distributed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

from kacdist.cluster import execute
from kacdist.config import load_config

RESULTS = Path(__file__).resolve().parent / "results"

PRESETS = {
    # name: (resolution, global batch, warm-up steps, measured steps)
    "tiny": (16, 128, 3, 12),
    "lightweight": (64, 8, 2, 4),
}
PATHS = [
    # label, workers, engine
    ("plain loop (in-process, torch)", 0, "torch"),
    ("DeepSpeed engine in-process", 0, "deepspeed"),
    ("Ray 1 worker, torch (DDP path)", 1, "torch"),
    ("Ray 1 worker, DeepSpeed", 1, "deepspeed"),
    ("Ray 2 workers, torch DDP", 2, "torch"),
    ("Ray 2 workers, DeepSpeed", 2, "deepspeed"),
]


def run_stage(runs: Path, name: str, preset: str, workers: int, engine: str, extra: list[str] = ()) -> dict:
    resolution, batch, warmup, measured = PRESETS[preset]
    steps = warmup + measured
    kimg = steps * batch / 1000
    args = [
        "stage=teacher", "dataset=digits", f"model={preset}", f"dataset.resolution={resolution}", f"runs_dir={runs}",
        f"run_name={name}", f"train.batch_size={batch}", f"train.total_kimg={kimg}", f"train.log_every_kimg={batch / 1000}",
        f"train.checkpoint_every_kimg={kimg}", "train.threads=0" if workers else "train.threads=2",
        f"cluster.workers={workers}", f"train.engine={engine}", "eval.after_teacher=false", "sample.num_images=4",
        "sample.steps=1", "sample.batch_size=4", *extra,
    ]
    start = time.perf_counter()
    execute(load_config(args))
    wall = time.perf_counter() - start
    rows = pq.read_table(runs / name / "teacher" / "metrics.parquet").to_pylist()
    shutil.rmtree(runs / name)
    per_step = [r["s_per_step"] for r in rows]
    return {
        "steps": per_step[warmup:],
        "train_s": sum(per_step),
        "fixed_s": wall - sum(per_step),
        "optimizer_state_mib": rows[-1].get("optimizer_state_mib"),
        "peak_rss_mib": rows[-1].get("peak_rss_mib"),
        "images_per_step": batch,
    }


def summarise(samples: list[dict]) -> dict:
    steps = [s for sample in samples for s in sample["steps"]]
    median = statistics.median(steps)
    return {
        "s_per_step": median,
        "images_per_s": samples[0]["images_per_step"] / median,
        "fixed_s": statistics.median(s["fixed_s"] for s in samples),
        "optimizer_state_mib": samples[-1]["optimizer_state_mib"],
        "peak_rss_mib": samples[-1]["peak_rss_mib"],
        "n_steps": len(steps),
    }


def draw_costs(repeats: int) -> dict:
    """Seconds per call of the teacher loss's draws for one of 2 workers' halves of a 128-image batch."""
    from kacdist.kac import KacProcess
    from kacdist.train.randomness import StepDraws

    process = KacProcess(25.0, 2.0, "t")
    x_half, x_whole = torch.zeros(64, 1, 16, 16), torch.zeros(128, 1, 16, 16)

    def draws(first: int, count: int, block: int, x: torch.Tensor) -> None:
        d = StepDraws(0, 0, first, count, block)
        t = d.rand()
        d.per_block(lambda g, xx, tt: process.target(xx, tt, generator=g), d.pad(x), t)
        d.rand()

    contenders = {
        "own 64 images, blocks of 32 (this layer)": lambda: draws(64, 64, 32, x_half),
        "whole 128-image batch on each worker, one stream": lambda: draws(0, 128, 128, x_whole),
        "whole 128-image batch in-process, blocks of 32": lambda: draws(0, 128, 32, x_whole),
        "whole 128-image batch in-process, one stream": lambda: draws(0, 128, 128, x_whole),
    }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():  # interleaved
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,lightweight")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 round, tiny only: a smoke run")
    args = parser.parse_args()
    presets = ["tiny"] if args.quick else args.presets.split(",")
    rounds = 1 if args.quick else args.rounds
    torch.set_num_threads(2)
    import ray

    from kacdist.cluster.ray_train import _quiet_ray_logs, available_cores

    start = time.perf_counter()
    ray.init(num_cpus=available_cores(), include_dashboard=False, runtime_env={"worker_process_setup_hook": _quiet_ray_logs})
    ray_init_s = time.perf_counter() - start
    runs = Path(tempfile.mkdtemp(prefix="kacdist-bench-"))
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
                     "date": time.strftime("%Y-%m-%d"), "ray_init_s": ray_init_s, "rounds": rounds, "paths": {}, "rng": {}, "zero": {}}
    try:
        for preset in presets:
            samples: dict[str, list[dict]] = {}
            for r in range(rounds):
                for label, workers, engine in PATHS:
                    samples.setdefault(label, []).append(run_stage(runs, f"{preset}-p{r}-{workers}{engine}", preset, workers, engine))
                    print(f"[{preset}] round {r}: {label}: {statistics.median(samples[label][-1]['steps']):.3f} s/step", flush=True)
                for stage in (1, 2):
                    label = f"ZeRO-{stage}, Ray 2 workers"
                    samples.setdefault(label, []).append(
                        run_stage(runs, f"{preset}-z{r}-{stage}", preset, 2, "deepspeed", [f"train.zero_stage={stage}"]))
                    print(f"[{preset}] round {r}: {label}: {statistics.median(samples[label][-1]['steps']):.3f} s/step", flush=True)
                if preset == "tiny":
                    for block in (128, 8):
                        label = f"plain loop, rng_block={block}"
                        samples.setdefault(label, []).append(
                            run_stage(runs, f"{preset}-r{r}-{block}", preset, 0, "torch", [f"train.rng_block={block}"]))
                        print(f"[{preset}] round {r}: {label}: {statistics.median(samples[label][-1]['steps']):.3f} s/step", flush=True)
            summary = {label: summarise(s) for label, s in samples.items()}
            base = summary[PATHS[0][0]]["s_per_step"]
            for entry in summary.values():
                entry["ratio_to_plain"] = entry["s_per_step"] / base
            results["paths"][preset] = {label: summary[label] for label, _, _ in PATHS}
            results["zero"][preset] = {"ZeRO-0, Ray 2 workers": summary["Ray 2 workers, DeepSpeed"],
                                       **{f"ZeRO-{z}, Ray 2 workers": summary[f"ZeRO-{z}, Ray 2 workers"] for z in (1, 2)}}
            if preset == "tiny":
                results["rng"]["steps"] = {"rng_block=128 (one stream)": summary["plain loop, rng_block=128"],
                                           "rng_block=32 (default)": summary[PATHS[0][0]],
                                           "rng_block=8": summary["plain loop, rng_block=8"]}
        results["rng"]["draws"] = draw_costs(repeats=41)
    finally:
        ray.shutdown()
        shutil.rmtree(runs, ignore_errors=True)
    write(results)


def write(results: dict) -> None:
    lines = [f"Machine: {results['machine']}; {results['date']}; {results['rounds']} rounds interleaving the configurations; "
             f"median s/step after warm-up; `ray.init` took {results['ray_init_s']:.1f} s once.", ""]
    for preset, paths in results["paths"].items():
        resolution, batch, warmup, measured = PRESETS[preset]
        lines += [f"**{preset}** ({resolution}x{resolution}, global batch {batch}, {warmup} warm-up + {measured} measured steps per round)", "",
                  "| path | s/step | images/s | ratio to plain loop | fixed start-up + end (s) |", "|---|---|---|---|---|"]
        for label, e in paths.items():
            lines.append(f"| {label} | {e['s_per_step']:.3f} | {e['images_per_s']:.1f} | {e['ratio_to_plain']:.3f} | {e['fixed_s']:.1f} |")
        lines += ["", f"ZeRO with 2 Ray workers ({preset}): optimizer state and peak RSS of one worker process (rank 0)", "",
                  "| stage | s/step | ratio to plain loop | optimizer state (MiB) | peak RSS (MiB) |", "|---|---|---|---|---|"]
        for label, e in results["zero"][preset].items():
            lines.append(f"| {label} | {e['s_per_step']:.3f} | {e['ratio_to_plain']:.3f} | {e['optimizer_state_mib']:.2f} | {e['peak_rss_mib']:.0f} |")
        lines.append("")
    if "steps" in results["rng"]:
        lines += ["Per-image randomness, plain loop, tiny (whole step):", "", "| setting | s/step | ratio to default |", "|---|---|---|"]
        default = results["rng"]["steps"]["rng_block=32 (default)"]["s_per_step"]
        for label, e in results["rng"]["steps"].items():
            lines.append(f"| {label} | {e['s_per_step']:.3f} | {e['s_per_step'] / default:.3f} |")
        lines.append("")
    lines += ["Per-image randomness, the draws alone (teacher loss: t, Kac target, label dropout; 16x16 grey; median of 41):", "",
              "| draws | ms |", "|---|---|"]
    for label, seconds in results["rng"]["draws"].items():
        lines.append(f"| {label} | {seconds * 1000:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "distributed.md").write_text(text)
    (RESULTS / "distributed.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
