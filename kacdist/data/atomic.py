"""Atomic file writes and content hashes.

A converter may be killed at any moment (preemption, Ctrl-C, OOM) and several processes may build the same
cache directory at once (every rank calling ``write_digits_shards`` on first use). Writing to a unique
temporary name in the target directory and renaming it into place means a reader only ever sees a missing
file or a complete one, never a half-written shard that happens to parse.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from kacdist.atomic import TEMP_MARKER, atomic_output, atomic_write_bytes, temp_path_for

__all__ = ["TEMP_MARKER", "atomic_output", "atomic_write_bytes", "sha256_of_file", "temp_path_for"]


def sha256_of_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in large blocks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
