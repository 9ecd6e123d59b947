import warnings

import numpy as np
import pytest
import torch

import coursekit.data as data
from coursekit.data import ImageFolder, load_cifar10, load_fashion_mnist, load_mnist, make_loader


def test_bundled_split_is_fixed_stratified_and_disjoint():
    train = load_mnist("train", source="bundled")
    test = load_mnist("test", source="bundled")
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert torch.bincount(train.labels).tolist() == [400] * 10
    assert torch.bincount(test.labels).tolist() == [100] * 10
    # No held-out digit also appears in the training split.
    train_rows = {row.tobytes() for row in (train.images.numpy() * 255).round().astype(np.uint8).reshape(4000, -1)}
    assert not any(row.tobytes() in train_rows for row in (test.images.numpy() * 255).round().astype(np.uint8).reshape(1000, -1))
    # The split does not depend on the call: a second load gives the same digits.
    data._bundled_cache = None
    again = load_mnist("test", source="bundled")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


def test_scales():
    unit = load_mnist("test", source="bundled", scale="unit").images
    symmetric = load_mnist("test", source="bundled", scale="symmetric").images
    assert unit.min() == 0.0 and unit.max() == 1.0
    assert symmetric.min() == -1.0 and symmetric.max() == 1.0
    torch.testing.assert_close(symmetric, unit * 2 - 1)


def test_auto_falls_back_offline_with_one_warning(monkeypatch):
    monkeypatch.setenv("COURSEKIT_OFFLINE", "1")
    monkeypatch.setattr(data, "_warned_offline", False)
    with pytest.warns(UserWarning, match="bundled MNIST"):
        first = load_mnist("train")
    assert first.source == "bundled" and len(first) == 4000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call must not warn again
        load_mnist("test")


def test_torchvision_only_and_other_datasets_fail_clearly_offline(monkeypatch):
    monkeypatch.setenv("COURSEKIT_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="Fashion-MNIST .*no internet"):
        load_fashion_mnist()
    with pytest.raises(RuntimeError, match="CIFAR-10 .*no internet"):
        load_cifar10("test")


@pytest.mark.parametrize("kwargs, message", [
    ({"split": "validation"}, "split must be one of"),
    ({"scale": "0-255"}, "scale must be one of"),
    ({"source": "kaggle"}, "source must be one of"),
])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_mnist(**kwargs)


def test_image_folder(tmp_path):
    from PIL import Image

    (tmp_path / "sprites" / "nested").mkdir(parents=True)
    Image.new("RGBA", (40, 30), (255, 0, 0, 0)).save(tmp_path / "sprites" / "transparent.png")
    Image.new("L", (20, 50), 0).save(tmp_path / "sprites" / "nested" / "black.jpg")
    (tmp_path / "sprites" / "notes.txt").write_text("not an image")

    folder = ImageFolder(tmp_path / "sprites", image_size=16, channels=3, scale="symmetric")
    assert len(folder) == 2
    images = torch.stack([folder[i][0] for i in range(len(folder))])
    assert images.shape == (2, 3, 16, 16)
    # black.jpg is black everywhere, the transparent sprite is composited onto white.
    names = [p.name for p in folder.files]
    assert torch.all(images[names.index("black.jpg")] == -1.0)
    assert torch.all(images[names.index("transparent.png")] == 1.0)
    grey = ImageFolder(tmp_path / "sprites", image_size=8, channels=1, scale="unit")
    assert grey[0][0].shape == (1, 8, 8) and 0.0 <= grey[0][0].min() <= grey[0][0].max() <= 1.0


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolder(tmp_path)
    with pytest.raises(ValueError, match="channels"):
        ImageFolder(tmp_path, channels=4)


def test_loader_order_follows_generator(mnist_test):
    def first_labels(seed):
        loader = make_loader(mnist_test, batch_size=16, generator=torch.Generator().manual_seed(seed))
        return next(iter(loader))[1]

    assert torch.equal(first_labels(3), first_labels(3))
    assert not torch.equal(first_labels(3), first_labels(4))
