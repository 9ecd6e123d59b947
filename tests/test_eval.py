import pytest
import torch

from coursekit.checkpoint import read_record
from coursekit.eval import (accuracy, class_histogram, classifier_fid, classifier_kid, load_eval_classifier,
                            real_vs_real_floor, sample_quality)
from coursekit.eval.metrics import _reference_sets


def test_shipped_classifier_is_accurate_on_held_out_digits(mnist_test):
    value = accuracy(mnist_test.images, mnist_test.labels)
    assert value >= 0.98
    assert abs(value - read_record("mnist-classifier")["metrics"]["test_accuracy"]) < 1e-6
    assert class_histogram(mnist_test.images).sum() == 1000
    assert (class_histogram(mnist_test.images) - 100).abs().max() <= 5


def test_features_and_bad_input():
    classifier = load_eval_classifier()
    assert classifier.features(torch.rand(3, 1, 28, 28)).shape == (3, classifier.config.feature_dim)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        classifier_fid(torch.rand(10, 3, 28, 28), torch.rand(10, 3, 28, 28))
    with pytest.raises(ValueError, match="pixel values"):
        classifier_fid(torch.rand(10, 1, 28, 28) * 255, torch.rand(10, 1, 28, 28))


def test_fid_of_a_set_with_itself_is_zero(mnist_test):
    images = mnist_test.images[:500]
    assert abs(classifier_fid(images, images)) < 1e-2
    # KID draws independent random subsets of each set, so against itself it is only ~0.
    kid, _ = classifier_kid(images, images, subset_size=200, subsets=20)
    noise = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    kid_noise, _ = classifier_kid(noise, images, subset_size=200, subsets=20)
    assert abs(kid) < 0.01 * kid_noise
    # [-1, 1] images are read as the same digits as their [0, 1] versions.
    assert abs(classifier_fid(images * 2 - 1, images)) < 1e-2


def test_real_vs_real_floor_is_small_next_to_noise():
    floor = real_vs_real_floor(500)
    train, test = _reference_sets(500, 0)
    assert floor["fid"] == pytest.approx(classifier_fid(train, test))
    assert floor["fid"] > 0
    noise = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert classifier_fid(noise, test) > 20 * floor["fid"]
    quality = sample_quality(train)
    assert quality["num_samples"] == 500 and quality["fid_ratio"] == pytest.approx(1.0)
    assert sample_quality(noise)["fid_ratio"] > 20
