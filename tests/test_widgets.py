"""Tests for coursekit.widgets: the latent grid and the slider explorer of chapter 1."""

import io

import pytest
import torch

from coursekit.models.autoencoder import Autoencoder, AutoencoderConfig
from coursekit.widgets import image_to_png, latent_explorer, latent_grid


@pytest.fixture
def model_2d():
    torch.manual_seed(0)
    return Autoencoder(AutoencoderConfig(latent_dim=2, channels=(4, 8))).eval()


def test_latent_grid_shape_and_orientation(model_2d):
    images = latent_grid(model_2d, (-1.0, 1.0), (-2.0, 2.0), steps=3)
    assert images.shape == (9, 1, 28, 28)
    # top-left cell is (z1 = -1, z2 = +2); bottom-right is (z1 = +1, z2 = -2)
    with torch.no_grad():
        expected = model_2d.decode(torch.tensor([[-1.0, 2.0], [1.0, -2.0]]))
    torch.testing.assert_close(images[0], expected[0])
    torch.testing.assert_close(images[-1], expected[1])


def test_latent_grid_rejects_bad_input(model_2d):
    with pytest.raises(ValueError, match="2-D latent"):
        latent_grid(Autoencoder(AutoencoderConfig(latent_dim=3, channels=(4, 8))), (-1, 1), (-1, 1))
    with pytest.raises(ValueError, match="low < high"):
        latent_grid(model_2d, (1, -1), (-1, 1))
    with pytest.raises(ValueError, match="steps"):
        latent_grid(model_2d, (-1, 1), (-1, 1), steps=1)


def test_image_to_png_round_trip():
    from PIL import Image

    image = torch.zeros(1, 28, 28)
    image[0, 3, 5] = 1.0
    picture = Image.open(io.BytesIO(image_to_png(image, scale=2)))
    assert picture.size == (56, 56)
    assert picture.getpixel((10, 6)) == 255 and picture.getpixel((0, 0)) == 0
    with pytest.raises(ValueError, match="grey image"):
        image_to_png(torch.zeros(3, 28, 28))


def test_latent_explorer_updates_without_a_browser(model_2d):
    explorer = latent_explorer(model_2d, (-3, 3), (-3, 3), start=(0.0, 0.0))
    picture = explorer.children[0].children[0]
    slider_z1, slider_z2 = explorer.children[0].children[1].children
    first = bytes(picture.value)  # ipywidgets stores the PNG as a memoryview
    assert first.startswith(b"\x89PNG")
    slider_z1.value, slider_z2.value = 2.5, -2.5  # moving the sliders redraws the digit
    assert bytes(picture.value) != first
    with torch.no_grad():
        expected = image_to_png(model_2d.decode(torch.tensor([[2.5, -2.5]]))[0])
    assert bytes(picture.value) == expected
