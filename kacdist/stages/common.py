"""Run-directory layout shared by the stages (see docs/architecture.md):

    runs/<run_name>/teacher/{config.yaml, checkpoints/, metrics.parquet, samples/, DONE}
    runs/<run_name>/distill-<T>-<S>[-<tag>]/{config.yaml, source.json, checkpoints/, metrics.parquet, samples/, DONE}
    runs/<run_name>/sample/  runs/<run_name>/eval/
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from kacdist.config.schema import RunConfig
from kacdist.train.checkpoint import load_latest_checkpoint


def run_root(cfg: RunConfig) -> Path:
    return Path(cfg.runs_dir).expanduser() / cfg.run_name


def stage_dir(cfg: RunConfig, stage: str) -> Path:
    return run_root(cfg) / stage


# stages that only read an existing run: a run directory that does not exist is a mistyped run_name or runs_dir
READING_STAGES = ("report", "sample", "eval", "status", "cancel")


class RunNotFoundError(FileNotFoundError):
    """A stage that reads a run was pointed at a run directory that does not exist."""


def target_run(cfg: RunConfig) -> Path:
    """The run directory a stage works on: ``report.run`` for stage=report when set, else runs_dir/run_name."""
    if cfg.stage == "report" and cfg.report.run:
        return Path(cfg.report.run).expanduser()
    return run_root(cfg)


def existing_runs(runs_dir: Path) -> list[str]:
    """The run directories under ``runs_dir``, by name (hidden ones, such as editor or sync folders, left out)."""
    if not runs_dir.is_dir():
        return []
    return sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def missing_run_message(run_dir: Path) -> str:
    """One line naming the runs that do exist beside ``run_dir``, or how to make the first one."""
    runs = existing_runs(run_dir.parent)
    if runs:
        return f"no run at {run_dir}; runs in {run_dir.parent}: {', '.join(runs)}"
    return (f"no run at {run_dir}; no runs yet in {run_dir.parent}: train one with "
            f"stage=teacher run_name={run_dir.name} runs_dir={run_dir.parent}")


def require_run(cfg: RunConfig) -> None:
    """Raise RunNotFoundError when ``cfg.stage`` reads a run whose directory does not exist. ``stage=sample``
    with ``sample.checkpoint`` set reads that file, not the run, so it needs none."""
    if cfg.stage not in READING_STAGES or (cfg.stage == "sample" and cfg.sample.checkpoint):
        return
    run_dir = target_run(cfg)
    if not run_dir.is_dir():
        raise RunNotFoundError(missing_run_message(run_dir))


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


class StageNotTrainedError(FileNotFoundError):
    """A stage reads a model that does not exist yet (a stage not trained, or a checkpoint path that is wrong)."""


def load_stage_state(cfg: RunConfig, device: torch.device, checkpoint: str = "", stage: str = "teacher") -> tuple[dict, Path]:
    """The checkpoint state of a stage of this run (its latest readable checkpoint, or ``checkpoint``) and its path."""
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise StageNotTrainedError(f"checkpoint {path} does not exist")
        return torch.load(path, map_location=device, weights_only=True), path
    found = load_latest_checkpoint(stage_dir(cfg, stage) / "checkpoints", map_location=device)
    if found is None:
        raise StageNotTrainedError(
            f"no checkpoint under {stage_dir(cfg, stage) / 'checkpoints'}: run stage={'teacher' if stage == 'teacher' else 'distill'} "
            "first (with the same run_name and runs_dir) or pass sample.checkpoint=<path>"
        )
    return found


def model_from_state(cfg: RunConfig, state: dict, device: torch.device, use_ema: bool = True):
    """The network of ``cfg.model`` with the EMA (or raw) weights of a checkpoint state, in eval mode, behind
    ``torch.compile`` with ``train.compile=inference`` or ``all``."""
    from kacdist.train.device import compiled
    from kacdist.train.teacher import build_model

    model = build_model(cfg).to(device)
    model.load_state_dict(state["ema" if use_ema else "model"])
    return compiled(model.eval(), cfg.train.compile)


def load_teacher(cfg: RunConfig, device: torch.device, use_ema: bool = True, checkpoint: str = "", stage: str = "teacher"):
    """The network of a stage of this run (the teacher by default; EMA weights by default) and its checkpoint path."""
    state, path = load_stage_state(cfg, device, checkpoint, stage)
    return model_from_state(cfg, state, device, use_ema), path
