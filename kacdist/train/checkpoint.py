"""Checkpoint files: atomic writes, a LATEST pointer, the last K kept, safe loading.

A checkpoint is written to a temporary file in the same directory, flushed and fsync'ed, then renamed over
its final name, so a crash mid-write leaves the previous checkpoints untouched and at worst a stray temp
file (removed on the next save). Loading uses ``torch.load(weights_only=True)``: no pickled code runs. If
the newest file is unreadable (a truncated copy, a disk error) the next older one is used and the problem
is logged, which also covers a checkpoint written to disk but never recorded in LATEST.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from kacdist.atomic import TEMP_MARKER, atomic_output

log = logging.getLogger(__name__)
_NAME = re.compile(r"^ckpt-(\d{9})\.pt$")
LATEST = "LATEST"


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:09d}.pt"


def _atomic_write(path: Path, write) -> None:
    with atomic_output(path) as temp, open(temp, "wb") as fh:
        write(fh)


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of the finished checkpoint files, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(ckpt_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``step``, point LATEST at it, keep the newest ``keep`` files."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for stray in ckpt_dir.glob(f".ckpt-*{TEMP_MARKER}*"):
        stray.unlink(missing_ok=True)  # left by a crash during an earlier save
    path = ckpt_dir / checkpoint_name(step)
    _atomic_write(path, lambda fh: torch.save(state, fh))
    _atomic_write(ckpt_dir / LATEST, lambda fh: fh.write(path.name.encode()))
    for _, old in list_checkpoints(ckpt_dir)[:-keep]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(ckpt_dir: Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path] | None:
    """The newest readable checkpoint (LATEST's first, then by step), or None if there is none."""
    # newest by step first: a file can be newer than LATEST (written, then a crash before LATEST moved)
    candidates = [p for _, p in reversed(list_checkpoints(ckpt_dir))]
    for path in candidates:
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is skipped, loudly
            log.error("checkpoint %s is unreadable (%s: %s); trying an older one", path, type(err).__name__, err)
            continue
        return state, path
    return None
