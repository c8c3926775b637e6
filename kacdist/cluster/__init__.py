"""Where a stage runs. ``execute(cfg)`` is what ``jobs/launch.py`` calls:

* ``cluster.workers=0``: the whole stage in this process (no Ray started, no DeepSpeed imported);
* ``cluster.workers>=1`` for a training stage: its training on Ray Train workers (``ray_train.fit``), then
  what follows training (an evaluation table) here, in one process.

Stages know nothing of this layer; this layer never touches tensors.
"""

from __future__ import annotations

from kacdist.config.schema import RunConfig


def execute(cfg: RunConfig, **fit_options):
    from kacdist.config.loader import save_run_config
    from kacdist.stages import dispatch

    distributed = cfg.cluster.workers >= 1 and cfg.stage in dispatch.TRAINING_STAGES
    if distributed:
        from kacdist.cluster.ray_train import plan_workers

        plan_workers(cfg)  # a run this machine cannot hold is refused before anything is written
    if cfg.stage in dispatch.TRAINING_STAGES:
        save_run_config(cfg)  # the run owns its config from its first training stage on (kacdist.config.run_config)
    if distributed:
        from kacdist.cluster.ray_train import fit

        fit(cfg, **fit_options)
        dispatch.after_training(cfg)
        return None
    return dispatch.run(cfg)
