"""Atomic file writes and content hashes.

A converter may be killed at any moment (preemption, Ctrl-C, OOM) and several processes may build the same
cache directory at once (every rank calling ``write_digits_shards`` on first use). Writing to a unique
temporary name in the target directory and renaming it into place means a reader only ever sees a missing
file or a complete one, never a half-written shard that happens to parse.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

TEMP_MARKER = ".tmp-"
"""Part of every temporary file name; ``verify`` flags leftovers of killed writers by it."""


def temp_path_for(target: Path) -> Path:
    """A unique hidden sibling of ``target`` (same directory, so the final rename is atomic)."""
    return target.with_name(f".{target.name}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_output(target: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success fsync it and rename it onto ``target``.

    On an exception the temporary file is removed and ``target`` is left as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(target)
    try:
        yield temp
        with open(temp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temp, target)
    finally:
        if temp.exists():
            temp.unlink()


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_output(target) as temp:
        temp.write_bytes(data)


def sha256_of_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in large blocks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
