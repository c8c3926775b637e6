"""stage=teacher: train (or resume, or confirm) the Guided Kac Flow teacher, then draw a sample grid."""

from __future__ import annotations

import logging

from kacdist.config.schema import RunConfig
from kacdist.stages.common import stage_dir
from kacdist.train.teacher import TeacherResult, train_teacher

log = logging.getLogger(__name__)


def run_teacher(cfg: RunConfig) -> TeacherResult:
    result = train_teacher(cfg, stage_dir(cfg, "teacher"))
    log.info("teacher %s: step %d, %.1f kimg, checkpoint %s", result.status, result.step, result.kimg, result.checkpoint)
    if cfg.eval.after_teacher:
        from kacdist.stages.evaluate import run_eval

        run_eval(cfg)
    return result
