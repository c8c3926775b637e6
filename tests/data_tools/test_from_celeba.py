"""from_celeba: partition file splits, the 140-pixel centre crop to 64, and a missing listed image."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_tools import from_celeba
from kacdist.data import make_eval_stream, read_card, read_manifest


def _expected(path: Path) -> np.ndarray:
    """178x218 -> rows 39..178, columns 19..158 (140x140) -> bilinear 64x64."""
    array = np.asarray(Image.open(path).convert("RGB"))
    crop = Image.fromarray(array[39 : 39 + 140, 19 : 19 + 140])
    return np.asarray(crop.resize((64, 64), resample=Image.Resampling.BILINEAR))


def test_splits_crop_and_missing_image(celeba_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "celeba64"
    assert from_celeba.main([str(celeba_dir), "--out", str(out), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"skipped {(celeba_dir / 'img_align_celeba' / '000010.jpg').resolve()}" in printed
    card = read_card(out)
    counts = {split: entry["num_samples"] for split, entry in card["splits"].items()}
    assert counts == {"train": 5, "valid": 2, "test": 2}
    assert card["splits"]["valid"]["num_skipped"] == 1 and card["resolution"] == 64
    keys_by_split = {}
    for split in ("train", "valid", "test"):
        keys_by_split[split] = []
        for x, y, keys in make_eval_stream(str(out / f"{split}-*.tar"), 8, return_keys=True, resolution=64):
            assert y.tolist() == [-1] * len(keys)
            for image, key in zip(x, keys):
                pixels = np.rint((image.permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
                assert np.array_equal(pixels, _expected(celeba_dir / "img_align_celeba" / f"{key}.jpg")), key
                keys_by_split[split].append(key)
    assert sorted(keys_by_split["train"]) == ["000001", "000002", "000003", "000004", "000005"]
    assert sorted(keys_by_split["valid"]) == ["000006", "000007"]
    assert sorted(keys_by_split["test"]) == ["000008", "000009"]


def test_strict_run_stops_at_the_missing_image(celeba_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [str(celeba_dir), "--out", str(tmp_path / "o"), "--splits", "valid", "--strict", "--workers", "1"]
    assert from_celeba.main(argv) == 1
    assert "000010.jpg" in capsys.readouterr().err
    assert from_celeba.main([str(celeba_dir), "--out", str(tmp_path / "t"), "--splits", "test", "--workers", "1"]) == 0
    assert [record.split for record in read_manifest(tmp_path / "t")] == ["test"]


def test_malformed_partition_line_is_reported_with_its_line_number(celeba_dir: Path, tmp_path: Path) -> None:
    with open(celeba_dir / "list_eval_partition.txt", "a") as handle:
        handle.write("000011.jpg 7\n")
    with pytest.raises(ValueError, match=r"list_eval_partition.txt:11"):
        from_celeba.main([str(celeba_dir), "--out", str(tmp_path / "o")])


def test_command_line_reports_a_missing_source_in_one_line(tmp_path: Path) -> None:
    repo_root = Path(__file__).resolve().parents[2]
    environment = dict(os.environ, PYTHONPATH=str(repo_root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "data_tools.from_celeba", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=repo_root, env=environment, timeout=60)
    assert result.returncode == 1
    partition = tmp_path / "nowhere" / "list_eval_partition.txt"
    assert result.stderr.strip() == f"error: FileNotFoundError: CelebA partition file {partition} is missing"
