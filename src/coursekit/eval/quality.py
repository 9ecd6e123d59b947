"""Sample quality at a stated N: FID, KID, precision and recall on the robust classifier's features.

Every number here is computed at an explicit sample size ``num_samples`` (N) and reported next to
the **real-vs-real floor at the same N**: the value that N real held-out digits get against the
same reference set. Fréchet distances shrink towards their floor like 1/N for real data but not
for an imperfect model, so a ratio of values at different N means nothing; compare a value with
its floor, at one N.

* FID (Heusel et al. 2017): Fréchet distance between Gaussians fitted to the two feature sets,
  ``||mu_1 - mu_2||^2 + Tr(Sigma_1 + Sigma_2 - 2 (Sigma_1 Sigma_2)^(1/2))``, computed by
  torchmetrics' ``FrechetInceptionDistance`` fed our features.
* KID (Bińkowski et al. 2018): the unbiased estimate of MMD^2 with the cubic polynomial kernel
  ``k(x, y) = (x.y / d + 1)^3`` (torchmetrics' kernel and estimator), averaged over random subsets of
  ``subset_size``; the spread over subsets gives its interval.
* Precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of balls
  around its points reaching their k-th nearest neighbour; precision is the fraction of samples
  inside the real manifold, recall the fraction of real images inside the samples' manifold.
  Precision falls when samples are off the data (noise, blur); recall falls when part of the data
  is never generated (a missing digit).

The reference is N training digits drawn with ``seed``; the floor's "samples" are N held-out
digits. A model whose samples score *below* the floor is suspicious (copies of the reference).
Pixel ranges are never guessed: pass ``pixel_range=(0, 1)`` or ``(-1, 1)``.
"""

from __future__ import annotations

import torch
from torch import nn

from coursekit.eval.classifier import predicted_class
from coursekit.eval.robust import NOT_A_DIGIT, load_robust_classifier


# ----------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------

def to_unit_range(images: torch.Tensor, pixel_range: tuple[float, float]) -> torch.Tensor:
    """Map ``(N, 1, 28, 28)`` images whose pixels lie in ``pixel_range`` to [0, 1] (float32, CPU).

    Raises if a pixel lies outside the stated range (more than 1e-3 beyond it)."""
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"expected digit images of shape (N, 1, 28, 28), got {tuple(images.shape)}")
    if len(pixel_range) != 2 or not pixel_range[1] > pixel_range[0]:
        raise ValueError(f"pixel_range must be (low, high) with high > low, e.g. (0, 1) or (-1, 1), got {pixel_range}")
    low, high = float(pixel_range[0]), float(pixel_range[1])
    images = images.detach().float().cpu()
    smallest, largest = images.min().item(), images.max().item()
    tolerance = 1e-3 * (high - low)
    if smallest < low - tolerance or largest > high + tolerance:
        raise ValueError(f"pixel_range={pixel_range} was stated, but the pixels span [{smallest:.3f}, {largest:.3f}]")
    return ((images - low) / (high - low)).clamp(0, 1)


@torch.no_grad()
def extract_features(images: torch.Tensor, *, pixel_range: tuple[float, float], classifier: nn.Module | None = None,
                     batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate-layer features ``(N, feature_dim)`` (float64) and predicted classes ``(N,)``
    (0-9, or ``NOT_A_DIGIT`` = 10) of the robust classifier, in one pass."""
    classifier = classifier or load_robust_classifier()
    images = to_unit_range(images, pixel_range)
    features, classes = [], []
    for start in range(0, len(images), batch_size):
        batch_features = classifier.features(images[start:start + batch_size])  # (B, feature_dim)
        features.append(batch_features.double())
        classes.append(predicted_class(classifier.head(batch_features), classifier.config))
    return torch.cat(features), torch.cat(classes)


def class_histogram_with_reject(classes: torch.Tensor) -> list[int]:
    """Counts of predicted digits 0-9, then of ``NOT_A_DIGIT`` (11 numbers)."""
    return torch.bincount(classes.cpu(), minlength=NOT_A_DIGIT + 1).tolist()


def digit_histogram(images: torch.Tensor, *, pixel_range: tuple[float, float], classifier: nn.Module | None = None) -> list[int]:
    """How many of ``images`` the robust classifier reads as each digit 0-9, then how many it calls
    "not a digit" (11 counts): a class histogram that does not invent a digit for a non-digit."""
    return class_histogram_with_reject(extract_features(images, pixel_range=pixel_range, classifier=classifier)[1])


# ----------------------------------------------------------------------------------------------
# The three metrics on feature sets
# ----------------------------------------------------------------------------------------------

class _GivenFeatures(nn.Module):
    """torchmetrics calls its feature extractor on what ``update`` receives: here, features."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _check_pair(real_features: torch.Tensor, fake_features: torch.Tensor) -> None:
    if real_features.dim() != 2 or fake_features.dim() != 2 or real_features.shape[1] != fake_features.shape[1]:
        raise ValueError(f"expected two feature sets (N, D) with the same D, got {tuple(real_features.shape)} "
                         f"and {tuple(fake_features.shape)}")
    if min(len(real_features), len(fake_features)) < 2:
        raise ValueError("each feature set needs at least 2 rows")


@torch.no_grad()
def frechet_distance(real_features: torch.Tensor, fake_features: torch.Tensor) -> float:
    """FID between two feature sets (unbiased covariances), computed by torchmetrics in float64."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check_pair(real_features, fake_features)
    metric = FrechetInceptionDistance(feature=_GivenFeatures(real_features.shape[1]))
    metric.update(real_features.double().cpu(), real=True)
    metric.update(fake_features.double().cpu(), real=False)
    return float(metric.compute())


@torch.no_grad()
def kernel_distance(real_features: torch.Tensor, fake_features: torch.Tensor, *, subset_size: int,
                    subsets: int = 100, seed: int = 0) -> dict[str, float]:
    """KID: unbiased MMD^2 with the cubic polynomial kernel, over ``subsets`` random subsets of
    ``subset_size`` rows from each set (drawn with ``seed``), with torchmetrics' ``poly_kernel`` and
    the estimator of its ``maximum_mean_discrepancy``, evaluated for all subsets at once.

    Returns ``kid`` (the mean), ``kid_std`` (spread over subsets) and ``kid_interval`` =
    mean -/+ 1.96 std. The std is that of a single subset of ``subset_size``; it overstates the
    uncertainty of the mean over overlapping subsets, so the interval is a conservative one."""
    from torchmetrics.image.kid import poly_kernel

    _check_pair(real_features, fake_features)
    if not 2 <= subset_size <= min(len(real_features), len(fake_features)):
        raise ValueError(f"subset_size must be between 2 and the smaller set's size "
                         f"{min(len(real_features), len(fake_features))}, got {subset_size}")
    generator = torch.Generator().manual_seed(seed)
    real_features, fake_features = real_features.double().cpu(), fake_features.double().cpu()
    # Which rows each subset takes, as 0/1 indicator matrices (subsets, N).
    real_pick = torch.zeros(subsets, len(real_features), dtype=torch.float64)
    fake_pick = torch.zeros(subsets, len(fake_features), dtype=torch.float64)
    for subset in range(subsets):
        real_pick[subset, torch.randperm(len(real_features), generator=generator)[:subset_size]] = 1
        fake_pick[subset, torch.randperm(len(fake_features), generator=generator)[:subset_size]] = 1
    k_real = poly_kernel(real_features, real_features)  # (N_real, N_real)
    k_fake = poly_kernel(fake_features, fake_features)  # (N_fake, N_fake)
    k_cross = poly_kernel(real_features, fake_features)  # (N_real, N_fake)
    # Unbiased MMD^2 of each subset pair (torchmetrics' maximum_mean_discrepancy, all subsets at once):
    # sum over i != j of k(x_i, x_j) / m(m-1) for each set, minus 2 sum over i, j of k(x_i, y_j) / m^2.
    m = subset_size
    within_real = ((real_pick @ k_real) * real_pick).sum(1) - real_pick @ k_real.diagonal()  # (subsets,)
    within_fake = ((fake_pick @ k_fake) * fake_pick).sum(1) - fake_pick @ k_fake.diagonal()
    between = ((real_pick @ k_cross) * fake_pick).sum(1)
    values = (within_real + within_fake) / (m * (m - 1)) - 2 * between / m**2  # (subsets,)
    mean = float(values.mean())
    std = float(values.std(unbiased=subsets > 1)) if subsets > 1 else 0.0
    return {"kid": mean, "kid_std": std, "kid_interval": [mean - 1.96 * std, mean + 1.96 * std],
            "kid_subset_size": subset_size, "kid_subsets": subsets}


def _kth_neighbour_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    distances = torch.cdist(features, features)  # (N, N); the diagonal is each point itself
    return distances.kthvalue(k + 1, dim=1).values  # (N,) skip the zero distance to itself


@torch.no_grad()
def precision_recall(real_features: torch.Tensor, fake_features: torch.Tensor, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls.

    precision: fraction of fake points within ``radius_k`` of some real point;
    recall: fraction of real points within ``radius_k`` of some fake point, where a point's
    ``radius_k`` is the distance to its k-th nearest neighbour in its own set."""
    _check_pair(real_features, fake_features)
    if not 1 <= k < min(len(real_features), len(fake_features)):
        raise ValueError(f"k must be between 1 and the smaller set's size - 1, got {k}")
    real_features, fake_features = real_features.double().cpu(), fake_features.double().cpu()
    real_radii, fake_radii = _kth_neighbour_radii(real_features, k), _kth_neighbour_radii(fake_features, k)
    between = torch.cdist(fake_features, real_features)  # (N_fake, N_real)
    precision = (between <= real_radii[None, :]).any(1).double().mean()
    recall = (between <= fake_radii[:, None]).any(0).double().mean()
    return {"precision": float(precision), "recall": float(recall), "k": k}


def compare_features(real_features: torch.Tensor, fake_features: torch.Tensor, *, kid_subset_size: int,
                     kid_subsets: int = 100, k: int = 3, seed: int = 0) -> dict:
    """FID, KID (with interval), precision and recall of ``fake_features`` against ``real_features``."""
    return {"fid": frechet_distance(real_features, fake_features),
            **kernel_distance(real_features, fake_features, subset_size=kid_subset_size, subsets=kid_subsets, seed=seed),
            **precision_recall(real_features, fake_features, k)}


# ----------------------------------------------------------------------------------------------
# Reference digits, the floor, and samples scored against them
# ----------------------------------------------------------------------------------------------

def reference_digits(num_samples: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``num_samples`` training digits (the reference) and as many held-out digits with their
    labels (the floor's samples), from the bundled split, drawn with ``seed``. Pixels in [0, 1]."""
    from coursekit.data import load_mnist

    train, test = load_mnist("train", source="bundled"), load_mnist("test", source="bundled")
    if not 2 <= num_samples <= len(test):
        raise ValueError(f"num_samples must be between 2 and {len(test)} (the held-out split), got {num_samples}")
    generator = torch.Generator().manual_seed(seed)
    pick_train = torch.randperm(len(train), generator=generator)[:num_samples]
    pick_test = torch.randperm(len(test), generator=generator)[:num_samples]
    return {"reference": train.images[pick_train], "held_out": test.images[pick_test],
            "held_out_labels": test.labels[pick_test]}


def _default_subset_size(num_samples: int) -> int:
    return max(2, num_samples // 2)


_reference_cache: dict[tuple[int, int], tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _features_of_reference(num_samples: int, seed: int, classifier: nn.Module | None):
    """Features of the reference and held-out digits (and the held-out classes), computed once per
    (N, seed) and classifier."""
    classifier = classifier or load_robust_classifier()
    cached = _reference_cache.get((num_samples, seed))
    if cached is None or cached[0] is not classifier:
        digits = reference_digits(num_samples, seed)
        reference, _ = extract_features(digits["reference"], pixel_range=(0, 1), classifier=classifier)
        held_out, held_out_classes = extract_features(digits["held_out"], pixel_range=(0, 1), classifier=classifier)
        cached = _reference_cache[(num_samples, seed)] = (classifier, reference, held_out, held_out_classes)
    return cached[1:]


def real_floor(*, num_samples: int, seed: int = 0, classifier: nn.Module | None = None, k: int = 3,
               kid_subsets: int = 100) -> dict:
    """The real-vs-real floor at N = ``num_samples``: N held-out digits scored against N training
    digits, exactly as :func:`score_samples` scores a model's N samples."""
    reference, held_out, held_out_classes = _features_of_reference(num_samples, seed, classifier)
    scores = compare_features(reference, held_out, kid_subset_size=_default_subset_size(num_samples),
                              kid_subsets=kid_subsets, k=k, seed=seed)
    histogram = class_histogram_with_reject(held_out_classes)
    return {"num_samples": num_samples, **scores, "class_histogram": histogram, "not_a_digit": histogram[NOT_A_DIGIT]}


def score_samples(samples: torch.Tensor, *, pixel_range: tuple[float, float], num_samples: int, seed: int = 0,
                  classifier: nn.Module | None = None, k: int = 3, kid_subsets: int = 100) -> dict:
    """FID, KID (with interval), precision, recall and the 11-class histogram of the first
    ``num_samples`` of ``samples`` against ``num_samples`` training digits, with the real-vs-real
    floor at the same N under ``"floor"``.

    ``samples``: ``(M, 1, 28, 28)`` with M >= ``num_samples``, pixels in ``pixel_range``
    (``(0, 1)`` or ``(-1, 1)``: stated, never guessed)."""
    if len(samples) < num_samples:
        raise ValueError(f"num_samples={num_samples} was asked for, but only {len(samples)} samples were given")
    reference, _, _ = _features_of_reference(num_samples, seed, classifier)
    features, classes = extract_features(samples[:num_samples], pixel_range=pixel_range, classifier=classifier)
    scores = compare_features(reference, features, kid_subset_size=_default_subset_size(num_samples),
                              kid_subsets=kid_subsets, k=k, seed=seed)
    histogram = class_histogram_with_reject(classes)
    return {"num_samples": num_samples, **scores, "class_histogram": histogram, "not_a_digit": histogram[NOT_A_DIGIT],
            "floor": real_floor(num_samples=num_samples, seed=seed, classifier=classifier, k=k, kid_subsets=kid_subsets)}


# ----------------------------------------------------------------------------------------------
# Memorisation: are the samples copies of training digits?
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def nearest_training_distances(images: torch.Tensor, *, pixel_range: tuple[float, float],
                               batch_size: int = 500) -> torch.Tensor:
    """For each image, the Euclidean pixel distance (pixels in [0, 1], 784 of them) to its nearest
    digit among all bundled training digits: ``(N,)`` float64."""
    from coursekit.data import load_mnist

    train = load_mnist("train", source="bundled").images.flatten(1).double()
    images = to_unit_range(images, pixel_range).flatten(1).double()
    return torch.cat([torch.cdist(images[start:start + batch_size], train).min(1).values
                      for start in range(0, len(images), batch_size)])


def memorisation_report(samples: torch.Tensor, *, pixel_range: tuple[float, float], num_samples: int,
                        seed: int = 0) -> dict:
    """Nearest-training-digit distances of the first ``num_samples`` samples beside those of as many
    held-out digits (the same held-out digits as the floor of :func:`score_samples`).

    A model can approach the FID floor by copying its 4,000 training digits; a copy sits much
    closer to a training digit than held-out digits do. ``near_copies`` is the fraction of samples
    closer to a training digit than the 1st percentile of the held-out digits' distances (about
    0.01 for samples that are no closer to the training set than new real digits)."""
    if len(samples) < num_samples:
        raise ValueError(f"num_samples={num_samples} was asked for, but only {len(samples)} samples were given")
    held_out = nearest_training_distances(reference_digits(num_samples, seed)["held_out"], pixel_range=(0, 1))
    distances = nearest_training_distances(samples[:num_samples], pixel_range=pixel_range)
    threshold = float(torch.quantile(held_out, 0.01))
    return {"num_samples": num_samples, "median": float(distances.median()), "p01": float(torch.quantile(distances, 0.01)),
            "held_out_median": float(held_out.median()), "held_out_p01": threshold,
            "near_copies": float((distances < threshold).double().mean())}


# ----------------------------------------------------------------------------------------------
# Sensitivity: does each metric see each defect?
# ----------------------------------------------------------------------------------------------

def _replace_class(images: torch.Tensor, labels: torch.Tensor, missing: int, source: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
    """``images`` with every digit ``missing`` swapped for an image drawn from ``source``
    (without repetition while ``source`` lasts)."""
    out = images.clone()
    slots = torch.nonzero(labels == missing).flatten()
    order = torch.cat([torch.randperm(len(source), generator=generator)
                       for _ in range(len(slots) // len(source) + 1)])[:len(slots)]
    out[slots] = source[order]
    return out


def corrupted_held_out(num_samples: int, seed: int = 0, dropped_digit: int = 5, duplicated_digit: int = 3,
                       ) -> dict[str, tuple[torch.Tensor, str]]:
    """The held-out digits of the floor under each sensitivity condition, with a description."""
    from coursekit.data import load_mnist
    from coursekit.eval.corruptions import box_blur, gaussian_noise, stray_pixels

    digits = reference_digits(num_samples, seed)
    images, labels = digits["held_out"], digits["held_out_labels"]
    generator = torch.Generator().manual_seed(seed + 1)
    test = load_mnist("test", source="bundled")
    others = test.images[test.labels != dropped_digit]
    duplicates = images[labels == duplicated_digit]
    return {
        "clean": (images, "the held-out digits as they are (= the real-vs-real floor)"),
        "gaussian_noise_0.1": (gaussian_noise(images, 0.1, generator), "Gaussian pixel noise, std 0.1, clipped to [0, 1]"),
        "box_blur_3x3": (box_blur(images, 3), "3x3 mean filter"),
        "stray_pixels_1": (stray_pixels(images, 1, generator), "1 random pixel per image set to 1"),
        "stray_pixels_3": (stray_pixels(images, 3, generator), "3 random pixels per image set to 1"),
        "stray_pixels_10": (stray_pixels(images, 10, generator), "10 random pixels per image set to 1"),
        "class_dropped": (_replace_class(images, labels, dropped_digit, others, generator),
                          f"every {dropped_digit} replaced by another held-out digit (not a {dropped_digit}; "
                          "some repeat once the split runs out)"),
        "class_duplicated": (_replace_class(images, labels, dropped_digit, duplicates, generator),
                             f"every {dropped_digit} replaced by a copy of one of the set's own {duplicated_digit}s"),
    }


def sensitivity_table(*, num_samples: int = 1000, seed: int = 0, classifier: nn.Module | None = None,
                      k: int = 3, kid_subsets: int = 100) -> dict:
    """Held-out digits scored against training digits at N = ``num_samples``, clean and under
    each condition of :func:`corrupted_held_out`: FID, KID with interval, precision, recall, the
    11-class histogram and the not-a-digit count, and for FID and KID the ratio to the clean row
    (the floor at this N; both rows share the same N and reference)."""
    reference, _, _ = _features_of_reference(num_samples, seed, classifier)
    rows = {}
    for name, (images, description) in corrupted_held_out(num_samples, seed).items():
        features, classes = extract_features(images, pixel_range=(0, 1), classifier=classifier)
        histogram = class_histogram_with_reject(classes)
        rows[name] = {"description": description,
                      **compare_features(reference, features, kid_subset_size=_default_subset_size(num_samples),
                                         kid_subsets=kid_subsets, k=k, seed=seed),
                      "class_histogram": histogram, "not_a_digit": histogram[NOT_A_DIGIT]}
    clean = rows["clean"]
    for row in rows.values():
        row["fid_over_floor"] = row["fid"] / clean["fid"]
        row["kid_over_floor"] = row["kid"] / clean["kid"] if clean["kid"] > 0 else None
    return {"num_samples": num_samples, "seed": seed, "reference": f"{num_samples} bundled training digits (seed {seed})",
            "samples": f"{num_samples} bundled held-out digits (seed {seed}), transformed per row",
            "k": k, "kid_subset_size": _default_subset_size(num_samples), "kid_subsets": kid_subsets, "rows": rows}


def format_sensitivity_table(table: dict) -> str:
    """The table as aligned text (one row per condition)."""
    lines = [f"N = {table['num_samples']} held-out digits vs {table['num_samples']} training digits, "
             f"k = {table['k']}, KID over {table['kid_subsets']} subsets of {table['kid_subset_size']}",
             f"{'condition':20s} {'FID':>8s} {'xfloor':>7s} {'KID':>9s} {'KID 95% interval':>21s} "
             f"{'prec':>6s} {'recall':>6s} {'not digit':>9s}  histogram 0-9"]
    for name, row in table["rows"].items():
        low, high = row["kid_interval"]
        lines.append(f"{name:20s} {row['fid']:8.4g} {row['fid_over_floor']:7.2f} {row['kid']:9.2e} "
                     f"[{low:9.2e}, {high:9.2e}] {row['precision']:6.3f} {row['recall']:6.3f} {row['not_a_digit']:9d}  "
                     f"{row['class_histogram'][:NOT_A_DIGIT]}")
    return "\n".join(lines)
