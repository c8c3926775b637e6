"""Manifest rows and resume records survive a round trip through Parquet and JSON."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from kacdist.data.manifest import (
    MANIFEST_SCHEMA,
    ShardRecord,
    clear_progress_records,
    read_manifest,
    read_progress_records,
    write_manifest,
    write_progress_record,
)


def _record(index: int, split: str = "train") -> ShardRecord:
    return ShardRecord(
        shard=f"{split}-{index:06d}.tar",
        split=split,
        index=index,
        num_samples=2,
        num_bytes=10240,
        sha256="ab" * 32,
        class_counts=(1, 1, 0),
        keys=(f"a{index}", f"b{index}"),
        skipped=("/src/broken.png: cannot identify image file",),
        image_format="png",
        plan_digest="cd" * 32,
    )


def test_manifest_round_trip_sorted_by_split_and_index(tmp_path: Path) -> None:
    records = [_record(1), _record(0, "test"), _record(0)]
    write_manifest(tmp_path, records)
    assert read_manifest(tmp_path) == [_record(0, "test"), _record(0), _record(1)]
    assert pq.read_schema(tmp_path / "manifest.parquet").remove_metadata().equals(MANIFEST_SCHEMA)
    assert not list(tmp_path.glob(".*tmp*")), "atomic write leaves no temporary file"


def test_missing_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a converted dataset directory"):
        read_manifest(tmp_path)


def test_progress_records_round_trip_and_clear(tmp_path: Path) -> None:
    write_progress_record(tmp_path, _record(0))
    write_progress_record(tmp_path, _record(1))
    (tmp_path / ".progress" / "junk.json").write_text("{not json")
    assert read_progress_records(tmp_path) == [_record(0), _record(1)]
    clear_progress_records(tmp_path, ["train-000000.tar", "train-000001.tar", "junk"])
    assert not (tmp_path / ".progress").exists()
