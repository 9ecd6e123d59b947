"""What generators get wrong, and things that are not digits at all.

Two families of image transforms, all on ``(B, 1, 28, 28)`` images in ``[0, 1]``:

* **corruptions** keep a digit a digit: Gaussian pixel noise, blur, a few stray bright pixels
  (plus the small shifts and rotations of :func:`coursekit.eval.classifier.random_affine`, and
  bolder strokes, :func:`thicken`, which are natural variation rather than defects). The
  robust evaluation classifier learns to read digits through them, and the sensitivity table of
  :mod:`coursekit.eval.quality` checks that the metrics still see them.
* **non-digits** are what the evaluation classifier must file under "not a digit" instead of
  inventing a class for them: uniform noise, soft blobs, scattered stroke fragments, digits blurred
  past recognition, digits cut into 7x7 tiles and shuffled, and overlays of three digits.

Randomness enters only through ``generator``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NON_DIGIT_KINDS = ("uniform_noise", "blobs", "strokes", "heavy_blur", "scrambled", "overlay")


def _uniform(shape, low: float, high: float, generator: torch.Generator | None, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def _check_images(images: torch.Tensor) -> None:
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"expected images of shape (B, 1, 28, 28) in [0, 1], got {tuple(images.shape)}")


# ----------------------------------------------------------------------------------------------
# Corruptions (the image is still a digit)
# ----------------------------------------------------------------------------------------------

def gaussian_noise(images: torch.Tensor, std: float | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``images + std * eps`` clipped to [0, 1]; ``std`` is a number or one value per image ``(B,)``."""
    _check_images(images)
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device).reshape(-1, 1, 1, 1)
    eps = torch.randn(images.shape, generator=generator, device=images.device)
    return (images + std * eps).clamp(0, 1)


def gaussian_blur(images: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur (zero padding: the background is black); ``sigma`` in pixels,
    a number or one value per image ``(B,)``."""
    _check_images(images)
    batch = images.shape[0]
    sigma = torch.as_tensor(sigma, dtype=images.dtype, device=images.device).reshape(-1).expand(batch)
    radius = int(math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, None].clamp(min=1e-3)) ** 2)  # (B, 2r+1)
    kernel = kernel / kernel.sum(1, keepdim=True)
    # One group per image: (1, B, 28, 28) convolved with B kernels.
    rows = F.conv2d(images.reshape(1, batch, 28, 28), kernel[:, None, None, :], padding=(0, radius), groups=batch)
    blurred = F.conv2d(rows, kernel[:, None, :, None], padding=(radius, 0), groups=batch)
    return blurred.reshape(batch, 1, 28, 28)


def box_blur(images: torch.Tensor, size: int = 3) -> torch.Tensor:
    """Mean over each ``size`` x ``size`` neighbourhood (zero padding)."""
    _check_images(images)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"box_blur needs an odd size >= 1, got {size}")
    kernel = torch.full((1, 1, size, size), 1.0 / size**2, dtype=images.dtype, device=images.device)
    return F.conv2d(images, kernel, padding=size // 2)


def stray_pixels(images: torch.Tensor, count: int | torch.Tensor, generator: torch.Generator | None = None,
                 value: float = 1.0) -> torch.Tensor:
    """Set ``count`` random pixels of each image to ``value`` (a number or one count per image)."""
    _check_images(images)
    batch = images.shape[0]
    count = torch.as_tensor(count, device=images.device).reshape(-1).expand(batch)
    most = int(count.max())
    if most == 0:
        return images.clone()
    positions = torch.randint(0, 784, (batch, most), generator=generator, device=images.device)  # (B, most)
    keep = torch.arange(most, device=images.device)[None] < count[:, None]  # (B, most)
    hit = torch.zeros(batch, 784, dtype=images.dtype, device=images.device).scatter_add_(1, positions, keep.to(images.dtype))
    return torch.where(hit.reshape(batch, 1, 28, 28) > 0, torch.full_like(images, value), images)


def thicken(images: torch.Tensor, strength: float | torch.Tensor) -> torch.Tensor:
    """Bolder strokes: a soft 3x3 dilation, ``max(x, strength * maxpool3(x))`` with ``strength`` in
    [0, 1] (a number or one per image). Not a defect: MNIST writers use pens of many widths."""
    _check_images(images)
    strength = torch.as_tensor(strength, dtype=images.dtype, device=images.device).reshape(-1, 1, 1, 1)
    return torch.maximum(images, strength * F.max_pool2d(images, 3, stride=1, padding=1))


def random_thickness(images: torch.Tensor, generator: torch.Generator | None = None,
                     probability: float = 0.25) -> torch.Tensor:
    """Training augmentation: thicken each image's strokes with ``probability`` (strength 0.4-1)."""
    _check_images(images)
    batch, device = images.shape[0], images.device
    thick = thicken(images, _uniform(batch, 0.4, 1.0, generator, device))
    apply = (torch.rand(batch, generator=generator, device=device) < probability).reshape(-1, 1, 1, 1)
    return torch.where(apply, thick, images)


def random_corruption(images: torch.Tensor, generator: torch.Generator | None = None,
                      probability: float = 0.5) -> torch.Tensor:
    """Training augmentation: each image, with ``probability``, gets one of Gaussian noise
    (std 0.02-0.35), Gaussian blur (sigma 0.4-1.3) or 1-12 stray pixels, or noise and stray pixels
    together. The others are left alone."""
    _check_images(images)
    batch, device = images.shape[0], images.device
    noisy = gaussian_noise(images, _uniform(batch, 0.02, 0.35, generator, device), generator)
    blurred = gaussian_blur(images, _uniform(batch, 0.4, 1.3, generator, device))
    counts = torch.randint(1, 13, (batch,), generator=generator, device=device)
    speckled = stray_pixels(images, counts, generator)
    both = stray_pixels(noisy, counts, generator)
    choice = torch.randint(0, 4, (batch,), generator=generator, device=device)
    corrupted = torch.stack([noisy, blurred, speckled, both])[choice, torch.arange(batch, device=device)]
    apply = (torch.rand(batch, generator=generator, device=device) < probability).reshape(-1, 1, 1, 1)
    return torch.where(apply, corrupted, images)


# ----------------------------------------------------------------------------------------------
# Non-digits (the evaluation classifier's class 10)
# ----------------------------------------------------------------------------------------------

def uniform_noise(count: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """Pixels drawn uniformly from [0, 1]."""
    return torch.rand(count, 1, 28, 28, generator=generator, device=device)


def _pixel_grid(device) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(28.0, device=device), torch.arange(28.0, device=device), indexing="ij")
    return torch.stack([cols.reshape(-1), rows.reshape(-1)], 1)  # (784, 2) as (x, y)


def blobs(count: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """One to four soft Gaussian blobs (radius 1.5-5 px, brightness 0.4-1) per image."""
    most = 4
    centers = _uniform((count, most, 2), 3.0, 24.0, generator, device)
    radii = _uniform((count, most, 1), 1.5, 5.0, generator, device)
    brightness = _uniform((count, most, 1), 0.4, 1.0, generator, device)
    present = torch.arange(most, device=device)[None] < torch.randint(1, most + 1, (count, 1), generator=generator, device=device)
    squared = ((_pixel_grid(device)[None, None] - centers[:, :, None]) ** 2).sum(-1)  # (count, most, 784)
    images = (brightness * present[..., None] * torch.exp(-0.5 * squared / radii**2)).sum(1)
    return images.clamp(0, 1).reshape(count, 1, 28, 28)


def strokes(count: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """One to four short pen strokes (3-9 px long, about as thick as a digit's) scattered at random."""
    most = 4
    start = _uniform((count, most, 2), 3.0, 25.0, generator, device)
    angle = _uniform((count, most), 0.0, 2 * math.pi, generator, device)
    length = _uniform((count, most), 3.0, 9.0, generator, device)
    end = start + length[..., None] * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    half_width = _uniform((count, most, 1), 0.6, 1.4, generator, device)
    present = torch.arange(most, device=device)[None] < torch.randint(1, most + 1, (count, 1), generator=generator, device=device)
    pixels = _pixel_grid(device)[None, None]  # (1, 1, 784, 2)
    direction = (end - start)[:, :, None]  # (count, most, 1, 2)
    along = (((pixels - start[:, :, None]) * direction).sum(-1) / (direction**2).sum(-1)).clamp(0, 1)
    nearest = start[:, :, None] + along[..., None] * direction
    distance = ((pixels - nearest) ** 2).sum(-1).sqrt()  # (count, most, 784)
    ink = (1 + half_width - distance).clamp(0, 1) * present[..., None]
    return ink.amax(1).reshape(count, 1, 28, 28)


def heavy_blur(digits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Digits blurred past recognition (sigma 2.5-4 px), rescaled to a peak of 0.3-1."""
    blurred = gaussian_blur(digits, _uniform(digits.shape[0], 2.5, 4.0, generator, digits.device))
    peak = blurred.amax((1, 2, 3), keepdim=True).clamp(min=1e-6)
    return (blurred / peak * _uniform((digits.shape[0], 1, 1, 1), 0.3, 1.0, generator, digits.device)).clamp(0, 1)


def scrambled(digits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Digits cut into a 4x4 grid of 7x7 tiles, and the tiles shuffled."""
    batch = digits.shape[0]
    tiles = F.unfold(digits, kernel_size=7, stride=7)  # (B, 49, 16)
    order = torch.rand(batch, 16, generator=generator, device=digits.device).argsort(1)  # (B, 16)
    tiles = tiles.gather(2, order[:, None, :].expand(-1, 49, -1))
    return F.fold(tiles, (28, 28), kernel_size=7, stride=7)


def overlay(digits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Three digits drawn on top of each other (pixelwise maximum), each shifted a little."""
    from coursekit.eval.classifier import random_affine

    batch = digits.shape[0]
    picks = [torch.randint(0, batch, (batch,), generator=generator, device=digits.device) for _ in range(3)]
    layers = [random_affine(digits[pick], generator, max_degrees=30, max_shift=0.15, max_zoom=0.1) for pick in picks]
    return torch.stack(layers).amax(0)


def non_digits(count: int, digits: torch.Tensor, generator: torch.Generator | None = None,
               kinds: tuple[str, ...] = NON_DIGIT_KINDS) -> torch.Tensor:
    """``count`` images that are not digits, the ``kinds`` in turn (``digits`` feed the kinds that
    start from a digit: heavy_blur, scrambled, overlay)."""
    _check_images(digits)
    unknown = set(kinds) - set(NON_DIGIT_KINDS)
    if unknown:
        raise ValueError(f"unknown non-digit kinds {sorted(unknown)}; known: {NON_DIGIT_KINDS}")
    device = digits.device
    sizes = [count // len(kinds) + (index < count % len(kinds)) for index in range(len(kinds))]
    parts = []
    for kind, size in zip(kinds, sizes):
        if size == 0:
            continue
        if kind == "uniform_noise":
            parts.append(uniform_noise(size, generator, device))
        elif kind == "blobs":
            parts.append(blobs(size, generator, device))
        elif kind == "strokes":
            parts.append(strokes(size, generator, device))
        else:
            source = digits[torch.randint(0, len(digits), (size,), generator=generator, device=device)]
            parts.append({"heavy_blur": heavy_blur, "scrambled": scrambled, "overlay": overlay}[kind](source, generator))
    return torch.cat(parts)
