"""The evaluation stream: every sample exactly once across ranks and DataLoader workers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from kacdist.data import make_eval_stream, read_manifest
from kacdist.data.ordering import evaluation_shard_indices


def _collect(stream) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor]]:
    keys, images, labels = [], [], []
    for x, y, batch_keys in stream:
        keys += batch_keys
        images.append(x)
        labels.append(y)
    return keys, images, labels


def test_two_ranks_times_two_workers_see_every_sample_exactly_once(
    digits_dir: Path, digits_labels: dict[str, int]
) -> None:
    pattern = str(digits_dir / "train-*.tar")
    per_rank = [
        _collect(make_eval_stream(pattern, 64, rank=rank, world_size=2, num_workers=2, return_keys=True))
        for rank in range(2)
    ]
    all_keys = per_rank[0][0] + per_rank[1][0]
    counts = Counter(all_keys)
    assert max(counts.values()) == 1
    train_records = [record for record in read_manifest(digits_dir) if record.split == "train"]
    assert set(counts) == {key for record in train_records for key in record.keys}
    assert len(all_keys) == 1498
    assert set(per_rank[0][0]).isdisjoint(per_rank[1][0]) and per_rank[0][0] and per_rank[1][0]
    for keys, _, labels in per_rank:
        assert torch.cat(labels).tolist() == [digits_labels[key] for key in keys]


def test_batches_are_float_chw_in_unit_range_with_short_last_batch(digits_dir: Path) -> None:
    stream = make_eval_stream(str(digits_dir / "test-*.tar"), 64, channels=1, resolution=16)
    batches = list(stream)
    sizes = [x.shape[0] for x, _ in batches]
    assert sum(sizes) == 299 and max(sizes) == 64 and sizes[-1] < 64
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (64, 1, 16, 16) and y.dtype == torch.int64
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    rgb, _ = next(iter(make_eval_stream(str(digits_dir / "test-*.tar"), 64, channels=3)))
    assert rgb.shape == (64, 3, 16, 16) and torch.equal(rgb[:, 0], x[:, 0]) and torch.equal(rgb[:, 2], x[:, 0])


def test_pipe_urls_give_the_same_samples_as_paths(digits_dir: Path) -> None:
    paths = sorted(str(path) for path in digits_dir.glob("test-*.tar"))
    by_path = _collect(make_eval_stream(paths, 50, return_keys=True))
    by_pipe = _collect(make_eval_stream([f"pipe:cat {path}" for path in paths], 50, return_keys=True))
    assert by_pipe[0] == by_path[0]
    assert torch.equal(torch.cat(by_pipe[1]), torch.cat(by_path[1]))


def test_shard_assignment_is_a_disjoint_cover() -> None:
    for num_shards in (1, 3, 7, 16):
        assigned = [
            index
            for rank in range(3)
            for worker in range(2)
            for index in evaluation_shard_indices(num_shards, rank, 3, worker, 2)
        ]
        assert sorted(assigned) == list(range(num_shards))


def test_pixels_match_the_source_digits(digits_dir: Path) -> None:
    from sklearn.datasets import load_digits

    images = load_digits().images
    x, _, keys = next(iter(make_eval_stream(str(digits_dir / "test-000000.tar"), 8, channels=1, return_keys=True)))
    for image, key in zip(x, keys):
        expected = np.rint(images[int(key.split("_")[1])] * 255 / 16).repeat(2, 0).repeat(2, 1) / 127.5 - 1
        assert np.allclose(image[0].numpy(), expected, atol=1e-6)
