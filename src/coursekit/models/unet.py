"""A small, readable U-Net that predicts the noise in x_t (the network inside a diffusion model).

    x_t (B, C, H, W), t (B,)  ->  eps_hat (B, C, H, W)

Pieces, from the bottom up:

- ``timestep_embedding``: t -> sin/cos features at geometric frequencies (the transformer's
  positional encoding, used by DDPM for the timestep), then an MLP;
- ``ResBlock``: GroupNorm -> SiLU -> conv, the time embedding added to every channel, then
  GroupNorm -> SiLU -> dropout -> conv, plus a skip connection;
- ``SelfAttention``: every pixel of a low-resolution feature map attends to every other one
  (global context that convolutions only reach after many layers);
- ``UNet``: a down path (resolution halves, channels grow), a middle, an up path that
  concatenates the down path's activations (skip connections) and upsamples back.

Conditioning (chapter 5), two ways:

- ``num_classes``: a label embedding is added to the time embedding, so every ResBlock sees the
  class; label ``num_classes`` is the "null" class, meaning "no label" (what condition dropout
  trains for classifier-free guidance).
- ``context_dim``: the U-Net cross-attends to a context sequence (e.g. a text encoder's token
  features, (B, L, context_dim)) through :class:`coursekit.attention.SpatialTransformer` blocks at
  ``cross_attention_levels`` and in the middle, as Stable Diffusion's U-Net does; a padding mask
  (B, L) says which context tokens are real.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from coursekit.attention import SpatialTransformer
from coursekit.checkpoint import register_model


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of the (integer or real) timesteps: (B,) -> (B, dim).

    Half the features are cos(t * f_k), half sin(t * f_k), with frequencies f_k from 1 down to
    1/max_period, so nearby timesteps get similar vectors and distant ones different vectors.
    """
    if dim % 2:
        raise ValueError(f"the embedding size must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with the time embedding added in between, and a residual connection."""

    def __init__(self, channels_in: int, channels_out: int, embed_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _norm(channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.embed = nn.Linear(embed_dim, channels_out)
        self.norm2 = _norm(channels_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.skip = nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.embed(F.silu(emb))[:, :, None, None]  # the same shift for every pixel of a channel
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + self.skip(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, with a residual connection."""

    def __init__(self, channels: int, num_heads: int = 4):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # queries, keys, values: (B, heads, H*W, C/heads), one token per pixel
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w).permute(1, 0, 2, 4, 3)
        # softmax(q k^T / sqrt(d)) v
        attended = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(attended.permute(0, 1, 3, 2).reshape(b, c, h, w))


@dataclass
class UNetConfig:
    image_channels: int = 1
    image_size: int = 28
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = ()     # levels (0 = full resolution) with self-attention besides the middle
    num_heads: int = 4
    dropout: float = 0.0
    num_classes: int | None = None             # class conditioning (chapter 5); None = unconditional
    context_dim: int | None = None             # cross-attention to a context sequence (chapter 5); None = none
    cross_attention_levels: tuple[int, ...] = ()  # levels with a spatial transformer (self + cross-attention)

    def __post_init__(self):
        self.channel_mults = tuple(self.channel_mults)
        self.attention_levels = tuple(self.attention_levels)
        self.cross_attention_levels = tuple(self.cross_attention_levels)
        if self.cross_attention_levels and self.context_dim is None:
            raise ValueError("cross_attention_levels need a context_dim (the width of the context's tokens)")
        if any(not 0 <= level < len(self.channel_mults) for level in self.cross_attention_levels):
            raise ValueError(f"cross_attention_levels {self.cross_attention_levels} must index channel_mults "
                             f"(0 .. {len(self.channel_mults) - 1})")
        if set(self.attention_levels) & set(self.cross_attention_levels):
            raise ValueError("a level has either self-attention (attention_levels) or a spatial transformer "
                             "(cross_attention_levels, which self-attends too), not both")
        factor = 2 ** (len(self.channel_mults) - 1)
        if self.image_size % factor:
            raise ValueError(f"image_size {self.image_size} must be divisible by 2**(levels - 1) = {factor}")
        if any(not 0 <= level < len(self.channel_mults) for level in self.attention_levels):
            raise ValueError(f"attention_levels {self.attention_levels} must index channel_mults "
                             f"(0 .. {len(self.channel_mults) - 1})")


def _attention(config: UNetConfig, level: int | None, channels: int) -> nn.Module | None:
    """The attention layer after a ResBlock at ``level`` (None: the middle), or None."""
    if config.context_dim is not None and (level is None or level in config.cross_attention_levels):
        return SpatialTransformer(channels, config.num_heads, channels // config.num_heads, config.context_dim,
                                  num_groups=min(8, channels))
    if level is None or level in config.attention_levels:
        return SelfAttention(channels, config.num_heads)
    return None


@register_model("unet", UNetConfig)
class UNet(nn.Module):
    """eps_hat = UNet(x_t, t[, labels]): the noise predictor of a diffusion model."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = config = config or UNetConfig()
        ch = config.base_channels
        embed_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        self.label_embed = nn.Embedding(config.num_classes + 1, embed_dim) if config.num_classes else None

        self.stem = nn.Conv2d(config.image_channels, ch, 3, padding=1)
        # Down path: at each level num_res_blocks ResBlocks (+ attention), then halve the resolution.
        self.down = nn.ModuleList()
        skip_channels = [ch]
        channels = ch
        levels = len(config.channel_mults)
        for level, mult in enumerate(config.channel_mults):
            for _ in range(config.num_res_blocks):
                block = nn.ModuleList([ResBlock(channels, ch * mult, embed_dim, config.dropout)])
                channels = ch * mult
                if (attention := _attention(config, level, channels)) is not None:
                    block.append(attention)
                self.down.append(block)
                skip_channels.append(channels)
            if level < levels - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(channels, channels, 3, stride=2, padding=1)]))
                skip_channels.append(channels)
        # Middle: ResBlock, attention, ResBlock at the lowest resolution.
        self.mid1 = ResBlock(channels, channels, embed_dim, config.dropout)
        self.mid_attn = _attention(config, None, channels)
        self.mid2 = ResBlock(channels, channels, embed_dim, config.dropout)
        # Up path: mirror image; every ResBlock takes one skip activation concatenated to its input.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mults))):
            for _ in range(config.num_res_blocks + 1):
                block = nn.ModuleList([ResBlock(channels + skip_channels.pop(), ch * mult, embed_dim, config.dropout)])
                channels = ch * mult
                if (attention := _attention(config, level, channels)) is not None:
                    block.append(attention)
                self.up.append(block)
            if level > 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(channels, channels, 3, padding=1)]))
        self.head = nn.Sequential(_norm(channels), nn.SiLU(), nn.Conv2d(channels, config.image_channels, 3, padding=1))
        # Start as "predict zero noise": a stable starting point for the regression.
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def embed(self, timesteps: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(timesteps, self.config.base_channels))
        if self.label_embed is not None:
            if labels is None:  # no label given: the "unconditional" embedding
                labels = torch.full_like(timesteps, self.config.num_classes, dtype=torch.long)
            labels = torch.as_tensor(labels, device=timesteps.device)
            if labels.shape != timesteps.shape or labels.is_floating_point() \
                    or (labels < 0).any() or (labels > self.config.num_classes).any():
                raise ValueError(f"expected integer labels of shape {tuple(timesteps.shape)} in 0 .. "
                                 f"{self.config.num_classes} ({self.config.num_classes} = no label), got "
                                 f"{labels.dtype} {tuple(labels.shape)}")
            emb = emb + self.label_embed(labels)
        elif labels is not None:
            raise ValueError("this U-Net was built without num_classes, so it takes no labels")
        return emb

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | int, labels: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        c, s = self.config.image_channels, self.config.image_size
        if x.ndim != 4 or x.shape[1] != c or x.shape[-2:] != (s, s):
            raise ValueError(f"expected images of shape (batch, {c}, {s}, {s}), got {tuple(x.shape)}")
        if self.config.context_dim is not None:
            if context is None:
                raise ValueError(f"this U-Net cross-attends to a context: pass context (batch, tokens, "
                                 f"{self.config.context_dim}) (for 'no condition', the encoding of an empty prompt)")
            if context.ndim != 3 or context.shape[0] != x.shape[0] or context.shape[-1] != self.config.context_dim:
                raise ValueError(f"expected a context of shape ({x.shape[0]}, tokens, {self.config.context_dim}), "
                                 f"got {tuple(context.shape)}")
        elif context is not None or context_mask is not None:
            raise ValueError("this U-Net was built without context_dim, so it takes no context")
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])
        emb = self.embed(timesteps, labels)

        def apply(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
            if isinstance(layer, ResBlock):
                return layer(h, emb)
            if isinstance(layer, SpatialTransformer):
                return layer(h, context, context_mask)
            return layer(h)

        h = self.stem(x)
        skips = [h]
        for block in self.down:
            for layer in block:
                h = apply(layer, h)
            skips.append(h)
        h = self.mid2(apply(self.mid_attn, self.mid1(h, emb)), emb)
        for block in self.up:
            if isinstance(block[0], ResBlock):
                h = torch.cat([h, skips.pop()], dim=1)
            for layer in block:
                h = apply(layer, h)
        return self.head(h)
