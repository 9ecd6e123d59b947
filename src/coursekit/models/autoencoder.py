"""Convolutional autoencoder (chapter 1).

An encoder squeezes a ``(1, 28, 28)`` image into ``latent_dim`` numbers (the bottleneck) and a
decoder maps those numbers back to an image. Training minimises the reconstruction error, so the
bottleneck has to keep what matters about the digit. With ``noise_std > 0`` the model is a
*denoising* autoencoder: it sees a corrupted image and is asked for the clean one.

Images are in ``[0, 1]`` (``load_mnist(scale="unit")``); the decoder ends in a sigmoid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from coursekit.checkpoint import register_model


@dataclass
class AutoencoderConfig:
    latent_dim: int = 16  # size of the bottleneck z
    channels: tuple[int, ...] = (32, 64)  # feature maps after each stride-2 conv
    in_channels: int = 1
    image_size: int = 28
    noise_std: float = 0.0  # > 0: denoising autoencoder, trained on x + noise_std * eps

    def __post_init__(self):
        downsample = 2 ** len(self.channels)
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be at least 1, got {self.latent_dim}")
        if self.image_size % downsample:
            raise ValueError(f"image_size {self.image_size} must be divisible by 2**len(channels) = {downsample}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")


class Encoder(nn.Module):
    """``(B, C, H, W)`` image -> ``(B, latent_dim)`` code."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        layers, channels_in = [], config.in_channels
        for channels_out in config.channels:
            layers += [nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1), nn.SiLU()]
            channels_in = channels_out
        self.convs = nn.Sequential(*layers)
        side = config.image_size // 2 ** len(config.channels)
        self.to_latent = nn.Linear(channels_in * side * side, config.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x)  # (B, channels[-1], side, side)
        return self.to_latent(h.flatten(1))  # (B, latent_dim)


class Decoder(nn.Module):
    """``(B, latent_dim)`` code -> ``(B, C, H, W)`` image in ``[0, 1]``."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.side = config.image_size // 2 ** len(config.channels)
        self.top_channels = config.channels[-1]
        self.from_latent = nn.Linear(config.latent_dim, self.top_channels * self.side * self.side)
        layers = []
        widths = list(reversed(config.channels)) + [config.in_channels]
        for index, (channels_in, channels_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.ConvTranspose2d(channels_in, channels_out, 4, stride=2, padding=1))
            if index < len(widths) - 2:
                layers.append(nn.SiLU())
        self.deconvs = nn.Sequential(*layers)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's output before the sigmoid (a VAE's Bernoulli decoder uses these)."""
        h = F.silu(self.from_latent(z))
        h = h.view(-1, self.top_channels, self.side, self.side)  # (B, channels[-1], side, side)
        return self.deconvs(h)  # (B, C, H, W)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(z))  # (B, C, H, W) in [0, 1]


@register_model("autoencoder", AutoencoderConfig)
class Autoencoder(nn.Module):
    """Encoder + decoder with a ``latent_dim``-number bottleneck (see chapter 1)."""

    def __init__(self, config: AutoencoderConfig | None = None):
        super().__init__()
        self.config = config or AutoencoderConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)

    def _check_images(self, x: torch.Tensor) -> None:
        expected = (self.config.in_channels, self.config.image_size, self.config.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._check_images(x)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"expected codes of shape (B, {self.config.latent_dim}), got {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode codes drawn from a standard normal. Chapter 1 shows why this mostly fails."""
        device = next(self.parameters()).device
        z = torch.randn(num_samples, self.config.latent_dim, generator=generator, device=device)
        return self.decode(z)


def corrupt(x: torch.Tensor, noise_std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add Gaussian noise of standard deviation ``noise_std`` and clip back to ``[0, 1]``."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + noise_std * noise).clamp(0.0, 1.0)


def reconstruction_loss(model: Autoencoder, batch, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean squared error between the clean images and the reconstruction (per pixel).

    A denoising autoencoder (``config.noise_std > 0``) reconstructs from a corrupted input.
    """
    x = batch[0] if isinstance(batch, (list, tuple)) else batch
    inputs = corrupt(x, model.config.noise_std, generator) if model.config.noise_std > 0 else x
    return F.mse_loss(model(inputs), x)


@torch.no_grad()
def reconstruction_error(model: Autoencoder, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Per-image mean squared reconstruction error, shape ``(N,)`` (the anomaly score of chapter 1)."""
    device = next(model.parameters()).device
    errors = []
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size].to(device)
        errors.append(((model(chunk) - chunk) ** 2).flatten(1).mean(dim=1).cpu())
    return torch.cat(errors)


@torch.no_grad()
def encode_all(model: Autoencoder, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Codes for many images at once, shape ``(N, latent_dim)``."""
    device = next(model.parameters()).device
    return torch.cat([model.encode(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


@torch.no_grad()
def fitted_gaussian_sample(model: Autoencoder, images: torch.Tensor, num_samples: int,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Decode codes drawn from a Gaussian fitted to the codes of ``images`` (chapter 1, section 1.4).

    The Gaussian has the mean ``mu`` and covariance ``Sigma`` of ``encode_all(model, images)``;
    a code is ``z = mu + L eps`` with ``L L^T = Sigma`` (Cholesky) and ``eps ~ N(0, I)`` drawn exactly as
    :meth:`Autoencoder.sample` draws its codes, so the same ``generator`` seed gives the same ``eps``.
    A density fitted after training, as in Ghosh et al. (2020). Returns ``(num_samples, C, H, W)``.
    """
    codes = encode_all(model, images)  # (N, latent_dim), on the CPU
    if len(codes) <= codes.shape[1]:
        raise ValueError(f"need more images than code dimensions to fit a covariance, got {len(codes)} images "
                         f"for {codes.shape[1]} dimensions")
    mu = codes.mean(dim=0)  # (latent_dim,)
    cholesky = torch.linalg.cholesky(torch.cov(codes.T))  # (latent_dim, latent_dim), L @ L.T = covariance
    device = next(model.parameters()).device
    eps = torch.randn(num_samples, model.config.latent_dim, generator=generator, device=device).cpu()
    return model.decode((mu + eps @ cholesky.T).to(device))  # (num_samples, C, H, W)
