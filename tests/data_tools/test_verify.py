"""verify: clean data passes; flipped bytes, truncation, missing and unlisted shards are each reported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from data_tools import from_lsun_lmdb, verify
from kacdist.data import read_manifest, verify_dataset, write_digits_shards

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clean_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("digits8")
    write_digits_shards(directory, 8, "test", samples_per_shard=100)
    return directory


@pytest.fixture()
def digits(clean_digits: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(clean_digits, tmp_path / "digits8"))


def _run(directory: Path, capsys: pytest.CaptureFixture, *options: str) -> tuple[int, str]:
    code = verify.main([str(directory), "--workers", "1", *options])
    return code, capsys.readouterr().out


def test_clean_dataset_passes(digits: Path, capsys: pytest.CaptureFixture) -> None:
    code, out = _run(digits, capsys)
    assert code == 0 and "3 shards, 299 samples checked: OK" in out


def test_flipped_byte_in_an_image_is_a_hash_mismatch_and_a_corrupt_key(
    digits: Path, capsys: pytest.CaptureFixture
) -> None:
    shard = digits / "test-000001.tar"
    key = read_manifest(digits)[1].keys[42]
    with tarfile.open(shard) as archive:
        member = archive.getmember(f"{key}.png")
    data = bytearray(shard.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0x04
    shard.write_bytes(bytes(data))
    code, out = _run(digits, capsys)
    assert code == 1
    assert "hash-mismatch: test-000001.tar: sha256" in out
    assert f"corrupt-sample: test-000001.tar key {key}: image does not decode" in out


def test_flipped_byte_in_jpeg_payload_is_caught_by_the_hash_alone(
    lsun_lmdb: tuple[Path, dict[str, bytes]], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path, _ = lsun_lmdb
    out_dir = tmp_path / "lsun"
    assert from_lsun_lmdb.main([str(path), "--out", str(out_dir), "--resolution", "32", "--workers", "1"]) == 0
    record = read_manifest(out_dir)[0]
    shard = out_dir / record.shard
    with tarfile.open(shard) as archive:
        member = archive.getmember(f"{record.keys[0]}.jpg")
    data = bytearray(shard.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0x04
    shard.write_bytes(bytes(data))
    code, out = _run(out_dir, capsys)
    assert code == 1 and f"hash-mismatch: {record.shard}" in out and "corrupt-sample" not in out


def test_truncated_shard_reports_the_cut_key_and_the_missing_keys(digits: Path, capsys: pytest.CaptureFixture) -> None:
    shard = digits / "test-000000.tar"
    keys = read_manifest(digits)[0].keys
    with tarfile.open(shard) as archive:
        member = archive.getmember(f"{keys[97]}.png")
    shard.write_bytes(shard.read_bytes()[: member.offset_data + 5])
    code, out = _run(digits, capsys)
    assert code == 1
    assert f"corrupt-shard: test-000000.tar key {keys[97]}: truncated shard" in out
    for key in keys[97:]:
        assert f"missing-key: test-000000.tar key {key}" in out
    assert "size-mismatch: test-000000.tar" in out


def test_missing_unlisted_and_leftover_files(digits: Path, capsys: pytest.CaptureFixture) -> None:
    (digits / "test-000002.tar").rename(digits / "test-000007.tar")
    (digits / ".test-000003.tar.tmp-123-abcd").write_bytes(b"partial")
    code, out = _run(digits, capsys, "--no-decode")
    assert code == 1
    assert "missing-shard: test-000002.tar" in out
    assert "unlisted-shard: test-000007.tar" in out
    assert "warning: leftover temporary file of an interrupted writer: .test-000003.tar.tmp-123-abcd" in out


def test_directory_without_manifest_fails(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out = _run(tmp_path, capsys)
    assert code == 1 and "missing-manifest" in out


def test_parallel_check_and_module_entry_point_exit_code(digits: Path) -> None:
    assert verify_dataset(digits, workers=2).samples_checked == 299
    (digits / "test-000001.tar").unlink()
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "data_tools.verify", str(digits), "--workers", "1"]
    broken = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=environment, timeout=60)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "missing-shard: test-000001.tar" in broken.stdout and "1 problem(s)" in broken.stdout
