"""Image grids and side-by-side comparisons for the chapters."""

from __future__ import annotations

from pathlib import Path

import torch


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] or [0, 1] -> [0, 1] (detached, on the CPU)."""
    images = images.detach().float().cpu()
    return (images + 1) / 2 if images.min() < -1e-4 else images


def make_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """``(N, C, H, W)`` images -> one ``(H', W', C)`` array-like tensor for ``imshow``."""
    import torchvision

    if images.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    grid = torchvision.utils.make_grid(to_unit(images).clamp(0, 1), nrow=nrow, padding=padding, pad_value=1.0)
    return grid.permute(1, 2, 0)  # (H', W', C)


def show_images(images: torch.Tensor, nrow: int = 8, title: str | None = None, ax=None, size: float = 0.6):
    """Draw a grid of images; returns the matplotlib axes."""
    import matplotlib.pyplot as plt

    grid = make_grid(images, nrow)
    if ax is None:
        rows = (len(images) + nrow - 1) // nrow
        _, ax = plt.subplots(figsize=(max(2.0, size * nrow), max(1.0, size * rows)))
    ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def side_by_side(rows: dict[str, torch.Tensor], size: float = 0.8):
    """One labelled row of images per entry, e.g. ``{"input": x, "latent 2": r2, ...}``."""
    import matplotlib.pyplot as plt

    count = max(len(images) for images in rows.values())
    fig, axes = plt.subplots(len(rows), count, figsize=(size * count + 1.2, size * len(rows)), squeeze=False)
    for axes_row, (label, images) in zip(axes, rows.items()):
        images = to_unit(images)
        for column, ax in enumerate(axes_row):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if column < len(images):
                picture = images[column].permute(1, 2, 0)
                ax.imshow(picture.squeeze(-1) if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=1)
        axes_row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Write a grid of images to a PNG file."""
    import torchvision

    path = Path(path)
    torchvision.utils.save_image(to_unit(images).clamp(0, 1), str(path), nrow=nrow, padding=2, pad_value=1.0)
    return path
