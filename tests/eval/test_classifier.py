"""The digits classifier: accuracy, classifier FD on real vs corrupted digits, checkpoints, metrics bundle.

The classifier is trained once for this module (seed 0, the recipe's defaults, about 10-20 s on 2 cores).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kacdist.eval.classifier import (
    ClassifierSpec,
    SmallCNN,
    TrainRecipe,
    digits_tensors,
    load_classifier,
    load_or_train_classifier,
    save_classifier,
    train_classifier,
)
from kacdist.eval.frechet import feature_stats, frechet_distance
from kacdist.eval.metrics import evaluate_samples
from kacdist.eval.stats import cached_reference_stats

from . import single_threaded


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_threaded():
        yield


@pytest.fixture(scope="module")
def digits():
    return digits_tensors("train"), digits_tensors("test"), digits_tensors("all")


@pytest.fixture(scope="module")
def trained(digits):
    (x, y), val, _ = digits
    start = time.perf_counter()
    model, report = train_classifier(x, y, val=val)
    print(f"\nclassifier: trained in {time.perf_counter() - start:.1f} s, held-out accuracy {report.val_accuracy:.4f}")
    return model, report


def fd_of(model: SmallCNN, a: torch.Tensor, b: torch.Tensor) -> float:
    return frechet_distance(*feature_stats(model.features(a)), *feature_stats(model.features(b)))


def test_digits_tensors_split_and_range() -> None:
    (x, y), (xt, yt) = digits_tensors("train"), digits_tensors("test")
    assert x.shape == (1498, 1, 16, 16) and xt.shape == (299, 1, 16, 16)
    assert x.min() == -1.0 and x.max() == 1.0 and x.dtype == torch.float32
    assert sorted(set(y.tolist())) == list(range(10)) and np.bincount(yt.numpy()).min() >= 25
    assert torch.equal(x[0, 0, 0:2, 0:2], x[0, 0, 0, 0].expand(2, 2))  # nearest x2 replication
    assert digits_tensors("test", resolution=32, channels=3)[0].shape == (299, 3, 32, 32)


def test_classifier_reaches_97_percent_on_held_out_digits(trained, digits) -> None:
    model, report = trained
    _, (xt, yt), _ = digits
    accuracy = model.accuracy(xt, yt)
    assert accuracy >= 0.97
    assert accuracy == pytest.approx(report.val_accuracy)
    assert report.train_accuracy >= 0.99
    assert report.losses[-1] < report.losses[0]
    assert model.features(xt).shape == (299, model.spec.feature_dim)


def test_classifier_fd_separates_real_from_corrupted_digits(trained, digits) -> None:
    model, _ = trained
    _, _, (xa, _) = digits
    perm = torch.randperm(len(xa), generator=torch.Generator().manual_seed(0))
    half_a, half_b = xa[perm[:898]], xa[perm[898:]]
    real = fd_of(model, half_a, half_b)
    noise = torch.rand(half_a.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])[None, None] / 16
    blurred = F.conv2d(F.pad(half_a, (1, 1, 1, 1), mode="replicate"), kernel)
    pixels = torch.randperm(256, generator=torch.Generator().manual_seed(2))
    shuffled = half_a.flatten(1)[:, pixels].view_as(half_a)
    corrupted = {name: fd_of(model, imgs, half_b) for name, imgs in [("noise", noise), ("blur", blurred), ("shuffle", shuffled)]}
    print(f"\nclassifier FD: real halves {real:.3f}, {corrupted}")
    assert 0 < real < 1.0
    for name, value in corrupted.items():
        assert value > 20 * real, name


def test_save_load_round_trip_gives_identical_predictions(trained, digits, tmp_path) -> None:
    model, report = trained
    _, (xt, _), _ = digits
    path = save_classifier(model, tmp_path / "clf" / "digits16.pt", meta={"val_accuracy": report.val_accuracy})
    assert [p.name for p in path.parent.iterdir()] == ["digits16.pt"]  # atomic: no temporary left
    payload = torch.load(path, weights_only=True)  # plain tensors and primitives only
    assert payload["format"] == "kacdist.eval.classifier/1"
    loaded, meta = load_classifier(path)
    assert meta["val_accuracy"] == report.val_accuracy
    assert loaded.spec == model.spec and loaded.fingerprint == model.fingerprint
    assert torch.equal(loaded.predict(xt), model.predict(xt))
    assert torch.equal(loaded.features(xt), model.features(xt))


def test_load_or_train_reuses_the_cache(trained, tmp_path) -> None:
    model, _ = trained
    path = tmp_path / "cached.pt"
    save_classifier(model, path, meta={"origin": "fixture"})
    x = torch.zeros(4, 1, 16, 16)
    start = time.perf_counter()
    loaded, meta = load_or_train_classifier(path, x, torch.arange(4))  # would train a different model
    assert meta == {"origin": "fixture"} and loaded.fingerprint == model.fingerprint
    assert time.perf_counter() - start < 5


def test_training_is_deterministic_for_a_seed() -> None:
    (x, y) = digits_tensors("train")
    x, y = x[:256], y[:256]
    recipe = TrainRecipe(seed=3, epochs=1, batch_size=64)
    spec = ClassifierSpec(width=8, feature_dim=16)
    a, _ = train_classifier(x, y, spec=spec, recipe=recipe)
    b, _ = train_classifier(x, y, spec=spec, recipe=recipe)
    c, _ = train_classifier(x, y, spec=spec, recipe=TrainRecipe(seed=4, epochs=1, batch_size=64))
    assert a.fingerprint == b.fingerprint
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert a.fingerprint != c.fingerprint
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_classifier(x[:64], y[:64], spec=spec, recipe=recipe)
    assert torch.equal(torch.rand(3), expected)  # the global RNG is untouched


def test_wrong_input_shape_raises(trained) -> None:
    model, _ = trained
    with pytest.raises(ValueError):
        model.predict(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError):
        model.predict(torch.zeros(2, 2, 16, 16))


def test_evaluate_samples_bundles_fd_accuracy_and_histogram(trained, digits, tmp_path) -> None:
    model, _ = trained
    (x, y), (xt, yt), _ = digits
    reference = cached_reference_stats(model, "digits16-train", [(x, y)], tmp_path)
    good = evaluate_samples(xt, model, reference, labels=yt, class_reference=np.bincount(y.numpy()))
    assert good.n == 299 and good.reference_n == 1498
    assert good.accuracy >= 0.97
    assert sum(good.histogram) == 299 and good.class_tv < 0.1
    wrong = evaluate_samples(xt, model, reference, labels=(yt + 1) % 10)
    assert wrong.accuracy < 0.05 and wrong.fd == pytest.approx(good.fd)
    collapsed = evaluate_samples(xt[yt == 3], model, reference)
    assert collapsed.accuracy is None and collapsed.class_tv > 0.8 and collapsed.fd > 10 * good.fd
    noise = evaluate_samples(torch.rand(299, 1, 16, 16) * 2 - 1, model, reference)
    assert noise.fd > 50 * good.fd
    print(f"\nmetrics: real test split {good.as_dict()}, noise FD {noise.fd:.1f}")
    other, _ = train_classifier(x[:128], y[:128], spec=ClassifierSpec(width=8, feature_dim=128), recipe=TrainRecipe(epochs=1))
    with pytest.raises(ValueError, match="reference statistics"):
        evaluate_samples(xt, other, reference)
