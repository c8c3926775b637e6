"""The Parquet manifest (one row per shard), the dataset card, and the dataset-directory lock.

The manifest is the ground truth a dataset directory is checked against: ``verify`` re-hashes shards
against it, a resumed conversion reuses a shard only if its hash and planned contents match its row, and
the keys column lets a report name the samples that went missing from a damaged shard. The card
(``dataset.json``) is for humans and for the training code: resolution, channels, classes, counts and the
command that produced each split.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from kacdist.data.atomic import atomic_output, atomic_write_bytes

MANIFEST_FILE_NAME: Final = "manifest.parquet"
CARD_FILE_NAME: Final = "dataset.json"
LOCK_FILE_NAME: Final = ".lock"
PROGRESS_DIR_NAME: Final = ".progress"
"""Per-shard records written as each shard finishes, so a killed conversion can resume."""

MANIFEST_SCHEMA: Final = pa.schema(
    [
        pa.field("shard", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("index", pa.int32(), nullable=False),
        pa.field("num_samples", pa.int64(), nullable=False),
        pa.field("num_bytes", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("class_counts", pa.list_(pa.int64()), nullable=False),
        pa.field("keys", pa.list_(pa.string()), nullable=False),
        pa.field("skipped", pa.list_(pa.string()), nullable=False),
        pa.field("image_format", pa.string(), nullable=False),
        pa.field("plan_digest", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True)
class ShardRecord:
    """One manifest row.

    ``shard`` is the file name relative to the dataset directory; ``class_counts[c]`` counts samples of
    class ``c`` (empty for unlabelled data); ``skipped`` lists the source images left out of this shard
    with the reason; ``plan_digest`` fingerprints which source items and which recipe the shard was
    planned from, so a changed source or option is never mistaken for a finished shard.
    """

    shard: str
    split: str
    index: int
    num_samples: int
    num_bytes: int
    sha256: str
    class_counts: tuple[int, ...]
    keys: tuple[str, ...]
    skipped: tuple[str, ...]
    image_format: str
    plan_digest: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_mapping(cls, row: dict[str, Any]) -> ShardRecord:
        return cls(
            shard=str(row["shard"]),
            split=str(row["split"]),
            index=int(row["index"]),
            num_samples=int(row["num_samples"]),
            num_bytes=int(row["num_bytes"]),
            sha256=str(row["sha256"]),
            class_counts=tuple(int(count) for count in row["class_counts"]),
            keys=tuple(str(key) for key in row["keys"]),
            skipped=tuple(str(item) for item in row["skipped"]),
            image_format=str(row["image_format"]),
            plan_digest=str(row["plan_digest"]),
        )


def manifest_path(dataset_dir: Path) -> Path:
    return Path(dataset_dir) / MANIFEST_FILE_NAME


def write_manifest(dataset_dir: Path, records: Sequence[ShardRecord]) -> Path:
    """Write all rows (sorted by split, then index) atomically; returns the manifest path."""
    ordered = sorted(records, key=lambda record: (record.split, record.index))
    columns = {
        name: [list(value) if isinstance(value, tuple) else value for value in (getattr(r, name) for r in ordered)]
        for name in MANIFEST_SCHEMA.names
    }
    table = pa.Table.from_pydict(columns, schema=MANIFEST_SCHEMA)
    target = manifest_path(dataset_dir)
    with atomic_output(target) as temp:
        pq.write_table(table, temp)
    return target


def read_manifest(dataset_dir: Path) -> list[ShardRecord]:
    """All rows of a dataset directory's manifest; a missing manifest is a :class:`FileNotFoundError`."""
    path = manifest_path(dataset_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_FILE_NAME} in {dataset_dir}: not a converted dataset directory")
    table = pq.read_table(path)
    return [ShardRecord.from_mapping(row) for row in table.to_pylist()]


def read_card(dataset_dir: Path) -> dict[str, Any]:
    """The dataset card, or an empty dict if there is none yet."""
    path = Path(dataset_dir) / CARD_FILE_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def write_card(dataset_dir: Path, card: dict[str, Any]) -> Path:
    target = Path(dataset_dir) / CARD_FILE_NAME
    atomic_write_bytes(target, (json.dumps(card, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return target


@contextlib.contextmanager
def dataset_lock(dataset_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the dataset directory for the duration of the block.

    Converters take it for a whole conversion, so two processes building the same directory (every rank
    asking for the digits cache on first use) run one after the other and the second finds every shard
    finished. The kernel drops the lock when its holder dies, so a killed converter never blocks others.
    """
    directory = Path(dataset_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE_NAME, "a+b") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def write_progress_record(dataset_dir: Path, record: ShardRecord) -> None:
    """Record a finished shard next to it, before the manifest is rewritten at the end of the run."""
    target = Path(dataset_dir) / PROGRESS_DIR_NAME / f"{record.shard}.json"
    atomic_write_bytes(target, record.to_json().encode("utf-8"))


def read_progress_records(dataset_dir: Path) -> list[ShardRecord]:
    """Records left by a conversion that did not reach its final manifest write (unreadable ones ignored)."""
    directory = Path(dataset_dir) / PROGRESS_DIR_NAME
    records = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            records.append(ShardRecord.from_mapping(json.loads(path.read_text())))
        except (ValueError, KeyError, TypeError):
            continue
    return records


def clear_progress_records(dataset_dir: Path, shard_names: Sequence[str]) -> None:
    directory = Path(dataset_dir) / PROGRESS_DIR_NAME
    for name in shard_names:
        (directory / f"{name}.json").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()
