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


def load_teacher(cfg: RunConfig, device: torch.device, use_ema: bool = True, checkpoint: str = "", stage: str = "teacher"):
    """The network of a stage of this run (the teacher by default; EMA weights by default) and its checkpoint path."""
    from kacdist.train.teacher import build_model

    model = build_model(cfg).to(device)
    if checkpoint:
        path = Path(checkpoint)
        state = torch.load(path, map_location=device, weights_only=True)
    else:
        found = load_latest_checkpoint(stage_dir(cfg, stage) / "checkpoints", map_location=device)
        if found is None:
            raise FileNotFoundError(
                f"no checkpoint under {stage_dir(cfg, stage) / 'checkpoints'}: run stage={'teacher' if stage == 'teacher' else 'distill'} "
                "first (with the same run_name and runs_dir) or pass sample.checkpoint=<path>"
            )
        state, path = found
    model.load_state_dict(state["ema" if use_ema else "model"])
    return model.eval(), path
