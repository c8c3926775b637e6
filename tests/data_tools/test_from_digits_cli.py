"""from_digits: the command writes both splits, identical to what write_digits_shards builds."""

from __future__ import annotations

from pathlib import Path

from data_tools import from_digits
from kacdist.data import read_card, read_manifest, write_digits_shards


def test_cli_writes_both_splits_matching_the_library_function(tmp_path: Path) -> None:
    assert from_digits.main(["--out", str(tmp_path / "cli"), "--resolution", "8"]) == 0
    card = read_card(tmp_path / "cli")
    assert {split: entry["num_samples"] for split, entry in card["splits"].items()} == {"train": 1498, "test": 299}
    expected_command = f"python -m data_tools.from_digits --out {tmp_path / 'cli'} --resolution 8"
    assert card["splits"]["test"]["command"] == expected_command
    write_digits_shards(tmp_path / "lib", 8, "test")
    cli_test = [record.sha256 for record in read_manifest(tmp_path / "cli") if record.split == "test"]
    assert cli_test == [record.sha256 for record in read_manifest(tmp_path / "lib")]


def test_unknown_split_is_refused(tmp_path: Path) -> None:
    assert from_digits.main(["--out", str(tmp_path), "--splits", "train,valid"]) == 1
    assert not (tmp_path / "manifest.parquet").exists()
