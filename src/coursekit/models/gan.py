"""Generative adversarial networks (chapter 3): DCGAN and WGAN-GP on 28x28 digits.

A generator G maps noise z ~ N(0, I) to an image in [-1, 1]; a discriminator D maps an image to
one number, a *logit* (D's probability that the image is real is sigmoid of it). Goodfellow et al.
(2014) train them on the value function

    V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))],

D ascending it and G descending it, in alternating steps. The loss functions below are written on
logits, with ``binary_cross_entropy_with_logits`` for numerical stability:

* :func:`discriminator_loss`: -V for D, i.e. BCE(real, 1) + BCE(fake, 0);
* :func:`generator_loss_minimax`: G's side of V, mean log(1 - D(G(z))); its gradient vanishes when
  D confidently rejects the fakes (D(G(z)) -> 0), which is exactly the situation early in training;
* :func:`generator_loss_nonsaturating`: -mean log D(G(z)), the fix proposed in the same paper:
  same fixed point, strong gradient where the minimax loss has none;
* :func:`critic_loss` and :func:`wasserstein_generator_loss`: the WGAN losses (Arjovsky et al.
  2017) on unbounded critic scores, and :func:`gradient_penalty`, the soft 1-Lipschitz
  constraint of WGAN-GP (Gulrajani et al. 2017): (||grad_x D(x_hat)||_2 - 1)^2 at random points
  x_hat on the lines between real and fake images.

The networks follow DCGAN (Radford et al. 2016): strided (transposed) convolutions, batch norm,
ReLU in G and LeakyReLU in D, tanh output. A WGAN-GP critic has no batch norm (the penalty is
per sample, batch norm would mix samples), so ``loss="wgan-gp"`` builds it with layer norm.
``num_classes > 0`` makes both class-conditional: G gets a label embedding next to z, and D
scores with a projection term (Miyato & Koyama 2018).

:func:`train_step` is one alternating update; :func:`train_gan` loops it with progress, the loss
curves, D's mean output on real and fake images, and a grid of samples from fixed noise after
every epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from coursekit.checkpoint import register_model

LOSSES = ("non-saturating", "minimax", "wgan-gp")


@dataclass
class GANConfig:
    latent_dim: int = 64  # size of the noise z
    generator_channels: int = 64  # width of G's last hidden layer (the first has twice as many)
    discriminator_channels: int = 64  # width of D's first layer (the second has twice as many)
    image_size: int = 28  # 28 (MNIST) or any multiple of 4
    in_channels: int = 1
    num_classes: int = 0  # > 0: class-conditional G and D
    loss: str = "non-saturating"  # "non-saturating", "minimax" or "wgan-gp"
    gp_weight: float = 10.0  # lambda of the gradient penalty (wgan-gp only)

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (two stride-2 layers), got {self.image_size}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")


class Generator(nn.Module):
    """z (B, latent_dim) [+ labels (B,)] -> images (B, C, H, W) in [-1, 1]."""

    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        width, side = config.generator_channels, config.image_size // 4
        self.embed = nn.Embedding(config.num_classes, config.latent_dim) if config.num_classes else None
        inputs = config.latent_dim * (2 if config.num_classes else 1)
        self.project = nn.Sequential(nn.Linear(inputs, 2 * width * side * side, bias=False),
                                     nn.BatchNorm1d(2 * width * side * side), nn.ReLU())
        self.shape = (2 * width, side, side)
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False),  # side -> 2 side
            nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, config.in_channels, 4, stride=2, padding=1),  # 2 side -> 4 side
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is class-conditional: pass labels (B,) with values 0..num_classes-1")
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.upsample(self.project(z).view(-1, *self.shape))


class Discriminator(nn.Module):
    """images (B, C, H, W) [+ labels (B,)] -> one logit (or critic score) per image, shape (B,)."""

    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        width, side = config.discriminator_channels, config.image_size // 4
        # batch norm couples the samples of a batch, which the per-sample gradient penalty must not see
        norm = (nn.GroupNorm(1, 2 * width) if config.loss == "wgan-gp" else nn.BatchNorm2d(2 * width))
        self.features = nn.Sequential(
            nn.Conv2d(config.in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1, bias=False), norm, nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        features = 2 * width * side * side
        self.score = nn.Linear(features, 1)
        self.embed = nn.Embedding(config.num_classes, features) if config.num_classes else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(images)
        logits = self.score(h).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: pass labels (B,)")
            logits = logits + (self.embed(labels) * h).sum(dim=1)  # projection term
        return logits


def init_weights(module: nn.Module) -> None:
    """DCGAN's initialisation: N(0, 0.02) for (transposed) convolutions and linear layers."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


@register_model("gan", GANConfig)
class GAN(nn.Module):
    """A generator and its discriminator (or critic), saved and loaded together."""

    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        self.apply(init_weights)

    def noise(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        device = device or next(self.parameters()).device
        return torch.randn(n, self.config.latent_dim, generator=generator, device=device)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
               batch_size: int = 500) -> torch.Tensor:
        """``n`` images in [0, 1] on the CPU (labels 0..9 in turn for a conditional GAN, unless given)."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        if self.config.num_classes and labels is None:
            labels = torch.arange(n) % self.config.num_classes
        images = []
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            z = torch.randn(count, self.config.latent_dim, generator=generator, device=generator.device if generator else device)
            batch_labels = labels[start:start + count].to(device) if labels is not None else None
            images.append(self.generator(z.to(device), batch_labels).cpu())
        self.train(was_training)
        return (torch.cat(images) + 1) / 2

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, labels)


# --- losses: small named functions on logits (or critic scores) ------------------------------------

def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-V(D, G) for D: BCE(D(x), 1) + BCE(D(G(z)), 0), each a mean over the batch."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_loss_minimax(fake_logits: torch.Tensor) -> torch.Tensor:
    """G's side of V: mean log(1 - D(G(z))), minimised. Saturates when D(G(z)) -> 0."""
    return -F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def generator_loss_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """-mean log D(G(z)): the non-saturating generator loss."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN critic: mean D(G(z)) - mean D(x), minimised (the negative Wasserstein estimate)."""
    return fake_scores.mean() - real_scores.mean()


def wasserstein_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN generator: -mean D(G(z))."""
    return -fake_scores.mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP: mean over the batch of (||grad_x critic(x_hat)||_2 - 1)^2, x_hat = e x + (1 - e) G(z),
    with one e ~ U[0, 1] per image. Differentiable in the critic's parameters (create_graph)."""
    epsilon = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), generator=generator, device=real.device)
    points = (epsilon * real.detach() + (1 - epsilon) * fake.detach()).requires_grad_(True)
    scores = critic(points, labels) if labels is not None else critic(points)
    (gradients,) = torch.autograd.grad(scores.sum(), points, create_graph=True)
    return ((gradients.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def generator_loss(config: GANConfig, fake_logits: torch.Tensor) -> torch.Tensor:
    return {"non-saturating": generator_loss_nonsaturating, "minimax": generator_loss_minimax,
            "wgan-gp": wasserstein_generator_loss}[config.loss](fake_logits)


# --- training ----------------------------------------------------------------------------------------

def train_step(gan: GAN, real: torch.Tensor, optimizer_g: torch.optim.Optimizer, optimizer_d: torch.optim.Optimizer,
               labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               update_generator: bool = True) -> dict[str, float]:
    """One alternating update on a batch of real images in [-1, 1]: D (or the critic) first, then G.

    The fake batch is detached for D's step: D's loss must move D only, and G's graph is not needed
    there. G's step scores the same fakes again through D, not detached, so the gradient flows
    through D into G; only G's optimizer steps, and D's gradients from it are cleared before D's
    next step. Returns the losses and D's mean probability (or score) on real and fake images.
    """
    config = gan.config
    labels = labels if config.num_classes else None
    z = torch.randn(real.shape[0], config.latent_dim, generator=generator, device=real.device)
    fake = gan.generator(z, labels)

    real_logits = gan.discriminator(real, labels)
    fake_logits = gan.discriminator(fake.detach(), labels)
    if config.loss == "wgan-gp":
        penalty = gradient_penalty(gan.discriminator, real, fake, labels, generator)
        d_loss = critic_loss(real_logits, fake_logits) + config.gp_weight * penalty
    else:
        d_loss = discriminator_loss(real_logits, fake_logits)
    optimizer_d.zero_grad(set_to_none=True)
    d_loss.backward()
    optimizer_d.step()

    result = {"d_loss": d_loss.item()}
    if config.loss == "wgan-gp":
        result.update(gradient_penalty=penalty.item(), d_real=real_logits.mean().item(), d_fake=fake_logits.mean().item())
    else:
        result.update(d_real=torch.sigmoid(real_logits).mean().item(), d_fake=torch.sigmoid(fake_logits).mean().item())
    if update_generator:
        g_loss = generator_loss(config, gan.discriminator(fake, labels))
        optimizer_g.zero_grad(set_to_none=True)
        g_loss.backward()
        optimizer_g.step()
        result["g_loss"] = g_loss.item()
    return result


@dataclass
class GANHistory:
    """Per-step losses and D outputs, a fixed-noise sample grid per epoch, wall time."""

    steps: list[dict[str, float]] = field(default_factory=list)
    grids: list[torch.Tensor] = field(default_factory=list)  # (n, C, H, W) in [0, 1], one per epoch
    seconds: float = 0.0
    device: str = "cpu"

    def series(self, key: str) -> list[float]:
        return [step[key] for step in self.steps if key in step]


def optimizers(gan: GAN, lr_g: float = 2e-4, lr_d: float = 2e-4, betas: tuple[float, float] | None = None):
    """Adam for G and D with DCGAN's betas (0.5, 0.999), or WGAN-GP's (0.0, 0.9)."""
    betas = betas or ((0.0, 0.9) if gan.config.loss == "wgan-gp" else (0.5, 0.999))
    return (torch.optim.Adam(gan.generator.parameters(), lr=lr_g, betas=betas),
            torch.optim.Adam(gan.discriminator.parameters(), lr=lr_d, betas=betas))


def train_gan(gan: GAN, loader, *, epochs: int = 1, lr_g: float = 2e-4, lr_d: float = 2e-4,
              betas: tuple[float, float] | None = None, critic_steps: int | None = None, device=None,
              generator: torch.Generator | None = None, fixed_noise: int = 64, max_steps: int | None = None,
              progress: bool = True) -> GANHistory:
    """Train ``gan`` in place on ``loader`` (batches of images in [-1, 1], or (images, labels)).

    ``critic_steps`` D updates per G update (default 1, and 5 for wgan-gp as in Gulrajani et al.).
    After every epoch the generator draws ``fixed_noise`` images from the same noise (labels 0..9
    in turn for a conditional GAN) into ``GANHistory.grids``, so the grids show one run's progress.
    """
    from tqdm.auto import tqdm

    from coursekit.device import get_device

    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    device = torch.device(device) if device is not None else get_device()
    gan.to(device)
    generator = generator or torch.Generator(device=device).manual_seed(0)
    critic_steps = critic_steps or (5 if gan.config.loss == "wgan-gp" else 1)
    optimizer_g, optimizer_d = optimizers(gan, lr_g, lr_d, betas)
    noise = torch.randn(fixed_noise, gan.config.latent_dim, generator=torch.Generator().manual_seed(1234)).to(device)
    noise_labels = (torch.arange(fixed_noise) % gan.config.num_classes).to(device) if gan.config.num_classes else None

    history = GANHistory(device=str(device))
    start, step = time.perf_counter(), 0
    for epoch in range(epochs):
        gan.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for batch in bar:
            images, labels = (batch if isinstance(batch, (list, tuple)) else (batch, None))
            images = images.to(device)
            labels = labels.to(device) if labels is not None else None
            result = train_step(gan, images, optimizer_g, optimizer_d, labels, generator,
                                update_generator=(step + 1) % critic_steps == 0)
            for key in ("d_loss", "g_loss"):
                if key in result and not torch.isfinite(torch.tensor(result[key])):
                    raise FloatingPointError(f"{key} became {result[key]} at step {step}; try a smaller learning rate")
            history.steps.append(result)
            step += 1
            bar.set_postfix({k: f"{v:.3f}" for k, v in result.items()})
            if max_steps is not None and step >= max_steps:
                break
        gan.eval()
        with torch.no_grad():
            history.grids.append(((gan.generator(noise, noise_labels) + 1) / 2).cpu())
        if max_steps is not None and step >= max_steps:
            break
    gan.eval()
    history.seconds = time.perf_counter() - start
    return history
