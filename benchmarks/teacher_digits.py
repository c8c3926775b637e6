"""Benchmark: the digits teacher's quality against NFE (the DistillKac Table B-5 pattern) and its speed.

    python benchmarks/teacher_digits.py [run_name=digits] [runs_dir=runs] [eval.num_samples=500] [...]

Trains the teacher first if the run has none (the same command as the README's main job), then evaluates
every integrator in {euler, midpoint, ab2} at 100/50/20/10/4/2/1 steps with w = 1.2, and AB-2 with w = 0,
on shared noise seeds, and writes benchmarks/results/teacher_digits.{md,json} with the training throughput
from the run's metrics. Any `key=value` override of jobs/launch.py applies.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

from kacdist.config import load_config
from kacdist.stages.common import setup_logging, stage_dir
from kacdist.stages.evaluate import format_table, run_eval
from kacdist.train.teacher import train_teacher

DEFAULTS = [
    "stage=eval",
    "eval.integrators=[euler,midpoint,ab2]",
    "eval.steps=[100,50,20,10,4,2,1]",
    "eval.guidance=[1.2]",
    "eval.students=false",  # students are measured by benchmarks/distill_digits.py
]


def main(argv: list[str]) -> None:
    setup_logging()
    cfg = load_config(DEFAULTS + argv)
    train_teacher(cfg, stage_dir(cfg, "teacher"))  # returns at once when the run is finished
    rows = run_eval(cfg)
    w0 = load_config(DEFAULTS + argv + ["eval.integrators=[ab2]", "eval.guidance=[0.0]"])
    rows += [r for r in run_eval(w0) if r["model"] != "real"]
    metrics = pq.read_table(stage_dir(cfg, "teacher") / "metrics.parquet").to_pylist()
    steady = sorted(r["images_per_s"] for r in metrics[1:-1]) or [metrics[-1]["images_per_s"]]
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    speed = (
        f"training: {metrics[-1]['kimg']:.0f} kimg, median {steady[len(steady) // 2]:.0f} images/s over "
        f"{len(steady)} logging windows (batch {cfg.train.batch_size}, preset {cfg.model.preset})"
    )
    (out / "teacher_digits.md").write_text(speed + "\n\n" + format_table(rows))
    (out / "teacher_digits.json").write_text(json.dumps({"rows": rows, "training": metrics}, indent=1, default=str))
    print(speed)
    print(format_table(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
