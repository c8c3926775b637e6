"""The training stream: endless, reproducible for a seed, different across ranks and epochs, flips."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from kacdist.data import make_eval_stream, make_train_stream
from kacdist.data.ordering import training_shard_order


def _take(stream, count: int) -> list[tuple]:
    return list(itertools.islice(iter(stream), count))


def _keys(batches: list[tuple]) -> list[str]:
    return [key for batch in batches for key in batch[2]]


def test_same_seed_reproduces_the_stream_with_workers(digits_dir: Path) -> None:
    pattern = str(digits_dir / "train-*.tar")
    options = {"rank": 0, "world_size": 2, "seed": 7, "num_workers": 2, "shuffle_buffer": 200, "hflip": True}
    runs = [_take(make_train_stream(pattern, 32, return_keys=True, **options), 6) for _ in range(2)]
    assert _keys(runs[0]) == _keys(runs[1])
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(*runs))


def test_ranks_seeds_and_epochs_give_different_streams(digits_dir: Path) -> None:
    pattern = str(digits_dir / "train-*.tar")

    def first_keys(**options) -> list[str]:
        settings = {"rank": 0, "world_size": 2, "seed": 0, "shuffle_buffer": 200, "return_keys": True} | options
        return _keys(_take(make_train_stream(pattern, 32, **settings), 4))

    reference = first_keys()
    assert set(first_keys(rank=1)).isdisjoint(reference), "ranks start on different shards"
    assert first_keys(seed=1) != reference
    assert first_keys(epoch=1) != reference
    stream = make_train_stream(
        pattern, 32, rank=0, world_size=2, seed=0, shuffle_buffer=200, return_keys=True, batches_per_epoch=4
    )
    assert _keys(list(stream)) == reference
    assert _keys(list(stream)) == first_keys(epoch=1), "each pass advances the epoch"
    stream.set_epoch(0)
    assert _keys(list(stream)) == reference


def test_stream_is_endless_full_batched_and_covers_the_data(digits_dir: Path, digits_labels: dict[str, int]) -> None:
    stream = make_train_stream(str(digits_dir / "train-*.tar"), 100, shuffle_buffer=0, channels=1, return_keys=True)
    batches = _take(stream, 40)  # 4000 samples from a 1498-sample split: more than two passes
    assert all(x.shape == (100, 1, 16, 16) for x, _, _ in batches)
    keys = _keys(batches)
    assert set(keys) == set(digits_labels) - {key for key in digits_labels if int(key.split("_")[1]) % 6 == 5}
    assert len(set(keys[:1498])) == 1498, "a pass reads every shard once"
    assert keys[:1498] != keys[1498:2996], "the next pass uses another shard order"
    assert all(torch.cat([y for _, y, _ in batches]).tolist()[i] == digits_labels[key] for i, key in enumerate(keys))


def test_horizontal_flip_mirrors_about_half_of_the_images(digits_dir: Path) -> None:
    pattern = str(digits_dir / "test-*.tar")
    reference = {}
    for x, _, keys in make_eval_stream(pattern, 100, channels=1, return_keys=True):
        reference.update(zip(keys, x))
    flipped = same = 0
    for x, _, keys in _take(make_train_stream(pattern, 50, hflip=True, channels=1, return_keys=True, seed=3), 6):
        for image, key in zip(x, keys):
            original = reference[key]
            if torch.equal(image, original):
                same += 1
            else:
                assert torch.equal(image, torch.flip(original, dims=[2]))
                flipped += 1
    assert flipped + same == 300 and 100 < flipped < 200


def test_concurrent_processes_read_different_shards_and_each_pass_covers_all() -> None:
    num_shards, world_size, num_workers = 16, 2, 2
    orders = [
        list(itertools.islice(training_shard_order(num_shards, 5, 0, rank, world_size, worker, num_workers), 48))
        for rank in range(world_size)
        for worker in range(num_workers)
    ]
    for order in orders:
        for start in range(0, 3 * num_shards, num_shards):
            assert sorted(order[start : start + num_shards]) == list(range(num_shards))
    for position in range(3 * num_shards):
        assert len({order[position] for order in orders}) == len(orders)
    assert orders[0][:num_shards] != orders[0][num_shards:2 * num_shards], "each pass draws a new permutation"
    few = [
        list(itertools.islice(training_shard_order(2, 5, 0, rank, 2, worker, 2), 4))
        for rank in range(2)
        for worker in range(2)
    ]
    assert all(sorted(order[:2]) == [0, 1] for order in few)


def test_invalid_arguments_fail_at_construction(digits_dir: Path) -> None:
    pattern = str(digits_dir / "train-*.tar")
    with pytest.raises(ValueError, match="rank"):
        make_train_stream(pattern, 8, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        make_train_stream(pattern, 0)
    with pytest.raises(ValueError, match="channels"):
        make_eval_stream(pattern, 8, channels=2)


def test_values_are_scaled_like_to_tensor_then_normalize(digits_dir: Path) -> None:
    x, _ = next(iter(make_train_stream(str(digits_dir / "test-*.tar"), 64, shuffle_buffer=0)))
    levels = np.unique(np.rint((x.numpy() + 1) * 127.5))
    assert set(levels.tolist()) <= {round(v * 255 / 16) for v in range(17)}
