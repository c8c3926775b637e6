"""Ray Train executor: the training part of a stage on ``cluster.workers`` data-parallel workers.

``fit(cfg)`` runs ``kacdist.stages.dispatch.train(cfg, workers)`` in each worker of a ``TorchTrainer``
(Ray Train v2): Ray creates the process group (gloo on CPU, NCCL on GPU, with ``cluster.collective_timeout_s``
so a dead peer ends in an error, never a hang), the worker builds its ``Workers`` context (rank, world size,
its device, the checkpoint report hook) and calls the same stage function as the in-process path. A worker
failure restarts the whole group up to ``cluster.max_failures`` times; the restarted stage resumes from the
newest complete checkpoint on disk (rank 0 picks it, every rank loads it).

Checkpoints: the authoritative copy is the stage's own ``checkpoints/ckpt-<step>.pt`` (written once, by
rank 0, atomically). What is reported to Ray is a pointer: a directory holding ``checkpoint.json`` with the
step and that file's path, kept under ``<run>/ray/<stage>/`` (Ray's ``storage_path``), the newest one only.
A 9 GB LSUN checkpoint is therefore never copied, and a checkpoint written but never reported (a hard crash
between the two) is still found, because resume reads the disk, not Ray's record.

A non-finite loss is final: every rank sees it at the same step (the loss is all-reduced), the workers
return normally so that Ray does not retry, and ``fit`` raises ``NonFiniteLossError`` with the step and the
last good checkpoint. Any other failure beyond ``max_failures`` raises ``DistributedRunError`` with the
workers' tracebacks, the run directory and the last good checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from kacdist.config.schema import RunConfig
from kacdist.stages.common import run_root
from kacdist.train.checkpoint import list_checkpoints
from kacdist.train.loop import NonFiniteLossError, StopRequested

log = logging.getLogger(__name__)

NONFINITE_FILE = "nonfinite.txt"
FINISHED_FILE = "finished"
STOP_FILE = "stop"  # written by the driver on a preemption signal; every worker looks for it each step
STOPPED_FILE = "stopped.json"  # written by rank 0 once the workers checkpointed and stopped on request


class LaunchError(RuntimeError):
    """The run cannot start on this machine as configured (refused before Ray starts)."""


class DistributedRunError(RuntimeError):
    """Ray Train gave up on the stage after ``cluster.max_failures`` restarts."""


@dataclass
class WorkerPlan:
    workers: int
    use_gpu: bool
    threads: int  # torch CPU threads per worker
    cores: int


def available_cores() -> int:
    """This process's cores: its CPU affinity, and inside a SLURM job no more than the job holds on this node."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    allocated = os.environ.get("SLURM_CPUS_ON_NODE", "")
    return min(cores, int(allocated)) if allocated.isdigit() and int(allocated) > 0 else cores


def plan_workers(cfg: RunConfig, cores: int | None = None, gpus: int | None = None) -> WorkerPlan:
    """Workers, device kind and threads per worker for this machine, or a LaunchError naming the key.

    Checked before Ray starts: Ray Train v2 would otherwise wait for resources that never come."""
    n = cfg.cluster.workers
    cores = available_cores() if cores is None else cores
    gpus = torch.cuda.device_count() if gpus is None else gpus
    use_gpu = cfg.train.device == "cuda" or (cfg.train.device == "auto" and gpus > 0)
    if use_gpu and n > gpus:
        raise LaunchError(f"cluster.workers={n} needs {n} GPUs (one process per GPU) but this machine has {gpus}")
    if not use_gpu and n > cores:
        raise LaunchError(
            f"cluster.workers={n} is more than the {cores} CPU cores of this machine: each CPU worker needs a core; "
            f"use cluster.workers<={cores}")
    # workers x threads never exceeds the cores: train.threads is capped at cores / workers (a dataset preset
    # such as digits sets threads for the one in-process worker)
    fair = max(1, cores // n)
    threads = min(cfg.train.threads, fair) if cfg.train.threads else fair
    if cfg.train.threads > threads:
        log.info("train.threads=%d capped at %d per worker: %d workers share %d cores", cfg.train.threads, threads, n, cores)
    return WorkerPlan(n, use_gpu, threads, cores)


def storage_dir(cfg: RunConfig) -> Path:
    """Ray's storage_path: inside the run directory, so a run stays one folder (absolute: Ray takes no
    relative storage path, and the default runs_dir is the relative "runs")."""
    return run_root(cfg).resolve() / "ray"


def _trial_name(cfg: RunConfig) -> str:
    return cfg.stage


def _quiet_ray_logs() -> None:
    """In every Ray process of the run: Ray Train's per-report INFO lines and the placement-group cleaner's
    'State API unavailable' warnings (no dashboard here) would drown the one log line per interval."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)
    try:  # Ray 2.60 names this logger by its file path, outside "ray.train": "Reporting training result ..."
        from ray.train.v2._internal.execution import context

        context.logger.setLevel(logging.WARNING)
    except (ImportError, AttributeError):
        pass


def _worker_logging(rank: int) -> None:
    _quiet_ray_logs()
    logger = logging.getLogger("kacdist")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    logger.addHandler(handler)
    logger.propagate = False
    # rank 0 speaks for the run; the others only warn
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def _train_worker(config: dict) -> None:
    """The function each Ray Train worker runs (the shape of Ray's TorchTrainer + DeepSpeed example)."""
    import ray.train

    from kacdist.stages import dispatch
    from kacdist.train.workers import Workers

    cfg: RunConfig = config["cfg"]
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    _worker_logging(rank)
    torch.set_num_threads(config["threads"])
    if config["use_gpu"]:
        import ray.train.torch

        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")

    def report(step: int, path: Path | None) -> None:
        metrics = {"step": step}
        if path is None:  # every rank reports, the same number of times; rank 0 brings the pointer
            ray.train.report(metrics, checkpoint=None)
            return
        pointer = Path(tempfile.mkdtemp(prefix="kacdist-ckpt-"))
        try:
            (pointer / "checkpoint.json").write_text(json.dumps({"step": step, "path": str(path)}))
            # named after the stage directory and step: a ladder reports several stages under one Ray run
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(pointer)),
                             checkpoint_dir_name=f"{path.parent.parent.name}-{step:09d}")
        finally:
            shutil.rmtree(pointer, ignore_errors=True)

    stop_file = Path(config["storage"]) / STOP_FILE
    workers = Workers(rank=rank, world_size=ctx.get_world_size(), local_rank=ctx.get_local_rank(), device=device,
                      report=report, hook=config.get("hook"), stop_requested=stop_file.exists)
    try:
        dispatch.train(cfg, workers)
    except NonFiniteLossError as err:
        # final, not a failure to retry: every rank stopped at the same step; rank 0 tells the driver
        if rank == 0:
            (Path(config["storage"]) / NONFINITE_FILE).write_text(str(err))
        return
    except StopRequested as stopped:  # checkpointed at a step boundary on request: the driver requeues
        if rank == 0:
            (Path(config["storage"]) / STOPPED_FILE).write_text(json.dumps(
                {"name": stopped.name, "step": stopped.step, "checkpoint": str(stopped.checkpoint)}))
        return
    if rank == 0:  # the driver tells a finished run from one that Ray Train aborted (Ctrl-C)
        (Path(config["storage"]) / FINISHED_FILE).write_text("")


def _last_good_checkpoint(cfg: RunConfig) -> str:
    root = run_root(cfg)
    found = sorted((p for d in root.iterdir() if d.is_dir() for _, p in list_checkpoints(d / "checkpoints")),
                   key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    return str(found[-1]) if found else "none"


def start_ray(plan: WorkerPlan, address: str | None) -> None:
    """A Ray for this run: a new local one with ``plan.cores`` CPUs, or the cluster at ``address``."""
    import threading

    import ray

    from kacdist.cluster.preemption import children_ignore_signal

    kwargs = dict(include_dashboard=False, log_to_driver=True, logging_level=logging.ERROR,
                  logging_config=ray.LoggingConfig(encoding="TEXT", log_level="WARNING"),
                  runtime_env={"worker_process_setup_hook": _quiet_ray_logs})
    if address:  # a Ray cluster across a SLURM allocation, started by kacdist.cluster.ray_cluster
        kwargs["address"] = address
    else:  # a new Ray of our own, even when another job's Ray runs on this node
        kwargs.update(address="local", num_cpus=plan.cores, num_gpus=torch.cuda.device_count())
    # ray.init configures the root logger for its own WARNING level: the driver's log lines (the evaluation
    # that follows training, the SLURM job's messages) keep this process's configuration
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    if threading.current_thread() is threading.main_thread():
        with children_ignore_signal():  # Ray's daemons and workers must outlive a job-wide USR2
            ray.init(**kwargs)
    else:
        ray.init(**kwargs)
    root.setLevel(level)
    root.handlers[:] = handlers


def fit(cfg: RunConfig, *, hook=None, stop=None, address: str | None = None, plan: WorkerPlan | None = None) -> None:
    """Train the stage of ``cfg`` on ``cluster.workers`` Ray Train workers (starting a local Ray if none runs).

    ``stop``: a ``kacdist.cluster.preemption.StopOnSignal`` whose signal makes every worker checkpoint at its
    next step and stop (``StopRequested`` is raised here). ``address``: a running Ray cluster to use (the
    nodes of a SLURM allocation); ``plan``: the workers to run there (default: this machine's).
    ``hook(event, step, rank)``: test-only fault injection, run in the workers (``Workers.hook``)."""
    plan = plan or plan_workers(cfg)
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig as RayRunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    storage = storage_dir(cfg)
    trial = storage / _trial_name(cfg)
    trial.mkdir(parents=True, exist_ok=True)
    for name in (NONFINITE_FILE, FINISHED_FILE, STOP_FILE, STOPPED_FILE):
        (trial / name).unlink(missing_ok=True)
    if stop is not None:
        stop.add_stop_file(trial / STOP_FILE)
    started_here = not ray.is_initialized()
    if started_here:
        start_ray(plan, address)
    _quiet_ray_logs()
    resources = {"CPU": plan.threads, **({"GPU": 1} if plan.use_gpu else {})}
    # the workers train with the planned threads (a preset's train.threads is for one in-process worker)
    worker_cfg = replace(cfg, train=replace(cfg.train, threads=plan.threads))
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"cfg": worker_cfg, "threads": plan.threads, "use_gpu": plan.use_gpu, "storage": str(trial),
                           "hook": hook},
        torch_config=TorchConfig(backend="nccl" if plan.use_gpu else "gloo", timeout_s=cfg.cluster.collective_timeout_s),
        scaling_config=ScalingConfig(num_workers=plan.workers, use_gpu=plan.use_gpu, resources_per_worker=resources),
        run_config=RayRunConfig(
            name=_trial_name(cfg), storage_path=str(storage),
            failure_config=FailureConfig(max_failures=cfg.cluster.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            logging_config=LoggingConfig(log_level="WARNING"),  # Ray Train's own INFO lines off the console
        ),
    )
    log.info("%s: %d Ray Train workers (%s, %d threads each), run directory %s", cfg.stage, plan.workers,
             "GPU" if plan.use_gpu else "CPU", plan.threads, run_root(cfg))
    try:
        trainer.fit()
    except SystemExit:  # Ray Train's SIGINT handler aborts the run and exits the driver
        raise KeyboardInterrupt from None
    except Exception as err:  # noqa: BLE001 - Ray's error types differ by version; all end here
        raise DistributedRunError(
            f"stage {cfg.stage} failed on its Ray Train workers after cluster.max_failures={cfg.cluster.max_failures} "
            f"restarts. Run directory: {run_root(cfg)}; last good checkpoint: {_last_good_checkpoint(cfg)}. "
            f"Rerun the same command to resume from it.\n{err}"
        ) from None
    finally:
        if started_here:
            ray.shutdown()
    stopped = trial / NONFINITE_FILE
    if stopped.exists():
        raise NonFiniteLossError(stopped.read_text())
    if (trial / STOPPED_FILE).exists():
        info = json.loads((trial / STOPPED_FILE).read_text())
        raise StopRequested(info["name"], info["step"], Path(info["checkpoint"]))
    if not (trial / FINISHED_FILE).exists():  # fit returned after a graceful abort (Ctrl-C)
        raise KeyboardInterrupt

