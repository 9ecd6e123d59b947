"""A small MNIST classifier whose penultimate layer is the feature space for classifier-FID/KID.

Inputs are ``(B, 1, 28, 28)`` images in ``[0, 1]``. ``features(x)`` returns the ``feature_dim``
activations before the last linear layer. Training uses small random shifts, rotations and
zooms (``random_affine``) because the offline training split has only 4,000 digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from coursekit.checkpoint import register_model


@dataclass
class ClassifierConfig:
    channels: tuple[int, ...] = (32, 64)
    feature_dim: int = 128
    num_classes: int = 10
    dropout: float = 0.3
    # With an 11th "not a digit" class (coursekit.eval.robust): say "not a digit" only when that
    # class's probability exceeds this calibrated threshold, else name the likeliest digit.
    # None: plain argmax over all classes.
    reject_threshold: float | None = None


def _conv_block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1), nn.BatchNorm2d(channels_out), nn.ReLU(),
        nn.Conv2d(channels_out, channels_out, 3, padding=1), nn.BatchNorm2d(channels_out), nn.ReLU(),
        nn.MaxPool2d(2),
    )


@register_model("classifier", ClassifierConfig)
class Classifier(nn.Module):
    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config or ClassifierConfig()
        blocks, channels_in = [], 1
        for channels_out in self.config.channels:
            blocks.append(_conv_block(channels_in, channels_out))
            channels_in = channels_out
        self.blocks = nn.Sequential(*blocks)
        side = 28 // 2 ** len(self.config.channels)
        self.to_features = nn.Sequential(
            nn.Flatten(), nn.Dropout(self.config.dropout),
            nn.Linear(channels_in * side * side, self.config.feature_dim), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(self.config.dropout), nn.Linear(self.config.feature_dim, self.config.num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"expected images of shape (B, 1, 28, 28) in [0, 1], got {tuple(x.shape)}")
        return self.to_features(self.blocks(x))  # (B, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, num_classes) logits


def predicted_class(logits: torch.Tensor, config: ClassifierConfig) -> torch.Tensor:
    """The class a classifier names for each row of ``logits`` ``(B, num_classes)``: the argmax,
    or with ``config.reject_threshold`` the last class ("not a digit") only above that probability."""
    if config.reject_threshold is None:
        return logits.argmax(1)
    probabilities = logits.softmax(1)  # (B, num_classes)
    reject = probabilities[:, -1] > config.reject_threshold
    return torch.where(reject, config.num_classes - 1, probabilities[:, :-1].argmax(1))


def random_affine(x: torch.Tensor, generator: torch.Generator | None = None, *, max_degrees: float = 12.0,
                  max_shift: float = 0.12, max_zoom: float = 0.1) -> torch.Tensor:
    """Random rotation, shift and zoom of each image in a batch (bilinear, zeros outside)."""
    batch = x.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch, generator=generator, device=x.device)

    angle = uniform(-max_degrees, max_degrees) * math.pi / 180
    scale = uniform(1 - max_zoom, 1 + max_zoom)
    shift_x, shift_y = uniform(-max_shift, max_shift) * 2, uniform(-max_shift, max_shift) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def classifier_loss(model: Classifier, batch, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cross-entropy on randomly augmented digits (the training loss of the eval classifier)."""
    images, labels = batch
    return F.cross_entropy(model(random_affine(images, generator)), labels, label_smoothing=0.05)
