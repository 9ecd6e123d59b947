"""Interactive helpers for the chapters: walking a 2-D latent space (chapter 1, reused in chapter 2).

``latent_grid`` decodes a regular grid of codes into a "map" of images; it is also the static
picture the book shows where sliders cannot move. ``latent_explorer`` builds ipywidgets sliders
for ``(z1, z2)`` that decode live in Jupyter or Colab. Building the widget needs no browser, so
a headless book build can execute the cell without errors (the sliders just do not move there).
"""

from __future__ import annotations

import io
import sys

import torch
from torch import nn


def _latent_dim(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    latent_dim = getattr(config, "latent_dim", None)
    if latent_dim is None or not hasattr(model, "decode"):
        raise TypeError("expected a model with .decode(z) and a .config.latent_dim (e.g. coursekit's Autoencoder)")
    return int(latent_dim)


def _check_range(value: tuple[float, float], name: str) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    if not low < high:
        raise ValueError(f"{name} must be (low, high) with low < high, got {value!r}")
    return low, high


@torch.no_grad()
def latent_grid(model: nn.Module, z1_range: tuple[float, float], z2_range: tuple[float, float],
                steps: int = 15) -> torch.Tensor:
    """Decode a ``steps x steps`` grid of 2-D codes; returns ``(steps * steps, C, H, W)`` images.

    Rows run from the *largest* ``z2`` (top) to the smallest, columns from the smallest ``z1``
    (left) to the largest, so ``make_grid(images, nrow=steps)`` has the orientation of a scatter
    plot of the codes.
    """
    if _latent_dim(model) != 2:
        raise ValueError(f"latent_grid needs a model with a 2-D latent space, got latent_dim={_latent_dim(model)}")
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    z1_low, z1_high = _check_range(z1_range, "z1_range")
    z2_low, z2_high = _check_range(z2_range, "z2_range")
    device = next(model.parameters()).device
    z1 = torch.linspace(z1_low, z1_high, steps)
    z2 = torch.linspace(z2_high, z2_low, steps)  # top row = largest z2
    rows, columns = torch.meshgrid(z2, z1, indexing="ij")  # (steps, steps) each
    z = torch.stack([columns.flatten(), rows.flatten()], dim=1)  # (steps * steps, 2) = (z1, z2)
    return model.decode(z.to(device)).cpu()


def image_to_png(image: torch.Tensor, scale: int = 6) -> bytes:
    """One ``(1, H, W)`` or ``(H, W)`` image in ``[0, 1]`` -> PNG bytes, enlarged ``scale`` times."""
    from PIL import Image

    if image.dim() == 3 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 2:
        raise ValueError(f"expected one grey image of shape (1, H, W) or (H, W), got {tuple(image.shape)}")
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    pixels = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    picture = Image.fromarray(pixels, mode="L")
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _enable_colab_widgets() -> None:
    """In Colab, let ipywidgets 8 render (a no-op everywhere else)."""
    if "google.colab" not in sys.modules:
        return
    try:
        from google.colab import output

        output.enable_custom_widget_manager()
    except (ImportError, AttributeError):
        pass


def latent_explorer(model: nn.Module, z1_range: tuple[float, float], z2_range: tuple[float, float],
                    start: tuple[float, float] | None = None, scale: int = 6):
    """Two sliders for ``(z1, z2)`` and the image the decoder makes from them, updated live.

    Returns an ``ipywidgets.VBox``; display it as the last expression of a cell. The decoder runs
    once per slider move (a few milliseconds for a small model on the CPU).
    """
    import ipywidgets as widgets

    _enable_colab_widgets()
    if _latent_dim(model) != 2:
        raise ValueError(f"latent_explorer needs a model with a 2-D latent space, got latent_dim={_latent_dim(model)}")
    z1_low, z1_high = _check_range(z1_range, "z1_range")
    z2_low, z2_high = _check_range(z2_range, "z2_range")
    if start is None:
        start = ((z1_low + z1_high) / 2, (z2_low + z2_high) / 2)
    device = next(model.parameters()).device
    step1, step2 = (z1_high - z1_low) / 100, (z2_high - z2_low) / 100
    slider_z1 = widgets.FloatSlider(value=start[0], min=z1_low, max=z1_high, step=step1, description="z1",
                                    continuous_update=True, readout_format=".2f")
    slider_z2 = widgets.FloatSlider(value=start[1], min=z2_low, max=z2_high, step=step2, description="z2",
                                    continuous_update=True, readout_format=".2f")
    picture = widgets.Image(format="png")

    @torch.no_grad()
    def redraw(_change=None) -> None:
        z = torch.tensor([[slider_z1.value, slider_z2.value]], dtype=torch.float32, device=device)  # (1, 2)
        picture.value = image_to_png(model.decode(z)[0], scale=scale)

    slider_z1.observe(redraw, names="value")
    slider_z2.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([picture, widgets.VBox([slider_z1, slider_z2])])])
