"""A strict, streaming reader of WebDataset tar shards.

Python's ``tarfile`` treats a damaged header after the first member as the end of the archive, so a
flipped byte or a shard cut at a member boundary silently yields fewer samples. Here every header's
checksum is checked, a short read is an error, and an archive must end with the zero block that tar
writers emit; each failure names the sample key it happened in. It reads ustar, GNU long-name and pax
path records, which covers shards written by ``tarfile``, GNU tar and WebDataset's ``TarWriter``.

Samples follow the WebDataset convention: members ``<key>.<ext>`` that share a key and are adjacent in the
archive form one sample ``{ext: bytes}``; the key is the member path up to the first dot of its base name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Final

from kacdist.data.errors import TarFormatError

BLOCK_SIZE: Final = 512
_ZERO_BLOCK: Final = bytes(BLOCK_SIZE)
_REGULAR_FILE_TYPES: Final = (b"0", b"\0", b"7")
_GNU_LONG_NAME: Final = b"L"
_PAX_HEADER: Final = b"x"
_PAX_GLOBAL_HEADER: Final = b"g"


def split_member_name(name: str) -> tuple[str, str]:
    """(key, extension) of a member path: split at the first dot of the base name; extension lower-cased."""
    directory, _, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    key = f"{directory}/{stem}" if directory else stem
    return key, extension.lower() if dot else ""


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at end of stream (a pipe may return short reads)."""
    chunks = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _octal_field(field: bytes) -> int:
    """Parse a numeric header field: NUL/space-terminated octal, or GNU base-256 when the top bit is set."""
    if field and field[0] & 0x80:
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    text = field.replace(b"\0", b" ").strip()
    return int(text, 8) if text else 0


def _checksum_matches(header: bytes) -> bool:
    """Tar checksum: the byte sum of the header with its checksum field read as eight spaces.

    Some old writers summed signed bytes; that variant is only computed when the usual one fails.
    """
    try:
        stored = _octal_field(header[148:156])
    except ValueError:
        return False
    unsigned = sum(header) - sum(header[148:156]) + 8 * 0x20
    if stored == unsigned:
        return True
    high_bytes = sum(1 for byte in header[:148] + header[156:] if byte >= 0x80)
    return stored == unsigned - 256 * high_bytes


def _pax_records(data: bytes) -> dict[str, str]:
    """Parse pax extended-header records ``"<length> <key>=<value>\\n"``."""
    records: dict[str, str] = {}
    position = 0
    while position < len(data):
        space = data.index(b" ", position)
        length = int(data[position:space])
        if length <= 0:
            raise ValueError("non-positive pax record length")
        record = data[space + 1 : position + length - 1]
        key, _, value = record.partition(b"=")
        records[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
        position += length
    return records


def iter_tar_members(stream: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """Yield (path, data) of each regular file in a tar stream, in archive order.

    Raises :class:`TarFormatError` on a bad header, a truncated member or a missing end-of-archive block.
    """
    last_key = "(start of shard)"
    long_name: str | None = None
    pax: dict[str, str] = {}
    while True:
        header = _read_exact(stream, BLOCK_SIZE)
        if len(header) < BLOCK_SIZE:
            raise TarFormatError(
                f"truncated shard: stream ends without the tar end-of-archive block after sample {last_key}",
                key=last_key,
            )
        if header == _ZERO_BLOCK:
            return
        if not _checksum_matches(header):
            raise TarFormatError(f"corrupt tar header (checksum mismatch) after sample {last_key}", key=last_key)
        name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if header[257:262] == b"ustar":
            prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            if prefix:
                name = f"{prefix}/{name}"
        type_flag = header[156:157]
        size = _octal_field(header[124:136])
        if type_flag in _REGULAR_FILE_TYPES and "size" in pax:
            size = int(pax["size"])
        path = long_name or pax.get("path") or name
        member_key = split_member_name(path)[0]
        data = _read_exact(stream, size)
        padding = -size % BLOCK_SIZE
        if len(data) < size or len(_read_exact(stream, padding)) < padding:
            raise TarFormatError(f"truncated shard: member {path} is cut short", key=member_key)
        if type_flag == _GNU_LONG_NAME:
            long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        if type_flag == _PAX_HEADER:
            try:
                pax = _pax_records(data)
            except ValueError as error:
                raise TarFormatError(f"corrupt pax header after sample {last_key}: {error}", key=last_key) from error
            continue
        if type_flag == _PAX_GLOBAL_HEADER:
            continue
        long_name, pax = None, {}
        if type_flag in _REGULAR_FILE_TYPES:
            last_key = member_key
            yield path, data


def iter_tar_samples(stream: BinaryIO) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {extension: data}) for each WebDataset sample in a tar stream.

    A sample is only yielded once it is complete (the next key began or the archive ended), so damage in
    the middle of a sample drops that sample rather than passing on a partial one. When a member of a new
    key is cut short, the sample before it was complete and is still yielded before the error; after a
    corrupt header it cannot be known whether the last sample had all its members, so it is dropped.
    """
    current_key: str | None = None
    members: dict[str, bytes] = {}
    try:
        for path, data in iter_tar_members(stream):
            key, extension = split_member_name(path)
            if key.startswith("__") and key.endswith("__"):
                continue
            if key != current_key:
                if current_key is not None and members:
                    yield current_key, members
                current_key, members = key, {}
            members[extension] = data
    except TarFormatError as error:
        if error.key != current_key and current_key is not None and members:
            yield current_key, members
        raise
    if current_key is not None and members:
        yield current_key, members
