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
  x_hat on the lines between real and fake images;
* :func:`r1_penalty`: ||grad_x D(x)||^2 at real images (Mescheder et al. 2018), a gradient penalty
  for the standard GAN's discriminator (``GANConfig.r1_weight``).

The networks follow DCGAN (Radford et al. 2016): strided (transposed) convolutions, batch norm,
ReLU in G and LeakyReLU in D, tanh output. A WGAN-GP critic has no batch norm (the penalty is
per sample, batch norm would mix samples), so ``loss="wgan-gp"`` builds it with layer norm.
``num_classes > 0`` makes both class-conditional: G gets a label embedding next to z, and D
scores with a projection term (Miyato & Koyama 2018).

:func:`train_step` is one alternating update; :func:`train_gan` loops it with progress, the loss
curves, D's mean output on real and fake images, and a grid of samples from fixed noise after
every epoch. Two additions for small data sets, both off by default:

* :func:`diff_augment`, differentiable augmentation (Zhao et al. 2020): every image D sees, real or
  fake, in D's step and in G's, is randomly shifted and has a square cut out, so that D cannot
  memorise the few thousand real images, while G's gradient passes through the same transformation
  and G is never taught to draw the augmentations;
* an exponential moving average of G's weights (``ema_decay``; Yazıcı et al. 2019), sampled from
  instead of the last iterate, which averages out the oscillation of the game.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from coursekit.checkpoint import register_model

LOSSES = ("non-saturating", "minimax", "wgan-gp")
AUGMENTATIONS = ("translation", "cutout")


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
    extra_layers: int = 0  # 3x3 convolutions added to G and D at each of their two smaller resolutions
    minibatch_std: bool = False  # D sees the batch's standard deviation as one more channel (not wgan-gp)
    r1_weight: float = 0.0  # gamma of the R1 penalty on D's gradient at real images (not wgan-gp)

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (two stride-2 layers), got {self.image_size}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.extra_layers < 0 or self.r1_weight < 0:
            raise ValueError(f"extra_layers and r1_weight must be >= 0, got {self.extra_layers} and {self.r1_weight}")
        if self.minibatch_std and self.loss == "wgan-gp":
            raise ValueError("minibatch_std couples the samples of a batch, which the per-sample gradient penalty of "
                             "wgan-gp must not see (like batch norm): use it with a dcgan loss")
        if self.r1_weight and self.loss == "wgan-gp":
            raise ValueError("a wgan-gp critic has its own gradient penalty (gp_weight); r1_weight must be 0")


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

        def refine(channels: int) -> list[nn.Module]:  # extra_layers 3x3 convolutions at one resolution
            return [module for _ in range(config.extra_layers)
                    for module in (nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(channels), nn.ReLU())]

        self.upsample = nn.Sequential(
            *refine(2 * width),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False),  # side -> 2 side
            nn.BatchNorm2d(width), nn.ReLU(),
            *refine(width),
            nn.ConvTranspose2d(width, config.in_channels, 4, stride=2, padding=1),  # 2 side -> 4 side
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is class-conditional: pass labels (B,) with values 0..num_classes-1")
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.upsample(self.project(z).view(-1, *self.shape))


class MinibatchStd(nn.Module):
    """ProGAN's minibatch standard deviation (Karras et al. 2018): appends one channel holding the
    standard deviation over the batch of every feature at every position, averaged to one number. A
    batch of near-identical fakes has a telltale small value, so D can catch a generator that draws
    too little variety, which a verdict on one image at a time cannot."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spread = x.std(dim=0, unbiased=False).mean()
        return torch.cat([x, spread.expand(x.shape[0], 1, *x.shape[2:])], dim=1)


class Discriminator(nn.Module):
    """images (B, C, H, W) [+ labels (B,)] -> one logit (or critic score) per image, shape (B,)."""

    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        width, side = config.discriminator_channels, config.image_size // 4
        # batch norm couples the samples of a batch, which the per-sample gradient penalty must not see
        norm = (nn.GroupNorm(1, 2 * width) if config.loss == "wgan-gp" else nn.BatchNorm2d(2 * width))
        def refine(channels: int, inputs: int) -> list[nn.Module]:  # extra_layers 3x3 convolutions
            return [module for layer in range(config.extra_layers)
                    for module in (nn.Conv2d(inputs if layer == 0 else channels, channels, 3, padding=1),
                                   nn.LeakyReLU(0.2))]

        batch_std = [MinibatchStd()] if config.minibatch_std else []
        self.features = nn.Sequential(
            nn.Conv2d(config.in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            *refine(width, width),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1, bias=False), norm, nn.LeakyReLU(0.2),
            *batch_std, *refine(2 * width, 2 * width + len(batch_std)),
            nn.Flatten(),
        )
        channels = 2 * width + (1 if config.minibatch_std and not config.extra_layers else 0)
        features = channels * side * side
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


def _input_gradients(critic: nn.Module, points: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """The gradient of each image's score with respect to that image, flattened to (B, C H W), kept
    differentiable in the critic's parameters (create_graph) so that a penalty on it can be trained."""
    points = points.detach().requires_grad_(True)
    scores = critic(points, labels) if labels is not None else critic(points)
    (gradients,) = torch.autograd.grad(scores.sum(), points, create_graph=True)
    return gradients.flatten(1)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP: mean over the batch of (||grad_x critic(x_hat)||_2 - 1)^2, x_hat = e x + (1 - e) G(z),
    with one e ~ U[0, 1] per image. Differentiable in the critic's parameters (create_graph)."""
    epsilon = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), generator=generator, device=real.device)
    points = epsilon * real.detach() + (1 - epsilon) * fake.detach()
    gradients = _input_gradients(critic, points, labels)
    return ((gradients.norm(2, dim=1) - 1) ** 2).mean()


def r1_penalty(discriminator: nn.Module, real: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): mean over the batch of ||grad_x D(x)||^2 at the real images, the
    logit's gradient. Added to D's loss as gamma / 2 times this, it stops D from building steep walls
    around the real data, which is what makes the game oscillate instead of settling. Differentiable in
    D's parameters (create_graph)."""
    return _input_gradients(discriminator, real, labels).pow(2).sum(1).mean()


def generator_loss(config: GANConfig, fake_logits: torch.Tensor) -> torch.Tensor:
    return {"non-saturating": generator_loss_nonsaturating, "minimax": generator_loss_minimax,
            "wgan-gp": wasserstein_generator_loss}[config.loss](fake_logits)


# --- differentiable augmentation ---------------------------------------------------------------------

def diff_augment(images: torch.Tensor, policy: tuple[str, ...] | list[str] = AUGMENTATIONS,
                 generator: torch.Generator | None = None, *, max_shift: float = 0.125, cutout: float = 0.5,
                 background: float = -1.0) -> torch.Tensor:
    """DiffAugment (Zhao et al. 2020) for images in [-1, 1], one random draw per image.

    * ``"translation"``: shift by up to ``max_shift`` of the side (3 pixels of 28) in each direction,
      filling with ``background`` (-1, the paper's zero padding in its [-1, 1] convention, is black);
    * ``"cutout"``: paint a square of side ``cutout`` times the side (14 of 28), centred anywhere, with
      ``background``.

    Both are built from indexing and ``torch.where``, so the output is differentiable in ``images``
    (the generator's gradient passes through); ``generator`` makes the draws reproducible.
    """
    unknown = [name for name in policy if name not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"augmentations must be among {AUGMENTATIONS}, got {unknown}")
    if images.dim() != 4:
        raise ValueError(f"expected images (B, C, H, W), got shape {tuple(images.shape)}")
    batch, _, height, width = images.shape
    device = images.device
    rows, cols = torch.arange(height, device=device), torch.arange(width, device=device)
    if "translation" in policy:
        pad_y, pad_x = int(height * max_shift), int(width * max_shift)
        padded = F.pad(images, (pad_x, pad_x, pad_y, pad_y), value=background)
        dy = torch.randint(0, 2 * pad_y + 1, (batch, 1, 1), generator=generator, device=device)
        dx = torch.randint(0, 2 * pad_x + 1, (batch, 1, 1), generator=generator, device=device)
        index_y = (rows[None, :, None] + dy).expand(batch, height, width)  # output row i reads padded row i + dy
        index_x = (cols[None, None, :] + dx).expand(batch, height, width)
        flat = padded.flatten(2)  # (B, C, H' W')
        index = (index_y * padded.shape[-1] + index_x).flatten(1)  # (B, H W)
        images = flat.gather(2, index[:, None, :].expand(-1, images.shape[1], -1)).view_as(images)
    if "cutout" in policy:
        side_y, side_x = int(height * cutout), int(width * cutout)
        cy = torch.randint(0, height, (batch, 1, 1), generator=generator, device=device)
        cx = torch.randint(0, width, (batch, 1, 1), generator=generator, device=device)
        offset_y, offset_x = rows[None, :, None] - cy + side_y // 2, cols[None, None, :] - cx + side_x // 2
        inside = (offset_y >= 0) & (offset_y < side_y) & (offset_x >= 0) & (offset_x < side_x)
        images = torch.where(inside[:, None], torch.full_like(images, background), images)
    return images


# --- training ----------------------------------------------------------------------------------------

def train_step(gan: GAN, real: torch.Tensor, optimizer_g: torch.optim.Optimizer, optimizer_d: torch.optim.Optimizer,
               labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               update_generator: bool = True, augment: tuple[str, ...] = ()) -> dict[str, float]:
    """One alternating update on a batch of real images in [-1, 1]: D (or the critic) first, then G.

    The fake batch is detached for D's step: D's loss must move D only, and G's graph is not needed
    there. G's step scores the same fakes again through D, not detached, so the gradient flows
    through D into G; only G's optimizer steps, and D's gradients from it are cleared before D's
    next step. Returns the losses and D's mean probability (or score) on real and fake images.
    ``augment`` (e.g. ``("translation", "cutout")``): every image D sees, real or fake, in both steps,
    goes through :func:`diff_augment` first (the gradient penalty is taken on the augmented images).
    """
    config = gan.config
    labels = labels if config.num_classes else None
    z = torch.randn(real.shape[0], config.latent_dim, generator=generator, device=real.device)
    fake = gan.generator(z, labels)

    def seen(images: torch.Tensor) -> torch.Tensor:  # what D sees of a batch
        return diff_augment(images, augment, generator) if augment else images

    real, fake_for_d = seen(real), seen(fake.detach())
    real_logits = gan.discriminator(real, labels)
    fake_logits = gan.discriminator(fake_for_d, labels)
    if config.loss == "wgan-gp":
        penalty = gradient_penalty(gan.discriminator, real, fake_for_d, labels, generator)
        d_loss = critic_loss(real_logits, fake_logits) + config.gp_weight * penalty
    else:
        d_loss = discriminator_loss(real_logits, fake_logits)
        if config.r1_weight:
            r1 = r1_penalty(gan.discriminator, real, labels)
            d_loss = d_loss + config.r1_weight / 2 * r1
    optimizer_d.zero_grad(set_to_none=True)
    d_loss.backward()
    optimizer_d.step()

    result = {"d_loss": d_loss.item()}
    if config.loss == "wgan-gp":
        result.update(gradient_penalty=penalty.item(), d_real=real_logits.mean().item(), d_fake=fake_logits.mean().item())
    else:
        result.update(d_real=torch.sigmoid(real_logits).mean().item(), d_fake=torch.sigmoid(fake_logits).mean().item())
        if config.r1_weight:
            result["r1"] = r1.item()
    if update_generator:
        g_loss = generator_loss(config, gan.discriminator(seen(fake), labels))
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
    ema: "EMA | None" = None  # the moving average of G's weights (train_gan's ema_decay > 0)

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
              progress: bool = True, augment: tuple[str, ...] = (), ema_decay: float = 0.0) -> GANHistory:
    """Train ``gan`` in place on ``loader`` (batches of images in [-1, 1], or (images, labels)).

    ``critic_steps`` D updates per G update (default 1, and 5 for wgan-gp as in Gulrajani et al.).
    After every epoch the generator draws ``fixed_noise`` images from the same noise (labels 0..9
    in turn for a conditional GAN) into ``GANHistory.grids``, so the grids show one run's progress.
    ``augment``: :func:`diff_augment`'s policy for everything D sees (see :func:`train_step`).
    ``ema_decay`` > 0 keeps a moving average of G's weights in ``GANHistory.ema`` (updated after every
    G step, with :class:`coursekit.training.EMA`'s warm-up); the grids are then drawn by the average.
    ``gan`` itself ends with the last iterate; copy ``history.ema.model``'s weights into
    ``gan.generator`` to keep the average.
    """
    from tqdm.auto import tqdm

    from coursekit.device import get_device
    from coursekit.training import EMA

    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    for name in augment:
        if name not in AUGMENTATIONS:
            raise ValueError(f"augment must name augmentations among {AUGMENTATIONS}, got {name!r}")
    device = torch.device(device) if device is not None else get_device()
    gan.to(device)
    generator = generator or torch.Generator(device=device).manual_seed(0)
    critic_steps = critic_steps or (5 if gan.config.loss == "wgan-gp" else 1)
    optimizer_g, optimizer_d = optimizers(gan, lr_g, lr_d, betas)
    noise = torch.randn(fixed_noise, gan.config.latent_dim, generator=torch.Generator().manual_seed(1234)).to(device)
    noise_labels = (torch.arange(fixed_noise) % gan.config.num_classes).to(device) if gan.config.num_classes else None

    history = GANHistory(device=str(device))
    history.ema = EMA(gan.generator, ema_decay) if ema_decay > 0 else None
    start, step, generator_steps = time.perf_counter(), 0, 0
    for epoch in range(epochs):
        gan.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for batch in bar:
            images, labels = (batch if isinstance(batch, (list, tuple)) else (batch, None))
            images = images.to(device)
            labels = labels.to(device) if labels is not None else None
            update_generator = (step + 1) % critic_steps == 0
            result = train_step(gan, images, optimizer_g, optimizer_d, labels, generator,
                                update_generator=update_generator, augment=tuple(augment))
            if update_generator and history.ema is not None:
                history.ema.update(gan.generator, generator_steps)
            generator_steps += update_generator
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
            drawing = history.ema.model if history.ema is not None else gan.generator
            history.grids.append(((drawing(noise, noise_labels) + 1) / 2).cpu())
        if max_steps is not None and step >= max_steps:
            break
    gan.eval()
    history.seconds = time.perf_counter() - start
    return history
