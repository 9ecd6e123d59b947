"""Visible checks for exercise set ps1 (chapter 1, autoencoders).

Each ``check_*`` function takes the student's answer, raises ``AssertionError`` with a message
that says what was expected, and returns ``None`` when the answer passes. The visible test cells
of ``ps1.ipynb`` call them, and the notebook's last cell runs them all with
``self_check(globals())``, which prints one line per part: passed, failed (and why), or not
attempted. Passing here is necessary for the points, not sufficient: the grader also runs
hidden tests.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from coursekit.exercises import selfcheck
from coursekit.exercises.selfcheck import Part

ANOMALY_CHECKPOINT = "ae-anomaly"


def _batch_of_images(batch_size: int, seed: int = 0) -> torch.Tensor:
    """Random ``(B, 1, 28, 28)`` images in ``[0, 1]`` (the checks need shapes, not digits)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch_size, 1, 28, 28, generator=generator)


def _per_image_mse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """The reference answer of part (b): mean over every axis but the first, shape ``(B,)``."""
    return ((x_hat - x) ** 2).flatten(1).mean(dim=1)


def check_autoencoder_shapes(Encoder: type, Decoder: type) -> None:  # noqa: N803 (class arguments)
    """Part (a): ``Encoder(latent_dim)`` maps ``(B, 1, 28, 28) -> (B, latent_dim)`` and
    ``Decoder(latent_dim)`` maps ``(B, latent_dim) -> (B, 1, 28, 28)`` with pixels in ``[0, 1]``."""
    x = _batch_of_images(5)
    for latent_dim in (2, 16):
        encoder, decoder = Encoder(latent_dim), Decoder(latent_dim)
        assert isinstance(encoder, nn.Module), "Encoder(latent_dim) should build an nn.Module"
        assert isinstance(decoder, nn.Module), "Decoder(latent_dim) should build an nn.Module"
        assert len(list(encoder.parameters())) > 0, "the Encoder has no parameters to train"
        assert len(list(decoder.parameters())) > 0, "the Decoder has no parameters to train"
        with torch.no_grad():
            z = encoder(x)
            assert isinstance(z, torch.Tensor), f"the Encoder should return a tensor, got {type(z).__name__}"
            assert tuple(z.shape) == (5, latent_dim), (
                f"with latent_dim={latent_dim}, the Encoder should map (5, 1, 28, 28) to (5, {latent_dim}), "
                f"got {tuple(z.shape)}"
            )
            x_hat = decoder(z)
            assert isinstance(x_hat, torch.Tensor), f"the Decoder should return a tensor, got {type(x_hat).__name__}"
            assert tuple(x_hat.shape) == (5, 1, 28, 28), (
                f"with latent_dim={latent_dim}, the Decoder should map (5, {latent_dim}) to (5, 1, 28, 28), "
                f"got {tuple(x_hat.shape)}"
            )
            assert torch.isfinite(x_hat).all(), "the Decoder returned NaN or infinite pixels"
            assert x_hat.min() >= 0 and x_hat.max() <= 1, (
                f"decoded pixels should lie in [0, 1] like the images, got [{x_hat.min():.3f}, {x_hat.max():.3f}]: "
                "end the Decoder with a sigmoid"
            )


def check_reconstruction_loss(reconstruction_loss: Callable) -> None:
    """Part (b): ``reconstruction_loss(x, x_hat)`` is the per-image mean squared error, shape ``(B,)``."""
    x, x_hat = _batch_of_images(4, seed=1), _batch_of_images(4, seed=2)
    loss = reconstruction_loss(x, x_hat)
    assert isinstance(loss, torch.Tensor), f"reconstruction_loss should return a tensor, got {type(loss).__name__}"
    assert tuple(loss.shape) == (4,), (
        f"for a batch of 4 images the loss should have shape (4,), one number per image, got {tuple(loss.shape)}"
    )
    assert torch.allclose(reconstruction_loss(x, x), torch.zeros(4)), "a perfect reconstruction should cost 0"
    expected = _per_image_mse(x, x_hat)
    ratio = (loss / expected).mean().item()
    assert not math.isclose(ratio, 28 * 28, rel_tol=1e-3), (
        "the loss is 784 times too large: take the mean over the pixels, not the sum"
    )
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-7), (
        f"expected the mean of (x_hat - x)**2 over each image's pixels, {expected.tolist()}, got {loss.tolist()}"
    )


def check_anomaly_scores(anomaly_scores: Callable, model: nn.Module | None = None,
                         images: torch.Tensor | None = None) -> None:
    """Part (c): ``anomaly_scores(model, images)`` equals coursekit's ``reconstruction_error``."""
    from coursekit.checkpoint import load_checkpoint
    from coursekit.models.autoencoder import reconstruction_error

    if model is None:
        model = load_checkpoint(ANOMALY_CHECKPOINT)
    if images is None:
        images = _batch_of_images(32, seed=3)
    scores = anomaly_scores(model, images)
    assert isinstance(scores, torch.Tensor), f"anomaly_scores should return a tensor, got {type(scores).__name__}"
    assert tuple(scores.shape) == (len(images),), (
        f"expected one score per image, shape ({len(images)},), got {tuple(scores.shape)}"
    )
    assert not scores.requires_grad, (
        "the scores still track gradients: compute them inside `with torch.no_grad():`"
    )
    expected = reconstruction_error(model, images)
    assert torch.allclose(scores.cpu(), expected, rtol=1e-4, atol=1e-6), (
        "the scores should be each image's mean squared reconstruction error; "
        f"first expected {expected[:3].tolist()}, got {scores[:3].tolist()}"
    )


def check_choose_threshold(choose_threshold: Callable) -> None:
    """Part (d): flagging ``score > threshold`` flags about ``false_positive_rate`` of the normal scores."""
    generator = torch.Generator().manual_seed(4)
    normal_scores = torch.randperm(200, generator=generator).float() + 1.0  # 1, 2, ..., 200 shuffled
    for false_positive_rate in (0.05, 0.2):
        threshold = choose_threshold(normal_scores, false_positive_rate=false_positive_rate)
        assert isinstance(threshold, float), (
            f"choose_threshold should return a Python float (use .item()), got {type(threshold).__name__}"
        )
        flagged = (normal_scores > threshold).double().mean().item()
        assert abs(flagged - false_positive_rate) <= 1 / len(normal_scores) + 1e-6, (
            f"with false_positive_rate={false_positive_rate}, flagging score > threshold should flag about "
            f"{false_positive_rate:.0%} of the normal scores, but threshold {threshold:.2f} flags {flagged:.0%}"
            + (" (the threshold sits in the wrong tail)" if flagged > 0.5 else "")
        )


def check_roc_auc(roc_auc: Callable) -> None:
    """Part (e): ``roc_auc(scores, is_anomaly)`` by the rank formula, equal to scikit-learn's."""
    from sklearn.metrics import roc_auc_score

    is_anomaly = torch.tensor([False, False, False, True, True])
    separated = torch.tensor([0.1, 0.2, 0.3, 0.8, 0.9])
    assert math.isclose(float(roc_auc(separated, is_anomaly)), 1.0, abs_tol=1e-9), (
        "when every anomaly scores above every normal image the AUC should be 1"
    )
    assert math.isclose(float(roc_auc(-separated, is_anomaly)), 0.0, abs_tol=1e-9), (
        "when every anomaly scores below every normal image the AUC should be 0"
    )
    generator = torch.Generator().manual_seed(5)
    scores = torch.randn(60, generator=generator)
    is_anomaly = torch.rand(60, generator=generator) < 0.3
    scores[is_anomaly] += 1.0
    expected = roc_auc_score(is_anomaly.numpy(), scores.numpy())
    result = roc_auc(scores, is_anomaly)
    assert isinstance(result, float), f"roc_auc should return a Python float (use .item()), got {type(result).__name__}"
    assert math.isclose(result, expected, abs_tol=1e-6), f"expected scikit-learn's AUC {expected:.4f}, got {result:.4f}"


PARTS = (
    Part("a", "Encoder / Decoder shapes", 3, ("Encoder", "Decoder"), check_autoencoder_shapes),
    Part("b", "reconstruction_loss", 2, ("reconstruction_loss",), check_reconstruction_loss),
    Part("c", "anomaly_scores", 2, ("anomaly_scores",), check_anomaly_scores),
    Part("d", "choose_threshold", 3, ("choose_threshold",), check_choose_threshold),
    Part("e", "roc_auc", 2, ("roc_auc",), check_roc_auc),
)


def run_checks(namespace: dict[str, Any]) -> list[tuple[Part, str, str]]:
    """``(part, status, reason)`` for every part, status one of "pass", "FAIL", "not attempted"."""
    return selfcheck.run_checks(PARTS, namespace)


def self_check(namespace: dict[str, Any]) -> list[tuple[Part, str, str]]:
    """Print which parts pass their visible checks; call it as ``self_check(globals())``."""
    return selfcheck.self_check(PARTS, namespace)
