"""Visible checks for exercise set ps2 (chapter 2, variational autoencoders).

Each ``check_*`` function takes the student's answer, raises ``AssertionError`` with a message
that says what was expected, and returns ``None`` when the answer passes. The visible test cells
of ``ps2.ipynb`` call them, and the notebook's last cell runs them all with
``self_check(globals())``. Passing here is necessary for the points, not sufficient: the grader
also runs hidden tests.

The checks build their own tiny linear encoder and decoder from fixed seeds, so they need no
checkpoint and take milliseconds. The references are the formulas of ``coursekit.models.vae``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from coursekit.exercises import selfcheck
from coursekit.exercises.selfcheck import Part

IMAGE_SHAPE = (1, 28, 28)
PIXELS = 28 * 28


def _random(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def linear_decoder(latent_dim: int, seed: int = 0) -> nn.Module:
    """A fixed random map ``(B, latent_dim) -> (B, 1, 28, 28)`` logits, a stand-in for a VAE decoder."""
    linear = nn.Linear(latent_dim, PIXELS)
    with torch.no_grad():
        linear.weight.copy_(_random(PIXELS, latent_dim, seed=seed))
        linear.bias.copy_(_random(PIXELS, seed=seed + 1))
    return nn.Sequential(linear, nn.Unflatten(1, IMAGE_SHAPE)).eval()


def linear_encoder_mu(latent_dim: int, seed: int = 0) -> nn.Module:
    """A fixed random map ``(B, 1, 28, 28) -> (B, latent_dim)``, a stand-in for the posterior mean."""
    linear = nn.Linear(PIXELS, latent_dim)
    with torch.no_grad():
        linear.weight.copy_(_random(latent_dim, PIXELS, seed=seed) / math.sqrt(PIXELS))
        linear.bias.copy_(_random(latent_dim, seed=seed + 1))
    return nn.Sequential(nn.Flatten(), linear).eval()


def _reference_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per example, summed over the latent dimensions, ``(B,)``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def _require_tensor(value: Any, name: str) -> None:
    assert isinstance(value, torch.Tensor), f"{name} should return a tensor, got {type(value).__name__}"


def check_reparameterize(reparameterize: Callable) -> None:
    """Part (a): ``z = mu + exp(logvar / 2) * eps`` with ``eps = torch.randn(mu.shape, generator=generator)``."""
    mu, logvar = _random(4, 3, seed=1), _random(4, 3, seed=2)
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(7))
    _require_tensor(z, "reparameterize")
    assert tuple(z.shape) == (4, 3), f"z should have the shape of mu, (4, 3), got {tuple(z.shape)}"
    again = reparameterize(mu, logvar, torch.Generator().manual_seed(7))
    assert torch.equal(z, again), (
        "two generators seeded alike should give the same z: draw eps with the generator passed in"
    )
    mu, logvar = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(7))
    assert isinstance(z, torch.Tensor) and z.requires_grad, (
        "z carries no gradient: sampling with .sample() or under no_grad cuts the graph; "
        "draw eps on its own and compute mu + sigma * eps"
    )
    z.sum().backward()
    assert mu.grad is not None and torch.allclose(mu.grad, torch.ones_like(mu)), (
        "dz/dmu should be 1 for every entry; torch.normal(mu, sigma) does not pass gradients to mu: "
        "draw eps on its own and compute mu + sigma * eps"
    )
    mu, logvar, z = mu.detach(), logvar.detach(), z.detach()
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(7))
    if _close(z, mu + logvar * eps):
        raise AssertionError("you used logvar as the standard deviation: sigma = exp(logvar / 2)")
    if _close(z, mu + logvar.exp() * eps):
        raise AssertionError("exp(logvar) is the variance sigma**2, not the standard deviation: sigma = exp(logvar / 2)")
    assert _close(z, mu + torch.exp(0.5 * logvar) * eps), (
        "expected z = mu + exp(logvar / 2) * eps with eps = torch.randn(mu.shape, generator=generator); "
        f"first row expected {(mu + torch.exp(0.5 * logvar) * eps)[0].tolist()}, got {z[0].tolist()}"
    )


def check_gaussian_kl(gaussian_kl: Callable) -> None:
    """Part (b): the closed-form KL to N(0, I) per example, summed over the latent dimensions."""
    mu, logvar = _random(5, 4, seed=3), _random(5, 4, seed=4)
    kl = gaussian_kl(mu, logvar)
    _require_tensor(kl, "gaussian_kl")
    assert tuple(kl.shape) == (5,), (
        f"for 5 examples with 4 latent dimensions expected one KL per example, shape (5,), got {tuple(kl.shape)}: "
        "sum over the latent dimensions, keep the batch"
    )
    zeros = torch.zeros(2, 4)
    assert torch.allclose(gaussian_kl(zeros, zeros), torch.zeros(2), atol=1e-6), (
        "when q(z|x) is the prior N(0, I) (mu = 0, logvar = 0) the KL should be 0"
    )
    expected = _reference_kl(mu, logvar)
    if _close(kl, -expected):
        raise AssertionError("the KL has the wrong sign: it is never negative")
    if _close(kl, expected / 4):
        raise AssertionError("the KL is 4 times too small for 4 latent dimensions: sum over them, do not average")
    if _close(kl, 2 * expected):
        raise AssertionError("the KL is twice too large: the closed form has a factor 0.5")
    assert _close(kl, expected), (
        "expected 0.5 * sum(mu**2 + exp(logvar) - 1 - logvar) over the latent dimensions, "
        f"{expected.tolist()}, got {kl.tolist()}"
    )


def check_elbo_loss(elbo_loss: Callable) -> None:
    """Part (c): the mean over the batch of ``BCE summed over pixels + beta * KL``."""
    generator = torch.Generator().manual_seed(5)
    recon_logits = torch.randn(3, *IMAGE_SHAPE, generator=generator)
    x = torch.bernoulli(torch.full((3, *IMAGE_SHAPE), 0.3), generator=generator)
    mu, logvar = _random(3, 4, seed=6), _random(3, 4, seed=7)
    reconstruction = F.binary_cross_entropy_with_logits(recon_logits, x, reduction="none").flatten(1).sum(dim=1)
    kl = _reference_kl(mu, logvar)
    for beta in (1.0, 4.0, 0.0):
        loss = elbo_loss(recon_logits, x, mu, logvar, beta=beta)
        _require_tensor(loss, "elbo_loss")
        assert loss.dim() == 0, (
            f"elbo_loss should return a single number (a 0-d tensor), got shape {tuple(loss.shape)}: average over the batch"
        )
        expected = (reconstruction + beta * kl).mean()
        value = loss.item()
        if math.isclose(value, -expected.item(), rel_tol=1e-4):
            raise AssertionError("the loss has the wrong sign: it is the negative ELBO, which is positive here")
        if math.isclose(value, 3 * expected.item(), rel_tol=1e-4):
            raise AssertionError("the loss is 3 times too large for a batch of 3: average over the batch, not the sum")
        if math.isclose(value, (reconstruction / PIXELS + beta * kl).mean().item(), rel_tol=1e-4):
            raise AssertionError("the reconstruction term is 784 times too small: sum the cross-entropy over the pixels")
        if beta != 1 and math.isclose(value, (beta * reconstruction + kl).mean().item(), rel_tol=1e-4):
            raise AssertionError(f"with beta={beta}, beta multiplies the reconstruction term: it belongs on the KL")
        assert math.isclose(value, expected.item(), rel_tol=1e-4), (
            f"with beta={beta} expected mean(BCE summed over pixels + beta * KL) = {expected.item():.4f}, got {value:.4f}"
        )
    recon_logits.requires_grad_()
    elbo_loss(recon_logits, x, mu, logvar).backward()
    assert recon_logits.grad is not None and recon_logits.grad.abs().sum() > 0, "the loss should be differentiable"


def check_sample_prior(sample_prior: Callable) -> None:
    """Part (d): ``sigmoid(decoder(z))`` for ``z = torch.randn(num_samples, latent_dim, generator=generator)``."""
    decoder = linear_decoder(6, seed=8)
    samples = sample_prior(decoder, 5, 6, torch.Generator().manual_seed(11))
    _require_tensor(samples, "sample_prior")
    assert tuple(samples.shape) == (5, *IMAGE_SHAPE), (
        f"5 samples from a decoder of 6 latent dimensions should have shape (5, 1, 28, 28), got {tuple(samples.shape)}"
    )
    assert not samples.requires_grad, "the samples still track gradients: decode inside `with torch.no_grad():`"
    assert samples.min() >= 0 and samples.max() <= 1, (
        f"pixels should lie in [0, 1], got [{samples.min():.2f}, {samples.max():.2f}]: "
        "the decoder returns logits, apply torch.sigmoid"
    )
    with torch.no_grad():
        z = torch.randn(5, 6, generator=torch.Generator().manual_seed(11))
        expected = torch.sigmoid(decoder(z))
        uniform = torch.sigmoid(decoder(torch.rand(5, 6, generator=torch.Generator().manual_seed(11))))
    if _close(samples, uniform):
        raise AssertionError("z should come from the prior N(0, I) (torch.randn), not from a uniform distribution")
    assert _close(samples, expected), (
        "expected sigmoid(decoder(z)) with z = torch.randn(num_samples, latent_dim, generator=generator)"
    )


def check_interpolate(interpolate: Callable) -> None:
    """Part (e): decode ``(1 - t) * mu_start + t * mu_end`` for ``t = torch.linspace(0, 1, steps)``."""
    encoder_mu, decoder = linear_encoder_mu(3, seed=12), linear_decoder(3, seed=13)
    generator = torch.Generator().manual_seed(14)
    x_start, x_end = torch.rand(1, *IMAGE_SHAPE, generator=generator), torch.rand(1, *IMAGE_SHAPE, generator=generator)
    path = interpolate(encoder_mu, decoder, x_start, x_end, 5)
    _require_tensor(path, "interpolate")
    assert tuple(path.shape) == (5, *IMAGE_SHAPE), (
        f"with steps=5 expected 5 images, shape (5, 1, 28, 28), got {tuple(path.shape)}"
    )
    assert not path.requires_grad, "the images still track gradients: decode inside `with torch.no_grad():`"
    with torch.no_grad():
        mu_start, mu_end = encoder_mu(x_start), encoder_mu(x_end)  # (1, 3) each
        weights = torch.linspace(0, 1, 5)[:, None]  # (5, 1)
        expected = torch.sigmoid(decoder((1 - weights) * mu_start + weights * mu_end))
    assert _close(path[0], expected[0]) and _close(path[-1], expected[-1]), (
        "the first image should decode mu of x_start and the last mu of x_end: both endpoints belong to the path "
        "(torch.linspace(0, 1, steps))"
    )
    assert _close(path, expected), (
        "the images between the endpoints should decode the codes (1 - t) * mu_start + t * mu_end: "
        "interpolate the posterior means, not the pixels"
    )


def check_train(train: Callable) -> None:
    """Part (f): ``train(model, images, loss_fn, steps, lr, batch_size, generator)`` trains ``model`` in place,
    in training mode, and returns the loss of every step as a list of Python floats."""
    images = torch.rand(40, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(9))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(10)
        model = nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, 2), nn.Linear(2, PIXELS), nn.Unflatten(1, IMAGE_SHAPE))
    before = [parameter.detach().clone() for parameter in model.parameters()]
    calls = []

    def squared_error(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        calls.append((len(x), model.training))
        return ((model(x) - x) ** 2).mean()

    model.eval()
    losses = train(model, images, squared_error, 20, lr=0.01, batch_size=5, generator=torch.Generator().manual_seed(11))
    assert isinstance(losses, list) and len(losses) == 20 and all(isinstance(loss, float) for loss in losses), (
        f"with steps=20, train should return a list of 20 Python floats, one loss per step (loss.item()), got "
        f"{type(losses).__name__} {str(losses)[:120]}"
    )
    assert len(calls) == 20, f"with steps=20, loss_fn should be called 20 times, once per step, got {len(calls)}"
    assert all(size == 5 for size, _ in calls), (
        f"with batch_size=5 every batch should hold 5 images, got batches of {[size for size, _ in calls]}"
    )
    assert all(training for _, training in calls), (
        "the model was in evaluation mode during training: call model.train() before the first step"
    )
    assert not model.training, "after the last step, put the model back in evaluation mode with model.eval()"
    assert any(not torch.equal(parameter, old) for parameter, old in zip(model.parameters(), before)), (
        "the parameters did not change: step the optimizer after loss.backward()"
    )
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first, (
        f"20 steps with lr=0.01 should lower the loss of this small model, got {first:.4f} -> {last:.4f}: make one "
        "optimizer before the loop, and zero the gradients before each backward pass"
    )


PARTS = (
    Part("a", "reparameterize", 2, ("reparameterize",), check_reparameterize),
    Part("b", "gaussian_kl", 2, ("gaussian_kl",), check_gaussian_kl),
    Part("c", "elbo_loss", 3, ("elbo_loss",), check_elbo_loss),
    Part("d", "sample_prior", 2, ("sample_prior",), check_sample_prior),
    Part("e", "interpolate", 3, ("interpolate",), check_interpolate),
    Part("f", "train", 3, ("train",), check_train),
)


def run_checks(namespace: dict[str, Any]) -> list[tuple[Part, str, str]]:
    """``(part, status, reason)`` for every part, status one of "pass", "FAIL", "not attempted"."""
    return selfcheck.run_checks(PARTS, namespace)


def self_check(namespace: dict[str, Any]) -> list[tuple[Part, str, str]]:
    """Print which parts pass their visible checks; call it as ``self_check(globals())``."""
    return selfcheck.self_check(PARTS, namespace)
