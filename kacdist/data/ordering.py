"""Which shards a data-loading process reads, in which order, and the sample shuffle buffer.

All randomness is derived from (seed, epoch, rank, worker, purpose) through numpy's SeedSequence, so every
process has its own independent, reproducible streams and nothing depends on global random state (which
DataLoader reseeds per worker).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Final, TypeVar

import numpy as np

SHARD_ORDER_STREAM: Final = 1
SHUFFLE_STREAM: Final = 2
FLIP_STREAM: Final = 3
"""Purposes: separate random streams for shard order, the shuffle buffer and flips."""

Item = TypeVar("Item")


def process_seed(seed: int, epoch: int, rank: int, worker: int, purpose: int) -> int:
    """A seed unique to (seed, epoch, rank, worker, purpose), via numpy's SeedSequence mixing."""
    sequence = np.random.SeedSequence([seed, epoch, rank, worker, purpose])
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


def training_shard_order(
    num_shards: int, seed: int, epoch: int, rank: int, world_size: int, worker: int, num_workers: int
) -> Iterator[int]:
    """Endless shard indices for one data-loading process, one pass over all shards after another.

    With at least as many shards as processes, pass ``p`` uses one permutation shared by all processes
    and process ``s`` starts ``s * num_shards // num_processes`` places into it, so concurrent reads hit
    different shards; with fewer shards each process draws its own permutation per pass.
    """
    num_processes = world_size * num_workers
    process = rank * num_workers + worker
    for pass_index in itertools.count():
        if num_shards >= num_processes:
            shared = np.random.default_rng([seed, epoch, pass_index, SHARD_ORDER_STREAM])
            order = np.roll(shared.permutation(num_shards), -(process * num_shards // num_processes))
        else:
            private = np.random.default_rng([seed, epoch, pass_index, rank, worker, SHARD_ORDER_STREAM])
            order = private.permutation(num_shards)
        yield from (int(index) for index in order)


def evaluation_shard_indices(num_shards: int, rank: int, world_size: int, worker: int, num_workers: int) -> list[int]:
    """The shards one (rank, worker) reads in an evaluation pass: a disjoint cover of all shards."""
    return list(range(num_shards))[rank::world_size][worker::num_workers]


def shuffle_samples(samples: Iterator[Item], buffer_size: int, rng: random.Random) -> Iterator[Item]:
    """Reservoir-style shuffle: fill ``buffer_size`` samples, then emit a random one for each new one."""
    buffer: list[Item] = []
    for sample in samples:
        if len(buffer) < buffer_size:
            buffer.append(sample)
            continue
        slot = rng.randrange(buffer_size)
        yield buffer[slot]
        buffer[slot] = sample
    rng.shuffle(buffer)
    yield from buffer
