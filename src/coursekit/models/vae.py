"""Convolutional variational autoencoder (chapter 2).

The encoder of chapter 1 now returns the parameters of a Gaussian q(z|x) = N(mu, diag(exp(logvar)))
instead of one code, and the decoder p(x|z) is a distribution over images:

* ``decoder="bernoulli"`` (default): every pixel is a coin with probability sigmoid(logits).
  Proper for *binary* images, so the VAE is trained on dynamically binarised digits (each
  pixel drawn as 1 with probability equal to its grey value, afresh every batch) and its
  likelihoods are reported on one fixed binarisation of the held-out digits, in nats: the same
  set-up as the binarised-MNIST numbers in the literature.
* ``decoder="gaussian"``: every pixel is N(sigmoid(logits), decoder_std**2) on the grey images.
  Its log-densities are in nats too, but of a continuous density: not comparable with the
  Bernoulli numbers.

Training maximises the ELBO (Kingma & Welling 2014, eq. 10), with a ``beta`` weight on the KL
term (beta-VAE, Higgins et al. 2017):

    ELBO_beta(x) = E_q(z|x)[log p(x|z)] - beta * KL(q(z|x) || N(0, I)).

``importance_weighted_log_likelihood`` is the k-sample bound of Burda et al. (2016, eq. 8),
which tightens towards log p(x) as k grows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from coursekit.checkpoint import register_model
from coursekit.models.autoencoder import AutoencoderConfig, Decoder, Encoder

DECODERS = ("bernoulli", "gaussian")


@dataclass
class VAEConfig:
    latent_dim: int = 16  # size of z
    channels: tuple[int, ...] = (32, 64)
    in_channels: int = 1
    image_size: int = 28
    beta: float = 1.0  # weight of the KL term in the training loss
    decoder: str = "bernoulli"  # "bernoulli" or "gaussian" (see the module docstring)
    decoder_std: float = 0.1  # standard deviation of the Gaussian decoder

    def __post_init__(self):
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.decoder_std <= 0:
            raise ValueError(f"decoder_std must be > 0, got {self.decoder_std}")

    def network_config(self, outputs: int) -> AutoencoderConfig:
        """The chapter-1 encoder/decoder shape with ``outputs`` numbers at the bottleneck."""
        return AutoencoderConfig(latent_dim=outputs, channels=self.channels, in_channels=self.in_channels,
                                 image_size=self.image_size)


@register_model("vae", VAEConfig)
class VAE(nn.Module):
    """Gaussian encoder q(z|x), standard-normal prior p(z), Bernoulli or Gaussian decoder p(x|z)."""

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = config or VAEConfig()
        # Chapter 1's encoder with twice the outputs: the first half is mu, the second logvar.
        self.encoder = Encoder(self.config.network_config(2 * self.config.latent_dim))
        self.decoder = Decoder(self.config.network_config(self.config.latent_dim))

    def _check_images(self, x: torch.Tensor) -> None:
        expected = (self.config.in_channels, self.config.image_size, self.config.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters of q(z|x): ``mu`` and ``logvar``, each ``(B, latent_dim)``."""
        self._check_images(x)
        mu, logvar = self.encoder(x).chunk(2, dim=1)  # (B, latent_dim) each
        return mu, logvar

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"expected codes of shape (B, {self.config.latent_dim}), got {tuple(z.shape)}")
        return self.decoder.logits(z)  # (B, C, H, W)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z): pixel probabilities (Bernoulli) or grey values (Gaussian), in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reconstruction: encode, draw one z with the reparameterization trick, decode the mean."""
        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar, generator))

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode z ~ N(0, I): the mean image of p(x|z) for each draw, ``(num_samples, C, H, W)``."""
        device = next(self.parameters()).device
        z = torch.randn(num_samples, self.config.latent_dim, generator=generator, device=device)
        return self.decode(z)

    @torch.no_grad()
    def interpolate(self, x_start: torch.Tensor, x_end: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Decode ``steps`` codes on the straight line between the posterior means of two images."""
        if steps < 2:
            raise ValueError(f"steps must be at least 2, got {steps}")
        mu_start, _ = self.encode(x_start.reshape(1, *x_start.shape[-3:]))
        mu_end, _ = self.encode(x_end.reshape(1, *x_end.shape[-3:]))
        weights = torch.linspace(0, 1, steps, device=mu_start.device)[:, None]  # (steps, 1)
        return self.decode((1 - weights) * mu_start + weights * mu_end)  # (steps, C, H, W)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I) and sigma = exp(logvar / 2).

    The randomness sits in eps, outside the network, so gradients flow to mu and logvar.
    """
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per example, summed over dimensions: shape ``(B,)``.

    Closed form (Kingma & Welling 2014, appendix B): 0.5 * sum(mu^2 + sigma^2 - 1 - log sigma^2).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(dim=1)


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw each pixel as 1 with probability equal to its grey value (x in [0, 1])."""
    return torch.bernoulli(x, generator=generator)


def log_likelihood(model: VAE, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(x|z) per image, summed over pixels, in nats: shape ``(B,)``."""
    if model.config.decoder == "bernoulli":
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)
    std = model.config.decoder_std
    squared = ((x - torch.sigmoid(logits)) / std).pow(2)
    return -(0.5 * squared + math.log(std) + 0.5 * math.log(2 * math.pi)).flatten(1).sum(dim=1)


def elbo(model: VAE, x: torch.Tensor, beta: float = 1.0, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """One-sample estimate of the (beta-)ELBO per image, in nats.

    Returns ``{"elbo", "reconstruction", "kl"}``, each ``(B,)``, with
    ``elbo = reconstruction - beta * kl``. ``x`` must already be binary for a Bernoulli decoder.
    """
    mu, logvar = model.encode(x)
    z = reparameterize(mu, logvar, generator)
    reconstruction = log_likelihood(model, x, model.decode_logits(z))
    kl = gaussian_kl(mu, logvar)
    return {"elbo": reconstruction - beta * kl, "reconstruction": reconstruction, "kl": kl}


def vae_loss(model: VAE, batch, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training loss for :func:`coursekit.training.train`: the negative beta-ELBO, averaged over the batch.

    A Bernoulli VAE sees a fresh binarisation of its grey-valued batch every time.
    """
    x = batch[0] if isinstance(batch, (list, tuple)) else batch
    if model.config.decoder == "bernoulli":
        x = binarize(x, generator)
    return -elbo(model, x, model.config.beta, generator)["elbo"].mean()


def _log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dimension."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp()).sum(dim=-1)


@torch.no_grad()
def importance_weighted_log_likelihood(model: VAE, x: torch.Tensor, num_samples: int = 100,
                                       generator: torch.Generator | None = None, chunk: int = 100) -> torch.Tensor:
    """The k-sample importance-weighted estimate of log p(x) per image, in nats: shape ``(B,)``.

        log p(x) >= log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),   z_i ~ q(z|x)   (Burda et al. 2016, eq. 8)

    With k = 1 this is the ELBO; it increases with k towards log p(x). The negative is the
    "IW-NLL" reported for the checkpoints.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    mu, logvar = model.encode(x)  # (B, D) each
    log_weights = []
    for start in range(0, num_samples, chunk):
        k = min(chunk, num_samples - start)
        eps = torch.randn((k, *mu.shape), generator=generator, device=mu.device)  # (k, B, D)
        z = mu + torch.exp(0.5 * logvar) * eps  # (k, B, D)
        logits = model.decode_logits(z.reshape(-1, mu.shape[1]))  # (k * B, C, H, W)
        log_px_z = log_likelihood(model, x.repeat(k, 1, 1, 1), logits).view(k, -1)  # (k, B)
        log_pz = _log_normal(z, torch.zeros_like(z), torch.zeros_like(z))  # (k, B)
        log_qz_x = _log_normal(z, mu, logvar)  # (k, B)
        log_weights.append(log_px_z + log_pz - log_qz_x)
    return torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(num_samples)  # (B,)


def attribute_vector(codes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor | None = None,
                     fraction: float = 0.25) -> torch.Tensor:
    """A direction in code space along which a measured attribute grows (latent arithmetic, chapter 2).

    The mean code of the ``fraction`` of images that score highest on the attribute minus the mean
    code of the ``fraction`` that score lowest (Larsen et al. 2016 made such vectors from labelled
    attributes). With ``labels`` the difference is taken within each class and averaged over the
    classes, so that the vector does not also carry the class when some classes score higher than
    others. ``codes`` is ``(N, D)``, ``scores`` and ``labels`` are ``(N,)``; returns ``(D,)``.
    """
    if codes.dim() != 2 or scores.shape != (len(codes),):
        raise ValueError(f"expected codes (N, D) and scores (N,), got {tuple(codes.shape)} and {tuple(scores.shape)}")
    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction must be in (0, 0.5], got {fraction}")
    if labels is None:
        labels = torch.zeros(len(codes), dtype=torch.long)
    if labels.shape != (len(codes),):
        raise ValueError(f"expected labels of shape ({len(codes)},), got {tuple(labels.shape)}")
    differences = []
    for label in labels.unique():
        group_codes, group_scores = codes[labels == label], scores[labels == label]  # (n, D), (n,)
        count = int(fraction * len(group_scores))
        if count < 1:
            raise ValueError(f"class {int(label)} has {len(group_scores)} images: too few for fraction {fraction}")
        order = torch.argsort(group_scores)  # lowest score first
        differences.append(group_codes[order[-count:]].mean(dim=0) - group_codes[order[:count]].mean(dim=0))
    return torch.stack(differences).mean(dim=0)  # (D,)
