"""Expanding shard URL patterns into the concrete list every rank agrees on.

Accepted forms (a single string or a list of them, concatenated in order):

* local paths, ``file://`` paths and ``~`` paths: ``/data/cifar10/train-000000.tar``;
* brace lists: ``/data/lsun/train-{000000..000999}.tar`` (expanded first, then each piece is checked);
* globs: ``/data/lsun/train-*.tar`` (sorted, so every rank sees the same order);
* ``pipe:`` commands whose standard output is a tar stream: ``pipe:aws s3 cp s3://b/train-{0..9}.tar -``
  (brace-expanded; the command is not run here);
* other URL schemes WebDataset can open (``http://``, ``gs://`` ...), brace-expanded and passed on.

Expansion happens once, at stream construction in the calling process, and fails there: a pattern that
matches nothing or a listed local file that does not exist raises :class:`ShardListError` naming the
pattern, instead of leaving workers to spin or hang on an empty list.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import braceexpand

from kacdist.data.errors import ShardListError

logger = logging.getLogger(__name__)

_SCHEME_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_GLOB_CHARS: Final = re.compile(r"[*?\[]")
_MISSING_NAMES_SHOWN: Final = 5


def is_local(url: str) -> bool:
    """True for plain paths and ``file:`` URLs, which are opened directly and checked for existence."""
    return url.startswith("file:") or not _SCHEME_RE.match(url)


def local_path(url: str) -> Path:
    """The filesystem path of a local shard URL."""
    path = re.sub(r"^file:(//)?", "", url) if url.startswith("file:") else url
    return Path(os.path.expanduser(path))


def _expand_local(pattern: str, piece: str) -> list[str]:
    path = str(local_path(piece))
    if _GLOB_CHARS.search(path):
        return sorted(match for match in glob.glob(path) if os.path.isfile(match))
    if os.path.isdir(path):
        raise ShardListError(
            f"shard pattern {pattern!r} names a directory; give the shard files, e.g. {path.rstrip('/')}/train-*.tar"
        )
    return [path]


def expand_shard_urls(urls: str | Sequence[str]) -> list[str]:
    """Expand patterns into shard URLs; raise :class:`ShardListError` on an empty result or missing files.

    Duplicates (overlapping patterns) are dropped with a warning, since they would make an evaluation
    stream yield samples twice.
    """
    patterns = [urls] if isinstance(urls, str) else list(urls)
    if not patterns:
        raise ShardListError("no shard URL patterns given (empty list)")
    expanded: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern.strip():
            raise ShardListError(f"shard URL pattern must be a non-empty string, not {pattern!r}")
        pieces = list(braceexpand.braceexpand(pattern))
        if is_local(pattern):
            matched = [path for piece in pieces for path in _expand_local(pattern, piece)]
            missing = [path for path in matched if not os.path.isfile(path)]
            if missing:
                shown = ", ".join(missing[:_MISSING_NAMES_SHOWN])
                more = f" and {len(missing) - _MISSING_NAMES_SHOWN} more" if len(missing) > _MISSING_NAMES_SHOWN else ""
                raise ShardListError(f"shard pattern {pattern!r} names {len(missing)} missing file(s): {shown}{more}")
        else:
            matched = pieces
        if not matched:
            raise ShardListError(f"shard pattern {pattern!r} matched no shards")
        expanded.extend(matched)
    unique = list(dict.fromkeys(expanded))
    if len(unique) < len(expanded):
        logger.warning("dropped %d duplicate shard URLs from overlapping patterns", len(expanded) - len(unique))
    return unique
