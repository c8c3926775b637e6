"""Feature statistics of image sets, their computation from batches, and the on-disk reference cache.

A *feature extractor* is any object with ``features(x) -> Tensor (N, D)`` for images ``x`` (N, C, H, W)
in [-1, 1] and a ``fingerprint`` string that changes whenever its features would (the Inception network
and its preprocessing; a classifier's weights). :class:`~kacdist.eval.inception.InceptionFID` and
:class:`~kacdist.eval.classifier.SmallCNN` both are.

Reference statistics of real data are computed once and cached as ``<cache_dir>/<name>--<fingerprint>.npz``
(mu, sigma, n, name, fingerprint), written atomically, so every evaluation of a run — and every rank —
compares against the very same numbers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from kacdist.atomic import atomic_output as atomic_path
from kacdist.eval.frechet import RunningStats, frechet_distance, psd_sqrt
from kacdist.progress import Progress

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class FeatureExtractor(Protocol):
    fingerprint: str

    def features(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class FeatureStats:
    """Gaussian fit (mu, sigma) of ``n`` feature vectors from the extractor named by ``fingerprint``."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    fingerprint: str = ""
    name: str = ""
    _sqrt_sigma: list[np.ndarray] = field(default_factory=list, init=False, repr=False, compare=False)

    def sqrt_sigma(self) -> np.ndarray:
        """Symmetric square root of ``sigma``, computed on first use and kept (one D x D eigensolve)."""
        if not self._sqrt_sigma:
            self._sqrt_sigma.append(psd_sqrt(self.sigma))
        return self._sqrt_sigma[0]

    def frechet_distance(self, other: FeatureStats, *, method: str = "eigh") -> float:
        """FD between ``self`` and ``other``; refuses statistics from a different feature extractor.

        Call it on the reference statistics (``reference.frechet_distance(generated)``): with
        ``method="eigh"`` the reference's matrix square root is cached, so each further evaluation
        costs one eigensolve instead of two.
        """
        if self.fingerprint and other.fingerprint and self.fingerprint != other.fingerprint:
            raise ValueError(f"statistics come from different extractors: {self.fingerprint!r} vs {other.fingerprint!r}")
        root = self.sqrt_sigma() if method == "eigh" else None
        return frechet_distance(self.mu, self.sigma, other.mu, other.sigma, method=method, sqrt_sigma1=root)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as .npz atomically (temporary file + os.replace)."""
        path = Path(path)
        with atomic_path(path) as temp:
            with open(temp, "wb") as handle:
                np.savez(
                    handle,
                    mu=self.mu,
                    sigma=self.sigma,
                    n=np.int64(self.n),
                    fingerprint=np.str_(self.fingerprint),
                    name=np.str_(self.name),
                )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FeatureStats:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                mu=np.asarray(data["mu"], dtype=np.float64),
                sigma=np.asarray(data["sigma"], dtype=np.float64),
                n=int(data["n"]),
                fingerprint=str(data["fingerprint"]),
                name=str(data["name"]),
            )


def _images_of(batch: Any) -> torch.Tensor:
    """A batch is a tensor (N, C, H, W), or a tuple/list whose first item is (images, labels, ...)."""
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(batch)
    if not isinstance(batch, torch.Tensor) or batch.ndim != 4:
        raise TypeError(f"a batch must be an (N, C, H, W) tensor or a tuple starting with one, got {type(batch).__name__}")
    return batch


def compute_stats(
    extractor: FeatureExtractor,
    batches: Iterable[Any] | torch.Tensor,
    *,
    max_samples: int | None = None,
    name: str = "",
    progress: Progress | None = None,
) -> FeatureStats:
    """Feature statistics of the images in ``batches`` (an iterable of batches, or one (N, C, H, W) tensor).

    With ``max_samples`` exactly that many images are used (the last batch is cut) and fewer raises:
    FIDs are only comparable at one fixed sample count. Without it every image is used.
    ``progress`` is advanced by each batch's images; one tensor is then fed in the extractor's own
    ``batch_size`` (when it has one) so that the count moves, which changes the statistics only by float rounding.
    """
    if isinstance(batches, torch.Tensor):
        step = getattr(extractor, "batch_size", 0) if progress is not None else 0
        batches = list(batches.split(step)) if step else [batches]
    running = RunningStats()
    for batch in batches:
        images = _images_of(batch)
        if max_samples is not None:
            images = images[: max_samples - running.n]
        if images.shape[0]:
            running.update(extractor.features(images))
            if progress is not None:
                progress.update(images.shape[0])
        if max_samples is not None and running.n >= max_samples:
            break
    if max_samples is not None and running.n < max_samples:
        raise ValueError(f"asked for {max_samples} samples but the batches held only {running.n}")
    mu, sigma = running.finalize()
    return FeatureStats(mu=mu, sigma=sigma, n=running.n, fingerprint=extractor.fingerprint, name=name)


def reference_stats_path(cache_dir: str | os.PathLike[str], name: str, fingerprint: str) -> Path:
    if not _NAME_RE.match(name):
        raise ValueError(f"reference name must match {_NAME_RE.pattern}, not {name!r}")
    return Path(cache_dir) / f"{name}--{fingerprint}.npz"


def cached_reference_stats(
    extractor: FeatureExtractor,
    name: str,
    batches: Iterable[Any] | torch.Tensor | Callable[[], Iterable[Any] | torch.Tensor],
    cache_dir: str | os.PathLike[str],
    *,
    max_samples: int | None = None,
    progress: bool = False,
) -> FeatureStats:
    """Reference statistics of real images, computed once and cached as ``<name>--<fingerprint>.npz``.

    ``name`` identifies the real set and protocol (e.g. ``"digits16-train"``, ``"cifar10-train-50k"``);
    ``batches`` may be a zero-argument callable so that the real data is not even opened on a cache hit.
    A cached file whose sample count differs from ``max_samples`` raises instead of being silently used.
    ``progress``: show the computation (a cache miss; 50,000 Inception images take minutes) with rate and ETA.
    """
    path = reference_stats_path(cache_dir, name, extractor.fingerprint)
    if path.exists():
        stats = FeatureStats.load(path)
        if max_samples is not None and stats.n != max_samples:
            raise ValueError(
                f"{path} holds statistics of {stats.n} samples, not the {max_samples} asked for: "
                "use another name for another protocol"
            )
        return stats
    source = batches() if callable(batches) else batches
    total = max_samples if max_samples is not None else len(source) if isinstance(source, torch.Tensor) else None
    with Progress(total or 0, f"reference {name}", unit="img", enabled=progress and total is not None) as bar:
        stats = compute_stats(extractor, source, max_samples=max_samples, name=name, progress=bar)
    stats.save(path)
    return stats
