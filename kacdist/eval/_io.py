"""Atomic writes for evaluation caches (classifier weights, reference statistics).

Several ranks or jobs may build the same cache at once, and any of them may be killed mid-write. Each
writer writes a unique temporary sibling of the target, fsyncs it and renames it into place with
``os.replace``: a reader sees either no file or a complete one, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success fsync it and rename it onto ``target``.

    On an exception the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield temp
        with open(temp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temp, target)
    finally:
        if temp.exists():
            temp.unlink()
