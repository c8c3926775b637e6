"""from_cifar10: CIFAR-style pickle batches round-trip exactly; foreign pickles are refused."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from data_tools import from_cifar10
from kacdist.data import make_eval_stream, read_card, read_manifest

from tests.data_tools.converter_sources import CIFAR_CLASS_NAMES


def _batch(directory: Path, name: str) -> dict:
    return pickle.loads((directory / name).read_bytes(), encoding="bytes")


def test_pickles_round_trip_pixel_exact_with_labels(cifar_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cifar"
    assert from_cifar10.main([str(cifar_dir), "--out", str(out), "--shard-size", "8", "--workers", "1"]) == 0
    card = read_card(out)
    assert card["class_names"] == CIFAR_CLASS_NAMES and card["resolution"] == 32
    assert {split: entry["num_samples"] for split, entry in card["splits"].items()} == {"train": 20, "test": 6}
    records = read_manifest(out)
    sizes = [(record.split, record.num_samples) for record in records]
    assert sizes == [("test", 6), ("train", 8), ("train", 8), ("train", 4)]
    expected = {}
    for name in [f"data_batch_{n}" for n in range(1, 6)] + ["test_batch"]:
        batch = _batch(cifar_dir, name)
        for row, (pixels, label) in enumerate(zip(batch[b"data"], batch[b"labels"])):
            expected[f"{name}_{row:05d}"] = (pixels.reshape(3, 32, 32), label)
    seen = set()
    for split in ("train", "test"):
        for x, y, keys in make_eval_stream(str(out / f"{split}-*.tar"), 5, return_keys=True):
            for image, label, key in zip(x, y, keys):
                pixels, expected_label = expected[key]
                assert np.array_equal(np.rint((image.numpy() + 1) * 127.5).astype(np.uint8), pixels), key
                assert int(label) == expected_label
                seen.add(key)
    assert seen == set(expected)
    train_counts = np.sum([record.class_counts for record in records if record.split == "train"], axis=0)
    train_labels = [label for key, (_, label) in expected.items() if key.startswith("data_batch")]
    assert train_counts.tolist() == np.bincount(train_labels, minlength=10).tolist()


def test_single_split_and_upscaled_resolution(cifar_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cifar64"
    argv = [str(cifar_dir), "--out", str(out), "--splits", "test", "--resolution", "64", "--workers", "1"]
    assert from_cifar10.main(argv) == 0
    assert [record.split for record in read_manifest(out)] == ["test"]
    assert next(iter(make_eval_stream(str(out / "test-*.tar"), 6)))[0].shape == (6, 3, 64, 64)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_foreign_globals_is_refused(cifar_dir: Path, tmp_path: Path) -> None:
    (cifar_dir / "test_batch").write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": []}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        from_cifar10.main([str(cifar_dir), "--out", str(tmp_path / "x"), "--splits", "test"])


def test_missing_batch_is_a_clear_error(cifar_dir: Path, tmp_path: Path) -> None:
    (cifar_dir / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3 is missing"):
        from_cifar10.main([str(cifar_dir), "--out", str(tmp_path / "x")])
