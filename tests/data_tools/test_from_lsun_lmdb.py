"""from_lsun_lmdb: an LSUN-style lmdb of WebP/JPEG photos becomes ADM-cropped shards keyed by lmdb key."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_tools import from_lsun_lmdb
from kacdist.data import make_eval_stream, read_card, read_manifest
from kacdist.data.decode import decode_pixels
from kacdist.data.tarstream import iter_tar_samples

from tests.data_tools.converter_sources import add_lmdb_value


def _adm_expected(data: bytes, resolution: int) -> np.ndarray:
    """ADM's LSUN recipe written out independently: BOX-resize the short side, slice the centre."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    scale = resolution / min(width, height)
    resized = np.asarray(image.resize((round(width * scale), round(height * scale)), resample=Image.Resampling.BOX))
    top, left = (resized.shape[0] - resolution) // 2, (resized.shape[1] - resolution) // 2
    return resized[top : top + resolution, left : left + resolution]


def _shard_members(directory: Path) -> dict[str, dict[str, bytes]]:
    members = {}
    for record in read_manifest(directory):
        with open(directory / record.shard, "rb") as stream:
            members.update(dict(iter_tar_samples(stream)))
    return members


def test_lmdb_round_trip_with_adm_crop(lsun_lmdb: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    path, values = lsun_lmdb
    out = tmp_path / "lsun64"
    argv = [str(path), "--out", str(out), "--resolution", "64", "--format", "png", "--shard-size", "4"]
    argv += ["--workers", "1"]
    assert from_lsun_lmdb.main(argv) == 0
    members = _shard_members(out)
    assert set(members) == set(values)
    for key, sample in members.items():
        assert set(sample) == {"png"}, "LSUN samples are unlabelled"
        assert np.array_equal(decode_pixels(sample["png"], 3), _adm_expected(values[key], 64)), key
    card = read_card(out)
    assert card["name"] == "bedroom_train" and card["labelled"] is False and card["splits"]["train"]["num_shards"] == 2
    x, y = next(iter(make_eval_stream(str(out / "train-*.tar"), 6, resolution=64)))
    assert x.shape == (6, 3, 64, 64) and y.tolist() == [-1] * 6


def test_default_format_is_jpeg_and_limit_takes_the_first_keys(
    lsun_lmdb: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    path, values = lsun_lmdb
    out = tmp_path / "lsun32"
    argv = [str(path), "--out", str(out), "--resolution", "32", "--limit", "3", "--workers", "1"]
    assert from_lsun_lmdb.main(argv) == 0
    members = _shard_members(out)
    assert set(members) == set(sorted(values)[:3])
    for key, sample in members.items():
        error = np.abs(decode_pixels(sample["jpg"], 3).astype(int) - _adm_expected(values[key], 32)).mean()
        assert error < 6.0, key


def test_undecodable_value_is_reported_by_database_and_key(
    lsun_lmdb: tuple[Path, dict[str, bytes]], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path, values = lsun_lmdb
    add_lmdb_value(path, "ffff0000broken", b"RIFF\x10\x00\x00\x00WEBPVP8 garbage")
    assert from_lsun_lmdb.main([str(path), "--out", str(tmp_path / "o"), "--resolution", "32", "--workers", "1"]) == 0
    assert f"skipped {path.resolve()}#ffff0000broken:" in capsys.readouterr().out
    assert sum(record.num_samples for record in read_manifest(tmp_path / "o")) == len(values)
