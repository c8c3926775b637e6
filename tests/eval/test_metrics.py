"""Class histograms, total variation and conditional accuracy (the classifier-based bundle is tested in
test_classifier.py, which trains the classifier once)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kacdist.eval.metrics import SampleMetrics, class_histogram, class_tv, conditional_accuracy


def test_class_histogram_counts_every_class() -> None:
    pred = torch.tensor([0, 2, 2, 9, 2, 0])
    np.testing.assert_array_equal(class_histogram(pred, 10), [2, 0, 3, 0, 0, 0, 0, 0, 0, 1])
    assert class_histogram(np.array([], dtype=np.int64), 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        class_histogram([0, 10], 10)
    with pytest.raises(ValueError):
        class_histogram(torch.tensor([0.5, 1.0]), 10)


def test_class_tv_is_zero_for_balanced_and_large_for_collapsed() -> None:
    assert class_tv([5] * 10) == pytest.approx(0.0)
    assert class_tv([50, 0, 0, 0, 0, 0, 0, 0, 0, 0]) == pytest.approx(0.9)
    assert class_tv([1, 3], reference=[0.25, 0.75]) == pytest.approx(0.0)
    assert class_tv([1, 0], reference=[0, 1]) == pytest.approx(1.0)


def test_conditional_accuracy() -> None:
    assert conditional_accuracy(torch.tensor([1, 2, 3, 4]), [1, 2, 0, 4]) == pytest.approx(0.75)
    assert conditional_accuracy(np.arange(10), np.arange(10)) == 1.0
    with pytest.raises(ValueError):
        conditional_accuracy([1, 2], [1, 2, 3])


def test_sample_metrics_row_is_flat() -> None:
    m = SampleMetrics(n=4, fd=1.5, reference_n=10, histogram=(1, 3), class_tv=0.25, accuracy=0.5)
    row = m.as_dict(prefix="eval/")
    assert row["eval/fd"] == 1.5 and row["eval/histogram"] == [1, 3] and row["eval/fid"] is None
