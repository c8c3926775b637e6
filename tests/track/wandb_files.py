"""Reading back what wandb wrote offline: the records of ``<stage>/wandb/offline-run-*/run-<id>.wandb``.

wandb 0.31 ships no Python reader for its transaction log, so this follows the file format its service
writes: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then LevelDB-log framing in 32 KiB blocks
(each chunk: CRC-32 of type byte + payload, length, type FULL/FIRST/MIDDLE/LAST; a block tail shorter than a
chunk header is padding), each assembled payload one ``wandb_internal_pb2.Record``. The CRC is checked, so a
misread file fails loudly instead of yielding wrong records.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from wandb.proto import wandb_internal_pb2

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    assert data[:len(HEADER)] == HEADER, f"{path} is not a wandb transaction log: {data[:7]!r}"
    pos, pending, out = len(HEADER), b"", []
    while pos + CHUNK_HEADER <= len(data):
        if BLOCK - pos % BLOCK < CHUNK_HEADER:
            pos += BLOCK - pos % BLOCK  # block tail padding
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        if kind == 0 and length == 0:  # zero padding up to the end of the block
            pos += BLOCK - pos % BLOCK
            continue
        payload = data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        assert zlib.crc32(payload, zlib.crc32(bytes([kind]))) == crc, f"{path}: bad checksum at byte {pos}"
        pos += CHUNK_HEADER + length
        if kind == FULL:
            pending = payload
        elif kind == FIRST:
            pending = payload
            continue
        elif kind == MIDDLE:
            pending += payload
            continue
        elif kind == LAST:
            pending += payload
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        out.append(record)
        pending = b""
    return out


@dataclass
class OfflineSegment:
    """One attempt of a stage as wandb saw it: one offline-run folder."""

    path: Path
    run_id: str
    group: str
    job_type: str
    name: str
    history: list[dict]  # the logged rows, wandb's own _step/_runtime/_timestamp included
    summary: dict  # the run summary as this attempt left it
    finished: bool  # an exit record was written


def segments(stage_dir: Path) -> list[OfflineSegment]:
    """The offline runs under ``<stage_dir>/wandb``, oldest first (``latest-run`` is a link to one of them)."""
    found = []
    for log in sorted(Path(stage_dir).glob("wandb/offline-run-*/run-*.wandb")):
        run, history, summary, finished = None, [], {}, False
        for record in records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
            elif kind == "history":
                history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in record.history.item})
            elif kind == "summary":
                summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in record.summary.update})
            elif kind == "exit":
                finished = True
        assert run is not None, f"{log} has no run record"
        found.append(OfflineSegment(log.parent, run.run_id, run.run_group, run.job_type, run.display_name, history,
                                    summary, finished))
    return found


def metrics_of(row: dict) -> dict:
    """A history row without wandb's own bookkeeping columns."""
    return {k: v for k, v in row.items() if not k.startswith("_")}
