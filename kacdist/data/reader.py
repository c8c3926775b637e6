"""Opening shard URLs and reading their samples, with damage recorded instead of raised.

Local paths are opened directly with a large buffer; ``pipe:`` commands and remote URLs go through
WebDataset's ``gopen`` (imported only when needed), which runs the command and raises when it exits
non-zero. Whatever goes wrong with one shard is recorded in the process' :class:`ErrorLedger` with the
shard URL and the key where it happened, and reading moves on to the next shard.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final

from kacdist.data.errors import TarFormatError
from kacdist.data.ledger import ErrorLedger
from kacdist.data.tarstream import iter_tar_samples
from kacdist.data.urls import is_local, local_path

READ_BUFFER_BYTES: Final = 1 << 20


@dataclass(frozen=True)
class RawSample:
    """An undecoded sample and where it came from."""

    shard: str
    key: str
    members: dict[str, bytes]


def open_shard(url: str) -> BinaryIO:
    """Open a local shard directly; anything else (``pipe:``, ``http://`` ...) through WebDataset's gopen."""
    if is_local(url):
        return open(local_path(url), "rb", buffering=READ_BUFFER_BYTES)
    from webdataset.gopen import gopen

    return gopen(url, "rb")


def read_shard(url: str, ledger: ErrorLedger) -> Iterator[RawSample]:
    """Yield the complete samples of one shard; record an unreadable, truncated or damaged shard and stop.

    The samples before the damage are kept: they were complete and well-formed.
    """
    try:
        stream = open_shard(url)
    except OSError as error:
        ledger.record(url, "-", f"cannot open shard: {error}")
        return
    finished = False
    try:
        for key, members in iter_tar_samples(stream):
            yield RawSample(shard=url, key=key, members=members)
        while stream.read(READ_BUFFER_BYTES):
            pass
        finished = True
    except TarFormatError as error:
        ledger.record(url, error.key or "-", str(error))
    except OSError as error:
        ledger.record(url, "-", f"reading the shard failed: {error}")
    finally:
        try:
            stream.close()
        except OSError as error:
            if finished:
                ledger.record(url, "-", f"closing the shard failed: {error}")
