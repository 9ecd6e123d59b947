"""The validated evaluation (issue 12): closed forms of FID / KID / precision-recall, the robust
classifier's checkpoint and its "not a digit" class, and the sensitivity of the metrics at a fixed N."""

import json

import numpy as np
import pytest
import scipy.linalg
import torch

from coursekit.checkpoint import load_checkpoint, read_record, save_checkpoint
from coursekit.eval.quality import (frechet_distance, kernel_distance, precision_recall, real_floor, reference_digits,
                                    score_samples, sensitivity_table, to_unit_range)
from coursekit.eval.robust import NOT_A_DIGIT, ROBUST_CLASSIFIER, load_robust_classifier, predict_with_reject


# ----------------------------------------------------------------------------------------------
# FID: closed form for two Gaussians
# ----------------------------------------------------------------------------------------------

def _points_with_moments(mean: torch.Tensor, cov_factor: torch.Tensor, num_points: int, seed: int) -> torch.Tensor:
    """Points whose sample mean is exactly ``mean`` and sample covariance (N - 1) exactly
    ``cov_factor @ cov_factor.T``: whitened Gaussian draws, then mapped."""
    z = torch.randn(num_points, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    whitening = torch.linalg.cholesky(z.T @ z / (num_points - 1))
    z = torch.linalg.solve_triangular(whitening, z.T, upper=False).T  # sample covariance = identity
    return mean + z @ cov_factor.T


def _closed_form_fid(mu_1, sigma_1, mu_2, sigma_2) -> float:
    root_1 = scipy.linalg.sqrtm(sigma_1)
    cross = scipy.linalg.sqrtm(root_1 @ sigma_2 @ root_1)  # Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2)
    return float(np.sum((mu_1 - mu_2) ** 2) + np.trace(sigma_1) + np.trace(sigma_2) - 2 * np.trace(cross.real))


def test_fid_equals_the_closed_form_for_two_gaussians():
    generator = torch.Generator().manual_seed(0)
    mu_1, mu_2 = torch.tensor([0.0, 1.0, -2.0, 0.5], dtype=torch.float64), torch.tensor([1.0, 0.0, 0.0, 3.0], dtype=torch.float64)
    factor_1 = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    factor_2 = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    real, fake = _points_with_moments(mu_1, factor_1, 400, 1), _points_with_moments(mu_2, factor_2, 300, 2)
    sigma_1, sigma_2 = (factor_1 @ factor_1.T).numpy(), (factor_2 @ factor_2.T).numpy()
    assert np.allclose(np.cov(real.numpy().T), sigma_1) and np.allclose(real.mean(0).numpy(), mu_1.numpy())
    expected = _closed_form_fid(mu_1.numpy(), sigma_1, mu_2.numpy(), sigma_2)
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(fake, real) == pytest.approx(expected, rel=1e-8)  # symmetric

    # Diagonal covariances: FID = |mu_1 - mu_2|^2 + sum_i (s1_i - s2_i)^2 with s the standard deviations.
    std_1, std_2 = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)
    zero = torch.zeros(3, dtype=torch.float64)
    shift = torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)
    real, fake = _points_with_moments(zero, torch.diag(std_1), 500, 3), _points_with_moments(shift, torch.diag(std_2), 500, 4)
    assert frechet_distance(real, fake) == pytest.approx(4.0 + 4.0 + 1.0 + 0.0, rel=1e-8)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-8)


# ----------------------------------------------------------------------------------------------
# KID: the unbiased MMD^2 estimate, against a brute-force double loop
# ----------------------------------------------------------------------------------------------

def _brute_force_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    dim, m = x.shape[1], len(x)

    def kernel(a, b):
        return (float(a @ b) / dim + 1.0) ** 3

    within_x = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    within_y = sum(kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    between = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return within_x + within_y - 2 * between


def test_kid_is_the_unbiased_mmd_over_subsets():
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(15, 3, generator=generator, dtype=torch.float64)
    fake = torch.randn(15, 3, generator=generator, dtype=torch.float64) * 1.5 + 0.3
    whole = kernel_distance(real, fake, subset_size=15, subsets=1)
    assert whole["kid"] == pytest.approx(_brute_force_mmd2(real, fake), rel=1e-10)
    assert whole["kid_std"] == 0.0

    # Subsets: the same draws as kernel_distance makes (one generator, real then fake per subset).
    result = kernel_distance(real, fake, subset_size=8, subsets=4, seed=7)
    draws = torch.Generator().manual_seed(7)
    values = []
    for _ in range(4):
        real_pick = torch.randperm(15, generator=draws)[:8]
        fake_pick = torch.randperm(15, generator=draws)[:8]
        values.append(_brute_force_mmd2(real[real_pick], fake[fake_pick]))
    assert result["kid"] == pytest.approx(np.mean(values), rel=1e-10)
    from torchmetrics.image.kid import poly_mmd  # torchmetrics' own per-subset KID, on the same subsets

    draws = torch.Generator().manual_seed(7)
    reference = [float(poly_mmd(real[torch.randperm(15, generator=draws)[:8]], fake[torch.randperm(15, generator=draws)[:8]]))
                 for _ in range(4)]
    assert np.allclose(reference, values, rtol=1e-10)
    assert result["kid_std"] == pytest.approx(np.std(values, ddof=1), rel=1e-8)
    low, high = result["kid_interval"]
    assert low == pytest.approx(result["kid"] - 1.96 * result["kid_std"]) and high > result["kid"] > low
    with pytest.raises(ValueError, match="subset_size"):
        kernel_distance(real, fake, subset_size=16)


def test_kid_is_unbiased_for_two_samples_of_one_distribution():
    # Averaged over independent pairs, the estimate is ~0 (it can be negative), unlike a shifted pair.
    generator = torch.Generator().manual_seed(1)
    same = [kernel_distance(torch.randn(200, 4, generator=generator), torch.randn(200, 4, generator=generator),
                            subset_size=200, subsets=1)["kid"] for _ in range(20)]
    shifted = kernel_distance(torch.randn(200, 4, generator=generator), torch.randn(200, 4, generator=generator) + 0.5,
                              subset_size=200, subsets=1)["kid"]
    assert min(same) < 0 < max(same)
    assert abs(np.mean(same)) < 0.05 * shifted


# ----------------------------------------------------------------------------------------------
# Precision and recall on toy point clouds
# ----------------------------------------------------------------------------------------------

def test_precision_recall_on_a_line():
    line = torch.arange(100, dtype=torch.float64)[:, None]  # real: 0, 1, ..., 99 (radius 1 with k = 1)
    # Samples cover only 0..49: all are real (precision 1); their balls (radius 1) reach 0..50 (recall 51/100).
    half = precision_recall(line, line[:50], k=1)
    assert half["precision"] == 1.0 and half["recall"] == pytest.approx(0.51)
    assert precision_recall(line, line, k=1) == {"precision": 1.0, "recall": 1.0, "k": 1}
    # Samples between the real points (x + 0.5, radius 1): inside the real balls, and covering them all.
    assert precision_recall(line, line + 0.5, k=1) == {"precision": 1.0, "recall": 1.0, "k": 1}
    assert precision_recall(line, line + 1000, k=3) == {"precision": 0.0, "recall": 0.0, "k": 3}
    with pytest.raises(ValueError, match="k must be"):
        precision_recall(line, line[:3], k=3)


def test_precision_recall_see_a_dropped_mode_and_off_manifold_samples():
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[-10.0, 0.0], [10.0, 0.0]])
    real = torch.randn(400, 2, generator=generator) * 0.5 + centers[torch.arange(400) % 2]
    one_mode = torch.randn(400, 2, generator=generator) * 0.5 + centers[0]
    both_modes = torch.randn(400, 2, generator=generator) * 0.5 + centers[torch.arange(400) % 2]
    dropped = precision_recall(real, one_mode)
    assert dropped["precision"] > 0.9 and 0.4 < dropped["recall"] < 0.5  # half the real points are never covered
    full = precision_recall(real, both_modes)
    assert full["precision"] > 0.9 and full["recall"] > 0.9
    off = precision_recall(real, both_modes + torch.tensor([0.0, 5.0]))
    assert off["precision"] < 0.05 and off["recall"] < 0.05


# ----------------------------------------------------------------------------------------------
# The robust classifier checkpoint
# ----------------------------------------------------------------------------------------------

def test_robust_checkpoint_save_load_identity(tmp_path):
    model = load_checkpoint(ROBUST_CLASSIFIER)
    assert model.config.num_classes == NOT_A_DIGIT + 1
    save_checkpoint(model, tmp_path / "copy", read_record(ROBUST_CLASSIFIER))
    again = load_checkpoint(tmp_path / "copy")
    for (name, tensor), (name_again, tensor_again) in zip(model.state_dict().items(), again.state_dict().items()):
        assert name == name_again and torch.equal(tensor, tensor_again)
    images = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(images), again(images)) and torch.equal(model.features(images), again.features(images))
    assert json.loads((tmp_path / "copy" / "training.json").read_text()) == read_record(ROBUST_CLASSIFIER)
    record = read_record(ROBUST_CLASSIFIER)
    assert record["command"].startswith("coursekit train robust-classifier")
    assert record["data"] == {"name": "mnist", "source": "bundled", "train_images": 4000}
    assert record["train_seconds"] > 0 and record["device"] == "cpu"


def test_not_a_digit_only_above_the_calibrated_threshold():
    from coursekit.eval.classifier import ClassifierConfig, predicted_class

    # Class probabilities (digits 0-9, then not a digit): "2" is the likeliest digit in both rows,
    # and P(not a digit) is 0.6, then 0.7.
    probabilities = torch.tensor([[0.0, 0.0, 0.3] + [0.0125] * 6 + [0.025, 0.6],
                                  [0.0, 0.0, 0.2] + [0.0125] * 6 + [0.025, 0.7]])
    logits = probabilities.clamp(min=1e-9).log()
    assert predicted_class(logits, ClassifierConfig(num_classes=11)).tolist() == [10, 10]  # plain argmax
    assert predicted_class(logits, ClassifierConfig(num_classes=11, reject_threshold=0.65)).tolist() == [2, 10]
    model = load_robust_classifier()
    record = read_record(ROBUST_CLASSIFIER)["metrics"]
    assert 0.5 <= model.config.reject_threshold == record["reject_threshold"] < 1


def test_reject_class_takes_non_digits_and_leaves_digits(mnist_test):
    from coursekit.eval.corruptions import blobs, uniform_noise

    classifier = load_robust_classifier()
    generator = torch.Generator().manual_seed(123)  # other images than training.json's report
    noise_rejected = (predict_with_reject(uniform_noise(1000, generator), classifier) == NOT_A_DIGIT).float().mean()
    blobs_rejected = (predict_with_reject(blobs(1000, generator), classifier) == NOT_A_DIGIT).float().mean()
    assert noise_rejected >= 0.95 and blobs_rejected >= 0.95
    predicted = predict_with_reject(mnist_test.images, classifier)
    accuracy = float((predicted == mnist_test.labels).float().mean())
    metrics = read_record(ROBUST_CLASSIFIER)["metrics"]
    assert accuracy >= 0.98  # measured: see training.json metrics.test_accuracy
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert (predicted == NOT_A_DIGIT).sum() <= 10  # at most 1 % of real held-out digits rejected
    assert metrics["not_a_digit_fraction"]["uniform_noise"] >= 0.95 and metrics["not_a_digit_fraction"]["blobs"] >= 0.95
    # The old classifier's failure: noise must no longer pile up in one digit.
    histogram = torch.bincount(predict_with_reject(uniform_noise(1000, generator), classifier), minlength=11)
    assert histogram[:NOT_A_DIGIT].max() <= 50


# ----------------------------------------------------------------------------------------------
# Scores at a stated N, beside the floor at the same N
# ----------------------------------------------------------------------------------------------

def test_pixel_range_is_stated_not_guessed():
    images = torch.rand(4, 1, 28, 28)
    assert torch.equal(to_unit_range(images * 2 - 1, (-1, 1)), to_unit_range(images, (0, 1)))
    with pytest.raises(ValueError, match=r"pixel_range=\(0, 1\) was stated"):
        to_unit_range(images * 2 - 1, (0, 1))
    with pytest.raises(ValueError, match="pixels span"):
        to_unit_range(images * 255, (0, 1))
    assert torch.allclose(to_unit_range(images * 255, (0, 255)), images)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        to_unit_range(torch.rand(4, 3, 28, 28), (0, 1))


def test_score_samples_reports_the_floor_at_the_same_n():
    digits = reference_digits(300, seed=0)
    held_out = digits["held_out"]
    scores = score_samples(held_out * 2 - 1, pixel_range=(-1, 1), num_samples=300)
    floor = real_floor(num_samples=300)
    assert scores["num_samples"] == floor["num_samples"] == 300 and scores["floor"] == floor
    assert scores["fid"] == pytest.approx(floor["fid"]) and scores["kid"] == pytest.approx(floor["kid"])
    assert sum(scores["class_histogram"]) == 300 and len(scores["class_histogram"]) == 11
    noise = torch.rand(300, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    noisy = score_samples(noise, pixel_range=(0, 1), num_samples=300)
    assert noisy["fid"] > 20 * floor["fid"] and noisy["precision"] < 0.05 and noisy["not_a_digit"] >= 285
    with pytest.raises(ValueError, match="only 300 samples"):
        score_samples(noise, pixel_range=(0, 1), num_samples=400)


@pytest.mark.slow
def test_sensitivity_every_defect_scores_worse_than_clean():
    table = sensitivity_table(num_samples=1000)
    rows, clean = table["rows"], table["rows"]["clean"]
    assert table["num_samples"] == 1000 and sum(clean["class_histogram"]) == 1000
    for name, row in rows.items():
        if name != "clean":
            assert row["fid"] > clean["fid"] and row["kid"] > clean["kid"], name
    # One digit missing: recall falls, and the histogram shows the gap.
    dropped, duplicated = rows["class_dropped"], rows["class_duplicated"]
    assert dropped["recall"] < clean["recall"] - 0.03 and duplicated["recall"] < clean["recall"] - 0.03
    assert clean["class_histogram"][5] >= 90 and dropped["class_histogram"][5] <= 5
    assert duplicated["class_histogram"][5] <= 5 and duplicated["class_histogram"][3] >= 180
    # Noise and blur move samples off the data: precision falls.
    assert rows["gaussian_noise_0.1"]["precision"] < clean["precision"]
    # The table stored with the checkpoint is this one.
    stored = read_record(ROBUST_CLASSIFIER)["sensitivity"]
    assert stored["num_samples"] == 1000
    for name, row in rows.items():
        assert stored["rows"][name]["fid"] == pytest.approx(row["fid"], rel=1e-4)
        assert stored["rows"][name]["class_histogram"] == row["class_histogram"]


@pytest.mark.slow
def test_train_robust_classifier_command(tmp_path):
    from coursekit.cli import main

    out = tmp_path / "robust"
    assert main(["train", "robust-classifier", "--epochs", "1", "--max-steps", "2", "--sensitivity-samples", "100",
                 "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    record = json.loads((out / "training.json").read_text())
    assert record["steps"] == 2 and record["data"]["train_images"] == 4000 and record["train_cpu_seconds"] > 0
    metrics = record["metrics"]
    assert set(metrics["accuracy"]) >= {"clean", "gaussian_noise_0.1", "box_blur_3x3", "stray_pixels_3", "shift_rotate"}
    assert set(metrics["not_a_digit_fraction"]) >= {"uniform_noise", "blobs"}
    assert sum(metrics["ae_latent16_random_decodes_histogram"]) == 1000
    assert record["sensitivity"]["num_samples"] == 100 and record["sensitivity"]["command"] == record["command"]
    assert load_checkpoint(out).config.num_classes == NOT_A_DIGIT + 1


# ----------------------------------------------------------------------------------------------
# Memorisation and the 11-bin histogram
# ----------------------------------------------------------------------------------------------

def test_memorisation_report_finds_copies_and_only_copies():
    from coursekit.data import load_mnist
    from coursekit.eval.quality import memorisation_report, nearest_training_distances

    train = load_mnist("train", source="bundled").images
    copies = memorisation_report(train[:300], pixel_range=(0, 1), num_samples=300)
    assert copies["median"] == pytest.approx(0.0, abs=1e-4) and copies["near_copies"] == 1.0
    held_out = reference_digits(300, 0)["held_out"]
    fresh = memorisation_report(held_out, pixel_range=(0, 1), num_samples=300)
    assert fresh["median"] == pytest.approx(fresh["held_out_median"]) and fresh["near_copies"] <= 0.01
    # distances are Euclidean in [0, 1] pixels: a training digit shifted by one pixel is that far from itself at most
    shifted = torch.roll(train[:5], 1, dims=-1)
    direct = (shifted.flatten(1) - train[:5].flatten(1)).norm(dim=1).double()
    assert (nearest_training_distances(shifted, pixel_range=(0, 1)) <= direct + 1e-6).all()
    noise = memorisation_report(torch.rand(300, 1, 28, 28, generator=torch.Generator().manual_seed(0)),
                                pixel_range=(0, 1), num_samples=300)
    assert noise["median"] > 2 * fresh["median"] and noise["near_copies"] == 0.0
    symmetric = memorisation_report(train[:300] * 2 - 1, pixel_range=(-1, 1), num_samples=300)
    assert symmetric["near_copies"] == 1.0
    with pytest.raises(ValueError, match="only 300 samples"):
        memorisation_report(train[:300], pixel_range=(0, 1), num_samples=400)


def test_digit_histogram_has_a_not_a_digit_bin():
    from coursekit.eval.corruptions import uniform_noise
    from coursekit.eval.quality import digit_histogram

    held_out = reference_digits(200, 0)["held_out"]
    digits = digit_histogram(held_out, pixel_range=(0, 1))
    assert len(digits) == NOT_A_DIGIT + 1 and sum(digits) == 200 and digits[NOT_A_DIGIT] <= 4
    noise = digit_histogram(uniform_noise(200, torch.Generator().manual_seed(0)), pixel_range=(0, 1))
    assert noise[NOT_A_DIGIT] >= 190  # the old classifier called all of these an 8


GENERATORS = ["ae-latent2", "ae-latent4", "ae-latent8", "ae-latent16", "ae-latent32", "ae-denoising", "ae-anomaly", "vae",
              "vae-latent2", "vae-beta0.25", "vae-beta4", "vae-anomaly", "dcgan", "wgan-gp"]


@pytest.mark.parametrize("name", GENERATORS)
def test_every_shipped_generator_is_measured_on_the_validated_metric(name):
    evaluation = read_record(name)["metrics"]["evaluation"]
    assert evaluation["num_samples"] == 1000 and evaluation["reference_seed"] == 0
    row, floor = evaluation["samples"], evaluation["floor"]
    assert row["fid_over_floor"] == pytest.approx(row["fid"] / floor["fid"])
    assert sum(row["class_histogram"]) == 1000 and len(row["class_histogram"]) == NOT_A_DIGIT + 1
    assert floor["fid"] == pytest.approx(real_floor(num_samples=1000)["fid"])  # the floor at the same N and reference


def test_evaluate_command_rescores_a_generator_as_its_record_says(tmp_path):
    """`coursekit evaluate` of a shipped generator at the record's N and seed gives the record's numbers."""
    import shutil

    from coursekit.checkpoint import resolve
    from coursekit.cli import main

    folder = tmp_path / "vae-latent2"
    shutil.copytree(resolve("vae-latent2"), folder)
    assert main(["evaluate", str(folder), "--write", "--why", "test"]) == 0
    stored = json.loads((folder / "training.json").read_text())
    again, before = stored["metrics"]["evaluation"]["samples"], read_record("vae-latent2")["metrics"]["evaluation"]["samples"]
    assert again["fid"] == pytest.approx(before["fid"], rel=1e-6) and again["class_histogram"] == before["class_histogram"]
    assert stored["evaluations"][-1]["why"] == "test" and stored["evaluations"][-1]["stored_in"] == "metrics.evaluation"
