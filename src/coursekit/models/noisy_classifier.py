"""A noise-aware digit classifier p(y | x_t, t) for classifier guidance (chapter 5).

An ordinary classifier has only seen clean digits; during sampling it would be asked about x_t,
which at large t is mostly noise, and its gradient would be meaningless there. This one is trained
on x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps at a uniformly drawn t, with the timestep
given to it the way the U-Net gets it (sinusoidal features and an MLP, added inside every ResBlock),
so it knows how noisy its input is. Its architecture is the U-Net's down path followed by global
average pooling and a linear layer (the "half U-Net" classifier of Dhariwal & Nichol 2021).

    logits = NoisyClassifier(x_t, t)      x_t: (B, 1, 28, 28) in the diffusion model's [-1, 1] scale
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from coursekit.checkpoint import register_model
from coursekit.models.unet import ResBlock, _norm, timestep_embedding
from coursekit.schedulers import make_schedule


@dataclass
class NoisyClassifierConfig:
    image_channels: int = 1
    image_size: int = 28
    base_channels: int = 16
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_classes: int = 10
    # the noise schedule it is trained on: the diffusion model's it will guide
    schedule: str = "linear"
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self):
        self.channel_mults = tuple(self.channel_mults)


@register_model("noisy-classifier", NoisyClassifierConfig)
class NoisyClassifier(nn.Module):
    def __init__(self, config: NoisyClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or NoisyClassifierConfig()
        ch = config.base_channels
        embed_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        self.stem = nn.Conv2d(config.image_channels, ch, 3, padding=1)
        self.blocks = nn.ModuleList()
        channels = ch
        for level, mult in enumerate(config.channel_mults):
            self.blocks.append(ResBlock(channels, ch * mult, embed_dim))
            channels = ch * mult
            if level < len(config.channel_mults) - 1:
                self.blocks.append(nn.Conv2d(channels, channels, 3, stride=2, padding=1))
        self.head = nn.Sequential(_norm(channels), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(channels, config.num_classes))
        self.schedule = make_schedule(config.schedule, config.num_train_timesteps, config.beta_start, config.beta_end)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | int) -> torch.Tensor:
        c, s = self.config.image_channels, self.config.image_size
        if x.ndim != 4 or x.shape[1] != c or x.shape[-2:] != (s, s):
            raise ValueError(f"expected images of shape (batch, {c}, {s}, {s}), got {tuple(x.shape)}")
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])
        emb = self.time_mlp(timestep_embedding(timesteps, self.config.base_channels))
        h = self.stem(x)
        for block in self.blocks:
            h = block(h, emb) if isinstance(block, ResBlock) else block(h)
        return self.head(h)


def noisy_classifier_loss(model: NoisyClassifier, batch, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cross-entropy of the class of x_0 given x_t, at a uniformly drawn t (batch = (x_0 in [-1, 1], labels))."""
    from coursekit.diffusion import q_sample

    x0, labels = batch[0], batch[1].long()
    device = generator.device if generator is not None else x0.device
    t = torch.randint(0, len(model.schedule), (x0.shape[0],), generator=generator, device=device).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype).to(x0.device)
    return F.cross_entropy(model(q_sample(x0, t, noise, model.schedule), t), labels)


@torch.no_grad()
def accuracy_by_timestep(model: NoisyClassifier, images: torch.Tensor, labels: torch.Tensor,
                         timesteps=(0, 100, 250, 500, 750, 900, 999), seed: int = 0) -> dict[int, float]:
    """Accuracy on x_t made from ``images`` (in [-1, 1]) at each of ``timesteps``, with fixed noise."""
    from coursekit.diffusion import q_sample

    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for t in timesteps:
        noise = torch.randn(images.shape, generator=generator)
        t_batch = torch.full((images.shape[0],), int(t), dtype=torch.long)
        x_t = q_sample(images, t_batch, noise, model.schedule)
        predictions = torch.cat([model(x_t[i:i + 500].to(device), t_batch[i:i + 500].to(device)).argmax(1).cpu()
                                 for i in range(0, len(x_t), 500)])
        out[int(t)] = round((predictions == labels.long()).float().mean().item(), 4)
    return out
