"""Visible checks for exercise set ps5 (chapter 5: attention, conditioning, guidance and CLIP).

Each ``check_*`` function takes the student's answer, raises ``AssertionError`` with a message
that says what was expected, and returns ``None`` when the answer passes. The visible test cells
of ``ps5.ipynb`` call them, and the notebook's last cell runs them all with
``self_check(globals())``. Passing here is necessary for the points, not sufficient: the grader
also runs hidden tests.

The references below are the formulas of the papers, evaluated in float64: attention
softmax(Q K^T / sqrt(d_k)) V (Vaswani et al. 2017, eq. 1) with a boolean mask (True = attend, the
convention of :mod:`coursekit.attention`, of ``torch.nn.functional.scaled_dot_product_attention``
and of tokenizers' ``attention_mask``); the heads of :func:`coursekit.attention.split_heads`;
classifier-free guidance ``eps_uncond + w * (eps_cond - eps_uncond)`` with w = 1 the plain
conditional model (Ho & Salimans 2021 write (1 + w') eps_cond - w' eps_uncond, so their w' is
w - 1; see :mod:`coursekit.guidance`); condition dropout as :func:`coursekit.guidance.drop_labels`;
and CLIP's symmetric cross-entropy over the cosine similarities of a batch of pairs (Radford et al.
2021, figure 3).

The checks need no data and no checkpoint: they use random tensors from fixed seeds and tiny
stand-in models, and take milliseconds.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from coursekit.attention import merge_heads, split_heads
from coursekit.exercises import selfcheck
from coursekit.exercises.selfcheck import Part
from coursekit.guidance import drop_labels


def _random(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    return (isinstance(a, torch.Tensor) and a.shape == b.shape
            and torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol))


def _require_tensor(value: Any, name: str) -> None:
    assert isinstance(value, torch.Tensor), f"{name} should return a tensor, got {type(value).__name__}"


# --- the references: the papers' formulas in float64 ----------------------------------------------

def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
                        scale: float | None = None, softmax_dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(softmax(q k^T / sqrt(d_k), masked) v, weights)`` in float64 (Vaswani et al. eq. 1).

    q: (..., L_q, d_k), k: (..., L_k, d_k), v: (..., L_k, d_v); mask: boolean, broadcastable to
    (..., L_q, L_k), True = attend. ``scale`` and ``softmax_dim`` change the formula into two
    common mistakes."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q.double() @ k.double().transpose(-2, -1) * scale  # (..., L_q, L_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=softmax_dim)
    return weights @ v.double(), weights


def reference_cross_attention(x: torch.Tensor, context: torch.Tensor, to_q: nn.Module, to_k: nn.Module, to_v: nn.Module,
                              heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head cross-attention in float64, before the output projection: (B, N, heads * d).

    Queries from the image tokens x (B, N, C), keys and values from the context (B, M, C_ctx);
    mask (B, M) over the context tokens, True = attend."""
    q = split_heads(_linear64(to_q, x), heads)        # (B, heads, N, d)
    k = split_heads(_linear64(to_k, context), heads)  # (B, heads, M, d)
    v = split_heads(_linear64(to_v, context), heads)  # (B, heads, M, d)
    out, _ = reference_attention(q, k, v, None if mask is None else mask[:, None, None, :].bool())
    return merge_heads(out)                            # (B, N, heads * d)


def _linear64(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    bias = None if layer.bias is None else layer.bias.double()
    return F.linear(x.double(), layer.weight.double(), bias)


def reference_guided_eps(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance, this course's convention: eps_uncond + w (eps_cond - eps_uncond).

    w = 0 is the unconditional model, w = 1 the conditional one, w > 1 pushes past it."""
    return eps_uncond.double() + guidance_scale * (eps_cond.double() - eps_uncond.double())


def reference_drop_labels(labels: torch.Tensor, drop_prob: float, num_classes: int, generator: torch.Generator,
                          training: bool = True) -> torch.Tensor:
    """Condition dropout: in training, each label becomes the null label ``num_classes`` where a uniform
    number drawn with ``torch.rand(labels.shape, generator=generator)`` is below ``drop_prob``; at
    sampling time (``training=False``) the labels pass unchanged."""
    if not training:
        return labels.clone()
    return drop_labels(labels, drop_prob, num_classes, generator)


def reference_clip_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale) -> torch.Tensor:
    """CLIP's symmetric loss in float64: the mean of the image -> text and the text -> image cross-entropies
    of logit_scale * (cosine similarities), where image i and text i are a pair."""
    images = F.normalize(image_embeds.double(), dim=-1)
    texts = F.normalize(text_embeds.double(), dim=-1)
    logits = torch.as_tensor(logit_scale, dtype=torch.float64) * images @ texts.T  # (B, B): image i, text j
    targets = torch.arange(len(logits))
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


# --- models for the checks and the demos -----------------------------------------------------------

class ToyConditionalPredictor(nn.Module):
    """A stand-in for a class-conditional noise predictor: ``eps_hat = gain[label] * x_t + shift[label] * t / 1000``.

    ``gain`` and ``shift`` hold one number per label, ``num_classes + 1`` of them: the last is the null
    label's, "no condition". Drawn from ``seed``; works for any shape of ``x_t`` with one ``t`` and one
    label per example, and keeps the dtype of ``x_t``.
    """

    def __init__(self, num_classes: int = 10, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.num_classes = num_classes
        self.gain = nn.Parameter(0.5 + torch.rand(num_classes + 1, generator=generator))
        self.shift = nn.Parameter(torch.randn(num_classes + 1, generator=generator))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if x_t.shape[0] != t.shape[0] or x_t.shape[0] != labels.shape[0]:
            raise ValueError(f"x_t, t and labels must have one row per example, got batches of {x_t.shape[0]}, "
                             f"{t.shape[0]} and {labels.shape[0]}")
        if labels.dtype != torch.long or labels.min() < 0 or labels.max() > self.num_classes:
            raise ValueError(f"labels must be int64 in 0 .. {self.num_classes} ({self.num_classes} = no condition), "
                             f"got {labels.dtype} {labels.tolist()}")
        per_example = [-1] + [1] * (x_t.ndim - 1)
        gain = self.gain[labels].to(x_t.dtype).reshape(per_example)
        shift = self.shift[labels].to(x_t.dtype).reshape(per_example)
        return gain * x_t + shift * t.to(x_t.dtype).reshape(per_example) / 1000


class RecordingModel(nn.Module):
    """Wraps a model and records a copy of the arguments of every call in ``calls``; returns its output.

    Each record is a tuple of the positional arguments followed by the keyword arguments' values, e.g.
    ``(x_t, t, labels)``. The tests use it to see how often, and on what, an answer runs the network.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.calls: list[tuple] = []

    def forward(self, *args, **kwargs):
        arguments = (*args, *kwargs.values())
        self.calls.append(tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in arguments))
        return self.model(*args, **kwargs)


class GaussianMixturePredictor(nn.Module):
    """The exact noise predictor of a mixture of Gaussians in the plane, one Gaussian per class.

    Class ``k`` is N(means[k], std^2 I). At step t, x_t of class k is N(sqrt(alpha_bar_t) means[k],
    (alpha_bar_t std^2 + 1 - alpha_bar_t) I), so the best noise prediction is known in closed form:
    eps(x_t, t, k) = -sqrt(1 - alpha_bar_t) * grad log p_t(x_t | k). The null label ``num_classes``
    gives the unconditional prediction, for the mixture of all classes with equal weights. It
    stands in for a trained class-conditional network in the demo of part (d).
    """

    def __init__(self, means: torch.Tensor, std: float, alpha_bars: torch.Tensor):
        super().__init__()
        self.means = means.double()  # (K, 2)
        self.std = float(std)
        self.alpha_bars = alpha_bars.double()  # (T,)
        self.num_classes = len(means)

    def class_log_likelihoods(self, x: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """log p_t(x | k) up to a constant shared by all k, (B, K), for x (B, 2) and alpha_bar (B,)."""
        variance = (alpha_bar * self.std**2 + 1 - alpha_bar)[:, None]  # (B, 1)
        centres = alpha_bar.sqrt()[:, None, None] * self.means[None]  # (B, K, 2)
        return -((x.double()[:, None, :] - centres) ** 2).sum(dim=2) / (2 * variance)

    def class_probabilities(self, x0: torch.Tensor) -> torch.Tensor:
        """p(k | x0), (B, K): how surely each clean point belongs to each class (the Bayes classifier)."""
        return self.class_log_likelihoods(x0, torch.ones(len(x0), dtype=torch.float64)).softmax(dim=1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        alpha_bar = self.alpha_bars[torch.as_tensor(t).long().expand(x_t.shape[0])]  # (B,)
        variance = (alpha_bar * self.std**2 + 1 - alpha_bar)[:, None]  # (B, 1)
        responsibilities = self.class_log_likelihoods(x_t, alpha_bar).softmax(dim=1)  # (B, K): p_t(k | x_t)
        one_class = F.one_hot(labels.clamp(max=self.num_classes - 1), self.num_classes).double()
        weights = torch.where((labels == self.num_classes)[:, None], responsibilities, one_class)
        centre = alpha_bar.sqrt()[:, None] * (weights @ self.means)  # (B, 2)
        score = -(x_t.double() - centre) / variance  # grad log p_t(x_t | label): Gaussian, or the mixture's
        return (-(1 - alpha_bar).sqrt()[:, None] * score).to(x_t.dtype)


# --- the checks --------------------------------------------------------------------------------------

def check_attention(attention: Callable) -> None:
    """Part (a): ``(out, weights)`` of softmax(q k^T / sqrt(d_k)) v, with a boolean mask (True = attend)."""
    q, k, v = _random(2, 3, 8, seed=1), _random(2, 5, 8, seed=2), _random(2, 5, 4, seed=3)
    result = attention(q, k, v)
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        "attention should return two tensors: the output and the attention weights")
    out, weights = result
    _require_tensor(out, "attention's output")
    _require_tensor(weights, "attention's weights")
    assert tuple(out.shape) == (2, 3, 4), (
        f"q (2, 3, 8), k (2, 5, 8), v (2, 5, 4): the output should have shape (2, 3, 4), one d_v = 4 vector per "
        f"query, got {tuple(out.shape)}")
    assert tuple(weights.shape) == (2, 3, 5), (
        f"the weights should have shape (2, 3, 5), one weight per query and key, got {tuple(weights.shape)}")
    expected_out, expected_weights = reference_attention(q, k, v)
    if not _close(weights, expected_weights):
        mistakes = {
            "the scores are not scaled: divide q k^T by sqrt(d_k) = sqrt(8), the size of the query and key vectors":
                reference_attention(q, k, v, scale=1.0)[1],
            "the scores are divided by d_k; divide them by sqrt(d_k)": reference_attention(q, k, v, scale=1 / 8)[1],
            "the scores are divided by sqrt(L_k), the number of keys; divide them by sqrt(d_k), the size of each key":
                reference_attention(q, k, v, scale=1 / math.sqrt(5))[1],
            "the softmax runs over the queries (dim=-2): each query's weights over the keys should sum to 1, "
            "so take the softmax over the last dimension": reference_attention(q, k, v, softmax_dim=-2)[1],
        }
        for message, wrong in mistakes.items():
            if _close(weights, wrong):
                raise AssertionError(message)
        raise AssertionError(
            "expected weights = softmax(q k^T / sqrt(d_k)) over the keys; "
            f"weights[0, 0] expected {[round(w, 4) for w in expected_weights[0, 0].tolist()]}, "
            f"got {[round(w, 4) for w in weights[0, 0].tolist()]}")
    assert _close(out, expected_out), "the output should be weights @ v"
    assert _close(out, F.scaled_dot_product_attention(q, k, v)), (
        "the output differs from torch.nn.functional.scaled_dot_product_attention")

    # a padding mask: example 0 attends to its first 3 keys, example 1 to its first 4
    mask = torch.tensor([[True, True, True, False, False], [True, True, True, True, False]])[:, None, :]  # (2, 1, 5)
    out, weights = attention(q, k, v, mask)
    expected_out, expected_weights = reference_attention(q, k, v, mask)
    if not _close(weights, expected_weights):
        scores = q.double() @ k.double().transpose(-2, -1) / math.sqrt(8)
        if _close(weights, scores.softmax(-1)):
            raise AssertionError("the mask is ignored: keys where the mask is False must get weight 0")
        if _close(weights, scores.masked_fill(mask, float("-inf")).softmax(-1)):
            raise AssertionError("the mask is inverted: True means 'attend to this key', False means 'ignore it'")
        if _close(weights, scores.masked_fill(~mask, 0.0).softmax(-1)):
            raise AssertionError(
                "masked scores are set to 0, which still gets a weight exp(0) > 0 in the softmax; set them to "
                "float('-inf'), which gets exactly 0")
        if _close(weights, scores.softmax(-1) * mask) or (weights.sum(-1) - 1).abs().max() > 1e-4:
            raise AssertionError(
                "the weights do not sum to 1 over the keys: mask the scores before the softmax (fill them with "
                "float('-inf')), so that the softmax spreads all the weight over the keys that are attended to")
        raise AssertionError(
            "with a mask, expected softmax(q k^T / sqrt(d_k) with the masked scores set to -inf); weights[0, 0] "
            f"expected {[round(w, 4) for w in expected_weights[0, 0].tolist()]}, "
            f"got {[round(w, 4) for w in weights[0, 0].tolist()]}")
    assert _close(out, expected_out), "with a mask, the output should be weights @ v"
    assert _close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask)), (
        "with a mask, the output differs from torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)")


def check_heads(split_heads_answer: Callable, merge_heads_answer: Callable) -> None:
    """Part (b): (B, L, H*D) -> (B, H, L, D) and back, head h holding features h*D .. (h+1)*D - 1."""
    x = _random(2, 3, 12, seed=4)  # B = 2 examples, L = 3 tokens, 4 heads of D = 3 features
    split = split_heads_answer(x, 4)
    _require_tensor(split, "split_heads")
    assert tuple(split.shape) != (4, 2, 3, 3), (
        "split_heads put the heads first, (H, B, L, D): the batch stays the first dimension, (B, H, L, D)")
    assert tuple(split.shape) == (2, 4, 3, 3), (
        f"split_heads of a (2, 3, 12) batch into 4 heads should have shape (B, H, L, D) = (2, 4, 3, 3), "
        f"got {tuple(split.shape)}")
    expected = split_heads(x, 4)
    if not torch.equal(split, expected):
        if torch.equal(split, x.reshape(2, 4, 3, 3)):
            raise AssertionError(
                "a reshape to (B, H, L, D) alone mixes heads with tokens: it cuts the flat L * H * D numbers of an "
                "example into H blocks of L * D, so a 'head' holds pieces of several tokens. Reshape to (B, L, H, D), "
                "then swap the token and head dimensions with .transpose(1, 2)")
        if torch.equal(split, x.reshape(2, 3, 3, 4).permute(0, 3, 1, 2)):
            raise AssertionError("head h should hold the contiguous features h * D .. (h + 1) * D - 1 of each token, "
                                 "not every H-th feature: reshape to (B, L, H, D), not (B, L, D, H)")
        raise AssertionError(
            "head h of token l of example b should be x[b, l, h * D:(h + 1) * D]; "
            f"split[0, 1, 0] expected {expected[0, 1, 0].tolist()}, got {split[0, 1, 0].tolist()}")
    # a batch whose sizes are all equal, where mixing up the batch, head and token dimensions keeps the shape
    square = _random(3, 3, 6, seed=5)  # B = 3, L = 3, 3 heads of D = 2
    split = split_heads_answer(square, 3)
    if not torch.equal(split, split_heads(square, 3)):
        raise AssertionError(
            "with B = L = H = 3, split_heads mixes up the batch, head and token dimensions: the result should be "
            "(B, H, L, D), example b's heads in split[b], with split[b, h, l] = x[b, l, h * D:(h + 1) * D]")

    y = _random(2, 4, 3, 3, seed=6)  # (B, H, L, D)
    merged = merge_heads_answer(y)
    _require_tensor(merged, "merge_heads")
    assert tuple(merged.shape) == (2, 3, 12), (
        f"merge_heads of (B, H, L, D) = (2, 4, 3, 3) should have shape (B, L, H * D) = (2, 3, 12), "
        f"got {tuple(merged.shape)}")
    expected = merge_heads(y)
    if not torch.equal(merged, expected):
        if torch.equal(merged, y.reshape(2, 3, 12)):
            raise AssertionError("merge_heads reshapes without moving the heads back next to the features: "
                                 ".transpose(1, 2) to (B, L, H, D) first, then reshape to (B, L, H * D)")
        raise AssertionError(
            "merge_heads should put head h's features of token l at merged[b, l, h * D:(h + 1) * D]; "
            f"merged[0, 0] expected {[round(v, 4) for v in expected[0, 0].tolist()]}, "
            f"got {[round(v, 4) for v in merged[0, 0].tolist()]}")
    square = _random(3, 3, 3, 2, seed=7)
    assert torch.equal(merge_heads_answer(square), merge_heads(square)), (
        "with B = H = L = 3, merge_heads mixes up the batch, head and token dimensions: merged[b, l] should be "
        "the heads of token l of example b, one after the other")
    assert torch.equal(merge_heads_answer(split_heads_answer(x, 4)), x), "merge_heads(split_heads(x, H)) should give x back"


def _cross_attention_layers(seed: int, channels: int, context_channels: int, inner: int):
    generator = torch.Generator().manual_seed(seed)
    layers = (nn.Linear(channels, inner, bias=False), nn.Linear(context_channels, inner, bias=False),
              nn.Linear(context_channels, inner, bias=False))
    with torch.no_grad():
        for layer in layers:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) / math.sqrt(layer.in_features))
    return layers


def check_cross_attention(cross_attention: Callable) -> None:
    """Part (c): queries from the image tokens, keys and values from the context, a (B, M) padding mask."""
    # B = 2 examples of N = 6 image tokens with C = 8 channels; M = 4 context tokens with C_ctx = 5; 2 heads of 3
    to_q, to_k, to_v = _cross_attention_layers(8, channels=8, context_channels=5, inner=6)
    x, context = _random(2, 6, 8, seed=9), _random(2, 4, 5, seed=10)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])  # (B, M): True = a real token
    try:
        with torch.no_grad():
            out = cross_attention(x, context, to_q, to_k, to_v, 2, mask)
    except (RuntimeError, ValueError) as error:
        text = str(error)
        if "mat1 and mat2" in text:
            raise AssertionError(
                f"{type(error).__name__}: {text}. The image tokens have C = 8 channels and the context tokens C_ctx = 5: "
                "queries come from the image, to_q(x), and keys and values from the context, to_k(context) and "
                "to_v(context)") from None
        if "mask" in text or "broadcast" in text or "size of tensor" in text or "expand" in text:
            raise AssertionError(
                f"{type(error).__name__}: {text}. The padding mask (B, M) = (2, 4) says which context tokens (keys) "
                "each example may attend to: reshape it to (B, 1, 1, M), so that it broadcasts over the heads and "
                "the queries of the scores (B, heads, N, M)") from None
        raise
    _require_tensor(out, "cross_attention")
    assert tuple(out.shape) == (2, 6, 6), (
        f"x (2, 6, 8) and a context (2, 4, 5) with 2 heads of 3 features: the output should have one vector of "
        f"heads * d = 6 features per image token, shape (2, 6, 6), got {tuple(out.shape)}")
    with torch.no_grad():
        expected = reference_cross_attention(x, context, to_q, to_k, to_v, 2, mask)
        mistakes = {
            "the padding mask is ignored: context tokens where the mask is False must get weight 0":
                reference_cross_attention(x, context, to_q, to_k, to_v, 2, None),
            "the attention runs as one head: split q, k and v into the heads passed in, attend within each head, "
            "then merge the heads": reference_cross_attention(x, context, to_q, to_k, to_v, 1, mask),
            "the mask is inverted: True means 'attend to this context token'":
                reference_cross_attention(x, context, to_q, to_k, to_v, 2, ~mask),
        }
    if not _close(out, expected):
        for message, wrong in mistakes.items():
            if _close(out, wrong):
                raise AssertionError(message)
        raise AssertionError(
            "expected merge_heads(attention(q, k, v, mask)) with q from to_q(x), k and v from to_k(context) and "
            f"to_v(context), split into the heads; out[0, 0] expected {[round(v, 4) for v in expected[0, 0].tolist()]}, "
            f"got {[round(v, 4) for v in out[0, 0].tolist()]}")
    # padding is invisible: more padded tokens, with any values in them, leave the output as it was
    padded_context = torch.cat([context, 100 * _random(2, 3, 5, seed=11)], dim=1)  # (2, 7, 5)
    padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        padded = cross_attention(x, padded_context, to_q, to_k, to_v, 2, padded_mask)
    assert _close(padded, expected), "three more padded context tokens changed the output: they must get weight 0"


def check_guided_eps(guided_eps: Callable) -> None:
    """Part (d): eps_uncond + w (eps_cond - eps_uncond), both from one batched forward pass."""
    model = RecordingModel(ToyConditionalPredictor(num_classes=10, seed=12))
    x_t = _random(4, 1, 3, 3, seed=13)
    t = torch.tensor([10, 500, 900, 999])
    labels = torch.tensor([3, 7, 0, 9])
    with torch.no_grad():
        eps_cond = model.model(x_t, t, labels)
        eps_uncond = model.model(x_t, t, torch.full_like(labels, 10))
        for w in (1.0, 0.0, 3.0):
            eps = guided_eps(model, x_t, t, labels, 10, w)
            _require_tensor(eps, "guided_eps")
            assert tuple(eps.shape) == (4, 1, 3, 3), (
                f"the guided prediction should have the shape of x_t, (4, 1, 3, 3), got {tuple(eps.shape)}")
            expected = reference_guided_eps(eps_cond, eps_uncond, w)
            if _close(eps, expected):
                continue
            mistakes = {
                "the difference points the wrong way: guidance starts at the unconditional prediction and moves "
                "towards the conditional one, eps_uncond + w * (eps_cond - eps_uncond)":
                    reference_guided_eps(eps_cond, eps_uncond, -w),
                "this is Ho & Salimans' (1 + w) eps_cond - w eps_uncond: in this set, as in diffusers, w = 1 is the "
                "plain conditional model, so eps = eps_uncond + w * (eps_cond - eps_uncond)":
                    reference_guided_eps(eps_cond, eps_uncond, 1 + w),
                "the halves of the batched output are swapped: the half whose labels are the classes is eps_cond, "
                "the half with the null label is eps_uncond":
                    reference_guided_eps(eps_uncond, eps_cond, w),
                "the unconditional half uses label 0, which is the digit zero: 'no condition' is the null label "
                "num_classes (10 here)":
                    reference_guided_eps(eps_cond, model.model(x_t, t, torch.zeros_like(labels)), w),
                "the unconditional half uses label num_classes - 1 = 9, which is the digit nine: 'no condition' is "
                "the null label num_classes (10 here)":
                    reference_guided_eps(eps_cond, model.model(x_t, t, torch.full_like(labels, 9)), w),
            }
            for message, wrong in mistakes.items():
                if _close(eps, wrong):
                    raise AssertionError(f"w = {w}: {message}")
            raise AssertionError(
                f"w = {w}: expected eps_uncond + w * (eps_cond - eps_uncond); first value expected "
                f"{expected.flatten()[0].item():.6f}, got {eps.flatten()[0].item():.6f}")


def check_drop_labels(drop_labels_answer: Callable) -> None:
    """Part (e): in training, each label becomes num_classes with probability drop_prob; none at sampling."""
    labels = torch.randint(0, 10, (1000,), generator=torch.Generator().manual_seed(14))
    original = labels.clone()
    dropped = drop_labels_answer(labels, 0.2, 10, torch.Generator().manual_seed(15), True)
    _require_tensor(dropped, "drop_labels")
    assert tuple(dropped.shape) == (1000,), f"1000 labels in, 1000 labels out; got shape {tuple(dropped.shape)}"
    assert dropped.dtype == torch.long, f"the labels should stay int64 (they index an embedding), got {dropped.dtype}"
    expected = reference_drop_labels(original, 0.2, 10, torch.Generator().manual_seed(15), True)
    if not torch.equal(dropped, expected):
        changed = dropped != original
        fraction = changed.float().mean().item()
        if changed.any() and not (dropped[changed] == 10).all():
            raise AssertionError(
                f"dropped labels became {sorted(set(dropped[changed].tolist()))[:3]}: the null label is num_classes "
                "(10 here), the one label that is not a class")
        if fraction in (0.0, 1.0) or (dropped == 10).all():
            raise AssertionError(
                f"{'every' if (dropped == 10).all() else 'no'} label was dropped, with drop_prob = 0.2: draw one uniform "
                "number per label, torch.rand(labels.shape, generator=generator), and drop the labels whose number is "
                "below drop_prob, each on its own")
        if abs(fraction - 0.8) < 0.08:
            raise AssertionError(
                f"{fraction:.0%} of the labels were dropped with drop_prob = 0.2: drop_prob is the probability of "
                "dropping a label (replace it where torch.rand(...) < drop_prob), not of keeping it")
        raise AssertionError(
            f"{fraction:.0%} of the labels were dropped, but not the ones expected: draw torch.rand(labels.shape, "
            "generator=generator) once, with the generator passed in, and replace the labels whose number is below "
            "drop_prob by num_classes, so that the same generator gives the same labels")
    kept = drop_labels_answer(original.clone(), 0.2, 10, torch.Generator().manual_seed(15), False)
    _require_tensor(kept, "drop_labels")
    assert torch.equal(kept, original), (
        f"with training=False {(kept != original).float().mean().item():.0%} of the labels were dropped: condition "
        "dropout happens only in training; when sampling, every label passes unchanged")


def check_clip_loss(clip_loss: Callable) -> None:
    """Part (f): the mean of CLIP's two cross-entropies over logit_scale * cosine similarities."""
    image_embeds = 3 * _random(6, 8, seed=16)  # 6 pairs, embeddings of different lengths
    text_embeds = 0.5 * _random(6, 8, seed=17) + 0.5 * image_embeds
    logit_scale = 10.0
    loss = clip_loss(image_embeds, text_embeds, logit_scale)
    _require_tensor(loss, "clip_loss")
    assert loss.dim() == 0, f"the loss should be a single number (a 0-d tensor), got shape {tuple(loss.shape)}"
    expected = reference_clip_loss(image_embeds, text_embeds, logit_scale).item()
    value = loss.item()
    if abs(value - expected) <= 1e-5 * abs(expected):
        return
    targets = torch.arange(6)
    unit_images, unit_texts = F.normalize(image_embeds, dim=-1), F.normalize(text_embeds, dim=-1)
    cosines = unit_images @ unit_texts.T

    def symmetric(logits):
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2

    mistakes = {
        "only the image -> text direction: CLIP averages the cross-entropy over the rows (each image picks its text) "
        "and over the columns (each text picks its image)": F.cross_entropy(logit_scale * cosines, targets),
        "only the text -> image direction: CLIP averages the cross-entropy over the rows (each image picks its text) "
        "and over the columns (each text picks its image)": F.cross_entropy(logit_scale * cosines.T, targets),
        "the similarities are divided by logit_scale: logit_scale is 1 / temperature, multiply by it":
            symmetric(cosines / logit_scale),
        f"the similarities are multiplied by exp(logit_scale): logit_scale is the factor itself ({logit_scale} here), "
        "CLIP's exp of its learned logarithm already taken": symmetric(math.exp(logit_scale) * cosines),
        "the embeddings are not normalised: CLIP compares directions, cosine similarities of unit vectors "
        "(F.normalize(..., dim=-1))": symmetric(logit_scale * image_embeds @ text_embeds.T),
        "the embeddings are normalised over the batch (dim=0): normalise each embedding, F.normalize(..., dim=-1)":
            symmetric(logit_scale * F.normalize(image_embeds, dim=0) @ F.normalize(text_embeds, dim=0).T),
        "the loss is summed over the batch: take the mean of each cross-entropy":
            6 * symmetric(logit_scale * cosines),
        "the two directions are added, not averaged: (loss_images + loss_texts) / 2":
            2 * symmetric(logit_scale * cosines),
    }
    for message, wrong in mistakes.items():
        if abs(value - wrong.item()) <= 1e-5 * abs(wrong.item()):
            raise AssertionError(message)
    raise AssertionError(
        f"expected (cross_entropy(logits, targets) + cross_entropy(logits.T, targets)) / 2 = {expected:.6f}, with "
        f"logits = logit_scale * (cosine similarities) and targets = arange(B); got {value:.6f}")


PARTS = (
    Part("a", "attention", 3, ("attention",), check_attention),
    Part("b", "split_heads, merge_heads", 2, ("split_heads", "merge_heads"), check_heads),
    Part("c", "cross_attention", 3, ("cross_attention",), check_cross_attention),
    Part("d", "guided_eps", 3, ("guided_eps",), check_guided_eps),
    Part("e", "drop_labels", 2, ("drop_labels",), check_drop_labels),
    Part("f", "clip_loss", 3, ("clip_loss",), check_clip_loss),
)


def run_checks(namespace: dict[str, Any]) -> list[tuple[Part, str, str]]:
    """``(part, status, reason)`` for every part, status one of "pass", "FAIL", "not attempted"."""
    return selfcheck.run_checks(PARTS, namespace)


def self_check(namespace: dict[str, Any]) -> list[tuple[Part, str, str]]:
    """Print which parts pass their visible checks; call it as ``self_check(globals())``."""
    return selfcheck.self_check(PARTS, namespace)
