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


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def load_stage_state(cfg: RunConfig, device: torch.device, checkpoint: str = "", stage: str = "teacher") -> tuple[dict, Path]:
    """The checkpoint state of a stage of this run (its latest readable checkpoint, or ``checkpoint``) and its path."""
    if checkpoint:
        path = Path(checkpoint)
        return torch.load(path, map_location=device, weights_only=True), path
    found = load_latest_checkpoint(stage_dir(cfg, stage) / "checkpoints", map_location=device)
    if found is None:
        raise FileNotFoundError(
            f"no checkpoint under {stage_dir(cfg, stage) / 'checkpoints'}: run stage={'teacher' if stage == 'teacher' else 'distill'} "
            "first (with the same run_name and runs_dir) or pass sample.checkpoint=<path>"
        )
    return found


def model_from_state(cfg: RunConfig, state: dict, device: torch.device, use_ema: bool = True):
    """The network of ``cfg.model`` with the EMA (or raw) weights of a checkpoint state, in eval mode."""
    from kacdist.train.teacher import build_model

    model = build_model(cfg).to(device)
    model.load_state_dict(state["ema" if use_ema else "model"])
    return model.eval()


def load_teacher(cfg: RunConfig, device: torch.device, use_ema: bool = True, checkpoint: str = "", stage: str = "teacher"):
    """The network of a stage of this run (the teacher by default; EMA weights by default) and its checkpoint path."""
    state, path = load_stage_state(cfg, device, checkpoint, stage)
    return model_from_state(cfg, state, device, use_ema), path
