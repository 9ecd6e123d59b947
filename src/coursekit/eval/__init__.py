"""Judging samples: a small MNIST classifier and the metrics built on its features.

``classifier_fid`` / ``classifier_kid`` are the Fréchet and kernel distances computed by
torchmetrics on the shipped classifier's penultimate-layer features (not Inception's, which are
meaningless for 28x28 digits). A distance alone is hard to read, so ``real_vs_real_floor`` gives
the value for two sets of *real* digits (train split vs test split); sample quality is reported
as the ratio to that floor.
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
]
