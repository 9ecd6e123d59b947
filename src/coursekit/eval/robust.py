"""The robust evaluation classifier: ten digits plus an eleventh outcome, "not a digit".

The first evaluation classifier (``mnist-classifier``) only ever saw clean digits, so it had to
put every image into one of ten classes: uniform noise, blurry decodes and blurred digits all
came out as "8", and its features moved a lot for a few stray pixels. This one is the same
:class:`~coursekit.eval.classifier.Classifier` network with ``num_classes=11``, trained on

* the 4,000 bundled training digits with random shifts, rotations and zooms, a quarter of them
  with bolder strokes, and half of them with Gaussian noise, blur or stray bright pixels
  (:func:`~coursekit.eval.corruptions.random_corruption`), keeping their digit label;
* as many synthetic non-digits per batch as a quarter of the digits
  (:func:`~coursekit.eval.corruptions.non_digits`), labelled ``NOT_A_DIGIT`` (class 10).

After training, ``config.reject_threshold`` is calibrated on the clean training digits
(:func:`calibrate_reject_threshold`): the classifier says "not a digit" only when that class's
probability exceeds it, and otherwise names the likeliest digit.

Its penultimate layer is the feature space of :mod:`coursekit.eval.quality` (FID, KID, precision
and recall at a stated N). Train it with ``coursekit train robust-classifier``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from coursekit.eval.classifier import Classifier, predicted_class, random_affine
from coursekit.eval.corruptions import (NON_DIGIT_KINDS, blobs, box_blur, gaussian_blur, gaussian_noise, non_digits,
                                        random_corruption, random_thickness, stray_pixels, uniform_noise)

ROBUST_CLASSIFIER = "mnist-robust-classifier"
NOT_A_DIGIT = 10  # the eleventh class
NON_DIGIT_FRACTION = 0.25  # non-digits added to each batch, relative to its digits


@lru_cache(maxsize=1)
def load_robust_classifier() -> nn.Module:
    """The shipped robust evaluation classifier (CPU, eval mode), loaded once per process."""
    from coursekit.checkpoint import load_checkpoint

    return load_checkpoint(ROBUST_CLASSIFIER)


def robust_classifier_loss(model: Classifier, batch, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cross-entropy over 11 classes: augmented and corrupted digits keep their label, synthetic
    non-digits get ``NOT_A_DIGIT``."""
    images, labels = batch
    digits = random_corruption(random_thickness(random_affine(images, generator), generator), generator)
    others = non_digits(max(1, round(NON_DIGIT_FRACTION * len(images))), images, generator)
    inputs = torch.cat([digits, others])  # (B + B/4, 1, 28, 28)
    targets = torch.cat([labels, torch.full((len(others),), NOT_A_DIGIT, dtype=labels.dtype, device=labels.device)])
    return F.cross_entropy(model(inputs), targets, label_smoothing=0.05)


@torch.no_grad()
def predict_with_reject(images: torch.Tensor, classifier: nn.Module | None = None, batch_size: int = 500) -> torch.Tensor:
    """Predicted class of each ``(N, 1, 28, 28)`` image in [0, 1]: a digit 0-9, or ``NOT_A_DIGIT``."""
    classifier = classifier or load_robust_classifier()
    images = images.float().cpu()
    return torch.cat([predicted_class(classifier(images[i:i + batch_size]), classifier.config)
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
def calibrate_reject_threshold(model: Classifier, digits: torch.Tensor, max_reject: float = 0.0025) -> float:
    """The smallest threshold (at least 0.5) on P(not a digit) that sends at most ``max_reject`` of
    the clean ``digits`` (the training digits) to ``NOT_A_DIGIT``, rounded up to 3 decimals.

    Plain argmax rejects a digit whenever the other ten share the rest of the probability; a
    threshold set on real digits bounds how many real digits a histogram calls "not a digit"."""
    p_reject = torch.cat([model(digits[i:i + 500]).softmax(1)[:, NOT_A_DIGIT] for i in range(0, len(digits), 500)])
    threshold = float(torch.quantile(p_reject.double(), 1 - max_reject))
    return max(0.5, math.ceil(threshold * 1000) / 1000)


def held_out_corruptions(images: torch.Tensor, seed: int = 1) -> dict[str, torch.Tensor]:
    """The fixed corruptions at which the classifier and the metrics are measured (fixed seed)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "clean": images,
        "gaussian_noise_0.1": gaussian_noise(images, 0.1, generator),
        "gaussian_noise_0.2": gaussian_noise(images, 0.2, generator),
        "box_blur_3x3": box_blur(images, 3),
        "gaussian_blur_1.0": gaussian_blur(images, 1.0),
        "stray_pixels_1": stray_pixels(images, 1, generator),
        "stray_pixels_3": stray_pixels(images, 3, generator),
        "stray_pixels_10": stray_pixels(images, 10, generator),
        "shift_rotate": random_affine(images, generator),
    }


@torch.no_grad()
def held_out_report(model: nn.Module, test_images: torch.Tensor, test_labels: torch.Tensor, seed: int = 1,
                    num_non_digits: int = 1000) -> dict:
    """What ``training.json`` records about a robust classifier, all on data it never saw:
    accuracy on the held-out digits, clean and under each corruption, how often those are
    rejected as non-digits, and the fraction of fresh synthetic non-digits (other seeds than in
    training) sent to ``NOT_A_DIGIT``."""
    report: dict = {"test_images": len(test_images), "accuracy": {}, "rejected_as_not_a_digit": {}}
    for name, images in held_out_corruptions(test_images, seed).items():
        predicted = predict_with_reject(images, model)
        report["accuracy"][name] = float((predicted == test_labels).float().mean())
        report["rejected_as_not_a_digit"][name] = float((predicted == NOT_A_DIGIT).float().mean())
    report["test_accuracy"] = report["accuracy"]["clean"]
    generator = torch.Generator().manual_seed(10_000 + seed)
    report["non_digits"] = num_non_digits
    non_digit_sets = {"uniform_noise": uniform_noise(num_non_digits, generator), "blobs": blobs(num_non_digits, generator)}
    for kind in NON_DIGIT_KINDS:
        if kind not in non_digit_sets:
            non_digit_sets[kind] = non_digits(num_non_digits, test_images, generator, kinds=(kind,))
    report["not_a_digit_fraction"] = {kind: float((predict_with_reject(images, model) == NOT_A_DIGIT).float().mean())
                                      for kind, images in non_digit_sets.items()}
    return report


@torch.no_grad()
def random_decode_histogram(model: nn.Module, checkpoint: str = "ae-latent16", num_samples: int = 1000,
                            seed: int = 0) -> list[int]:
    """Class histogram (0-9, then not a digit) of decodes of random latents of a shipped autoencoder:
    there is no ground truth for these, the record keeps it to compare with the old classifier."""
    from coursekit.checkpoint import load_checkpoint

    autoencoder = load_checkpoint(checkpoint)
    decodes = autoencoder.sample(num_samples, generator=torch.Generator().manual_seed(seed))
    return torch.bincount(predict_with_reject(decodes.clamp(0, 1), model), minlength=NOT_A_DIGIT + 1).tolist()
