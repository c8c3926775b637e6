"""from_folder: labelled and unlabelled folders of real photos round-trip into shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from data_tools import from_folder
from kacdist.data import make_eval_stream, read_card, read_manifest, verify_dataset


def _expected_pixels(path: Path, resolution: int) -> np.ndarray:
    """Independent recipe: EXIF-upright RGB, short side to ``resolution`` (bicubic), centre square."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    array = np.asarray(image.resize(size, resample=Image.Resampling.BICUBIC))
    top, left = (size[1] - resolution) // 2, (size[0] - resolution) // 2
    return array[top : top + resolution, left : left + resolution]


def _stream_by_key(pattern: str, **options) -> dict[str, tuple[np.ndarray, int]]:
    out = {}
    for x, y, keys in make_eval_stream(pattern, 4, return_keys=True, **options):
        for image, label, key in zip(x, y, keys):
            out[key] = (np.rint((image.permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8), int(label))
    return out


def test_labelled_folder_round_trips_pixels_and_classes(
    photo_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "shards"
    argv = [str(photo_folder), "--out", str(out), "--resolution", "32", "--shard-size", "3", "--workers", "1"]
    assert from_folder.main(argv) == 0
    card = read_card(out)
    assert card["class_names"] == ["cats", "scenes"] and card["resolution"] == 32
    assert card["splits"]["train"]["num_samples"] == 7
    assert card["splits"]["train"]["command"].startswith("python -m data_tools.from_folder")
    records = read_manifest(out)
    assert [record.num_samples for record in records] == [3, 3, 1]
    assert np.sum([record.class_counts for record in records], axis=0).tolist() == [2, 5]
    samples = _stream_by_key(str(out / "train-*.tar"))
    sources = {
        "cats_chelsea": "cats/chelsea.png",
        "cats_close_up": "cats/close_up.jpg",
        "scenes_astronaut": "scenes/astronaut.png",
        "scenes_coffee": "scenes/coffee.jpg",
        "scenes_rocket": "scenes/rocket.webp",
        "scenes_more_cells": "scenes/more/cells.png",
        "scenes_more_camera": "scenes/more/camera.png",
    }
    assert set(samples) == set(sources)
    for key, (pixels, label) in samples.items():
        source = sources[key]
        assert np.array_equal(pixels, _expected_pixels(photo_folder / source, 32)), key
        assert label == (0 if key.startswith("cats") else 1)
    assert "train: 7 samples in 3 shards (3 written, 0 reused), 0 source images skipped" in capsys.readouterr().out
    assert verify_dataset(out).ok


def test_unlabelled_grey_conversion_has_no_classes(photo_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "grey"
    (photo_folder / "scenes" / "._coffee.jpg").write_bytes(b"macOS resource fork, not an image")
    (photo_folder / "scenes" / ".thumbnails").mkdir()
    thumbnail = (photo_folder / "scenes" / "astronaut.png").read_bytes()
    (photo_folder / "scenes" / ".thumbnails" / "t.png").write_bytes(thumbnail)
    argv = [str(photo_folder / "scenes"), "--out", str(out), "--resolution", "16", "--unlabelled", "--channels", "1"]
    argv += ["--format", "jpg"]
    assert from_folder.main(argv + ["--workers", "1", "--split", "val"]) == 0
    records = read_manifest(out)
    assert records[0].split == "val" and records[0].class_counts == () and records[0].image_format == "jpg"
    assert records[0].skipped == (), "hidden files are not samples, so nothing was skipped"
    batch = next(iter(make_eval_stream(str(out / "val-*.tar"), 8, channels=1)))
    assert batch[0].shape == (5, 1, 16, 16) and batch[1].tolist() == [-1] * 5
    assert read_card(out)["labelled"] is False


def test_bad_image_is_reported_by_path_and_skipped_or_fatal_with_strict(
    photo_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    broken = photo_folder / "scenes" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    out = tmp_path / "shards"
    assert from_folder.main([str(photo_folder), "--out", str(out), "--resolution", "16", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"skipped {broken}:" in printed and "1 source images skipped" in printed
    records = read_manifest(out)
    assert sum(record.num_samples for record in records) == 7
    assert any(item.startswith(str(broken)) for record in records for item in record.skipped)
    strict_out = tmp_path / "strict"
    strict_argv = [str(photo_folder), "--out", str(strict_out), "--resolution", "16", "--workers", "1", "--strict"]
    assert from_folder.main(strict_argv) == 1
    assert f"bad source image {broken}" in capsys.readouterr().err


def test_several_processes_write_the_same_bytes(photo_folder: Path, tmp_path: Path) -> None:
    common = [str(photo_folder), "--resolution", "24", "--shard-size", "2"]
    assert from_folder.main(common + ["--out", str(tmp_path / "one"), "--workers", "1"]) == 0
    assert from_folder.main(common + ["--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    one, two = read_manifest(tmp_path / "one"), read_manifest(tmp_path / "two")
    assert [record.sha256 for record in one] == [record.sha256 for record in two] and len(one) == 4


def test_loose_images_beside_class_folders_are_refused(photo_folder: Path, tmp_path: Path) -> None:
    (photo_folder / "stray.png").write_bytes((photo_folder / "cats" / "chelsea.png").read_bytes())
    with pytest.raises(ValueError, match="loose images"):
        from_folder.main([str(photo_folder), "--out", str(tmp_path / "x"), "--resolution", "16"])
