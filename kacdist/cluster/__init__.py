"""Where a stage runs. ``execute(cfg)`` is what ``jobs/launch.py`` calls:

* ``stage=status`` / ``stage=cancel``: a run's stages and jobs (``kacdist.cluster.status``);
* ``cluster.kind=slurm``: submit the stage's jobs and return (``kacdist.cluster.slurm``); each job then
  calls ``run_here`` on its node;
* ``cluster.kind=local``: ``run_here(cfg)``.

``run_here`` runs a stage on this machine (or allocation): with ``cluster.workers=0`` the whole stage in this
process (no Ray started, no DeepSpeed imported); with ``cluster.workers>=1`` its training on Ray Train workers
(``ray_train.fit``), then what follows training (an evaluation table) here. Training stages hold the run's
lock (``kacdist.cluster.lock``) and save the run's config.

Stages know nothing of this layer; this layer never touches tensors.
"""

from __future__ import annotations

from kacdist.config.schema import RunConfig

# stages that train into the run directory: one writer at a time (kacdist.cluster.lock); sample and eval only
# read the stages and write their own folders
WRITING_STAGES = ("teacher", "distill", "ladder", "tune")


def execute(cfg: RunConfig, **fit_options):
    if cfg.stage in ("status", "cancel"):
        from kacdist.cluster import status

        return status.show(cfg) if cfg.stage == "status" else status.cancel(cfg)
    if cfg.cluster.kind == "slurm":
        from kacdist.cluster.slurm import submit

        return submit(cfg)
    return run_here(cfg, **fit_options)



def run_here(cfg: RunConfig, *, stop=None, lock: bool = True, plan=None, **fit_options):
    """Run the stage of ``cfg`` here. ``stop``: a ``preemption.StopOnSignal`` (inside a SLURM job) that makes
    training checkpoint and raise ``StopRequested`` at its next step; ``lock=False`` when the caller holds the
    run's lock already (a SLURM job holds it for its submission); ``plan``: the Ray workers of an allocation."""
    from kacdist.cluster import lock as run_lock
    from kacdist.config.loader import save_run_config
    from kacdist.stages import dispatch
    from kacdist.stages.common import run_root

    if cfg.stage not in WRITING_STAGES:
        return dispatch.run(cfg)
    distributed = cfg.cluster.workers >= 1
    if distributed and plan is None:
        from kacdist.cluster.ray_train import plan_workers

        plan = plan_workers(cfg)  # a run this machine cannot hold is refused before anything is written
    holder = run_lock.this_process() if lock else None
    if holder is not None:
        run_lock.acquire(run_root(cfg), holder)
    try:
        if cfg.stage == "tune":  # a Ray Tune experiment of teachers (kacdist.cluster.tune); under SLURM a stop
            from kacdist.cluster.tune import run_tune  # signal requeues at once and the rerun restores the sweep

            return run_tune(cfg)
        save_run_config(cfg)  # the run owns its config from its first training stage on (kacdist.config.run_config)
        if stop is not None:
            stop.armed = True
        if distributed:
            from kacdist.cluster.ray_train import fit

            result = fit(cfg, stop=stop, plan=plan, **fit_options)
        else:
            from kacdist.train.workers import Workers

            result = dispatch.train(cfg, Workers(stop_requested=stop.requested if stop is not None else None))
        if stop is not None:
            stop.armed = False
            if stop.requested():  # came after the last step: training is done; requeue for what follows
                stop.hand_over()
        dispatch.after_training(cfg)
        return result
    finally:
        if holder is not None:
            run_lock.release(run_root(cfg), holder)
