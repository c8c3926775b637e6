"""The shard writer and the strict tar reader, checked against tarfile and WebDataset's own reader."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from kacdist.data.errors import TarFormatError
from kacdist.data.shards import ShardSample, shard_brace_pattern, shard_file_name, write_shard
from kacdist.data.tarstream import iter_tar_samples, split_member_name

from .helpers import photo_tiles, png_bytes


def _samples(count: int) -> list[ShardSample]:
    tiles = photo_tiles(16, count)
    return [
        ShardSample(key=f"k{n:03d}", image_format="png", image=png_bytes(tiles[n]), label=n % 4) for n in range(count)
    ]


def _read_all(path: Path) -> list[tuple[str, dict[str, bytes]]]:
    with open(path, "rb") as stream:
        return list(iter_tar_samples(stream))


def test_written_shard_reads_back_exactly(tmp_path: Path) -> None:
    samples = _samples(5)
    written = write_shard(tmp_path / "train-000000.tar", samples)
    read = _read_all(written.path)
    assert [key for key, _ in read] == [sample.key for sample in samples]
    for (_, members), sample in zip(read, samples):
        assert members["png"] == sample.image
        assert members["cls"] == str(sample.label).encode()
    assert written.num_bytes == written.path.stat().st_size
    with tarfile.open(written.path) as archive:
        assert archive.getnames()[:2] == ["k000.png", "k000.cls"]


def test_shards_are_byte_identical_when_rewritten(tmp_path: Path) -> None:
    first = write_shard(tmp_path / "a.tar", _samples(4))
    second = write_shard(tmp_path / "b.tar", _samples(4))
    assert first.sha256 == second.sha256
    assert first.path.read_bytes() == second.path.read_bytes()


def test_webdataset_reads_our_shards(tmp_path: Path) -> None:
    import webdataset

    samples = _samples(6)
    path = write_shard(tmp_path / "train-000000.tar", samples).path
    dataset = webdataset.WebDataset(str(path), shardshuffle=False)
    read = list(dataset)
    assert [sample["__key__"] for sample in read] == [sample.key for sample in samples]
    assert read[3]["png"] == samples[3].image and read[3]["cls"] == b"3"


def test_unlabelled_samples_have_no_cls_member(tmp_path: Path) -> None:
    samples = [ShardSample(key="only", image_format="png", image=png_bytes(photo_tiles(8, 1)[0]), label=None)]
    (_, members), = _read_all(write_shard(tmp_path / "u.tar", samples).path)
    assert set(members) == {"png"}


def test_reader_handles_pax_long_names_and_skips_directories(tmp_path: Path) -> None:
    long_key = "d/" + "x" * 150
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        directory = tarfile.TarInfo("d")
        directory.type = tarfile.DIRTYPE
        archive.addfile(directory)
        for extension, payload in (("png", b"image"), ("cls", b"7")):
            info = tarfile.TarInfo(f"{long_key}.{extension}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    buffer.seek(0)
    assert list(iter_tar_samples(buffer)) == [(long_key, {"png": b"image", "cls": b"7"})]


def test_flipped_header_byte_names_the_previous_key(tmp_path: Path) -> None:
    path = write_shard(tmp_path / "s.tar", _samples(4)).path
    with tarfile.open(path) as archive:
        third_header = archive.getmember("k002.png").offset
    data = bytearray(path.read_bytes())
    data[third_header + 10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(TarFormatError, match="checksum") as caught:
        _read_all(path)
    assert caught.value.key == "k001"


def test_truncated_member_names_its_key(tmp_path: Path) -> None:
    path = write_shard(tmp_path / "s.tar", _samples(4)).path
    with tarfile.open(path) as archive:
        member = archive.getmember("k002.png")
    path.write_bytes(path.read_bytes()[: member.offset_data + member.size // 2])
    read: list[str] = []
    with pytest.raises(TarFormatError, match="truncated") as caught:
        with open(path, "rb") as stream:
            for key, _ in iter_tar_samples(stream):
                read.append(key)
    assert caught.value.key == "k002"
    assert read == ["k000", "k001"]


def test_shard_cut_at_a_member_boundary_is_still_an_error(tmp_path: Path) -> None:
    path = write_shard(tmp_path / "s.tar", _samples(4)).path
    with tarfile.open(path) as archive:
        boundary = archive.getmember("k003.png").offset
    path.write_bytes(path.read_bytes()[:boundary])
    with open(path, "rb") as stream, pytest.raises(TarFormatError, match="end-of-archive"):
        list(iter_tar_samples(stream))
    with tarfile.open(path) as archive:
        assert len(archive.getnames()) == 6, "tarfile itself accepts the cut shard silently"


def test_naming_helpers() -> None:
    assert shard_file_name("train", 3) == "train-000003.tar"
    assert shard_brace_pattern("train", 50) == "train-{000000..000049}.tar"
    assert shard_brace_pattern("test", 1) == "test-000000.tar"
    assert split_member_name("a/b.c.PNG") == ("a/b", "c.png")
    with pytest.raises(ValueError):
        shard_file_name("bad-split", 0)
    with pytest.raises(ValueError):
        ShardSample(key="has.dot", image_format="png", image=b"", label=None)
