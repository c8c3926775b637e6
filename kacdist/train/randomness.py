"""Per-image randomness of a training step that does not depend on how the global batch is split over workers.

Every random draw a loss makes for an image (its time t, its Kac noise and atom flags, its label dropout, a
student node, its prior) comes from the generator of the image's *block*: image i of step k's global batch
belongs to block i // block, whose generator is seeded by (seed, k, i // block). A worker holding images
[first, first + count) draws every block that covers them, in full, and keeps its own images; a block that
straddles two workers is drawn by both. The same global batch therefore draws the same numbers for every image
on 1, 2 or N workers, and a resumed step draws what the straight run drew, with no generator state to save.

Why blocks and not one generator per image: the exact Kac sampler is rejection-based over a whole call, so
the unit of a generator is also the unit of a sampler call, which costs about 0.9 ms of fixed overhead on
CPU. For 16×16 digits a step of 128 images takes 4.3 ms of noise in one call, 7.3 ms in blocks of 32 and
18 ms in blocks of 8, against a 390 ms step (``benchmarks/distributed.py`` measures it in a training step).
Large images are split into calls of at most 2^19 values by ``KacProcess.target`` anyway, so blocks cost
nothing there. A worker's share is best a multiple of the block; otherwise it also draws the rest of its
edge blocks (at most two blocks more per step).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 steps): distinct tuples give unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK64
        h ^= h >> 31
    return h >> 1


class StepDraws:
    """The random draws of one worker's images in one step (see the module docstring).

    Methods that draw return tensors over the *covered span*: the whole blocks that contain this worker's
    images, in global order. ``pad`` lifts this worker's tensors to that span (zeros elsewhere: only their
    shapes matter for the draws) and ``local`` cuts a span tensor down to this worker's images.
    """

    def __init__(self, seed: int, step: int, first: int, count: int, block: int, device: torch.device | str = "cpu") -> None:
        if block < 1 or count < 1 or first < 0:
            raise ValueError(f"invalid draws: first={first}, count={count}, block={block}")
        self.device = torch.device(device)
        self.block, self.count = block, count
        b0, b1 = first // block, -(-(first + count) // block)
        self.offset = first - b0 * block  # this worker's first image within the span
        self.span = (b1 - b0) * block
        self._generators = [torch.Generator(device=self.device).manual_seed(mix_seed(seed, step, b)) for b in range(b0, b1)]

    @property
    def aligned(self) -> bool:
        return self.offset == 0 and self.span == self.count

    def rand(self, *shape: int) -> torch.Tensor:
        """U[0, 1) float32 of shape (span, *shape)."""
        return torch.cat([torch.rand((self.block, *shape), generator=g, device=self.device) for g in self._generators])

    def randint(self, high: int) -> torch.Tensor:
        """Uniform integers in [0, high), shape (span,)."""
        return torch.cat([torch.randint(0, high, (self.block,), generator=g, device=self.device) for g in self._generators])

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """This worker's (count, ...) tensor placed in a (span, ...) tensor of zeros."""
        if self.aligned:
            return x
        out = x.new_zeros((self.span,) + tuple(x.shape[1:]))
        out[self.offset : self.offset + self.count] = x
        return out

    def local(self, x: torch.Tensor) -> torch.Tensor:
        """The rows of a span tensor that belong to this worker."""
        return x if self.aligned else x[self.offset : self.offset + self.count]

    def per_block(self, fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]], *span_tensors: torch.Tensor):
        """``fn(generator, *rows)`` for each block's rows of the span tensors, concatenated in order (tuples
        of results are concatenated element-wise). Use it for draws that a library makes from a generator,
        such as ``KacProcess.target``."""
        outs = []
        for j, g in enumerate(self._generators):
            rows = slice(j * self.block, (j + 1) * self.block)
            outs.append(fn(g, *(t[rows] for t in span_tensors)))
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(parts) for parts in zip(*outs))
        return torch.cat(outs)
