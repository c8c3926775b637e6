"""Sample-quality metrics built on the classifier (and optionally Inception) for a batch of generated images.

* :func:`class_histogram` – how many generated images the classifier assigns to each class (mode
  collapse and class imbalance show up here, and in :func:`class_tv`, its total-variation distance from
  the real class distribution, uniform by default);
* :func:`conditional_accuracy` – for class-conditional sampling, the fraction of samples the classifier
  assigns to the class they were generated for (guidance strength raises it);
* :func:`evaluate_samples` – bundles the classifier FD against cached real statistics, accuracy,
  histogram and (optionally) Inception FID into one :class:`SampleMetrics` for a metrics row.

All metrics depend on the sample count; compare numbers only at one fixed ``n`` (it is recorded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kacdist.eval.classifier import SmallCNN
from kacdist.eval.frechet import feature_stats
from kacdist.eval.inception import InceptionFID
from kacdist.eval.stats import FeatureStats


def _labels(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    out = np.asarray(values)
    if out.ndim != 1 or (out.size and not np.issubdtype(out.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D integer array, got shape {out.shape} dtype {out.dtype}")
    return out.astype(np.int64)


def class_histogram(predictions: Any, num_classes: int) -> np.ndarray:
    """Counts (num_classes,) int64 of each predicted class; a label outside [0, num_classes) raises."""
    pred = _labels(predictions, "predictions")
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predictions must lie in [0, {num_classes}), got [{pred.min()}, {pred.max()}]")
    return np.bincount(pred, minlength=num_classes).astype(np.int64)


def class_tv(histogram: Any, reference: Any | None = None) -> float:
    """Total-variation distance (in [0, 1]) between a class histogram and a reference distribution.

    ``reference`` is counts or probabilities over the same classes; uniform when omitted.
    """
    counts = np.asarray(histogram, dtype=np.float64)
    if counts.ndim != 1 or counts.sum() <= 0:
        raise ValueError("histogram must be 1-D with a positive total")
    ref = np.full_like(counts, 1.0) if reference is None else np.asarray(reference, dtype=np.float64)
    if ref.shape != counts.shape or ref.sum() <= 0:
        raise ValueError(f"reference must have shape {counts.shape} and a positive total")
    return float(0.5 * np.abs(counts / counts.sum() - ref / ref.sum()).sum())


def conditional_accuracy(predictions: Any, intended: Any) -> float:
    """Fraction of samples whose predicted class equals the class they were generated for."""
    pred = _labels(predictions, "predictions")
    target = _labels(intended, "intended")
    if pred.shape != target.shape or pred.size == 0:
        raise ValueError(f"need equally long non-empty predictions and labels, got {pred.shape} and {target.shape}")
    return float((pred == target).mean())


@dataclass(frozen=True)
class SampleMetrics:
    n: int
    """Number of generated images the numbers were computed from."""
    fd: float
    """Classifier Fréchet distance to the reference statistics."""
    reference_n: int
    histogram: tuple[int, ...]
    class_tv: float
    accuracy: float | None = None
    """Class-conditional accuracy; None for unconditional samples."""
    fid: float | None = None
    """Inception FID, when an Inception model and its reference statistics were given."""
    fid_reference_n: int | None = None

    def as_dict(self, prefix: str = "") -> dict[str, Any]:
        """Flat, JSON/Parquet-friendly row (histogram as a list)."""
        row = {
            "n": self.n,
            "fd": self.fd,
            "fd_reference_n": self.reference_n,
            "class_tv": self.class_tv,
            "accuracy": self.accuracy,
            "fid": self.fid,
            "fid_reference_n": self.fid_reference_n,
            "histogram": list(self.histogram),
        }
        return {f"{prefix}{key}": value for key, value in row.items()}


def evaluate_samples(
    images: torch.Tensor,
    classifier: SmallCNN,
    reference: FeatureStats,
    labels: Any | None = None,
    *,
    class_reference: Any | None = None,
    inception: InceptionFID | None = None,
    inception_reference: FeatureStats | None = None,
    batch_size: int = 500,
) -> SampleMetrics:
    """Classifier FD, class histogram / TV, conditional accuracy (if ``labels``) and Inception FID (if given).

    ``images`` (N, C, H, W) in [-1, 1] are generated samples; ``reference`` holds the classifier-feature
    statistics of real data (``cached_reference_stats(classifier, ...)``), ``class_reference`` the real
    class counts for the TV distance (uniform when omitted). Raises if ``reference`` was computed with
    other classifier weights.
    """
    if reference.fingerprint and reference.fingerprint != classifier.fingerprint:
        raise ValueError(
            f"reference statistics were computed with {reference.fingerprint!r}, not this classifier ({classifier.fingerprint!r})"
        )
    feats, logits = classifier.features_and_logits(images, batch_size=batch_size)
    predictions = logits.argmax(dim=1)
    mu, sigma = feature_stats(feats)
    generated = FeatureStats(mu=mu, sigma=sigma, n=int(feats.shape[0]), fingerprint=classifier.fingerprint)
    histogram = class_histogram(predictions, classifier.spec.num_classes)
    fid = None
    if (inception is None) != (inception_reference is None):
        raise ValueError("pass both inception and inception_reference, or neither")
    if inception is not None and inception_reference is not None:
        fid = inception.fid(images, inception_reference)
    return SampleMetrics(
        n=generated.n,
        fd=reference.frechet_distance(generated),
        reference_n=reference.n,
        histogram=tuple(int(c) for c in histogram),
        class_tv=class_tv(histogram, class_reference),
        accuracy=conditional_accuracy(predictions, labels) if labels is not None else None,
        fid=fid,
        fid_reference_n=inception_reference.n if inception_reference is not None else None,
    )
