"""The course's figure style, image grids and side-by-side comparisons for the chapters.

The book's text column is 820 CSS px wide on a 1366 px screen, of which a cell's output image gets
757 px, and about 358 px on a phone. A figure
drawn ``FIGURE_WIDTH`` inches wide at ``FIGURE_DPI`` is 640 px: on a desktop it is shown at its own
size, so 11-point text is 15 px high, and on a phone it shrinks by about 0.56, to 8.5 px. Anything
wider than ``MAX_FIGURE_WIDTH`` (720 px, 740 px with the 0.1 in margin that the notebook's tight
bounding box adds on each side) could be shrunk on a desktop too, so the helpers
here never draw wider, and ``use_course_style`` makes the notebook send PNGs at twice the resolution ("retina"),
so a reader who zooms on a phone sees sharp text.
"""

from __future__ import annotations

from pathlib import Path

import torch

FIGURE_WIDTH = 6.4  # inches: the default width of a course figure (640 CSS px)
MAX_FIGURE_WIDTH = 7.2  # inches: 720 CSS px, 740 with the 0.1 in margins a notebook adds: an output image has 757 px
FIGURE_DPI = 100  # CSS pixels per inch; retina PNGs hold twice as many
COURSE_STYLE = {
    "figure.dpi": FIGURE_DPI,
    "figure.figsize": (FIGURE_WIDTH, 3.6),
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.title_fontsize": 10,
    "figure.titlesize": 12,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "lines.linewidth": 1.8,
    "image.cmap": "gray",
}


def use_course_style(retina: bool = True) -> dict:
    """Apply the course's figure style (``COURSE_STYLE``) and, in a notebook, retina PNG output.

    Call it once at the top of a chapter, after the imports. Returns the rcParams it set."""
    import matplotlib as mpl
    import matplotlib.pyplot as plt  # noqa: F401  (importing pyplot activates the notebook backend first)

    mpl.rcParams.update(COURSE_STYLE)
    if retina and _in_notebook():
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("retina")
    return dict(COURSE_STYLE)


def _in_notebook() -> bool:
    """True inside an IPython kernel (Jupyter, Colab, the book build), where figures are sent as PNGs."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def fit_width(width: float, height: float, max_width: float = MAX_FIGURE_WIDTH) -> tuple[float, float]:
    """A figure size (inches) no wider than ``max_width``, scaled down with its aspect ratio kept."""
    if width <= 0 or height <= 0:
        raise ValueError(f"expected a positive figure size in inches, got ({width}, {height})")
    scale = min(1.0, max_width / width)
    return width * scale, height * scale


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
        _, ax = plt.subplots(figsize=fit_width(max(2.0, size * nrow), max(1.0, size * rows)))
    ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def side_by_side(rows: dict[str, torch.Tensor], size: float = 0.8):
    """One labelled row of images per entry, e.g. ``{"input": x, "latent 2": r2, ...}``."""
    import matplotlib.pyplot as plt

    count = max(len(images) for images in rows.values())
    fig, axes = plt.subplots(len(rows), count, figsize=fit_width(size * count + 1.2, size * len(rows)), squeeze=False)
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
        axes_row[0].set_ylabel(label, rotation=0, ha="right", va="center")
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Write a grid of images to a PNG file."""
    import torchvision

    path = Path(path)
    torchvision.utils.save_image(to_unit(images).clamp(0, 1), str(path), nrow=nrow, padding=2, pad_value=1.0)
    return path
