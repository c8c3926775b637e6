"""``stage=status`` and ``stage=cancel``: a run's stages, their jobs, and how far each got.

The table joins what the run directory says (stage directories, DONE, metrics.parquet, checkpoints, the
jobs recorded in ``jobs.json`` at submission) with what SLURM says (``sacct``: state, reason, one record per
requeue). Nothing here loads a checkpoint (an LSUN one is ~9 GB): progress comes from the metrics table.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from kacdist.config.schema import RunConfig
from kacdist.stages.common import RunNotFoundError, missing_run_message, run_root

LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "SUSPENDED", "CONFIGURING", "COMPLETING", "RESIZING",
               "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED"}


@dataclass
class JobState:
    state: str  # the newest record's state (CANCELLED by ... shortened to CANCELLED)
    reason: str
    requeues: int  # records before the newest one: each requeue starts a new record
    started: bool = True  # the newest record ran on a node (a job cancelled while pending: "None assigned")


@dataclass
class StageRow:
    stage: str
    job_id: str
    state: str
    requeues: str
    progress: str  # kimg done / total
    loss: str
    fd: str
    checkpoint: str
    note: str


def job_states(job_ids: list[str]) -> dict[str, JobState]:
    """SLURM's view of ``job_ids`` (empty when sacct cannot answer)."""
    if not job_ids:
        return {}
    try:
        out = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-o", "JobID,State,Reason,NodeList", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return {}
    if out.returncode != 0:
        return {}
    records: dict[str, list[tuple[str, str, bool]]] = {}
    for line in out.stdout.splitlines():
        parts = line.split("|")
        if len(parts) >= 4 and parts[0] in job_ids:
            records.setdefault(parts[0], []).append((parts[1].split()[0], parts[2], parts[3] not in ("", "None assigned")))
    return {j: JobState(r[-1][0], r[-1][1], len(r) - 1, r[-1][2]) for j, r in records.items()}


def _stage_names(root: Path, jobs: dict) -> list[str]:
    on_disk = [p.name for p in root.iterdir() if p.is_dir() and (p.name == "teacher" or p.name.startswith("distill-"))]
    names = set(jobs) | set(on_disk)

    def order(name: str):  # teacher, then rungs from many steps to few, then the rest as submitted
        if name == "teacher":
            return (0, 0, name)
        if name.startswith("distill-"):
            parts = name.split("-")
            return (1, -int(parts[1]) if parts[1].isdigit() else 0, name)
        return (2, 0, name)

    return sorted(names, key=order)


def _total_kimg(stage_dir: Path) -> float | None:
    from kacdist.config.loader import load_saved_config

    path = stage_dir / "config.yaml"
    if not path.exists():
        return None
    cfg = load_saved_config(path)
    return cfg.train.total_kimg if stage_dir.name == "teacher" else cfg.distill.total_kimg


def _progress(stage_dir: Path) -> tuple[str, str, str, str]:
    """(kimg done / total, latest loss, latest FD, newest checkpoint) of a stage directory."""
    from kacdist.train.checkpoint import list_checkpoints
    from kacdist.train.loop import read_done

    if not stage_dir.is_dir():
        return "-", "-", "-", "-"
    done = read_done(stage_dir)
    kimg, loss, fd = 0.0, "-", "-"
    metrics = stage_dir / "metrics.parquet"
    if metrics.exists():
        import pyarrow.parquet as pq

        table = pq.read_table(metrics).to_pylist()
        kimg = max((r.get("kimg") or 0.0 for r in table), default=0.0)
        losses = [r["loss"] for r in table if r.get("loss") is not None]
        fds = [r["fd"] for r in table if r.get("fd") is not None]
        loss = f"{losses[-1]:.4f}" if losses else "-"
        fd = f"{fds[-1]:.3f}" if fds else "-"
    if done is not None:
        kimg = done.kimg
    total = _total_kimg(stage_dir)
    ckpts = list_checkpoints(stage_dir / "checkpoints")
    checkpoint = str(ckpts[-1][1]) if ckpts else "-"
    progress = f"{kimg:g}/{total:g}" if total is not None else f"{kimg:g}"
    return progress + (" done" if done is not None else ""), loss, fd, checkpoint


def _why_not_run(name: str, jobs: dict, states: dict[str, JobState]) -> str:
    """For a stage whose job ended without running: the upstream stage that failed or was cancelled."""
    upstream_id = jobs.get(name, {}).get("depends_on", "")
    if not upstream_id:
        return ""
    upstream = next((n for n, j in jobs.items() if j.get("job_id") == upstream_id), upstream_id)
    st = states.get(upstream_id)
    if st is not None and st.state not in {"COMPLETED"} | LIVE_STATES:
        return f"not run: upstream {upstream} (job {upstream_id}) {st.state}"
    return f"not run: dependency on {upstream} (job {upstream_id}) never satisfied"


def rows(cfg: RunConfig) -> list[StageRow]:
    from kacdist.cluster.slurm import read_jobs

    root = run_root(cfg)
    if not root.is_dir():  # the command line checks first (kacdist.cli); this is for callers of the library
        raise RunNotFoundError(missing_run_message(root))
    jobs = read_jobs(root)
    states = job_states([j["job_id"] for j in jobs.values()])
    table = []
    for name in _stage_names(root, jobs):
        job = jobs.get(name, {})
        job_id = job.get("job_id", "")
        st = states.get(job_id)
        progress, loss, fd, checkpoint = _progress(root / name)
        note = ""
        # SLURM's accounting does not always record the dependency as the reason of a job it cancelled for
        # one (the record may say None): a job cancelled before it started is explained by its upstream too
        if st is not None and st.state == "CANCELLED" and ("Dependency" in st.reason or not st.started):
            note = _why_not_run(name, jobs, states) or ("cancelled before it started" if not st.started else "")
        elif st is not None and st.state == "PENDING" and st.reason not in ("", "None"):
            note = f"waiting: {st.reason}"
        elif st is not None and st.state not in LIVE_STATES | {"COMPLETED"}:
            note = f"see {job.get('stderr', '')}"
        table.append(StageRow(name, job_id or "-", st.state if st else ("local" if not job_id else "?"),
                              str(st.requeues) if st else "-", progress, loss, fd, checkpoint, note))
    return table


def format_table(table: list[StageRow]) -> str:
    header = ("stage", "job", "state", "requeues", "kimg", "loss", "FD", "checkpoint", "note")
    cells = [header] + [(r.stage, r.job_id, r.state, r.requeues, r.progress, r.loss, r.fd, r.checkpoint, r.note)
                        for r in table]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def show(cfg: RunConfig, echo=print) -> list[StageRow]:
    table = rows(cfg)
    echo(f"run {run_root(cfg)}")
    echo(format_table(table))
    return table


def cancel(cfg: RunConfig, echo=print) -> list[str]:
    """Cancel the run's pending and running jobs; returns their ids."""
    from kacdist.cluster.lock import live_slurm_jobs
    from kacdist.cluster.slurm import read_jobs

    root = run_root(cfg)
    rows(cfg)  # a missing run is reported the same way as by status
    ids = [j["job_id"] for j in read_jobs(root).values()]
    live = live_slurm_jobs(ids) if ids else []
    if live:
        subprocess.run(["scancel", *live], check=True, capture_output=True, timeout=60)
        echo(f"cancelled jobs {', '.join(live)} of run {root}")
    else:
        echo(f"run {root} has no pending or running jobs")
    return live
