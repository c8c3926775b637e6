"""Exceptions of the data layer.

Each failure mode gets its own type so that callers (a training stage, a converter CLI) can tell a
configuration mistake (no shards matched) from damaged data (too many corrupt samples) without parsing
messages. Each can be built from a single message argument: a DataLoader worker re-raises an exception in
the main process by calling its type with the formatted message, which only works for such constructors.
"""

from __future__ import annotations


class ShardListError(ValueError):
    """A shard URL pattern matched nothing, named a missing file, or the list was empty."""


class CorruptDataError(RuntimeError):
    """More corrupt samples or unreadable shards were seen than the stream's ``max_errors`` allows."""


class SourceImageError(RuntimeError):
    """A source image could not be read or converted (raised only when a converter runs with ``strict``)."""


class TarFormatError(IOError):
    """A shard is not a well-formed tar stream: bad header checksum, truncated member, missing end marker.

    ``key`` names the sample that was being read when the damage was found (or the last good one), so the
    report can say where in the shard the problem is.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
