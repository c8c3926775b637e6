"""Resumable conversion: finished shards are kept (verified by hash), damaged or changed ones rebuilt."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_tools import from_folder
from kacdist.data import read_manifest, verify_dataset


def _stamps(directory: Path) -> dict[str, tuple[int, int]]:
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in sorted(directory.glob("train-*.tar"))}


def _convert(source: Path, out: Path, *options: str) -> int:
    argv = [str(source), "--out", str(out), "--resolution", "16", "--shard-size", "2", "--order-seed", "-1"]
    argv += ["--workers", "1"]
    return from_folder.main(argv + list(options))


def test_interrupted_strict_run_resumes_without_rewriting_finished_shards(
    photo_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    broken = photo_folder / "scenes" / "more" / "zz_broken.png"
    broken.write_bytes(b"not an image")
    out = tmp_path / "out"
    assert _convert(photo_folder, out, "--strict") == 1
    finished = _stamps(out)
    expected = ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert sorted(finished) == expected, "shards before the bad image were kept"
    assert (out / ".progress").is_dir() and not (out / "manifest.parquet").exists()
    broken.unlink()
    capsys.readouterr()
    assert _convert(photo_folder, out) == 0
    assert "train: 7 samples in 4 shards (1 written, 3 reused)" in capsys.readouterr().out
    stamps = _stamps(out)
    assert {name: stamps[name] for name in finished} == finished
    assert not (out / ".progress").exists() and verify_dataset(out).ok


def test_damaged_shard_is_rewritten_and_changed_options_rebuild_everything(
    photo_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    assert _convert(photo_folder, out) == 0
    before = {record.shard: record.sha256 for record in read_manifest(out)}
    damaged = out / "train-000002.tar"
    damaged.write_bytes(damaged.read_bytes()[:-2000])
    capsys.readouterr()
    assert _convert(photo_folder, out) == 0
    assert "(1 written, 3 reused)" in capsys.readouterr().out
    assert {record.shard: record.sha256 for record in read_manifest(out)} == before
    assert _convert(photo_folder, out, "--format", "webp") == 0
    assert "(4 written, 0 reused)" in capsys.readouterr().out
    assert {record.image_format for record in read_manifest(out)} == {"webp"}


def test_fewer_shards_on_rerun_removes_stale_ones(photo_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _convert(photo_folder, out) == 0
    assert len(list(out.glob("train-*.tar"))) == 4
    assert _convert(photo_folder, out, "--shard-size", "5") == 0
    assert sorted(path.name for path in out.glob("train-*.tar")) == ["train-000000.tar", "train-000001.tar"]
    assert verify_dataset(out).ok
