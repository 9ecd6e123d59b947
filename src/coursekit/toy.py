"""Three tiny generative models on 2-D toy data (chapter 0).

Images have hundreds of numbers per sample, which makes it hard to *see* what a generative model
has learnt. Points in the plane have two, so a scatter plot shows the whole learnt distribution at
once. This module holds the toy data and one tiny model of each family the course covers:

* :class:`ToyVAE` -- a variational autoencoder that maximises a lower bound on the likelihood
  (Kingma & Welling, 2014);
* :class:`ToyGAN` -- a generator and a discriminator that play an adversarial game
  (Goodfellow et al., 2014);
* :class:`ToyDiffusion` -- a noise predictor trained to denoise, sampled with DDPM
  (Ho et al., 2020).

Every model is a small MLP, has a dataclass config, a ``sample(num_samples, generator=...)``
method that returns ``(N, 2)`` points, and a ``train_toy_*(data, steps=..., generator=...)``
function that returns ``(model, losses)``. With the default settings each trains in a few seconds
on one CPU core, and the same generator seed gives the same model.

Notation: ``x0`` is a clean data point, ``z`` a latent code, ``t`` a diffusion step, ``eps`` the
Gaussian noise, ``alpha_bar`` the cumulative product of ``1 - beta``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def toy_data(
    num_points: int,
    generator: torch.Generator | None = None,
    *,
    num_modes: int = 8,
    radius: float = 2.0,
    std: float = 0.1,
    return_labels: bool = False,
):
    """Points from a ring of ``num_modes`` small Gaussian blobs, shape ``(num_points, 2)``.

    Blob ``k`` is centred at ``radius * (cos(2 pi k / num_modes), sin(2 pi k / num_modes))`` and has
    standard deviation ``std`` in each direction; every blob is equally likely. The distribution
    has separate modes with empty space between them, so it is far from a single Gaussian: a
    model that only learns the mean and spread of the data puts its samples in the empty middle.

    With ``return_labels=True`` it also returns the blob index of each point, shape
    ``(num_points,)`` int64 (the "class" used to show conditioning in chapter 0).
    """
    if not isinstance(num_points, int) or num_points < 1:
        raise ValueError(f"num_points must be a positive int, got {num_points!r}")
    if num_modes < 1:
        raise ValueError(f"num_modes must be at least 1, got {num_modes}")
    labels = torch.randint(num_modes, (num_points,), generator=generator)  # (N,)
    angles = 2 * math.pi * labels.float() / num_modes  # (N,)
    centres = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)  # (N, 2)
    points = centres + std * torch.randn(num_points, 2, generator=generator)  # (N, 2)
    return (points, labels) if return_labels else points


def _check_points(x: torch.Tensor, what: str = "data") -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected {what} of shape (N, 2), got {shape}")
    if len(x) < 1:
        raise ValueError(f"expected at least one point in {what}, got none")


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")


def _seed_from(generator: torch.Generator | None) -> int:
    """A seed for the model's initial weights, drawn from ``generator`` (or 0 without one)."""
    if generator is None:
        return 0
    return int(torch.randint(2**31 - 1, (1,), generator=generator))


@contextmanager
def _one_thread():
    """Run a block on one CPU thread: for MLPs this small, more threads only add overhead."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _batch(data: torch.Tensor, batch_size: int, generator: torch.Generator | None) -> torch.Tensor:
    index = torch.randint(len(data), (batch_size,), generator=generator)  # (B,)
    return data[index]  # (B, 2)


def mlp(in_features: int, hidden: int, out_features: int, layers: int = 2, activation=nn.SiLU) -> nn.Sequential:
    """``layers`` hidden layers of width ``hidden`` with ``activation`` between them."""
    blocks, width = [], in_features
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), activation()]
        width = hidden
    blocks.append(nn.Linear(width, out_features))
    return nn.Sequential(*blocks)


def nearest_distance(samples: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """Distance from each sample to its nearest data point, shape ``(N,)``. Small = on the data."""
    _check_points(samples, "samples")
    _check_points(data, "data")
    return torch.cdist(samples, data).min(dim=1).values


# ---------------------------------------------------------------------------------------------
# VAE: maximise a lower bound on log p(x)
# ---------------------------------------------------------------------------------------------


@dataclass
class ToyVAEConfig:
    latent_dim: int = 2
    hidden: int = 64
    decoder_std: float = 0.1  # fixed std of the Gaussian decoder p(x | z); smaller = sharper fit
    lr: float = 1e-2  # peak learning rate, decayed to 0 over training
    batch_size: int = 256


class ToyVAE(nn.Module):
    """Encoder ``x -> (mu, logvar)`` of q(z | x), decoder ``z -> x``, prior ``z ~ N(0, I)``."""

    def __init__(self, config: ToyVAEConfig | None = None):
        super().__init__()
        self.config = config or ToyVAEConfig()
        self.encoder = mlp(2, self.config.hidden, 2 * self.config.latent_dim)
        self.decoder = mlp(self.config.latent_dim, self.config.hidden, 2)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_points(x, "x")
        mu, logvar = self.encoder(x).chunk(2, dim=1)  # (B, latent_dim) each
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)  # (B, 2)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Negative ELBO per point = reconstruction term + KL(q(z | x) || N(0, I))."""
        mu, logvar = self.encode(x)
        # Reparameterization: z = mu + sigma * eps keeps the sample differentiable in mu, sigma.
        eps = torch.randn(mu.shape, generator=generator)
        z = mu + torch.exp(0.5 * logvar) * eps  # (B, latent_dim)
        x_hat = self.decode(z)  # (B, 2)
        # -log p(x | z) for a Gaussian decoder with fixed std, without the constant.
        reconstruction = ((x - x_hat) ** 2).sum(dim=1).mean() / (2 * self.config.decoder_std**2)
        # KL between N(mu, sigma^2) and N(0, 1), summed over latent dimensions (Kingma & Welling, App. B).
        kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(dim=1).mean()
        return {"loss": reconstruction + kl, "reconstruction": reconstruction, "kl": kl}

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode ``z ~ N(0, I)``; returns the decoder means, shape ``(num_samples, 2)``."""
        z = torch.randn(num_samples, self.config.latent_dim, generator=generator)
        return self.decode(z)


def train_toy_vae(
    data: torch.Tensor,
    steps: int = 1000,
    generator: torch.Generator | None = None,
    config: ToyVAEConfig | None = None,
) -> tuple[ToyVAE, dict[str, list[float]]]:
    """Train a :class:`ToyVAE` on ``data`` (N, 2); losses per step: ``loss``, ``reconstruction``, ``kl``."""
    _check_points(data)
    _check_steps(steps)
    config = config or ToyVAEConfig()
    with torch.random.fork_rng():
        torch.manual_seed(_seed_from(generator))
        model = ToyVAE(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    # Cosine decay of the learning rate to 0: the last steps average out the minibatch noise.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    losses: dict[str, list[float]] = {"loss": [], "reconstruction": [], "kl": []}
    with _one_thread():
        for _ in range(steps):
            terms = model.loss(_batch(data, config.batch_size, generator), generator)
            optimizer.zero_grad()
            terms["loss"].backward()
            optimizer.step()
            schedule.step()
            for name, value in terms.items():
                losses[name].append(value.item())
    return model.eval(), losses


# ---------------------------------------------------------------------------------------------
# GAN: a generator and a discriminator play a game
# ---------------------------------------------------------------------------------------------


@dataclass
class ToyGANConfig:
    noise_dim: int = 2
    hidden: int = 64
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)  # the usual Adam momentum for GANs
    batch_size: int = 256
    lr_discriminator: float | None = None  # the discriminator's learning rate; None: the same as lr
    generator_steps: int = 1  # generator updates per discriminator update (> 1: the generator runs ahead)


class ToyGAN(nn.Module):
    """``generator``: noise ``z`` -> point; ``discriminator``: point -> logit of "real"."""

    def __init__(self, config: ToyGANConfig | None = None):
        super().__init__()
        self.config = config or ToyGANConfig()
        self.generator = mlp(self.config.noise_dim, self.config.hidden, 2)
        self.discriminator = mlp(2, self.config.hidden, 1, activation=partial(nn.LeakyReLU, 0.2))

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)  # (B, 2)

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        _check_points(x, "x")
        return self.discriminator(x).squeeze(1)  # (B,) logits

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Map ``z ~ N(0, I)`` through the generator, shape ``(num_samples, 2)``."""
        z = torch.randn(num_samples, self.config.noise_dim, generator=generator)
        return self.generate(z)


def train_toy_gan(
    data: torch.Tensor,
    steps: int = 1000,
    generator: torch.Generator | None = None,
    config: ToyGANConfig | None = None,
    callback: Callable[[int, ToyGAN], None] | None = None,
) -> tuple[ToyGAN, dict[str, list[float]]]:
    """Train a :class:`ToyGAN`; losses per step: ``discriminator`` and ``generator``.

    Each step first updates the discriminator on a real and a (detached) fake batch, then the
    generator with the non-saturating loss ``-log D(G(z))`` (Goodfellow et al., 2014, Sec. 3),
    ``config.generator_steps`` times (the first on the same fakes, any further ones on fresh noise).
    The two losses need not go down: they measure a game, not a distance to the data.
    ``callback(step, model)``, if given, runs before every step and once after the last
    (``step = steps``), e.g. to count the samples near each mode (chapter 3, :func:`mode_counts`).
    """
    _check_points(data)
    _check_steps(steps)
    config = config or ToyGANConfig()
    if not isinstance(config.generator_steps, int) or config.generator_steps < 1:
        raise ValueError(f"generator_steps must be a positive int, got {config.generator_steps!r}")
    with torch.random.fork_rng():
        torch.manual_seed(_seed_from(generator))
        model = ToyGAN(config)
    lr_discriminator = config.lr if config.lr_discriminator is None else config.lr_discriminator
    optimizer_d = torch.optim.Adam(model.discriminator.parameters(), lr=lr_discriminator, betas=config.betas)
    optimizer_g = torch.optim.Adam(model.generator.parameters(), lr=config.lr, betas=config.betas)
    losses: dict[str, list[float]] = {"discriminator": [], "generator": []}
    with _one_thread():
        for step in range(steps):
            if callback is not None:
                callback(step, model)
            real = _batch(data, config.batch_size, generator)  # (B, 2)
            z = torch.randn(config.batch_size, config.noise_dim, generator=generator)
            fake = model.generate(z)  # (B, 2)

            # 1. Discriminator step: real -> 1, fake -> 0. detach() keeps the generator out of it.
            logits_real = model.discriminate(real)
            logits_fake = model.discriminate(fake.detach())
            loss_d = F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real)) + \
                F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
            optimizer_d.zero_grad()
            loss_d.backward()
            optimizer_d.step()

            # 2. Generator step: make the (just updated) discriminator call the fakes real.
            for generator_step in range(config.generator_steps):
                if generator_step > 0:  # further steps on fresh fakes from the updated generator
                    z = torch.randn(config.batch_size, config.noise_dim, generator=generator)
                    fake = model.generate(z)  # (B, 2)
                logits_fake = model.discriminate(fake)
                loss_g = F.binary_cross_entropy_with_logits(logits_fake, torch.ones_like(logits_fake))
                optimizer_g.zero_grad()
                loss_g.backward()
                optimizer_g.step()

            losses["discriminator"].append(loss_d.item())
            losses["generator"].append(loss_g.item())
        if callback is not None:
            callback(steps, model)
    return model.eval(), losses


def mode_counts(
    points: torch.Tensor,
    *,
    num_modes: int = 8,
    radius: float = 2.0,
    std: float = 0.1,
    within: float = 4.0,
) -> list[int]:
    """How many of ``points`` (N, 2) lie on each blob of :func:`toy_data`'s ring, and how many on none.

    Returns ``num_modes + 1`` counts: entry ``k`` counts the points within ``within * std`` of blob
    ``k``'s centre (the blobs' radius and std must match the data's), the last entry the points that
    are that close to no centre. A generator that covers the ring puts about ``N / num_modes`` on
    every blob; a collapsed one leaves blobs at 0 (chapter 3, mode collapse).
    """
    _check_points(points, "points")
    if num_modes < 1:
        raise ValueError(f"num_modes must be at least 1, got {num_modes}")
    if within * std >= radius * math.sin(math.pi / num_modes) and num_modes > 1:
        raise ValueError(f"within * std = {within * std:g} reaches past the half-way point between two blobs; "
                         "choose a smaller within")
    centres = ring_centres(num_modes, radius).to(points.dtype)  # (K, 2)
    distance, nearest = torch.cdist(points.detach(), centres).min(dim=1)  # (N,) each
    on_a_blob = distance < within * std
    counts = torch.bincount(nearest[on_a_blob], minlength=num_modes)  # (K,)
    return counts.tolist() + [int((~on_a_blob).sum())]


# ---------------------------------------------------------------------------------------------
# Diffusion: learn to remove noise, then denoise pure noise step by step
# ---------------------------------------------------------------------------------------------


@dataclass
class ToyDiffusionConfig:
    num_train_timesteps: int = 100
    beta_start: float = 1e-3  # the DDPM linear schedule, rescaled from 1000 steps to 100
    beta_end: float = 0.2
    hidden: int = 128
    time_dim: int = 16  # size of the sinusoidal embedding of t
    num_classes: int = 0  # > 0: the noise predictor also takes a class label c (for p(x | c))
    lr: float = 1e-2  # peak learning rate, decayed to 0 over training
    batch_size: int = 1024  # large batches: the noise-prediction loss is very noisy per point


def linear_beta_schedule(config: ToyDiffusionConfig) -> torch.Tensor:
    """``beta_t`` for ``t = 0 .. T-1``, linearly spaced (Ho et al., 2020, Sec. 4), shape ``(T,)``."""
    return torch.linspace(config.beta_start, config.beta_end, config.num_train_timesteps)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of integer steps ``t`` (B,) -> (B, dim), as in the Transformer."""
    half = dim // 2
    frequencies = torch.exp(-math.log(1000.0) * torch.arange(half) / half)  # (half,)
    angles = t.float()[:, None] * frequencies[None, :]  # (B, half)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (B, dim)


class ToyDiffusion(nn.Module):
    """An MLP ``eps_theta(x_t, t[, c])`` that predicts the noise in ``x_t``, plus its schedule."""

    def __init__(self, config: ToyDiffusionConfig | None = None):
        super().__init__()
        self.config = config or ToyDiffusionConfig()
        betas = linear_beta_schedule(self.config)  # (T,)
        alphas = 1.0 - betas
        self.register_buffer("betas", betas)
        self.register_buffer("alphas", alphas)
        self.register_buffer("alpha_bar", torch.cumprod(alphas, dim=0))  # (T,)
        hidden = self.config.hidden
        self.input = nn.Linear(2 + self.config.time_dim, hidden)
        self.label_embedding = nn.Embedding(self.config.num_classes, hidden) if self.config.num_classes > 0 else None
        self.body = mlp(hidden, hidden, 2, layers=2)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        _check_points(x_t, "x_t")
        if t.shape != (len(x_t),):
            raise ValueError(f"expected t of shape ({len(x_t)},), got {tuple(t.shape)}")
        if t.min() < 0 or t.max() >= self.config.num_train_timesteps:
            raise ValueError(f"expected steps t in [0, {self.config.num_train_timesteps - 1}], "
                             f"got values from {int(t.min())} to {int(t.max())}")
        h = self.input(torch.cat([x_t, timestep_embedding(t, self.config.time_dim)], dim=1))  # (B, hidden)
        if self.label_embedding is not None:
            if labels is None:
                raise ValueError(f"this model is conditional (num_classes={self.config.num_classes}); pass labels")
            h = h + self.label_embedding(labels)  # (B, hidden)
        return self.body(F.silu(h))  # (B, 2) predicted eps

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps`` (Ho et al., 2020, Eq. 4)."""
        alpha_bar = self.alpha_bar[t][:, None]  # (B, 1)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps

    def loss(self, x0: torch.Tensor, generator: torch.Generator | None = None,
             labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean squared error between the true and predicted noise (Ho et al., 2020, Eq. 14)."""
        _check_points(x0, "x0")
        t = torch.randint(self.config.num_train_timesteps, (len(x0),), generator=generator)  # (B,)
        eps = torch.randn(x0.shape, generator=generator)  # (B, 2)
        return F.mse_loss(self(self.add_noise(x0, eps, t), t, labels), eps)

    @torch.no_grad()
    @_one_thread()
    def sample(self, num_samples: int, generator: torch.Generator | None = None,
               labels: torch.Tensor | int | None = None) -> torch.Tensor:
        """DDPM ancestral sampling (Ho et al., 2020, Algorithm 2), shape ``(num_samples, 2)``.

        For a conditional model, ``labels`` is one class for all samples or a ``(num_samples,)`` tensor.
        """
        if isinstance(labels, int):
            labels = torch.full((num_samples,), labels, dtype=torch.long)
        # 1. Start from pure noise x_T ~ N(0, I).
        x_t = torch.randn(num_samples, 2, generator=generator)
        for step in reversed(range(self.config.num_train_timesteps)):
            t = torch.full((num_samples,), step, dtype=torch.long)
            # 2. Predict the noise in x_t.
            eps = self(x_t, t, labels)
            # 3. Mean of p(x_{t-1} | x_t): remove the predicted noise and rescale (Eq. 11).
            beta, alpha, alpha_bar = self.betas[step], self.alphas[step], self.alpha_bar[step]
            mean = (x_t - beta / (1 - alpha_bar).sqrt() * eps) / alpha.sqrt()
            if step == 0:
                x_t = mean
            else:
                # 4. Add fresh noise with the posterior variance beta_tilde_t (Eq. 7).
                beta_tilde = beta * (1 - self.alpha_bar[step - 1]) / (1 - alpha_bar)
                x_t = mean + beta_tilde.sqrt() * torch.randn(x_t.shape, generator=generator)
        return x_t  # x0


def train_toy_diffusion(
    data: torch.Tensor,
    steps: int = 1000,
    generator: torch.Generator | None = None,
    config: ToyDiffusionConfig | None = None,
    labels: torch.Tensor | None = None,
) -> tuple[ToyDiffusion, dict[str, list[float]]]:
    """Train a :class:`ToyDiffusion` on ``data`` (N, 2); losses per step: ``loss``.

    Pass ``labels`` (N,) together with ``config.num_classes > 0`` to learn p(x | c) instead of p(x).
    """
    _check_points(data)
    _check_steps(steps)
    config = config or ToyDiffusionConfig()
    if (labels is None) != (config.num_classes == 0):
        raise ValueError("pass labels if and only if config.num_classes > 0")
    if labels is not None and labels.shape != (len(data),):
        raise ValueError(f"expected labels of shape ({len(data)},), got {tuple(labels.shape)}")
    with torch.random.fork_rng():
        torch.manual_seed(_seed_from(generator))
        model = ToyDiffusion(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    # Cosine decay of the learning rate to 0: the last steps average out the minibatch noise.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    losses: dict[str, list[float]] = {"loss": []}
    with _one_thread():
        for _ in range(steps):
            index = torch.randint(len(data), (config.batch_size,), generator=generator)  # (B,)
            batch_labels = labels[index] if labels is not None else None
            loss = model.loss(data[index], generator, batch_labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses["loss"].append(loss.item())
    return model.eval(), losses


# ---------------------------------------------------------------------------------------------
# The noise error per step, and the lowest error any noise predictor can reach on toy_data
# ---------------------------------------------------------------------------------------------


def ring_centres(num_modes: int = 8, radius: float = 2.0) -> torch.Tensor:
    """Centres of the blobs of :func:`toy_data`, shape ``(num_modes, 2)``; row ``k`` is blob ``k``."""
    angles = 2 * math.pi * torch.arange(num_modes).float() / num_modes  # (K,)
    return radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)  # (K, 2)


def best_noise_prediction(x_t: torch.Tensor, alpha_bar: torch.Tensor, *, num_modes: int = 8,
                          radius: float = 2.0, std: float = 0.1) -> torch.Tensor:
    """``E[eps | x_t]`` for data from :func:`toy_data`: the prediction with the lowest squared error.

    Blob ``k`` is N(m_k, std^2 I), so given blob k, x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps
    is N(sqrt(alpha_bar) m_k, v I) with v = alpha_bar std^2 + 1 - alpha_bar, and
    E[eps | x_t, k] = sqrt(1 - alpha_bar) (x_t - sqrt(alpha_bar) m_k) / v. The blobs are mixed with
    their posterior weights p(k | x_t). ``x_t`` is ``(B, 2)``, ``alpha_bar`` is ``(B,)``; returns ``(B, 2)``.
    """
    _check_points(x_t, "x_t")
    if alpha_bar.shape != (len(x_t),):
        raise ValueError(f"expected alpha_bar of shape ({len(x_t)},), got {tuple(alpha_bar.shape)}")
    x_t, alpha_bar = x_t.double(), alpha_bar.double()
    means = ring_centres(num_modes, radius).double()  # (K, 2)
    variance = (alpha_bar * std**2 + 1 - alpha_bar)[:, None, None]  # (B, 1, 1)
    offsets = x_t[:, None, :] - alpha_bar.sqrt()[:, None, None] * means[None]  # (B, K, 2)
    weights = (-(offsets**2).sum(dim=2, keepdim=True) / (2 * variance)).softmax(dim=1)  # (B, K, 1): p(k | x_t)
    eps_given_blob = (1 - alpha_bar).sqrt()[:, None, None] * offsets / variance  # (B, K, 2)
    return (weights * eps_given_blob).sum(dim=1).float()  # (B, 2)


@torch.no_grad()
def noise_error_by_step(model: ToyDiffusion, x0: torch.Tensor, generator: torch.Generator | None = None,
                        **data_kwargs) -> dict[str, torch.Tensor]:
    """Mean squared noise error at every step ``t``, for the network and for the best possible predictor.

    Every point of ``x0`` (N, 2) is noised once at every step with the same ``eps`` for both; returns
    ``{"network": (T,), "best": (T,)}``, the mean over points and both coordinates, as in the training
    loss. ``"best"`` uses :func:`best_noise_prediction` (``data_kwargs``: ``num_modes``, ``radius``,
    ``std`` of :func:`toy_data`). The training loss averages ``"network"`` over uniformly drawn ``t``.
    """
    _check_points(x0, "x0")
    if model.config.num_classes > 0:
        raise ValueError("noise_error_by_step takes an unconditional model (num_classes=0)")
    num_steps, num_points = model.config.num_train_timesteps, len(x0)
    t = torch.arange(num_steps).repeat_interleave(num_points)  # (T * N,)
    x0 = x0.repeat(num_steps, 1)  # (T * N, 2)
    eps = torch.randn(x0.shape, generator=generator)  # (T * N, 2)
    x_t = model.add_noise(x0, eps, t)
    with _one_thread():
        network = ((model(x_t, t) - eps) ** 2).mean(dim=1)  # (T * N,)
    best = ((best_noise_prediction(x_t, model.alpha_bar[t], **data_kwargs) - eps) ** 2).mean(dim=1)
    return {"network": network.view(num_steps, num_points).mean(dim=1),
            "best": best.view(num_steps, num_points).mean(dim=1)}
