"""Shared fixtures: real shard datasets built once per session from scikit-learn's digits and skimage photos."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kacdist.data.digits import write_digits_shards
from kacdist.data.manifest import read_manifest
from kacdist.data.shards import ShardSample, write_shard

from .helpers import photo_tiles, png_bytes

DIGITS_SHARD_SIZE = 100


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both digits splits at 16x16 with 100 samples per shard (15 train shards, 3 test shards). Read-only."""
    directory = tmp_path_factory.mktemp("digits16")
    write_digits_shards(directory, 16, "train", samples_per_shard=DIGITS_SHARD_SIZE)
    write_digits_shards(directory, 16, "test", samples_per_shard=DIGITS_SHARD_SIZE)
    return directory


@pytest.fixture()
def digits_copy(digits_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the digits dataset that a test may damage."""
    return Path(shutil.copytree(digits_dir, tmp_path / "digits16"))


@pytest.fixture(scope="session")
def digits_labels(digits_dir: Path) -> dict[str, int]:
    """key -> class from scikit-learn's targets (a digits key carries the array index), independent of the shards."""
    from sklearn.datasets import load_digits

    targets = load_digits().target
    return {key: int(targets[int(key.split("_")[1])]) for record in read_manifest(digits_dir) for key in record.keys}


@pytest.fixture()
def photo_shards(tmp_path: Path) -> Path:
    """Three labelled 32x32 PNG shards of 8 photo tiles each, keys ``s<shard>_<n>``, written with the real writer."""
    directory = tmp_path / "photos"
    tiles = photo_tiles(32, 24)
    for shard in range(3):
        samples = [
            ShardSample(key=f"s{shard}_{n}", image_format="png", image=png_bytes(tiles[shard * 8 + n]), label=n % 3)
            for n in range(8)
        ]
        write_shard(directory / f"train-{shard:06d}.tar", samples)
    return directory
