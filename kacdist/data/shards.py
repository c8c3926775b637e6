"""Writing WebDataset shards: deterministic tar files named ``<split>-NNNNNN.tar``.

The bytes of a shard depend only on its samples (fixed mtime, owner and mode), so converting the same
source twice gives identical files and identical SHA-256s. That is what lets a resumed conversion, or a
second rank building the same cache, recognise finished shards by hash instead of trusting timestamps.
"""

from __future__ import annotations

import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from kacdist.data.atomic import atomic_output, sha256_of_file
from kacdist.data.imaging import IMAGE_FORMATS

SHARD_INDEX_DIGITS: Final = 6
SHARD_NAME_RE: Final = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<index>\d{6})\.tar$")
KEY_RE: Final = re.compile(r"^[A-Za-z0-9_-]+$")
"""Allowed sample keys: no dots (WebDataset splits member names at the first dot) and no slashes."""

_FIXED_MTIME: Final = 0
_MEMBER_MODE: Final = 0o444


def shard_file_name(split: str, index: int) -> str:
    """``train-000003.tar`` for split "train", index 3 (the WebDataset ``<prefix>-%06d.tar`` naming)."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", split):
        raise ValueError(f"split name must be letters, digits or underscores, not {split!r}")
    return f"{split}-{index:0{SHARD_INDEX_DIGITS}d}.tar"


def shard_brace_pattern(split: str, num_shards: int) -> str:
    """A brace list naming all shards of a split, e.g. ``train-{000000..000049}.tar``."""
    if num_shards == 1:
        return shard_file_name(split, 0)
    last = f"{num_shards - 1:0{SHARD_INDEX_DIGITS}d}"
    return f"{split}-{{{0:0{SHARD_INDEX_DIGITS}d}..{last}}}.tar"


def sanitize_key(text: str) -> str:
    """Map arbitrary text (a relative file path) onto the key alphabet: other characters become ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", text)
    return cleaned or "_"


@dataclass(frozen=True)
class ShardSample:
    """One sample as stored: ``<key>.<image_format>`` and, when labelled, ``<key>.cls``."""

    key: str
    image_format: str
    image: bytes
    label: int | None

    def __post_init__(self) -> None:
        if not KEY_RE.fullmatch(self.key):
            raise ValueError(f"sample key {self.key!r} must match {KEY_RE.pattern}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image format must be one of {IMAGE_FORMATS}, not {self.image_format!r}")


@dataclass(frozen=True)
class WrittenShard:
    """Size and hash of a shard file as it lies on disk."""

    path: Path
    num_bytes: int
    sha256: str


def _add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = _FIXED_MTIME
    info.mode = _MEMBER_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    archive.addfile(info, io.BytesIO(data))


def write_shard(path: Path, samples: list[ShardSample]) -> WrittenShard:
    """Write ``samples`` as one tar shard at ``path`` (atomically) and return its size and SHA-256."""
    with atomic_output(path) as temp:
        with tarfile.open(temp, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for sample in samples:
                _add_member(archive, f"{sample.key}.{sample.image_format}", sample.image)
                if sample.label is not None:
                    _add_member(archive, f"{sample.key}.cls", str(int(sample.label)).encode("ascii"))
    return WrittenShard(path=path, num_bytes=path.stat().st_size, sha256=sha256_of_file(path))
