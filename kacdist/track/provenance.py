"""Where a stage's results came from: ``<stage dir>/provenance.json``, one entry per attempt.

A stage that is resumed (rerun, requeued, restarted by Ray) appends an attempt, so the file tells which
code, packages, hardware and command produced each part of the run. Read by ``stage=report``.

Nothing here reads the environment beyond a fixed list of SLURM variables: the wandb key (or any other
secret in the environment) cannot reach the file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from kacdist.atomic import atomic_write_bytes

PROVENANCE = "provenance.json"
PACKAGES = ("kacdist", "torch", "numpy", "omegaconf", "pyarrow", "webdataset", "deepspeed", "ray", "submitit", "wandb")
SLURM_VARIABLES = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID", "array_task_id": "SLURM_ARRAY_TASK_ID",
                   "restart_count": "SLURM_RESTART_COUNT", "partition": "SLURM_JOB_PARTITION",
                   "nodelist": "SLURM_JOB_NODELIST", "num_nodes": "SLURM_JOB_NUM_NODES"}


def git_state(repo: Path | None = None) -> dict:
    """The commit of the kacdist checkout and whether it has uncommitted changes (None outside git)."""
    where = repo or Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict:
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "cpu": cpu_model(),
            "cpu_count": os.cpu_count(), "gpus": gpus, "gpu_count": len(gpus), "torch_threads": torch.get_num_threads(),
            "cuda": torch.version.cuda}


def slurm_job() -> dict | None:
    found = {key: os.environ[var] for key, var in SLURM_VARIABLES.items() if os.environ.get(var)}
    return found or None


def current_attempt(stage: str) -> dict:
    return {
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "stage": stage,
        "command": list(sys.argv),
        "cwd": os.getcwd(),
        "git": git_state(),
        "versions": package_versions(),
        "hardware": hardware(),
        "slurm": slurm_job(),
    }


def read_provenance(stage_dir: Path) -> list[dict]:
    """The attempts recorded for a stage, oldest first ([] when none, or for an unreadable file)."""
    path = Path(stage_dir) / PROVENANCE
    try:
        return list(json.loads(path.read_text()).get("attempts", []))
    except (OSError, ValueError, AttributeError):
        return []


def record_provenance(stage_dir: Path, stage: str) -> dict:
    """Append this attempt of ``stage`` to ``<stage_dir>/provenance.json`` (atomically) and return it."""
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    attempt = current_attempt(stage)
    attempts = read_provenance(stage_dir) + [attempt]
    atomic_write_bytes(stage_dir / PROVENANCE, (json.dumps({"attempts": attempts}, indent=1) + "\n").encode())
    return attempt
