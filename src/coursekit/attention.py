"""Attention, written out: the pieces of the transformer inside Stable Diffusion's U-Net.

    softmax(Q K^T / sqrt(d_k)) V

- :func:`scaled_dot_product_attention`: the formula above, with an optional mask, returning the
  attention weights too (so a chapter can draw them). It equals
  ``torch.nn.functional.scaled_dot_product_attention``.
- :func:`split_heads` / :func:`merge_heads`: (B, L, H*D) <-> (B, H, L, D), the reshapes that turn one
  wide attention into H narrow ones computed in parallel.
- :class:`Attention`: multi-head attention with learned projections. Self-attention when no context
  is given (queries, keys and values all from the image tokens); cross-attention when a context is
  given (queries from the image tokens, keys and values from the context, e.g. text tokens), with a
  padding mask over the context tokens.
- :class:`GEGLU` and :class:`FeedForward`: the gated feed-forward of Stable Diffusion's transformer
  blocks (Shazeer 2020): ``x W_h * GELU(x W_g)``, then a projection back.
- :class:`TransformerBlock`: LayerNorm -> self-attention -> LayerNorm -> cross-attention -> LayerNorm
  -> feed-forward, each with a residual connection (pre-norm).
- :class:`SpatialTransformer`: a feature map (B, C, H, W) as H*W tokens: GroupNorm, a 1x1 projection
  in, transformer blocks, a 1x1 projection out, and a residual connection around all of it.

Parameter names are diffusers' (``to_q``, ``to_k``, ``to_v``, ``to_out.0``, ``norm1`` ... ``ff.net.2``,
``proj_in``, ``transformer_blocks.0``, ``proj_out``), so a state dict moves between these classes and
diffusers' ``Attention``, ``BasicTransformerBlock`` and ``Transformer2DModel`` unchanged; the tests
check that the outputs then agree.

Masks: ``True`` (or 1) means "attend to this key", ``False`` (or 0) "ignore it" -- the convention of
diffusers' ``encoder_attention_mask`` and of tokenizers' ``attention_mask``, and the opposite of
``torch.nn.MultiheadAttention``'s ``key_padding_mask``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["scaled_dot_product_attention", "split_heads", "merge_heads", "Attention", "GEGLU", "FeedForward",
           "TransformerBlock", "SpatialTransformer"]


def _check_mask(mask: torch.Tensor, shape: tuple) -> torch.Tensor:
    """A boolean mask (True = attend) that broadcasts to the scores' shape (..., L_q, L_k) without enlarging it."""
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        if mask.is_floating_point() and not ((mask == 0) | (mask == 1)).all():
            raise ValueError("the mask must be boolean or 0/1 (True/1 = attend, False/0 = ignore), got other values; "
                             "for an additive bias b (0 = attend, -inf = ignore) pass mask = (b == 0)")
        mask = mask != 0
    try:
        broadcast = torch.broadcast_shapes(mask.shape, shape)
    except RuntimeError:
        broadcast = None
    if broadcast != tuple(shape):
        raise ValueError(f"the mask has shape {tuple(mask.shape)}, which does not broadcast to the attention scores' "
                         f"shape {tuple(shape)} (..., queries, keys); a padding mask over the keys of a batch has "
                         f"shape (batch, 1, 1, keys) here (Attention accepts (batch, keys))")
    if not mask.any(dim=-1).all():
        raise ValueError("under this mask some query attends to no key at all (a row of the mask is all False), "
                         "which leaves the softmax undefined; every query needs at least one key")
    return mask


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                                 scale: float | None = None, dropout_p: float = 0.0,
                                 training: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale + mask) v, and the attention weights.

    q: (..., L_q, d_k), k: (..., L_k, d_k), v: (..., L_k, d_v), the leading dimensions (batch, heads)
    equal. ``scale`` defaults to 1 / sqrt(d_k): with unit-variance q and k the dot products then have
    unit variance whatever d_k is, so the softmax neither saturates (one-hot weights, vanishing
    gradients) nor flattens as d_k grows. Returns (output (..., L_q, d_v), weights (..., L_q, L_k)),
    the weights before dropout; every row of the weights sums to 1.
    """
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(f"q, k, v must have the same number of dimensions (..., tokens, features), "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"queries and keys must have the same feature size d_k, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"keys and values must have the same number of tokens, got {k.shape[-2]} and {v.shape[-2]}")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-2] != v.shape[:-2]:
        raise ValueError(f"q, k, v must share their leading (batch, head) dimensions, "
                         f"got {tuple(q.shape[:-2])}, {tuple(k.shape[:-2])}, {tuple(v.shape[:-2])}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale                       # (..., L_q, L_k)
    if mask is not None:
        mask = _check_mask(mask, (*q.shape[:-1], k.shape[-2])).to(q.device)
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    dropped = F.dropout(weights, p=dropout_p, training=training) if dropout_p > 0 else weights
    return dropped @ v, weights


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, heads * d) -> (B, heads, L, d): each head sees its own slice of the features."""
    if x.ndim != 3:
        raise ValueError(f"expected tokens of shape (batch, tokens, features), got {tuple(x.shape)}")
    b, length, width = x.shape
    if width % heads:
        raise ValueError(f"the feature size {width} is not divisible by the number of heads {heads}")
    return x.reshape(b, length, heads, width // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, d) -> (B, L, heads * d): the inverse of :func:`split_heads`."""
    if x.ndim != 4:
        raise ValueError(f"expected (batch, heads, tokens, features), got {tuple(x.shape)}")
    b, heads, length, d = x.shape
    return x.transpose(1, 2).reshape(b, length, heads * d)


class Attention(nn.Module):
    """Multi-head attention: self-attention, or cross-attention to a context.

    x: (B, L_q, query_dim) image tokens; context: (B, L_k, context_dim) or None (then the keys and
    values come from x itself); mask over the context tokens: (B, L_k) or broadcastable to
    (B, heads, L_q, L_k), True = attend. Returns (B, L_q, query_dim).

    With ``store_weights = True`` the attention weights of the last call are kept in
    ``last_weights`` (B, heads, L_q, L_k), e.g. to draw where each text token looks.
    """

    def __init__(self, query_dim: int, context_dim: int | None = None, heads: int = 8, dim_head: int = 64,
                 dropout: float = 0.0, bias: bool = False):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.query_dim, self.context_dim = query_dim, context_dim if context_dim is not None else query_dim
        self.is_cross = context_dim is not None
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(self.context_dim, inner, bias=bias)
        self.to_v = nn.Linear(self.context_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(dropout)])
        self.store_weights = False
        self.last_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.query_dim:
            raise ValueError(f"expected tokens of shape (batch, tokens, {self.query_dim}), got {tuple(x.shape)}")
        if context is None:
            context = x
        elif context.ndim != 3 or context.shape[-1] != self.context_dim or context.shape[0] != x.shape[0]:
            raise ValueError(f"expected a context of shape ({x.shape[0]}, tokens, {self.context_dim}), "
                             f"got {tuple(context.shape)}")
        if context is x and x.shape[-1] != self.context_dim:
            raise ValueError(f"this is a cross-attention layer (context_dim {self.context_dim}): pass a context")
        if mask is not None:
            mask = torch.as_tensor(mask, device=x.device)
            if mask.ndim == 2:    # (B, L_k): a padding mask over the context tokens, for every head and query
                if mask.shape != (x.shape[0], context.shape[1]):
                    raise ValueError(f"a padding mask must have shape (batch, context tokens) = "
                                     f"({x.shape[0]}, {context.shape[1]}), got {tuple(mask.shape)}")
                mask = mask[:, None, None, :]
            elif mask.ndim == 3:  # (B, L_q or 1, L_k): the same for every head
                mask = mask[:, None]
        q = split_heads(self.to_q(x), self.heads)
        k = split_heads(self.to_k(context), self.heads)
        v = split_heads(self.to_v(context), self.heads)
        out, weights = scaled_dot_product_attention(q, k, v, mask=mask)
        if self.store_weights:
            self.last_weights = weights.detach()
        out = self.to_out[0](merge_heads(out))
        return self.to_out[1](out)


class GEGLU(nn.Module):
    """GELU-gated linear unit: one projection to 2 * dim_out, split into a value and a gate, value * GELU(gate)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU to ``mult * dim`` features, dropout, and a linear projection back to ``dim``."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner = dim * mult
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TransformerBlock(nn.Module):
    """Pre-norm transformer block of Stable Diffusion's U-Net:

        x = x + SelfAttention(LayerNorm(x))
        x = x + CrossAttention(LayerNorm(x), context)     (left out when context_dim is None)
        x = x + FeedForward(LayerNorm(x))
    """

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, None, heads, dim_head, dropout)
        self.has_cross = context_dim is not None
        if self.has_cross:
            self.norm2 = nn.LayerNorm(dim)
            self.attn2 = Attention(dim, context_dim, heads, dim_head, dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout=dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        if self.has_cross:
            if context is None:
                raise ValueError("this block cross-attends: pass a context (batch, tokens, "
                                 f"{self.attn2.context_dim})")
            x = x + self.attn2(self.norm2(x), context, context_mask)
        elif context is not None:
            raise ValueError("this block was built without context_dim, so it takes no context")
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Transformer blocks over the pixels of a feature map, as in Stable Diffusion's U-Net
    (diffusers' ``Transformer2DModel`` with continuous input):

        h = proj_in(GroupNorm(x))             (B, C, H, W) -> (B, H*W, heads * dim_head) tokens
        h = blocks(h, context)
        return x + proj_out(h)                back to (B, C, H, W)

    ``linear_projection=False`` (Stable Diffusion 1.x) projects with 1x1 convolutions before the
    flattening, ``True`` (2.x) with linear layers after it; both compute the same kind of map.
    """

    def __init__(self, channels: int, heads: int, dim_head: int, context_dim: int | None = None, depth: int = 1,
                 num_groups: int = 32, dropout: float = 0.0, linear_projection: bool = False):
        super().__init__()
        if channels % num_groups:
            raise ValueError(f"channels ({channels}) must be divisible by num_groups ({num_groups})")
        inner = heads * dim_head
        self.channels, self.linear_projection = channels, linear_projection
        self.norm = nn.GroupNorm(num_groups, channels, eps=1e-6)
        if linear_projection:
            self.proj_in, self.proj_out = nn.Linear(channels, inner), nn.Linear(inner, channels)
        else:
            self.proj_in, self.proj_out = nn.Conv2d(channels, inner, 1), nn.Conv2d(inner, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(inner, heads, dim_head, context_dim, dropout) for _ in range(depth))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected a feature map (batch, {self.channels}, height, width), got {tuple(x.shape)}")
        b, _, height, width = x.shape
        h = self.norm(x)
        if self.linear_projection:
            h = self.proj_in(h.permute(0, 2, 3, 1).reshape(b, height * width, -1))
        else:
            h = self.proj_in(h)
            h = h.permute(0, 2, 3, 1).reshape(b, height * width, -1)
        for block in self.transformer_blocks:
            h = block(h, context, context_mask)
        if self.linear_projection:
            h = self.proj_out(h).reshape(b, height, width, -1).permute(0, 3, 1, 2)
        else:
            h = self.proj_out(h.reshape(b, height, width, -1).permute(0, 3, 1, 2))
        return x + h
