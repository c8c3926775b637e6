"""Training batches for the loops: (x in [-1, 1], y) on the training device.

* ``InMemoryBatches``: the whole split held in memory (digits, small image folders). Step k's global batch
  is a pure function of (seed, k): global sample i = k·B + j (B the global batch) sits at position i mod N
  of the permutation of epoch i // N, seeded by (seed, epoch), and its horizontal flip is drawn for the
  whole global batch from (seed, k). A worker takes its slice [rank·b, (rank + 1)·b) of it (b = B/world), so
  the global batch is the same on any number of workers, and a resumed run sees exactly the batches a
  straight run would, which makes resume bit-identical on CPU.
* ``StreamBatches``: the WebDataset training stream (kacdist.data). Mid-epoch resume is not supported
  upstream; a resumed run re-seeds the resampled shard stream with (seed, start step), which keeps the
  statistics and never repeats the pre-crash order.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kacdist.config.schema import DatasetConfig


def load_split(ds: DatasetConfig, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a split as (float32 (N, C, H, W) in [-1, 1], long (N,)), read through the shard loader."""
    from kacdist.data import make_eval_stream

    urls: str | list[str]
    if ds.source == "digits":
        from kacdist.data.digits import write_digits_shards

        cache = Path(ds.cache_dir).expanduser() / f"digits-{ds.resolution}"
        urls = [str(p) for p in write_digits_shards(cache, resolution=ds.resolution, split=split)]
    else:
        urls = ds.urls
    xs, ys = [], []
    for x, y in make_eval_stream(urls, batch_size=512, channels=ds.channels, resolution=ds.resolution):
        xs.append(x)
        ys.append(y)
    if not xs:
        raise RuntimeError(f"dataset {ds.name!r} split {split!r} yielded no samples from {urls!r}")
    return torch.cat(xs), torch.cat(ys).long()


class InMemoryBatches:
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,  # this worker's share of the global batch
        seed: int,
        hflip: bool = False,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.seed, self.hflip = batch_size, seed, hflip
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        self._perm_cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perm_cache:
            if len(self._perm_cache) > 4:
                self._perm_cache.clear()
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm_cache[epoch] = torch.randperm(len(self.images), generator=gen)
        return self._perm_cache[epoch]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        n, b = len(self.images), self.batch_size
        first = (step * self.world_size + self.rank) * b
        positions = torch.arange(first, first + b)
        epochs, offsets = positions // n, positions % n
        index = torch.empty(b, dtype=torch.long)
        for epoch in epochs.unique().tolist():
            sel = epochs == epoch
            index[sel] = self._perm(epoch)[offsets[sel]]
        x, y = self.images[index], self.labels[index]
        if self.hflip:
            gen = torch.Generator().manual_seed(self.seed * 7_919 + step)
            flip = (torch.rand(b * self.world_size, generator=gen) < 0.5)[self.rank * b : (self.rank + 1) * b]
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class StreamBatches:
    def __init__(self, ds: DatasetConfig, batch_size: int, seed: int, start_step: int, rank: int, world_size: int, device):
        from kacdist.data import make_train_stream

        self.device = torch.device(device)
        self._stream = iter(
            make_train_stream(
                ds.urls,
                batch_size=batch_size,
                rank=rank,
                world_size=world_size,
                seed=seed * 1_000_003 + start_step,
                num_workers=ds.num_workers,
                hflip=ds.hflip,
                channels=ds.channels,
                resolution=ds.resolution,
            )
        )

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = next(self._stream)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True).long()


def make_batches(ds: DatasetConfig, batch_size: int, seed: int, start_step: int, rank: int, world_size: int, device):
    """This worker's batches; ``batch_size`` is its share of the global batch."""
    if ds.in_memory:
        images, labels = load_split(ds, "train")
        return InMemoryBatches(images, labels, batch_size, seed, ds.hflip, rank, world_size, device)
    return StreamBatches(ds, batch_size, seed, start_step, rank, world_size, device)
