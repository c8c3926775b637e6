"""The Fréchet distance between two Gaussians fitted to feature sets (FID, classifier FD).

    d²((mu1, S1), (mu2, S2)) = |mu1 - mu2|² + tr(S1) + tr(S2) - 2 tr((S1^½ S2 S1^½)^½)

is the squared 2-Wasserstein distance between N(mu1, S1) and N(mu2, S2) (Dowson & Landau 1982). Everything
is computed in float64.

The trace term: ``tr((S1 S2)^½)`` equals ``tr((S1^½ S2 S1^½)^½)`` (similar matrices), and the latter is
the trace of the square root of a symmetric positive semi-definite matrix, i.e. the sum of the square
roots of its eigenvalues. The default ``method="eigh"`` computes it that way: two symmetric eigensolves,
negative round-off eigenvalues clipped to 0, no complex numbers, no failure on singular covariances
(e.g. fewer samples than feature dimensions). ``method="sqrtm"`` is the pytorch-fid / TTUR recipe
(``scipy.linalg.sqrtm(S1 @ S2)``, retried with ``eps`` added to both diagonals when the result is not
finite, imaginary part dropped when negligible); both agree to round-off on well-conditioned inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg

FD_METHODS = ("eigh", "sqrtm")


def _as_float64(array: Any, name: str) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor
        array = array.detach().cpu().double().numpy()
    out = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} contains non-finite values")
    return out


def feature_stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of ``features`` (N, D), N >= 2, in float64.

    Accepts a numpy array or a torch tensor. Same convention as pytorch-fid (``np.cov(rowvar=False)``).
    """
    feats = _as_float64(features, "features")
    if feats.ndim != 2:
        raise ValueError(f"features must be 2-D (N, D), got shape {feats.shape}")
    if feats.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {feats.shape[0]}")
    mu = feats.mean(axis=0)
    centred = feats - mu
    sigma = centred.T @ centred / (feats.shape[0] - 1)
    return mu, sigma


def _check_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> None:
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must be 1-D of equal length, got {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"covariances must be ({d}, {d}), got {sigma1.shape} and {sigma2.shape}")


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues clipped)."""
    w, v = np.linalg.eigh(sigma)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def psd_sqrt(sigma: Any) -> np.ndarray:
    """Symmetric square root of a symmetric PSD covariance, float64 (reusable as ``sqrt_sigma1``)."""
    sigma = _as_float64(sigma, "sigma")
    return _psd_sqrt(0.5 * (sigma + sigma.T))


def trace_sqrt_product(
    sigma1: np.ndarray,
    sigma2: np.ndarray,
    method: str = "eigh",
    eps: float = 1e-6,
    sqrt_sigma1: np.ndarray | None = None,
) -> float:
    """tr((sigma1 sigma2)^½) for symmetric PSD ``sigma1``, ``sigma2`` (see the module docstring).

    With ``method="eigh"`` a precomputed ``sqrt_sigma1`` (from :func:`psd_sqrt`) skips one of the two
    D x D eigensolves: reference statistics cache it, so repeated evaluations cost one ``eigvalsh``.
    """
    if method == "eigh":
        root1 = _psd_sqrt(sigma1) if sqrt_sigma1 is None else sqrt_sigma1
        inner = root1 @ sigma2 @ root1
        inner = 0.5 * (inner + inner.T)
        eig = np.linalg.eigvalsh(inner)
        return float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    if method == "sqrtm":
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.all(np.isfinite(covmean)):
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if np.iscomplexobj(covmean):
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
                raise ValueError(f"sqrtm: imaginary component {np.max(np.abs(covmean.imag)):.3g} is not negligible")
            covmean = covmean.real
        return float(np.trace(covmean))
    raise ValueError(f"method must be one of {FD_METHODS}, not {method!r}")


def frechet_distance(
    mu1: Any,
    sigma1: Any,
    mu2: Any,
    sigma2: Any,
    *,
    method: str = "eigh",
    eps: float = 1e-6,
    sqrt_sigma1: np.ndarray | None = None,
) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    Symmetric in its two arguments, >= 0 (tiny negative round-off is clipped to 0), and 0 for identical
    statistics. ``method`` is "eigh" (default, see the module docstring) or "sqrtm" (pytorch-fid's
    recipe with the ``eps`` diagonal-offset fallback). ``sqrt_sigma1`` optionally passes a cached
    :func:`psd_sqrt` of ``sigma1`` (eigh only). Cost: O(D³); about 2-10 s at D = 2048 on 2 cores.
    """
    mu1 = _as_float64(mu1, "mu1")
    mu2 = _as_float64(mu2, "mu2")
    sigma1 = _as_float64(sigma1, "sigma1")
    sigma2 = _as_float64(sigma2, "sigma2")
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    _check_stats(mu1, sigma1, mu2, sigma2)
    sigma1 = 0.5 * (sigma1 + sigma1.T)
    sigma2 = 0.5 * (sigma2 + sigma2.T)
    diff = mu1 - mu2
    tr_covmean = trace_sqrt_product(sigma1, sigma2, method=method, eps=eps, sqrt_sigma1=sqrt_sigma1)
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(value, 0.0)


def frechet_distance_from_features(features1: Any, features2: Any) -> float:
    """FD between the Gaussian fits of two feature sets (N1, D) and (N2, D), in float64.

    Equal to ``frechet_distance(*feature_stats(features1), *feature_stats(features2))`` but exact and
    cheap when a set has fewer samples than dimensions: with S_i = A_i^T A_i (A_i the centred features
    over sqrt(N_i - 1)), the non-zero eigenvalues of S1 S2 are those of (A1 A2^T)(A1 A2^T)^T, so the
    trace term is the nuclear norm of the small N1 x N2 matrix A1 A2^T. Falls back to the D x D path
    when both sets are larger than D.
    """
    f1 = _as_float64(features1, "features1")
    f2 = _as_float64(features2, "features2")
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"need two (N, D) feature sets with equal D, got {f1.shape} and {f2.shape}")
    if min(f1.shape[0], f2.shape[0]) < 2:
        raise ValueError("need at least 2 feature vectors in each set")
    if min(f1.shape[0], f2.shape[0]) > f1.shape[1]:
        return frechet_distance(*feature_stats(f1), *feature_stats(f2))
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a1 = (f1 - mu1) / np.sqrt(f1.shape[0] - 1)
    a2 = (f2 - mu2) / np.sqrt(f2.shape[0] - 1)
    tr_covmean = float(np.linalg.svd(a1 @ a2.T, compute_uv=False).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.sum(a1 * a1) + np.sum(a2 * a2) - 2.0 * tr_covmean)
    return max(value, 0.0)


class RunningStats:
    """Streaming mean and covariance of feature batches, in float64, without keeping the features.

    50k Inception features are 400 MB in float32; this keeps only a D x D sum. Rows are shifted by the
    first batch's mean before accumulating, which avoids the cancellation of the naive sum-of-squares
    formula. ``finalize`` gives the same result as :func:`feature_stats` on the concatenated features.
    """

    def __init__(self) -> None:
        self.n = 0
        self._shift: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    def update(self, features: Any) -> None:
        feats = _as_float64(features, "features")
        if feats.ndim != 2:
            raise ValueError(f"features must be 2-D (N, D), got shape {feats.shape}")
        if feats.shape[0] == 0:
            return
        if self._shift is None:
            self._shift = feats.mean(axis=0)
            d = feats.shape[1]
            self._sum = np.zeros(d)
            self._outer = np.zeros((d, d))
        elif feats.shape[1] != self._shift.shape[0]:
            raise ValueError(f"feature dimension changed from {self._shift.shape[0]} to {feats.shape[1]}")
        centred = feats - self._shift
        self._sum += centred.sum(axis=0)
        self._outer += centred.T @ centred
        self.n += feats.shape[0]

    def finalize(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2 or self._shift is None:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {self.n}")
        mean_c = self._sum / self.n
        sigma = (self._outer - self.n * np.outer(mean_c, mean_c)) / (self.n - 1)
        return self._shift + mean_c, 0.5 * (sigma + sigma.T)
