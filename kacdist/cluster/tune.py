"""stage=tune: a Ray Tune experiment over the Kac process (a, c, g), each trial a teacher trained by the
project's own loop (kacdist.train.teacher) for ``tune.trial_kimg``.

The trial function builds the trial's config (the run's, with the setting's a, c, g, the trial budget and
``train.eval_every_kimg = tune.report_every_kimg``) and trains the teacher in
``runs/<run>/tune/trials/<a..-c..-g..-seed..>/teacher``: in the trial's process when ``cluster.workers=0``
(the loop's monitor reports each evaluation to Tune, so ASHA can stop the trial there), or through the Ray
Train path (``ray_train.fit``) with ``cluster.workers>=1``, the trial reporting the evaluations as rank 0
writes them to the metrics table. Every trial scores with the same sampling seeds (the teacher's monitor).

An interrupted sweep (Ctrl-C, a requeued SLURM job) is resumed by the same command: ``Tuner.restore`` keeps
the finished trials, and an unfinished trial's loop resumes from its own newest checkpoint. After the sweep
the winner is trained again with ``tune.spread_seeds`` (a second, small experiment) to put the seed-to-seed
spread beside the differences between settings. Results: kacdist.tune.results.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from kacdist.config.schema import RunConfig
from kacdist.stages.common import run_root
from kacdist.tune.space import Setting

log = logging.getLogger(__name__)

METRIC = "metric"


def tune_root(cfg: RunConfig) -> Path:
    return run_root(cfg).resolve() / "tune"  # absolute: Ray's storage_path takes no relative path


def trial_budget(cfg: RunConfig) -> tuple[float, float]:
    """(trial kimg, report interval kimg) in whole steps of ``train.batch_size``, the budget rounded up to a
    whole number of intervals: every trial ends on an evaluation, and ASHA's rungs fall on reports."""
    import math

    batch = cfg.train.batch_size
    per_report = max(1, round(cfg.tune.report_every_kimg * 1000 / batch))
    reports = max(1, math.ceil(cfg.tune.trial_kimg * 1000 / batch / per_report))
    return reports * per_report * batch / 1000, per_report * batch / 1000


def trial_config(cfg: RunConfig, setting: Setting) -> RunConfig:
    total, every = trial_budget(cfg)
    return replace(
        cfg, stage="teacher", runs_dir=str(tune_root(cfg) / "trials"), run_name=setting.label,
        kac=replace(cfg.kac, a=setting.a, c=setting.c, g=setting.g),
        train=replace(cfg.train, total_kimg=total, eval_every_kimg=every, seed=setting.seed,
                      checkpoint_every_kimg=every, early_stop_patience=0, sample_every_kimg=0.0),
        eval=replace(cfg.eval, after_teacher=False),
    )


def data_sample(cfg: RunConfig, n: int = 2000) -> torch.Tensor:
    """Up to ``n`` training images in [-1, 1], for the proposal."""
    if cfg.dataset.source == "digits":
        from kacdist.eval.classifier import digits_tensors

        return digits_tensors("train", cfg.dataset.resolution, cfg.dataset.channels)[0][:n]
    from kacdist.stages.evaluate import images_after

    return images_after(cfg.dataset, 0, n)[0]


def _fd_rows(stage_dir: Path, batch_size: int) -> list[tuple[float, float]]:
    """(kimg, metric) of every evaluation in a trial's metrics table."""
    path = stage_dir / "metrics.parquet"
    if not path.exists():
        return []
    import pyarrow.parquet as pq

    return [(r["step"] * batch_size / 1000, r["fd"]) for r in pq.read_table(path).to_pylist() if r.get("fd") is not None]


def _trial(config: dict, base: RunConfig) -> None:
    """One Tune trial (runs in a Tune actor)."""
    from ray import tune

    from kacdist.stages.common import setup_logging, stage_dir
    from kacdist.stages.teacher import _monitor
    from kacdist.train.teacher import train_teacher

    setup_logging()
    setting = Setting(**config["setting"])
    cfg = trial_config(base, setting)
    out = stage_dir(cfg, "teacher")
    batch = cfg.train.batch_size
    if cfg.cluster.workers == 0:
        torch.set_num_threads(config["threads"])
        monitor = _monitor(cfg)
        fresh: list[float] = []

        def scoring_monitor(model, step: int) -> float:
            fresh.append(monitor(model, step))
            return fresh[-1]

        last_step = round(cfg.train.total_kimg * 1000 / batch)

        def report_after_checkpoint(step: int, path: Path) -> None:
            # evaluations and checkpoints fall on the same steps (trial_config); reporting once the checkpoint
            # and the metrics row are on disk means a trial that ASHA stops here loses nothing. The last report
            # waits for DONE: Tune ends a trial as soon as it reports its budget
            if fresh and step < last_step:
                tune.report({METRIC: fresh.pop(), "kimg": step * batch / 1000})
                fresh.clear()

        train_teacher(cfg, out, monitor=scoring_monitor, on_checkpoint=report_after_checkpoint)
        rows = _fd_rows(out, batch)
        if rows:
            tune.report({METRIC: rows[-1][1], "kimg": rows[-1][0]})
        return
    # Ray Train inside the trial: training runs in a thread, this one reports each evaluation as it lands
    from kacdist.cluster.ray_train import fit

    failure: list[BaseException] = []

    def train() -> None:
        try:
            fit(cfg)
        except BaseException as err:  # noqa: BLE001 - re-raised in the trial's thread
            failure.append(err)

    worker = threading.Thread(target=train, name="ray-train-fit", daemon=True)
    worker.start()
    reported = 0
    while True:
        alive = worker.is_alive()
        rows = _fd_rows(out, batch)
        # the budget's own report waits for the end of training (DONE): Tune ends a trial when it comes
        for kimg, value in rows[reported:]:
            if alive and kimg >= cfg.train.total_kimg - 1e-9:
                break
            tune.report({METRIC: value, "kimg": kimg})
            reported += 1
        if not alive:
            break
        time.sleep(1.0)
    if failure:
        raise failure[0]


def _records(grid, cfg: RunConfig, origin_of: dict[str, str]):
    from kacdist.stages.common import stage_dir
    from kacdist.tune.results import TrialRecord

    records = []
    for setting, result, _ in _trials(grid):
        trial_cfg = trial_config(cfg, setting)
        rows = _fd_rows(stage_dir(trial_cfg, "teacher"), trial_cfg.train.batch_size)
        metrics = result.metrics or {}
        records.append(TrialRecord(
            setting.label, setting.a, setting.c, setting.g, setting.seed, origin_of.get(setting.label, setting.origin),
            kimg=[k for k, _ in rows], metric=[v for _, v in rows], wall_s=float(metrics.get("time_total_s") or 0.0),
            budget_kimg=trial_budget(cfg)[0], error=str(result.error).splitlines()[0] if result.error else ""))
    return records


def _run_experiment(cfg: RunConfig, name: str, settings: list[Setting], scheduler, resources: dict, threads: int):
    """The experiment's ResultGrid, restored when it exists; KeyboardInterrupt when it was interrupted
    (Ctrl-C: Tune saved its state; the same command resumes it)."""
    grid = _fit_or_restore(cfg, name, settings, scheduler, resources, threads)
    if _interrupted(grid, settings):
        raise KeyboardInterrupt
    return grid


def _interrupted(grid, settings: list[Setting]) -> bool:
    """Tune returns normally after a Ctrl-C: the sweep is whole when every setting has a trial and every trial
    ended (TERMINATED: finished or stopped by ASHA; ERROR); grid_search creates trials lazily, so an
    interrupted sweep may lack some, and the one that was running is saved as PENDING."""
    trials = _trials(grid)
    have = {setting.label for setting, _, _ in trials}
    if not {s.label for s in settings} <= have:
        return True
    statuses = [status for _, _, status in trials]
    log.debug("tune: trial states %s", statuses)
    return any(status not in ("TERMINATED", "ERROR") for status in statuses) or (
        grid.num_terminated + grid.num_errors < len(grid))


def _trials(grid) -> list[tuple[Setting, object, str]]:
    """(setting, Result, status) of each trial in the grid. The setting comes from the trial, not the Result:
    a Result's config is its last report's, None for a trial interrupted (or failed) before its first report."""
    trials = grid._experiment_analysis.trials  # the grid's Results are built from these, in order (no public accessor)
    return [(Setting(**trial.config["setting"]), result, trial.status) for trial, result in zip(trials, grid)]


def _fit_or_restore(cfg: RunConfig, name: str, settings: list[Setting], scheduler, resources: dict, threads: int):
    from ray import tune

    from kacdist.cluster.tune_progress import SweepProgress

    storage = tune_root(cfg) / "ray"
    path = storage / name
    trainable = tune.with_resources(tune.with_parameters(_trial, base=cfg), resources)
    wanted = {s.label for s in settings}
    if tune.Tuner.can_restore(str(path)):
        log.info("tune: restoring %s (finished trials are kept, unfinished ones resume from their checkpoints)", path)
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
        grid = tuner.fit()
        done = {setting.label for setting, _, _ in _trials(grid)}
        if wanted <= done:
            return grid
        raise RuntimeError(f"{path} holds another sweep (trials {sorted(done)}); delete it or use another run_name")
    tuner = tune.Tuner(
        trainable,
        param_space={"setting": tune.grid_search([asdict(s) for s in settings]), "threads": threads},
        tune_config=tune.TuneConfig(metric=METRIC, mode="min", scheduler=scheduler,
                                    max_concurrent_trials=cfg.tune.max_concurrent),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0),
                                  callbacks=[SweepProgress(len(settings), name)]),  # restored with the experiment
    )
    return tuner.fit()


def run_tune(cfg: RunConfig, echo=print):
    """The sweep of ``cfg.tune``; returns the summary (kacdist.tune.results.Summary)."""
    import ray
    from ray.tune.schedulers import ASHAScheduler

    from kacdist.cluster.ray_train import WorkerPlan, available_cores, plan_workers, start_ray
    from kacdist.stages.teacher import monitor_name
    from kacdist.tune.proposal import propose
    from kacdist.tune.results import write_all
    from kacdist.tune.space import sweep_settings

    began = time.time()
    # trials run in other processes: every path they use is absolute, and they keep this working directory
    cfg = replace(cfg, runs_dir=str(Path(cfg.runs_dir).expanduser().resolve()))
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    tc = cfg.tune
    root = tune_root(cfg)
    root.mkdir(parents=True, exist_ok=True)
    from kacdist.track.provenance import record_provenance

    record_provenance(root, "tune")  # each start or restore of the sweep
    proposal = propose(data_sample(cfg))
    echo(proposal.describe())
    settings = sweep_settings(tc, proposal.setting if tc.proposal else None)
    metric_name = monitor_name(trial_config(cfg, settings[0]))
    cores = available_cores()
    if cfg.cluster.workers:
        plan_workers(cfg)  # refused before Ray starts when the machine cannot hold the trial's workers
        # the trial only drives Ray Train; its workers hold the CPUs (a trial holding one would deadlock 2 cores)
        resources, threads, concurrent = {"cpu": 0.01}, 1, 1
        if tc.max_concurrent > 1:
            log.warning("tune.max_concurrent=%d with cluster.workers=%d: trials run one at a time", tc.max_concurrent, cfg.cluster.workers)
        cfg = replace(cfg, tune=replace(tc, max_concurrent=1))
    else:
        threads = tc.cpus_per_trial or max(1, cores // tc.max_concurrent)
        resources = {"cpu": threads, **({"gpu": tc.gpus_per_trial} if tc.gpus_per_trial else {})}
        concurrent = tc.max_concurrent
    budget, every = trial_budget(cfg)
    echo(f"tune: {len(settings)} settings, {budget:g} kimg each, {metric_name} every {every:g} kimg; "
         f"ASHA grace {tc.grace_kimg:g} kimg, reduction factor {tc.reduction_factor}; {concurrent} at a time; "
         f"results in {root}")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    started_here = not ray.is_initialized()
    if started_here:
        # with Ray Train inside a trial, the trial's 0.01 CPU would leave the workers short of whole cores: Ray
        # gets one logical CPU more than the machine has, for the trial's driver (which only waits)
        start_ray(WorkerPlan(0, False, threads, cores + (1 if cfg.cluster.workers else 0)), None)
    try:
        scheduler = ASHAScheduler(time_attr="kimg", max_t=budget, grace_period=min(tc.grace_kimg, budget),
                                  reduction_factor=tc.reduction_factor)
        grid = _run_experiment(cfg, "sweep", settings, scheduler, resources, threads)
        origins = {s.label: s.origin for s in settings}
        records = _records(grid, cfg, origins)
        completed = sorted((r for r in records if r.completed), key=lambda r: r.final)
        if completed and tc.spread_seeds:
            w = completed[0]
            again = [Setting(w.a, w.c, w.g, seed, origin="spread") for seed in tc.spread_seeds if seed != w.seed]
            echo(f"tune: winner a={w.a:g} c={w.c:g} g={w.g}; training it with seeds {[s.seed for s in again]} for the spread")
            spread_grid = _run_experiment(cfg, f"spread-{Setting(w.a, w.c, w.g).label}", again, None, resources, threads)
            records += _records(spread_grid, cfg, {s.label: "spread" for s in again})
    finally:
        if started_here:
            ray.shutdown()
    command = f"python jobs/launch.py stage=tune run_name={cfg.run_name}"
    summary = write_all(root, records, metric_name, proposal.describe(), time.time() - began, command,
                        (proposal.setting.a, proposal.setting.c, proposal.setting.g))
    echo((root / "summary.md").read_text())
    if summary.winner is not None:
        w = summary.winner
        echo(f"best setting: {root / 'best.yaml'}  ->  python jobs/launch.py stage=teacher settings={root / 'best.yaml'}   "
             f"(the same as kac.a={w.a:g} kac.c={w.c:g} kac.g={w.g})")
    return summary
