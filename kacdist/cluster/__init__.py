"""Where a stage runs. ``execute(cfg)`` is what ``jobs/launch.py`` calls:

* ``cluster.workers=0``: the whole stage in this process (no Ray started, no DeepSpeed imported);
* ``cluster.workers>=1`` for a training stage: its training on Ray Train workers (``ray_train.fit``), then
  what follows training (an evaluation table) here, in one process.

Stages know nothing of this layer; this layer never touches tensors.
"""

from __future__ import annotations

from kacdist.config.schema import RunConfig


def execute(cfg: RunConfig, **fit_options):
    from kacdist.stages import dispatch

    if cfg.cluster.workers >= 1 and cfg.stage in dispatch.TRAINING_STAGES:
        from kacdist.cluster.ray_train import fit

        fit(cfg, **fit_options)
        dispatch.after_training(cfg)
        return None
    return dispatch.run(cfg)
