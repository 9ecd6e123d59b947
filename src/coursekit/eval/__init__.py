"""Judging samples: MNIST classifiers and the metrics built on their features.

``classifier_fid`` / ``classifier_kid`` are the Fréchet and kernel distances computed by
torchmetrics on the shipped classifier's penultimate-layer features (not Inception's, which are
meaningless for 28x28 digits). A distance alone is hard to read, so ``real_vs_real_floor`` gives
the value for two sets of *real* digits (train split vs test split); sample quality is reported
as the ratio to that floor.

The validated evaluation (issue 12) lives in :mod:`coursekit.eval.robust` (a classifier with an
11th "not a digit" class, trained on corrupted digits and synthetic non-digits),
:mod:`coursekit.eval.corruptions` (what generators get wrong) and :mod:`coursekit.eval.quality`
(FID, KID with interval, precision and recall, always at a stated N beside the real-vs-real floor
at that N, and the sensitivity table).
"""

from coursekit.eval.classifier import Classifier, ClassifierConfig, classifier_loss
from coursekit.eval.metrics import (
    accuracy,
    class_histogram,
    classifier_fid,
    classifier_kid,
    load_eval_classifier,
    real_vs_real_floor,
    sample_quality,
)
from coursekit.eval.quality import (
    digit_histogram,
    extract_features,
    frechet_distance,
    kernel_distance,
    precision_recall,
    memorisation_report,
    nearest_training_distances,
    real_floor,
    score_samples,
    sensitivity_table,
)
from coursekit.eval.robust import NOT_A_DIGIT, load_robust_classifier, predict_with_reject

__all__ = [
    "Classifier",
    "ClassifierConfig",
    "classifier_loss",
    "accuracy",
    "class_histogram",
    "classifier_fid",
    "classifier_kid",
    "load_eval_classifier",
    "real_vs_real_floor",
    "sample_quality",
    "NOT_A_DIGIT",
    "load_robust_classifier",
    "predict_with_reject",
    "digit_histogram",
    "extract_features",
    "memorisation_report",
    "nearest_training_distances",
    "frechet_distance",
    "kernel_distance",
    "precision_recall",
    "real_floor",
    "score_samples",
    "sensitivity_table",
]
