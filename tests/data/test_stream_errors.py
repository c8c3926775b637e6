"""Damaged data: reported with shard and key, skipped, counted, and fatal past the threshold; no hangs."""

from __future__ import annotations

import itertools
import logging
import tarfile
from pathlib import Path

import pytest

from kacdist.data import CorruptDataError, ShardListError, make_eval_stream, make_train_stream
from kacdist.data.shards import ShardSample, write_shard

from .helpers import photo_tiles, png_bytes


def _eval_keys(urls, **options) -> list[str]:
    return [key for _, _, keys in make_eval_stream(urls, 5, return_keys=True, **options) for key in keys]


def _all_keys() -> list[str]:
    return [f"s{shard}_{n}" for shard in range(3) for n in range(8)]


def _flip_byte_in_member(shard: Path, member_name: str) -> None:
    with tarfile.open(shard) as archive:
        member = archive.getmember(member_name)
    data = bytearray(shard.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0x20
    shard.write_bytes(bytes(data))


def _warnings(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING)


def test_garbage_image_is_reported_by_shard_and_key_and_skipped(
    photo_shards: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = png_bytes(photo_tiles(32, 1)[0])
    bad_shard = photo_shards / "train-000003.tar"
    write_shard(bad_shard, [
        ShardSample("g0", "png", good, 0),
        ShardSample("garbage", "png", b"\x89PNG\r\n\x1a\n not really", 1),
        ShardSample("g1", "png", good, 0),
    ])
    keys = _eval_keys(str(photo_shards / "train-*.tar"), max_errors=1)
    assert keys == _all_keys() + ["g0", "g1"]
    assert f"shard={bad_shard} key=garbage" in _warnings(caplog)


def test_flipped_byte_in_an_image_is_reported(photo_shards: Path, caplog: pytest.LogCaptureFixture) -> None:
    shard = photo_shards / "train-000001.tar"
    _flip_byte_in_member(shard, "s1_3.png")
    keys = _eval_keys(str(photo_shards / "train-*.tar"), max_errors=1)
    assert keys == [key for key in _all_keys() if key != "s1_3"]
    assert f"shard={shard} key=s1_3" in _warnings(caplog)


def test_flipped_byte_in_a_tar_header_is_reported(photo_shards: Path, caplog: pytest.LogCaptureFixture) -> None:
    shard = photo_shards / "train-000001.tar"
    with tarfile.open(shard) as archive:
        header = archive.getmember("s1_5.png").offset
    data = bytearray(shard.read_bytes())
    data[header + 3] ^= 0x01
    shard.write_bytes(bytes(data))
    keys = _eval_keys(str(photo_shards / "train-*.tar"), max_errors=1)
    assert keys == [key for key in _all_keys() if not key.startswith("s1_") or key < "s1_4"]
    assert f"shard={shard} key=s1_4: corrupt tar header" in _warnings(caplog)


def test_truncated_shard_keeps_complete_samples_and_names_the_cut_key(
    photo_shards: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shard = photo_shards / "train-000002.tar"
    with tarfile.open(shard) as archive:
        member = archive.getmember("s2_5.png")
    shard.write_bytes(shard.read_bytes()[: member.offset_data + 100])
    keys = _eval_keys(str(photo_shards / "train-*.tar"), max_errors=1)
    assert keys == _all_keys()[:16] + [f"s2_{n}" for n in range(5)]
    assert f"shard={shard} key=s2_5: truncated shard" in _warnings(caplog)


def test_evaluation_fails_on_the_first_bad_sample_by_default(photo_shards: Path) -> None:
    shard = photo_shards / "train-000000.tar"
    _flip_byte_in_member(shard, "s0_6.png")
    with pytest.raises(CorruptDataError, match=f"max_errors=0.*shard={shard} key=s0_6"):
        _eval_keys(str(photo_shards / "train-*.tar"))


def test_threshold_error_fires_inside_dataloader_workers(photo_shards: Path) -> None:
    for shard, member in (("000000", "s0_1.png"), ("000001", "s1_2.png"), ("000002", "s2_7.png")):
        _flip_byte_in_member(photo_shards / f"train-{shard}.tar", member)
    pattern = str(photo_shards / "train-*.tar")
    tolerant = make_train_stream(pattern, 4, num_workers=2, max_errors=3, shuffle_buffer=10)
    batches = list(itertools.islice(iter(tolerant), 30))
    assert len(batches) == 30, "each bad sample counts once, however often it is re-read"
    strict = make_train_stream(pattern, 4, num_workers=2, max_errors=2, shuffle_buffer=10)
    expected = "3 corrupt samples or unreadable shards in rank 0 worker [01] exceed max_errors=2"
    with pytest.raises(CorruptDataError, match=expected):
        list(itertools.islice(iter(strict), 30))


def test_training_on_data_that_never_decodes_fails_instead_of_spinning(tmp_path: Path) -> None:
    for index in range(2):
        junk = [ShardSample(f"b{index}_{n}", "png", b"junk", None) for n in range(3)]
        write_shard(tmp_path / f"train-{index:06d}.tar", junk)
    stream = make_train_stream(str(tmp_path / "train-*.tar"), 2, max_errors=100, shuffle_buffer=4)
    with pytest.raises(CorruptDataError, match="no sample decoded among the last 6"):
        next(iter(stream))


def test_training_on_empty_or_unreadable_shards_fails_instead_of_spinning(tmp_path: Path) -> None:
    write_shard(tmp_path / "train-000000.tar", [])
    (tmp_path / "train-000001.tar").write_bytes(b"")
    stream = make_train_stream(str(tmp_path / "train-*.tar"), 2, max_errors=10)
    with pytest.raises(CorruptDataError, match="a full pass over all 2 shards gave no readable sample"):
        next(iter(stream))


def test_failing_pipe_command_is_reported_with_its_url(photo_shards: Path, caplog: pytest.LogCaptureFixture) -> None:
    urls = [str(photo_shards / "train-000000.tar"), f"pipe:cat {photo_shards}/no-such-shard.tar 2>/dev/null"]
    assert _eval_keys(urls, max_errors=1) == _all_keys()[:8]
    assert f"shard=pipe:cat {photo_shards}/no-such-shard.tar" in _warnings(caplog)


def test_shard_removed_after_construction_is_reported(photo_shards: Path) -> None:
    stream = make_eval_stream(str(photo_shards / "train-*.tar"), 8)
    (photo_shards / "train-000001.tar").unlink()
    with pytest.raises(CorruptDataError, match="train-000001.tar key=-: cannot open shard"):
        list(stream)


def test_missing_shards_fail_at_construction_naming_the_pattern(tmp_path: Path) -> None:
    pattern = str(tmp_path / "train-*.tar")
    with pytest.raises(ShardListError, match="matched no shards") as caught:
        make_train_stream(pattern, 8)
    assert pattern in str(caught.value)
    with pytest.raises(ShardListError, match="missing file"):
        make_eval_stream(str(tmp_path / "train-{000000..000001}.tar"), 8)


def test_a_hanging_pipe_times_out_instead_of_blocking_forever(photo_shards: Path) -> None:
    stream = make_eval_stream(["pipe:sleep 3"], 4, num_workers=1, worker_timeout_s=1.0)
    with pytest.raises(RuntimeError, match="timed out"):
        list(stream)


def test_mixed_image_sizes_are_reported_not_collated(photo_shards: Path, caplog: pytest.LogCaptureFixture) -> None:
    odd = photo_shards / "train-000003.tar"
    write_shard(odd, [ShardSample("big", "png", png_bytes(photo_tiles(48, 1)[0]), 0)])
    keys = _eval_keys(str(photo_shards / "train-*.tar"), resolution=32, max_errors=1)
    assert keys == _all_keys()
    assert f"shard={odd} key=big: image is 48x48, expected 32x32" in _warnings(caplog)
