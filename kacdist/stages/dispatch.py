"""Which function a stage is, split where the execution layers need the split.

* ``train(cfg, workers)``: the training part of teacher / distill / ladder, run by every data-parallel
  worker (in this process, or in each Ray Train worker).
* ``after_training(cfg)``: what follows training in one process: the evaluation table asked for by
  ``eval.after_teacher`` or ``eval.after_ladder``, then the run's report (``report.after_stage``).
* ``run(cfg)``: the whole stage in this process (``cluster.workers=0``): ``train`` then ``after_training``
  for the training stages, or sample / eval (then the report) / kac_demo / report.

Stages know nothing of Ray or schedulers; ``kacdist.cluster`` decides where ``train`` runs.
"""

from __future__ import annotations

import logging
import sys

from kacdist.config.schema import RunConfig
from kacdist.train.workers import Workers

TRAINING_STAGES = ("teacher", "distill", "ladder")

log = logging.getLogger(__name__)


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
    report_after_stage(cfg)


def write_report(cfg: RunConfig):
    """stage=report: write the run's report; its path is the last line printed."""
    from kacdist.report import run_report

    path = run_report(cfg)
    print(f"report: {path}", flush=True)
    return path


def report_after_stage(cfg: RunConfig) -> None:
    """The run's report after a stage, when ``report.after_stage``. The stage's results are on disk
    whatever happens here, so a report that cannot be written is a warning naming the command that
    retries it, not a failed stage."""
    if not cfg.report.after_stage:
        return
    try:
        write_report(cfg)
    except Exception as err:  # noqa: BLE001 - any failure of the report; the stage itself succeeded
        log.warning("report not written (%s: %s); write it with: python jobs/launch.py stage=report run_name=%s "
                    "runs_dir=%s", type(err).__name__, err, cfg.run_name, cfg.runs_dir)


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

        rows = run_eval(cfg)
        report_after_stage(cfg)
        return rows
    if cfg.stage == "report":
        return write_report(cfg)
    if cfg.stage == "kac_demo":
        import runpy
        from pathlib import Path

        demo = Path(__file__).resolve().parents[2] / "jobs" / "kac_demo.py"
        sys.argv = [str(demo)]
        return runpy.run_path(str(demo), run_name="__main__")
    raise ValueError(f"stage={cfg.stage!r} has no runner")
