"""Atomic file writes, shared by checkpoints, configs, shards, manifests and evaluation caches.

A writer may be killed at any moment (preemption, Ctrl-C, OOM) and several processes may build the same
file at once. Writing to a unique temporary sibling, fsyncing it and renaming it into place means a reader
only ever sees a missing file or a complete one, never a torn one; the previous version stays intact until
the rename.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

TEMP_MARKER = ".tmp-"
"""Part of every temporary file name; leftovers of killed writers can be found (and removed) by it."""


def temp_path_for(target: Path) -> Path:
    """A unique hidden sibling of ``target`` (same directory, so the final rename is atomic)."""
    return target.with_name(f".{target.name}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success fsync it, rename it onto ``target`` and fsync the directory.

    On an exception the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(target)
    try:
        yield temp
        with open(temp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temp, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    finally:
        if temp.exists():
            temp.unlink()


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_output(target) as temp:
        temp.write_bytes(data)
