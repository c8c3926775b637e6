"""The embedded default dataset: write_digits_shards builds, records and reuses real digits shards."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_digits

from kacdist.data import read_card, read_manifest, verify_dataset, write_digits_shards
from kacdist.data.atomic import sha256_of_file
from kacdist.data.decode import decode_sample
from kacdist.data.tarstream import iter_tar_samples


def test_split_sizes_and_class_histograms_match_sklearn(digits_dir: Path) -> None:
    records = read_manifest(digits_dir)
    targets = load_digits().target
    by_split = {split: [record for record in records if record.split == split] for split in ("train", "test")}
    assert [len(by_split["train"]), len(by_split["test"])] == [15, 3]
    train_keys = {key for record in by_split["train"] for key in record.keys}
    test_keys = {key for record in by_split["test"] for key in record.keys}
    assert len(train_keys) == 1498 and len(test_keys) == 299 and not train_keys & test_keys
    test_indices = sorted(int(key.split("_")[1]) for key in test_keys)
    assert all(index % 6 == 5 for index in test_indices)
    for split, keys in (("train", train_keys), ("test", test_keys)):
        expected = np.bincount([targets[int(key.split("_")[1])] for key in keys], minlength=10)
        counted = np.sum([record.class_counts for record in by_split[split]], axis=0)
        assert counted.tolist() == expected.tolist()


def test_manifest_hashes_sizes_and_counts_match_files(digits_dir: Path) -> None:
    for record in read_manifest(digits_dir):
        path = digits_dir / record.shard
        assert sha256_of_file(path) == record.sha256
        assert path.stat().st_size == record.num_bytes
        with open(path, "rb") as stream:
            assert [key for key, _ in iter_tar_samples(stream)] == list(record.keys)
        assert record.num_samples == len(record.keys) == sum(record.class_counts)
    table = pq.read_table(digits_dir / "manifest.parquet")
    assert {"shard", "num_samples", "num_bytes", "sha256", "class_counts", "keys"} <= set(table.column_names)


def test_pixels_are_the_digits_enlarged_by_nearest_neighbour(digits_dir: Path) -> None:
    digits = load_digits()
    record = read_manifest(digits_dir)[0]
    with open(digits_dir / record.shard, "rb") as stream:
        key, members = next(iter_tar_samples(stream))
    pixels, label = decode_sample(members, channels=1)
    index = int(key.split("_")[1])
    expected = np.rint(digits.images[index] * 255 / 16).astype(np.uint8).repeat(2, axis=0).repeat(2, axis=1)
    assert np.array_equal(pixels[:, :, 0], expected)
    assert label == digits.target[index]


def test_card_describes_the_data(digits_dir: Path) -> None:
    card = read_card(digits_dir)
    assert (card["resolution"], card["channels"], card["num_classes"], card["image_format"]) == (16, 1, 10, "png")
    assert card["splits"]["train"]["num_samples"] == 1498
    assert card["splits"]["test"]["shards"] == "test-{000000..000002}.tar"
    assert "write_digits_shards" in card["splits"]["train"]["command"]


def test_second_call_reuses_shards_without_rewriting(tmp_path: Path) -> None:
    first = write_digits_shards(tmp_path, 16, "test")
    stamps = [(path.stat().st_ino, path.stat().st_mtime_ns) for path in first]
    second = write_digits_shards(tmp_path, 16, "test")
    assert second == first == [tmp_path / "test-000000.tar", tmp_path / "test-000001.tar"]
    assert [(path.stat().st_ino, path.stat().st_mtime_ns) for path in second] == stamps


def test_concurrent_builders_of_one_directory_agree(tmp_path: Path) -> None:
    results: list[list[Path]] = []
    def build() -> None:
        results.append(write_digits_shards(tmp_path, 8, "test"))

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and results[0] == results[1] == results[2]
    report = verify_dataset(tmp_path)
    assert report.ok and report.samples_checked == 299


def test_bad_resolution_and_mixed_resolutions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="power of two"):
        write_digits_shards(tmp_path, 12)
    write_digits_shards(tmp_path, 8, "test")
    with pytest.raises(ValueError, match="resolution 16 conflicts with 8"):
        write_digits_shards(tmp_path, 16, "train")
