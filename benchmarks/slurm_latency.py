"""How long the scheduler layer takes on a real SLURM: submission to the stage's start, and a time-limit
requeue to the resumed stage, read from the run's event log (``<run>/slurm/events.jsonl``).

    python benchmarks/slurm_latency.py [--jobs 5] [--work /tmp/kacdist-slurm-bench]

Needs a cluster that answers (``bash .ci/slurm-local.sh start`` as root for a local one). Submits ``--jobs``
tiny digits teachers one after another (``python jobs/launch.py stage=teacher cluster=slurm``, as the README
writes it), then one teacher with a 1-minute limit whose stop signal comes 45 s early, so that it is requeued
several times. Also times one checkpoint write of the tiny model, to set beside ``cluster.signal_delay_s``.
Writes benchmarks/results/slurm_latency.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TINY = ["train.batch_size=32", "train.log_every_kimg=1.6", "eval.after_teacher=false", "sample.num_images=4",
        "sample.steps=2", "cluster=slurm", "cluster.timeout_min=5", "cluster.signal_delay_s=60"]


def launch(*args: str) -> str:
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "launch.py"), *args], capture_output=True, text=True, check=True)
    return next(line.split(": job ")[1].split()[0] for line in out.stdout.splitlines() if line.startswith("submitted "))


def wait(job: str) -> str:
    while True:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", job], capture_output=True, text=True).stdout.split()
        if out and out[-1] not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING"):
            return out[-1]
        time.sleep(1)


def events(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "slurm" / "events.jsonl").read_text().splitlines()]


def checkpoint_seconds(work: Path) -> float:
    import torch

    from kacdist.config import load_config
    from kacdist.train.checkpoint import save_checkpoint
    from kacdist.train.teacher import build_model

    model = build_model(load_config([]))
    state = {"model": model.state_dict(), "ema": model.state_dict(),
             "optimizer": {k: torch.zeros_like(v) for k, v in model.state_dict().items()}, "step": 1}
    times = []
    for i in range(5):
        began = time.perf_counter()
        save_checkpoint(work / "ckpt", i + 1, state, keep=1)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--work", default="/tmp/kacdist-slurm-bench")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    starts = []
    for i in range(args.jobs):
        job = launch("stage=teacher", f"runs_dir={work}", f"run_name=s{i}", "train.total_kimg=0.32", *TINY)
        assert wait(job) == "COMPLETED", job
        seen = events(work / f"s{i}")
        starts.append(next(e["time"] for e in seen if e["event"] == "started") - seen[0]["time"])
    job = launch("stage=teacher", f"runs_dir={work}", "run_name=tl", "train.total_kimg=19.2", "train.checkpoint_every_kimg=3.2",
                 *TINY, "cluster.timeout_min=1", "cluster.signal_delay_s=45")
    assert wait(job) == "COMPLETED", job
    seen = events(work / "tl")
    resumes = [b["time"] - a["time"] for a, b in zip(seen, seen[1:]) if a["event"] == "stopped" and b["event"] == "started"]
    ckpt = checkpoint_seconds(work)
    result = {"submit_to_start_s": starts, "requeue_to_resume_s": resumes, "tiny_checkpoint_s": ckpt,
              "submit_to_start_median_s": statistics.median(starts),
              "requeue_to_resume_median_s": statistics.median(resumes) if resumes else None}
    rows = [("submission to start (hold, release, schedule, Python start-up)", len(starts), result["submit_to_start_median_s"],
             min(starts), max(starts))]
    if resumes:
        rows.append(("stop signal handled to resumed stage (requeue, restart)", len(resumes), result["requeue_to_resume_median_s"],
                     min(resumes), max(resumes)))
    lines = ["| what | n | median s | min s | max s |", "|---|---|---|---|---|"]
    lines += [f"| {w} | {n} | {m:.1f} | {lo:.1f} | {hi:.1f} |" for w, n, m, lo, hi in rows]
    lines.append(f"\nOne checkpoint of the tiny digits model (model, EMA, optimizer state): {ckpt * 1000:.0f} ms (median of 5).")
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "slurm_latency.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "slurm_latency.md").write_text(
        "# SLURM latency\n\n`python benchmarks/slurm_latency.py` on the one-node SLURM 22.05 of `.ci/slurm-local.sh` "
        "(2-core VM; `sched_interval=1`, `cred_expire=5`).\n\n" + table + "\n")


if __name__ == "__main__":
    main()
