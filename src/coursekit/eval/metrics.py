"""The superseded metric: FID and KID on the plain ``mnist-classifier``'s features, its floor and
10-class histograms, with the pixel range guessed from the smallest value.

Issue 12 found it misleading (every non-digit is called an 8; three stray pixels weigh more than a
missing digit), and the course no longer reports it: the book, the training commands and
``coursekit evaluate`` use :mod:`coursekit.eval.quality` (stated N, floor at that N, explicit pixel
range, a "not a digit" class), which can also be given ``mnist-classifier`` to show what the old
features get wrong (``benchmarks/eval_sensitivity.py``, chapter 3). This module stays for ``accuracy``
and for reproducing the old records' ``superseded_metric`` and ``*_fid_ratio`` fields."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from coursekit.checkpoint import load_checkpoint

EVAL_CLASSIFIER = "mnist-classifier"


@lru_cache(maxsize=1)
def load_eval_classifier() -> nn.Module:
    """The shipped MNIST classifier (CPU, eval mode), loaded once per process."""
    return load_checkpoint(EVAL_CLASSIFIER)


class _Features(nn.Module):
    """Adapter that torchmetrics calls: images in [0, 1] -> the classifier's features."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.config.feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images.float())


def _as_unit(images: torch.Tensor) -> torch.Tensor:
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"expected digit images of shape (N, 1, 28, 28), got {tuple(images.shape)}")
    low, high = images.min().item(), images.max().item()
    if low < -1.0001 or high > 1.0001:
        raise ValueError(f"expected pixel values in [0, 1] (or [-1, 1]), got range [{low:.3f}, {high:.3f}]")
    if low < -1e-4:  # [-1, 1] images: map to [0, 1]
        images = (images + 1) / 2
    return images.detach().float().cpu().clamp(0, 1)


def _feed(metric, images: torch.Tensor, real: bool, batch_size: int = 500) -> None:
    for start in range(0, len(images), batch_size):
        metric.update(images[start:start + batch_size], real=real)


@torch.no_grad()
def classifier_fid(samples: torch.Tensor, reference: torch.Tensor, classifier: nn.Module | None = None) -> float:
    """Fréchet distance between the classifier features of ``samples`` and ``reference``.

    Both are ``(N, 1, 28, 28)`` images in [0, 1] or [-1, 1]. Use the same N for values you compare:
    the estimate is biased upwards for small N.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Features(classifier or load_eval_classifier()), normalize=True)
    _feed(metric, _as_unit(reference), real=True)
    _feed(metric, _as_unit(samples), real=False)
    return float(metric.compute())


@torch.no_grad()
def classifier_kid(samples: torch.Tensor, reference: torch.Tensor, classifier: nn.Module | None = None,
                   subset_size: int = 500, subsets: int = 50, seed: int = 0) -> tuple[float, float]:
    """Kernel distance (mean, std over random subsets) on the classifier features."""
    import warnings

    from torchmetrics.image.kid import KernelInceptionDistance

    subset_size = min(subset_size, len(samples), len(reference))
    with warnings.catch_warnings():  # torchmetrics warns that KID keeps all features: ours are small
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_Features(classifier or load_eval_classifier()),
                                         subset_size=subset_size, subsets=subsets, normalize=True)
    _feed(metric, _as_unit(reference), real=True)
    _feed(metric, _as_unit(samples), real=False)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # KID draws its subsets from the global generator
    mean, std = metric.compute()
    torch.random.set_rng_state(state)
    return float(mean), float(std)


@torch.no_grad()
def predict(images: torch.Tensor, classifier: nn.Module | None = None, batch_size: int = 500) -> torch.Tensor:
    """Predicted digit for each image, shape ``(N,)``."""
    from coursekit.eval.classifier import predicted_class

    classifier = classifier or load_eval_classifier()
    images = _as_unit(images)
    return torch.cat([predicted_class(classifier(images[i:i + batch_size]), classifier.config)
                      for i in range(0, len(images), batch_size)])


def accuracy(images: torch.Tensor, labels: torch.Tensor, classifier: nn.Module | None = None) -> float:
    """Fraction of ``images`` the classifier labels correctly."""
    return float((predict(images, classifier) == labels.cpu()).float().mean())


def class_histogram(samples: torch.Tensor, classifier: nn.Module | None = None) -> torch.Tensor:
    """How many samples the classifier assigns to each class (10 counts; 11 for a classifier with a
    "not a digit" class, see coursekit.eval.robust): a mode-collapse check."""
    classifier = classifier or load_eval_classifier()
    return torch.bincount(predict(samples, classifier), minlength=classifier.config.num_classes)


def _reference_sets(num_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from coursekit.data import load_mnist

    train = load_mnist("train", source="bundled").images
    test = load_mnist("test", source="bundled").images
    if num_samples > len(test):
        raise ValueError(f"num_samples must be at most {len(test)} (the held-out split), got {num_samples}")
    generator = torch.Generator().manual_seed(seed)
    pick_train = torch.randperm(len(train), generator=generator)[:num_samples]
    pick_test = torch.randperm(len(test), generator=generator)[:num_samples]
    return train[pick_train], test[pick_test]


@lru_cache(maxsize=8)
def real_vs_real_floor(num_samples: int = 1000, seed: int = 0) -> dict[str, float]:
    """FID and KID between ``num_samples`` real training digits and as many held-out digits.

    This is the best a generator can hope for at this sample size: a perfect model's samples
    are just more real digits. Both sets come from the bundled split, so the floor is the same
    offline and in Colab.
    """
    train, test = _reference_sets(num_samples, seed)
    kid_mean, kid_std = classifier_kid(train, test)
    return {"fid": classifier_fid(train, test), "kid": kid_mean, "kid_std": kid_std, "num_samples": num_samples}


def sample_quality(samples: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Classifier-FID/KID of ``samples`` against held-out digits, next to the real-vs-real floor.

    ``fid_ratio`` = FID(samples, held-out) / FID(real train digits, held-out): 1.0 is as good as
    real data at this sample size.
    """
    num_samples = min(len(samples), 1000)
    _, test = _reference_sets(num_samples, seed)
    floor = real_vs_real_floor(num_samples, seed)
    fid = classifier_fid(samples[:num_samples], test)
    kid_mean, kid_std = classifier_kid(samples[:num_samples], test)
    return {"fid": fid, "kid": kid_mean, "kid_std": kid_std, "fid_floor": floor["fid"], "kid_floor": floor["kid"],
            "fid_ratio": fid / floor["fid"], "num_samples": num_samples}
