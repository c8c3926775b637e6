"""A run directory read into plain data for the report: stages and their state, metrics, sample grids,
the evaluation table, the sample stage's grids, the Tune sweep, provenance and configs.

Nothing here loads a checkpoint or draws a picture. Every part may be missing (a run in progress, a stage
that failed or never ran, a run from before provenance was recorded): a missing part is an empty list or
None, never an error. A stage's place in the run (job, SLURM state, kimg done of total, latest loss and FD,
newest checkpoint, why it did not run) comes from ``kacdist.cluster.status``, the same table as
``stage=status``.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

from kacdist.config.schema import RunConfig
from kacdist.stages.common import RunNotFoundError, missing_run_message

GRID = re.compile(r"grid-(\d+)\.png")
# SLURM states in which the stage's job has ended without finishing the stage
_ENDED_BADLY = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


@dataclass
class StageData:
    name: str  # teacher | distill-<T>-<S>[-<tag>]
    path: Path
    status: str  # finished | early_stopped | running | pending | stopped | failed | not started | ...
    progress: str  # kimg done / total, as stage=status shows it
    kimg: float | None  # kimg done (DONE's, else the newest metrics row's)
    total_kimg: float | None
    loss: str
    fd: str
    checkpoint: str
    job_id: str
    slurm_state: str
    requeues: str
    note: str
    metrics: list[dict] = field(default_factory=list)  # metrics.parquet rows, by step
    grids: list[tuple[int, Path]] = field(default_factory=list)  # (step, samples/grid-<step>.png), by step
    source: dict | None = None  # source.json of a distillation stage
    done: dict | None = None  # DONE's record (step, kimg, checkpoint, status)
    train_seconds: float | None = None  # the sum of logged step times (what training itself took)
    finished_at: float | None = None  # DONE's modification time (epoch seconds)
    provenance: list[dict] = field(default_factory=list)
    config_text: str | None = None


@dataclass
class SampleImage:
    path: Path  # sample/<stem>.png
    info: dict  # its .json: integrator, steps, guidance, NFE, images/s


@dataclass
class TuneData:
    path: Path
    trials: list[dict]  # trials.parquet rows
    heatmap: Path | None
    summary: str | None
    best: str | None
    provenance: list[dict] = field(default_factory=list)


@dataclass
class RunData:
    root: Path
    config_text: str | None  # <run>/config.yaml
    stages: list[StageData]
    eval_rows: list[dict]  # eval/fd_vs_nfe.parquet rows
    eval_provenance: list[dict]
    samples: list[SampleImage]
    sample_provenance: list[dict]
    tune: TuneData | None

    @property
    def name(self) -> str:
        return self.root.name


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _read_json(path: Path) -> dict | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def read_parquet_rows(path: Path) -> list[dict]:
    """The rows of a Parquet table ([] when it is missing or unreadable, e.g. a run that never logged)."""
    if not path.exists():
        return []
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowException):
        return []


def provenance(stage_dir: Path) -> list[dict]:
    from kacdist.track.provenance import read_provenance

    return read_provenance(stage_dir)


def sample_grids(stage_dir: Path) -> list[tuple[int, Path]]:
    """The stage's snapshot grids ``samples/grid-<step>.png``, by step."""
    found = []
    for path in (stage_dir / "samples").glob("grid-*.png"):
        match = GRID.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def train_seconds(metrics: list[dict]) -> float | None:
    """Training time from the metrics rows: each logged row's seconds per step times the steps since the
    previous logged row (rows of a resumed run's replayed steps were replaced, so nothing counts twice)."""
    rows = sorted((r for r in metrics if r.get("s_per_step") is not None and r.get("step") is not None),
                  key=lambda r: r["step"])
    if not rows:
        return None
    total, previous = 0.0, 0
    for r in rows:
        total += r["s_per_step"] * (r["step"] - previous)
        previous = r["step"]
    return total


def _kimg_of(progress: str) -> tuple[float | None, float | None]:
    """(done, total) from stage=status's ``done/total[ done]`` text."""
    head = progress.split()[0] if progress.strip() else ""
    done, _, total = head.partition("/")
    try:
        return float(done), (float(total) if total else None)
    except ValueError:
        return None, None


def _lock_is_live(root: Path) -> bool | None:
    """Whether the process or SLURM submission holding the run's lock still runs (None: cannot tell)."""
    from kacdist.cluster.lock import is_live, read_holder

    holder = read_holder(root)
    if holder is None:
        return False
    try:
        return is_live(holder)
    except (OSError, RuntimeError, subprocess.SubprocessError):  # squeue missing or not answering
        return None


def stage_status(done: dict | None, exists: bool, slurm_state: str, lock_live: bool | None) -> str:
    """What a stage is doing: DONE's status once it has finished; else SLURM's word for a job of the stage;
    else, for a stage with files but no DONE, running while the run's lock holder lives and stopped
    (interrupted or failed) otherwise; not started without a directory."""
    if done is not None:
        return str(done.get("status") or "finished")
    if slurm_state in _ENDED_BADLY:
        return slurm_state.lower()
    if slurm_state in ("PENDING", "RUNNING", "REQUEUED", "SUSPENDED"):
        return slurm_state.lower()
    if not exists:
        return "not started"
    if lock_live is None:
        return "in progress or stopped"
    return "running" if lock_live else "stopped"


def _planned_stages(run_config: RunConfig | None) -> list[str]:
    """The stages the run's latest training command set out to produce (a ladder's rungs)."""
    if run_config is None or run_config.stage not in ("teacher", "distill", "ladder"):
        return []
    from kacdist.stages.distill import distill_stage_name

    dc = run_config.distill
    # a ladder trains the teacher first unless from= names another start; stage=distill never does
    names = ["teacher"] if run_config.stage == "teacher" or (run_config.stage == "ladder" and not dc.init) else []
    if run_config.stage == "ladder":
        names += [distill_stage_name(t, s, dc.tag) for t, s in dc.rungs()]
    elif run_config.stage == "distill":
        names.append(distill_stage_name(dc.teacher_steps, dc.student_steps, dc.tag))
    return names


def _stage_order(name: str) -> tuple:
    """teacher, then distillation stages from many steps to few (as stage=status orders them)."""
    if name == "teacher":
        return (0, 0, 0, name)
    parts = name.split("-")
    numbers = [-int(p) for p in parts[1:3] if p.isdigit()]
    return (1, *(numbers + [0, 0])[:2], name)


def _load_run_config(root: Path) -> RunConfig | None:
    from omegaconf.errors import OmegaConfBaseException

    from kacdist.config.loader import load_saved_config

    path = root / "config.yaml"
    if not path.exists():
        return None
    try:
        return load_saved_config(path)
    except (OSError, ValueError, OmegaConfBaseException):  # e.g. from another kacdist: no plan, the rest is shown
        return None


def collect_stages(root: Path, cfg: RunConfig, run_config: RunConfig | None) -> list[StageData]:
    from kacdist.cluster.status import StageRow, rows

    table = {r.stage: r for r in rows(replace(cfg, runs_dir=str(root.parent), run_name=root.name))}
    for name in _planned_stages(run_config):
        table.setdefault(name, StageRow(name, "-", "local", "-", "-", "-", "-", "-", ""))
    lock_live = _lock_is_live(root) if any(not (root / n / "DONE").exists() for n in table) else False
    stages = []
    for name in sorted(table, key=_stage_order):
        row = table[name]
        path = root / name
        done = _read_json(path / "DONE")
        metrics = sorted(read_parquet_rows(path / "metrics.parquet"), key=lambda r: r.get("step") or 0)
        kimg, total = _kimg_of(row.progress)
        slurm_state = row.state if row.job_id not in ("", "-") else ""
        stages.append(StageData(
            name=name, path=path, status=stage_status(done, path.is_dir(), slurm_state, lock_live),
            progress=row.progress, kimg=kimg, total_kimg=total, loss=row.loss, fd=row.fd, checkpoint=row.checkpoint,
            job_id=row.job_id, slurm_state=slurm_state or "-", requeues=row.requeues, note=row.note, metrics=metrics,
            grids=sample_grids(path), source=_read_json(path / "source.json"), done=done,
            train_seconds=train_seconds(metrics),
            finished_at=(path / "DONE").stat().st_mtime if done is not None else None,
            provenance=provenance(path), config_text=_read_text(path / "config.yaml"),
        ))
    return stages


def collect_samples(root: Path) -> list[SampleImage]:
    """The grids of stage=sample with what each was sampled with."""
    found = []
    for png in sorted((root / "sample").glob("*.png")):
        found.append(SampleImage(png, _read_json(png.with_suffix(".json")) or {}))
    return found


def collect_tune(root: Path) -> TuneData | None:
    tune = root / "tune"
    if not tune.is_dir():
        return None
    heatmap = tune / "heatmap.png"
    return TuneData(tune, read_parquet_rows(tune / "trials.parquet"), heatmap if heatmap.exists() else None,
                    _read_text(tune / "summary.md"), _read_text(tune / "best.yaml"), provenance(tune))


def collect(root: Path, cfg: RunConfig) -> RunData:
    """Everything the report shows about the run in ``root`` (``cfg``: the report command's config)."""
    if not root.is_dir():
        raise RunNotFoundError(missing_run_message(root))
    run_config = _load_run_config(root)
    return RunData(
        root=root,
        config_text=_read_text(root / "config.yaml"),
        stages=collect_stages(root, cfg, run_config),
        eval_rows=read_parquet_rows(root / "eval" / "fd_vs_nfe.parquet"),
        eval_provenance=provenance(root / "eval"),
        samples=collect_samples(root),
        sample_provenance=provenance(root / "sample"),
        tune=collect_tune(root),
    )
