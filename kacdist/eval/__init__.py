"""Evaluation: Fréchet distances (Inception FID, classifier FD), class histograms and conditional accuracy.

Protocols (sample counts, real splits, resizing) are described in docs/eval.md and in the docstrings of
:mod:`kacdist.eval.inception` and :mod:`kacdist.eval.classifier`.
"""

from kacdist.eval.classifier import (
    ClassifierSpec,
    SmallCNN,
    TrainRecipe,
    TrainReport,
    digits_classifier,
    digits_tensors,
    load_classifier,
    load_or_train_classifier,
    save_classifier,
    train_classifier,
)
from kacdist.eval.frechet import (
    RunningStats,
    feature_stats,
    frechet_distance,
    frechet_distance_from_features,
    psd_sqrt,
)
from kacdist.eval.inception import InceptionFID, InceptionUnavailable, inception_model_path, load_inception
from kacdist.eval.metrics import SampleMetrics, class_histogram, class_tv, conditional_accuracy, evaluate_samples
from kacdist.eval.stats import FeatureStats, cached_reference_stats, compute_stats, reference_stats_path

__all__ = [
    "ClassifierSpec",
    "FeatureStats",
    "InceptionFID",
    "InceptionUnavailable",
    "RunningStats",
    "SampleMetrics",
    "SmallCNN",
    "TrainRecipe",
    "TrainReport",
    "cached_reference_stats",
    "class_histogram",
    "class_tv",
    "compute_stats",
    "conditional_accuracy",
    "digits_classifier",
    "digits_tensors",
    "evaluate_samples",
    "feature_stats",
    "frechet_distance",
    "frechet_distance_from_features",
    "inception_model_path",
    "load_classifier",
    "load_inception",
    "load_or_train_classifier",
    "psd_sqrt",
    "reference_stats_path",
    "save_classifier",
    "train_classifier",
]
