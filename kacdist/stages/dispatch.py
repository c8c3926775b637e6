"""Which function a stage is, split where the execution layers need the split.

* ``train(cfg, workers)``: the training part of teacher / distill / ladder, run by every data-parallel
  worker (in this process, or in each Ray Train worker).
* ``after_training(cfg)``: what follows training in one process: the evaluation table asked for by
  ``eval.after_teacher`` or ``eval.after_ladder``.
* ``run(cfg)``: the whole stage in this process (``cluster.workers=0``): ``train`` then ``after_training``
  for the training stages, or sample / eval / kac_demo.

Stages know nothing of Ray or schedulers; ``kacdist.cluster`` decides where ``train`` runs.
"""

from __future__ import annotations

import sys

from kacdist.config.schema import RunConfig
from kacdist.train.workers import Workers

TRAINING_STAGES = ("teacher", "distill", "ladder")


def train(cfg: RunConfig, workers: Workers | None = None):
    if cfg.stage == "teacher":
        from kacdist.stages.teacher import run_teacher

        return run_teacher(cfg, workers)
    if cfg.stage == "distill":
        from kacdist.stages.distill import run_distill

        return run_distill(cfg, workers=workers)
    if cfg.stage == "ladder":
        from kacdist.stages.distill import run_ladder

        return run_ladder(cfg, workers)
    raise ValueError(f"stage={cfg.stage!r} does not train; training stages: {', '.join(TRAINING_STAGES)}")


def after_training(cfg: RunConfig) -> None:
    if (cfg.stage == "teacher" and cfg.eval.after_teacher) or (cfg.stage == "ladder" and cfg.eval.after_ladder):
        from kacdist.stages.evaluate import run_eval

        run_eval(cfg)


def run(cfg: RunConfig):
    """Run the stage of ``cfg`` in this process."""
    if cfg.stage in TRAINING_STAGES:
        result = train(cfg)
        after_training(cfg)
        return result
    if cfg.stage == "sample":
        from kacdist.stages.sample import run_sample

        return run_sample(cfg)
    if cfg.stage == "eval":
        from kacdist.stages.evaluate import run_eval

        return run_eval(cfg)
    if cfg.stage == "kac_demo":
        import runpy
        from pathlib import Path

        demo = Path(__file__).resolve().parents[2] / "jobs" / "kac_demo.py"
        sys.argv = [str(demo)]
        return runpy.run_path(str(demo), run_name="__main__")
    raise ValueError(f"stage={cfg.stage!r} has no runner")
