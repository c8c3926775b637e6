"""Shard URL expansion: globs, brace lists, pipes, and failing early and by name on empty matches."""

from __future__ import annotations

from pathlib import Path

import pytest

from kacdist.data.errors import ShardListError
from kacdist.data.urls import expand_shard_urls, is_local


def _touch_shards(directory: Path, names: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_bytes(b"")


def test_glob_is_sorted_and_ignores_directories(tmp_path: Path) -> None:
    _touch_shards(tmp_path, ["train-000002.tar", "train-000000.tar", "train-000001.tar"])
    (tmp_path / "train-000009.tar.d").mkdir()
    assert expand_shard_urls(str(tmp_path / "train-*.tar")) == [str(tmp_path / f"train-00000{n}.tar") for n in range(3)]


def test_brace_list_keeps_order_and_checks_existence(tmp_path: Path) -> None:
    _touch_shards(tmp_path, ["a-000000.tar", "a-000001.tar"])
    pattern = str(tmp_path / "a-{000001,000000}.tar")
    assert expand_shard_urls(pattern) == [str(tmp_path / "a-000001.tar"), str(tmp_path / "a-000000.tar")]
    with pytest.raises(ShardListError, match=r"names 1 missing file\(s\): .*a-000002.tar") as caught:
        expand_shard_urls(str(tmp_path / "a-{000000..000002}.tar"))
    assert "a-{000000..000002}.tar" in str(caught.value)


def test_empty_glob_fails_naming_the_pattern(tmp_path: Path) -> None:
    _touch_shards(tmp_path, ["train-000000.tar"])
    pattern = str(tmp_path / "nothing-*.tar")
    with pytest.raises(ShardListError, match="matched no shards") as caught:
        expand_shard_urls([str(tmp_path / "train-*.tar"), pattern])
    assert pattern in str(caught.value)


def test_empty_list_directory_and_blank_pattern_fail(tmp_path: Path) -> None:
    with pytest.raises(ShardListError, match="empty list"):
        expand_shard_urls([])
    with pytest.raises(ShardListError, match="names a directory"):
        expand_shard_urls(str(tmp_path))
    with pytest.raises(ShardListError, match="non-empty string"):
        expand_shard_urls([" "])


def test_pipe_and_remote_urls_are_brace_expanded_but_not_checked() -> None:
    urls = expand_shard_urls(["pipe:cat /no/such/x-{0..1}.tar", "https://example.org/s-{00..01}.tar"])
    assert urls == [
        "pipe:cat /no/such/x-0.tar",
        "pipe:cat /no/such/x-1.tar",
        "https://example.org/s-00.tar",
        "https://example.org/s-01.tar",
    ]
    assert not is_local("pipe:cat a") and is_local("file:///tmp/a.tar") and is_local("rel/a.tar")


def test_file_urls_and_duplicates(tmp_path: Path) -> None:
    _touch_shards(tmp_path, ["t-000000.tar"])
    path = str(tmp_path / "t-000000.tar")
    assert expand_shard_urls([f"file://{path}", path, str(tmp_path / "t-*.tar")]) == [path]
