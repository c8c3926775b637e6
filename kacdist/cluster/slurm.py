"""``cluster=slurm``: every stage its own SLURM job, submitted with submitit, chained by checkpoints.

``submit(cfg)`` turns the stage of ``cfg`` into jobs (``stage_plan``: ``ladder`` is the teacher unless it has
finished, each distillation rung, then the evaluation when ``eval.after_ladder``), submits them at once
chained with ``afterok`` and ``--kill-on-invalid-dep=yes`` (a failed stage cancels its dependents), records
them in ``<run>/jobs.json`` and returns. It checks the cluster's facts first (SLURM answers, the partition
exists) and the run's lock (another live job holding the run is named and refused).

A job runs ``StageJob``: it takes the run's lock for its submission, finds its input in the run directory
when it starts (a distillation rung names the previous stage, never a checkpoint path), and runs the stage
in-process or on Ray Train workers through the same ``kacdist.cluster.run_here`` as a local run. On USR2
(time limit or preemption) the loop checkpoints at its next step and submitit requeues the job, which
resumes there; a finished stage is not rerun. A plain ``scontrol requeue`` (TERM only) loses the work since
the last periodic checkpoint. Several nodes: one task per node, a Ray cluster over the allocation
(``kacdist.cluster.ray_cluster``).

The stage functions never call sbatch: this module wraps them.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from kacdist.atomic import atomic_write_bytes
from kacdist.cluster import lock
from kacdist.config.schema import RunConfig
from kacdist.stages.common import run_root

log = logging.getLogger(__name__)

JOBS_FILE = "jobs.json"  # stage name -> its newest job (id, dependency, logs, submission time)
EVENTS_FILE = "events.jsonl"  # under the log folder: submitted / started / stopped / finished, with times


class SubmitError(RuntimeError):
    """The cluster cannot take the jobs as configured (checked before anything is submitted)."""


@dataclass
class PlannedStage:
    name: str  # teacher, distill-<T>-<S>[-<tag>], eval, sample, kac_demo
    cfg: RunConfig  # one stage's config, as the job runs it


@dataclass
class SubmittedStage:
    name: str
    job_id: str
    depends_on: str
    stdout: str
    stderr: str


def log_folder(cfg: RunConfig) -> Path:
    return Path(cfg.cluster.log_dir).expanduser() if cfg.cluster.log_dir else run_root(cfg) / "slurm"


def stage_plan(cfg: RunConfig) -> list[PlannedStage]:
    """The jobs of ``stage=<cfg.stage>``: one per stage, in order, finished ones left out. Each job's config
    names its input by stage, so that the job reads the newest state of the run when it starts."""
    from kacdist.config.validate import derived_workers
    from kacdist.stages.distill import distill_stage_name, ladder_rungs
    from kacdist.train.loop import read_done

    root = run_root(cfg)
    cfg = replace(cfg, cluster=replace(cfg.cluster, workers=derived_workers(cfg)))
    if cfg.stage == "ladder":
        plan: list[PlannedStage] = []
        if not cfg.distill.init and read_done(root / "teacher") is None:
            plan.append(PlannedStage("teacher", replace(cfg, stage="teacher", eval=replace(cfg.eval, after_teacher=False))))
        for hi, lo, init in ladder_rungs(cfg.distill):
            name = distill_stage_name(hi, lo, cfg.distill.tag)
            if read_done(root / name) is not None:
                continue
            plan.append(PlannedStage(name, replace(cfg, stage="distill", distill=replace(
                cfg.distill, teacher_steps=hi, student_steps=lo, init=init))))
        if cfg.eval.after_ladder:
            plan.append(PlannedStage("eval", replace(cfg, stage="eval")))
        return plan
    if cfg.stage == "teacher":
        return [] if read_done(root / "teacher") is not None else [PlannedStage("teacher", cfg)]
    if cfg.stage == "distill":
        name = distill_stage_name(cfg.distill.teacher_steps, cfg.distill.student_steps, cfg.distill.tag)
        return [] if read_done(root / name) is not None else [PlannedStage(name, cfg)]
    return [PlannedStage(cfg.stage, cfg)]


def _sinfo_partitions() -> list[str]:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SubmitError("cluster=slurm: no SLURM client here (sinfo not found); run on a login node of the cluster "
                          "or use cluster=local") from None
    except subprocess.TimeoutExpired:
        raise SubmitError("cluster=slurm: sinfo did not answer within 60 s (is slurmctld up?)") from None
    if out.returncode != 0:
        raise SubmitError(f"cluster=slurm: SLURM does not answer here (sinfo: {out.stderr.strip()})")
    return [p.strip().rstrip("*") for p in out.stdout.split()]


def check_cluster(cfg: RunConfig) -> None:
    """Facts of the cluster that the config check cannot know: SLURM answers and has the partition."""
    partitions = _sinfo_partitions()
    if cfg.cluster.partition and cfg.cluster.partition not in partitions:
        raise SubmitError(f"cluster.partition={cfg.cluster.partition!r} is not a partition of this cluster; sinfo lists: "
                          f"{', '.join(partitions) or 'none'}")


def _executor(cfg: RunConfig, name: str, folder: Path, after: str, hold: bool):
    import submitit

    cl = cfg.cluster
    # the job's Python starts with USR2 blocked until StopOnSignal handles it (kacdist.exec_masked): an early
    # time-limit tick or preemption would otherwise kill a job still importing, FAILED instead of requeued
    python = f"{shlex.quote(sys.executable)} -m kacdist.exec_masked"
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster="slurm", slurm_max_num_timeout=cl.max_requeues,
                                     slurm_python=python)
    extra: dict[str, object] = dict(cl.sbatch_extra)
    if cl.account:
        extra["account"] = cl.account
    if cl.qos:
        extra["qos"] = cl.qos
    if after:
        extra["dependency"] = f"afterok:{after}"
        extra["kill-on-invalid-dep"] = "yes"
    if hold:
        extra["hold"] = True
    params: dict[str, object] = dict(
        timeout_min=cl.timeout_min, nodes=cl.nodes, tasks_per_node=1, cpus_per_task=cl.cpus_per_node,
        slurm_signal_delay_s=cl.signal_delay_s, name=f"kacdist-{cfg.run_name}-{name}",
        slurm_additional_parameters=extra, slurm_setup=list(cl.setup),
    )
    if cl.gpus_per_node:
        params["gpus_per_node"] = cl.gpus_per_node
    if cl.mem_gb:
        params["mem_gb"] = cl.mem_gb
    if cl.partition:
        params["slurm_partition"] = cl.partition
    executor.update_parameters(**params)
    return executor


def sbatch_script(cfg: RunConfig, name: str, after: str = "") -> str:
    """The batch script a stage's job is submitted with (for checking resources without a cluster)."""
    executor = _executor(cfg, name, log_folder(cfg), after, hold=False)
    inner = executor._executor
    return inner._make_submission_file_text(inner._submitit_command_str, "<uuid>")


def record_event(cfg: RunConfig, event: str, stage: str, job_id: str, **fields) -> None:
    """One line per event in ``<log folder>/events.jsonl`` (appends of one short line are atomic)."""
    folder = log_folder(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"time": time.time(), "event": event, "stage": stage, "job_id": job_id, **fields})
    with open(folder / EVENTS_FILE, "a") as f:
        f.write(line + "\n")


def read_jobs(root: Path) -> dict[str, dict]:
    try:
        return json.loads((root / JOBS_FILE).read_text())
    except FileNotFoundError:
        return {}


def submit(cfg: RunConfig, *, echo=print) -> list[SubmittedStage]:
    """Submit the jobs of ``cfg.stage`` and return at once (the README's ``cluster=slurm`` commands)."""
    from kacdist.cluster.lock import RunLockedError
    from kacdist.config.loader import save_run_config

    check_cluster(cfg)
    root = run_root(cfg)
    plan = stage_plan(cfg)
    if not plan:
        echo(f"{root}: every stage of stage={cfg.stage} has finished; nothing to submit")
        return []
    from kacdist.cluster import WRITING_STAGES

    writes = cfg.stage in WRITING_STAGES
    me = lock.this_process()
    try:
        if writes:
            lock.acquire(root, me)
    except RunLockedError as err:
        raise SubmitError(str(err)) from None
    submitted: list[SubmittedStage] = []
    try:
        if cfg.stage in ("teacher", "distill", "ladder"):
            save_run_config(cfg)  # the run's config, saved before any job exists
        folder = log_folder(cfg)
        previous = ""
        for i, stage in enumerate(plan):
            # the first job waits on hold until the lock names this submission, so it never meets our own lock
            job = _executor(cfg, stage.name, folder, previous, hold=i == 0).submit(StageJob(stage.cfg, stage.name))
            submitted.append(SubmittedStage(stage.name, job.job_id, previous, str(job.paths.stdout), str(job.paths.stderr)))
            previous = job.job_id
        if writes:
            lock.acquire(root, lock.slurm_submission([s.job_id for s in submitted]))
    except BaseException:
        if submitted:
            subprocess.run(["scancel", *[s.job_id for s in submitted]], check=False, capture_output=True)
        if writes:
            lock.release(root, me)
        raise
    subprocess.run(["scontrol", "release", submitted[0].job_id], check=True, capture_output=True, timeout=60)
    jobs = read_jobs(root)
    now = time.time()
    for s in submitted:
        jobs[s.name] = {"job_id": s.job_id, "depends_on": s.depends_on, "stdout": s.stdout, "stderr": s.stderr,
                        "submitted": now}
        record_event(cfg, "submitted", s.name, s.job_id)
    atomic_write_bytes(root / JOBS_FILE, json.dumps(jobs, indent=1).encode())
    for s in submitted:
        after = f" after {s.depends_on}" if s.depends_on else ""
        echo(f"submitted {s.name}: job {s.job_id}{after}\n  log    {s.stdout}\n  errors {s.stderr}")
    echo(f"follow: python jobs/launch.py stage=status run_name={cfg.run_name} runs_dir={cfg.runs_dir}   "
         f"(or: tail -f {submitted[0].stdout})")
    return submitted


class StageJob:
    """What one SLURM job runs: a stage of a run. A submitit ``Checkpointable``: on USR2 the stage stops at a
    step boundary with a checkpoint and submitit requeues this same callable, which resumes from disk."""

    def __init__(self, cfg: RunConfig, name: str):
        self.cfg = cfg
        self.name = name

    def __call__(self) -> str:
        return run_stage_job(self.cfg, self.name)

    def checkpoint(self, *args, **kwargs):
        import submitit

        # everything that matters is on disk in the run directory: the same callable resumes from there
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _ray_allocation(cfg: RunConfig, env, finished: Path):
    """Several nodes: start this task's Ray node. Returns (the driver's worker plan, this node's plan) on task 0;
    the other tasks serve until the head is done and return (None, their node plan)."""
    from kacdist.cluster import ray_cluster
    from kacdist.cluster.ray_train import WorkerPlan

    cl = cfg.cluster
    plan = ray_cluster.node_plan(env.global_rank, list(env.hostnames), env.job_id, cl.cpus_per_node, cl.gpus_per_node,
                                 cl.ray_port)
    ray_cluster.start_node(plan)
    if env.global_rank != 0:
        ray_cluster.serve_until(finished, plan)
        return None, plan
    os.environ["RAY_ADDRESS"] = plan.address
    threads = max(1, cl.cpus_per_node * cl.nodes // max(cfg.cluster.workers, 1))
    return WorkerPlan(cfg.cluster.workers, bool(cl.gpus_per_node), threads, cl.cpus_per_node * cl.nodes), plan


def run_stage_job(cfg: RunConfig, name: str) -> str:
    """The body of a stage's SLURM job (task 0 trains; with several nodes the other tasks serve Ray)."""
    import submitit

    from kacdist.cluster import run_here
    from kacdist.cluster.preemption import StopOnSignal
    from kacdist.stages.common import setup_logging
    from kacdist.train.loop import StopRequested

    setup_logging()
    env = submitit.JobEnvironment()
    job_id = env.job_id
    root = run_root(cfg)
    multi_node = cfg.cluster.nodes > 1
    finished = root / "ray" / f"allocation-{job_id}-finished"
    if multi_node and env.global_rank != 0:
        _ray_allocation(cfg, env, finished)
        return "ray node served"
    from kacdist.cluster import WRITING_STAGES

    if cfg.stage in WRITING_STAGES:
        lock.acquire(root, lock.slurm_submission([job_id]), allow_job=job_id)
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    record_event(cfg, "started", name, job_id, restarts=int(restarts) if restarts.isdigit() else 0)
    ray_plan = node = None
    try:
        checkpointed_at: list[int] = []
        stop = StopOnSignal()
        # every requeue by signal is an event: at a step boundary with a checkpoint, or where no step was running
        # (before training, after its last step, during an evaluation). Set before the handler is installed: a
        # signal pending since the job started is delivered as soon as `with stop` unblocks it
        stop.on_hand_over = lambda: record_event(cfg, "stopped", name, job_id,
                                                 **({"step": checkpointed_at[0]} if checkpointed_at else {}))
        with stop:
            if multi_node:
                finished.unlink(missing_ok=True)
                ray_plan, node = _ray_allocation(cfg, env, finished)
                import ray

                from kacdist.cluster.ray_cluster import wait_for_nodes

                ray.init(address=node.address)
                wait_for_nodes(node.address, cfg.cluster.nodes)
            try:
                run_here(cfg, stop=stop, lock=False, plan=ray_plan)
            except StopRequested as stopped:
                checkpointed_at.append(stopped.step)
                log.warning("%s: checkpointed at step %d on the stop signal; requeueing job %s", name, stopped.step, job_id)
                stop.hand_over()  # submitit: requeue this job and exit
                raise
    finally:
        if multi_node:
            finished.parent.mkdir(parents=True, exist_ok=True)
            finished.write_text("")
            if node is not None:
                subprocess.run(node.stop, check=False, capture_output=True)
    # a USR2 arriving from here on finds the stage done; during interpreter shutdown Python would restore its
    # default action and the job would end killed by the signal, i.e. FAILED, cancelling its dependents
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    record_event(cfg, "finished", name, job_id)
    return f"{name} finished"
