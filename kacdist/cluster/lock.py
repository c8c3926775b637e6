"""One writer per run directory: ``<run>/LOCK.json`` names who holds the run.

Holders are a local process (host, pid and the pid's start time, so a recycled pid is not mistaken for it)
or a SLURM submission (its job ids: a ladder is several chained jobs that take turns in one run). A holder
that is gone (the process exited, every job of the submission ended) leaves a stale lock that the next
holder replaces; a live one makes ``acquire`` raise ``RunLockedError`` naming it. A SLURM job that starts
checks that the lock is its submission's (or stale) before it trains.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kacdist.atomic import atomic_write_bytes

LOCK_FILE = "LOCK.json"


class RunLockedError(RuntimeError):
    """Another live job or process holds the run directory."""


@dataclass
class Holder:
    kind: str  # "local" | "slurm"
    host: str = ""
    pid: int = 0
    pid_start: str = ""  # /proc/<pid>/stat start time: tells a recycled pid apart
    job_ids: list[str] = field(default_factory=list)
    since: float = 0.0

    def describe(self) -> str:
        if self.kind == "slurm":
            return f"SLURM job{'s' if len(self.job_ids) > 1 else ''} {', '.join(self.job_ids)}"
        return f"process {self.pid} on {self.host}"


def _pid_start(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def this_process() -> Holder:
    pid = os.getpid()
    return Holder("local", socket.gethostname(), pid, _pid_start(pid), since=time.time())


def slurm_submission(job_ids: list[str]) -> Holder:
    return Holder("slurm", socket.gethostname(), job_ids=list(job_ids), since=time.time())


def live_slurm_jobs(job_ids: list[str]) -> list[str]:
    """Those of ``job_ids`` that are pending, running, suspended or requeued (squeue lists them)."""
    if not job_ids:
        return []
    out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:  # every id has left the controller's memory: all ended
            return []
        raise RunLockedError(f"cannot ask SLURM whether jobs {', '.join(job_ids)} still run: {out.stderr.strip()}")
    listed = set(out.stdout.split())
    return [j for j in job_ids if j in listed]


def is_live(holder: Holder) -> bool:
    if holder.kind == "slurm":
        return bool(live_slurm_jobs(holder.job_ids))
    if holder.host != socket.gethostname():
        # another machine's process cannot be checked from here: assume it runs
        return True
    return bool(holder.pid) and _pid_start(holder.pid) == holder.pid_start and holder.pid_start != ""


def read_holder(run_dir: Path) -> Holder | None:
    try:
        return Holder(**json.loads((run_dir / LOCK_FILE).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):  # a torn or foreign file: treat as stale
        return None


def _write(run_dir: Path, holder: Holder) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / LOCK_FILE, json.dumps(asdict(holder), indent=1).encode())


@contextlib.contextmanager
def _exclusive(run_dir: Path):
    """Check-then-write of the lock by one process at a time (flock on a side file)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / f".{LOCK_FILE}.mutex", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def acquire(run_dir: Path, holder: Holder, *, allow_job: str = "") -> Holder | None:
    """Make ``holder`` the run's holder, or raise ``RunLockedError`` if a live other one holds it.

    ``allow_job``: a SLURM job id that may find itself among the current holder's jobs (a chained stage
    starting): then the lock is kept as it is. Returns the previous holder if it was replaced."""
    with _exclusive(run_dir):
        return _acquire(run_dir, holder, allow_job)


def _acquire(run_dir: Path, holder: Holder, allow_job: str) -> Holder | None:
    current = read_holder(run_dir)
    if current is not None:
        if allow_job and current.kind == "slurm" and allow_job in current.job_ids:
            return None
        if current.kind == "local" and current.pid == os.getpid() and current.host == socket.gethostname():
            if holder.kind == "local":
                return None
            _write(run_dir, holder)  # this process hands the run to the jobs it submitted
            return current
        if is_live(current):
            hint = (f"wait for it, or `scancel {' '.join(current.job_ids)}`" if current.kind == "slurm"
                    else "wait for it to finish, or stop it")
            raise RunLockedError(f"{run_dir} is being written by {current.describe()} (since "
                                 f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(current.since))}): {hint}")
    _write(run_dir, holder)
    return current


def release(run_dir: Path, holder: Holder) -> None:
    """Remove the lock if ``holder`` still holds it."""
    with _exclusive(run_dir):
        current = read_holder(run_dir)
        if current is not None and current.kind == holder.kind and current.pid == holder.pid and current.host == holder.host \
                and current.job_ids == holder.job_ids:
            (run_dir / LOCK_FILE).unlink(missing_ok=True)
