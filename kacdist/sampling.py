"""Sampling from a velocity model: Kac prior x_1 = K_{g(1)}, then an integrator from t = 1 to 0.

Every image has its own seed (base seed + image index): its prior noise is drawn from a generator seeded
by that alone, so the same seed gives the same image whatever the batch size or the number of processes
(up to the float rounding of batched network kernels).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kacdist.kac import GuidedVelocity, KacProcess, integrate
from kacdist.progress import Progress
from kacdist.train.device import autocast


@dataclass
class SampleResult:
    images: torch.Tensor  # float32 (N, C, H, W) in [-1, 1] (clamped)
    labels: torch.Tensor  # long (N,), -1 where unconditional
    nfe: int  # velocity evaluations per image
    seconds: float

    @property
    def images_per_s(self) -> float:
        return len(self.images) / max(self.seconds, 1e-9)

    def uint8(self) -> np.ndarray:
        """(N, H, W, C) uint8, the layout of PNGs and of the .npz files written by the sample stage."""
        x = ((self.images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return x.permute(0, 2, 3, 1).cpu().numpy()


def prior_noise(process: KacProcess, shape: tuple[int, ...], seeds: list[int]) -> torch.Tensor:
    """x_1 for each image from its own seed (CPU generators: identical on every machine)."""
    out = torch.empty((len(seeds),) + tuple(shape))
    for i, seed in enumerate(seeds):
        out[i] = process.prior((1,) + tuple(shape), generator=torch.Generator().manual_seed(seed))[0]
    return out


@torch.no_grad()
def generate(
    model: nn.Module,
    process: KacProcess,
    image_shape: tuple[int, int, int],
    seeds: list[int],
    labels: torch.Tensor | None,
    integrator: str = "ab2",
    steps: int = 100,
    guidance: float = 1.2,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    progress: Progress | None = None,
) -> SampleResult:
    """Sample ``len(seeds)`` images; ``labels`` None for an unconditional model.

    ``progress``: advanced by each batch's images. None (the default) shows nothing: the training loop's
    snapshots and monitor sample inside its own bar; the sample and eval stages pass theirs."""
    device = torch.device(device)
    model.eval()
    null_label = getattr(model, "null_label", None)
    outputs, nfe = [], 0
    start = time.perf_counter()
    for b0 in range(0, len(seeds), batch_size):
        chunk = seeds[b0 : b0 + batch_size]
        x = prior_noise(process, image_shape, chunk).to(device)
        if labels is not None and null_label is not None:
            y = labels[b0 : b0 + len(chunk)].to(device)
            velocity = GuidedVelocity(model, y, guidance, null_label)
        else:
            velocity = lambda xx, tt: model(xx, tt, None)  # noqa: E731

        def v(xx: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
            with autocast(device, amp_dtype):
                return velocity(xx, tt).float()

        result = integrate(v, x, steps, integrator)
        nfe = result.nfe
        outputs.append(result.x.clamp(-1, 1).cpu())
        if progress is not None:
            progress.update(len(chunk))
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    out_labels = labels.cpu() if labels is not None else torch.full((len(seeds),), -1, dtype=torch.long)
    return SampleResult(torch.cat(outputs), out_labels, nfe, seconds)


def image_grid(images_uint8: np.ndarray, columns: int = 10) -> np.ndarray:
    """(N, H, W, C) → one (rows·H, columns·W, C) image with a 1-pixel gap."""
    n, h, w, c = images_uint8.shape
    rows = (n + columns - 1) // columns
    grid = np.full((rows * (h + 1) + 1, columns * (w + 1) + 1, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w] = images_uint8[i]
    return grid


def save_png(array: np.ndarray, path) -> None:
    from PIL import Image

    if array.shape[-1] == 1:
        array = array[..., 0]
    Image.fromarray(array).save(path)
