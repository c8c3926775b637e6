"""One small real run for the report tests, built once: the tiny UNet on the digits shards, a teacher of
two steps, the ladder 4 → 2 → 1 (two steps per rung) and stage=eval with 10 images, run the way
`python jobs/launch.py stage=ladder` runs it (kacdist.cluster.execute), so the report is written after the
evaluation (report.after_stage); then one stage=sample grid of the last student."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


def run_args(tmp_path: Path) -> list[str]:
    return [
        f"runs_dir={tmp_path / 'runs'}", f"dataset.cache_dir={tmp_path / 'cache'}", "train.threads=1",
        "train.batch_size=16", "train.total_kimg=0.032", "train.checkpoint_every_kimg=0.032",
        "train.log_every_kimg=0.016", "train.sample_every_kimg=0.016", "sample.steps=4", "sample.num_images=20",
        "sample.batch_size=10",
        "distill.ladder=[4,2,1]", "distill.batch_size=8", "distill.total_kimg=0.016",
        "distill.checkpoint_every_kimg=0.016", "distill.log_every_kimg=0.008",
        "eval.num_samples=10", "eval.integrators=[euler,ab2]", "eval.steps=[4,2]", "eval.guidance=[1.2]",
        "eval.seeds=[0]", "eval.after_ladder=true", "report.trajectory_samples=16",
    ]


@dataclass
class ReportRun:
    tmp_path: Path
    root: Path  # runs/digits
    args: list[str]


@pytest.fixture(scope="package")
def report_run(tmp_path_factory) -> ReportRun:
    from kacdist.cluster import execute
    from kacdist.config import load_config

    tmp_path = tmp_path_factory.mktemp("report-run")
    args = run_args(tmp_path)
    # built before the function-scoped autouse fixtures of tests/conftest.py apply: the same settings here
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        patch.setenv("WANDB_MODE", "disabled")
        execute(load_config(["stage=ladder"] + args))
        execute(load_config(["stage=sample", "sample.source=distill-2-1"] + args))
    return ReportRun(tmp_path, tmp_path / "runs" / "digits", args)
