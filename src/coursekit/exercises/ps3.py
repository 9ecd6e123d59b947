"""Visible checks for exercise set ps3 (chapter 3, generative adversarial networks).

Each ``check_*`` function takes the student's answer, raises ``AssertionError`` with a message
that says what was expected, and returns ``None`` when the answer passes. The visible test cells
of ``ps3.ipynb`` call them, and the notebook's last cell runs them all with
``self_check(globals())``. Passing here is necessary for the points, not sufficient: the grader
also runs hidden tests.

The references are the losses, the training step and the gradient penalty of
:mod:`coursekit.models.gan` (Goodfellow et al. 2014; Gulrajani et al. 2017, WGAN-GP). Notation: the
discriminator's output for an image is a *logit* ``l``, and ``D(x) = sigmoid(l)`` is its probability
that the image is real, so ``-log D(x) = softplus(-l)`` and ``-log(1 - D(x)) = softplus(l)``.

The checks need no data and no checkpoint: they use random tensors from fixed seeds, a
:class:`LinearCritic` whose gradient is known, and a tiny :class:`~coursekit.models.gan.GAN`, and
take well under a second.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from coursekit.exercises import selfcheck
from coursekit.exercises.selfcheck import Part
from coursekit.models.gan import GAN, GANConfig, discriminator_loss, generator_loss_nonsaturating

TINY = GANConfig(latent_dim=8, generator_channels=8, discriminator_channels=8)  # the networks of the checks


def _random(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol)


def _require_scalar(value: Any, name: str) -> None:
    assert isinstance(value, torch.Tensor), f"{name} should return a tensor, got {type(value).__name__}"
    assert value.dim() == 0, (
        f"{name} should return a single number (a 0-d tensor), got shape {tuple(value.shape)}: average over the batch"
    )


def _first_match(value: float, expected: float, mistakes: dict[str, torch.Tensor], rtol: float = 1e-5) -> str | None:
    """The message of the first mistake whose value ``value`` equals, unless it also equals ``expected``."""
    if math.isclose(value, expected, rel_tol=rtol, abs_tol=1e-7):
        return None
    for message, wrong in mistakes.items():
        if math.isclose(value, wrong.item(), rel_tol=rtol, abs_tol=1e-7):
            return message
    return None


# --- the references ----------------------------------------------------------------------------------

def reference_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-mean log D(x) - mean log(1 - D(G(z))) = BCE(real, 1) + BCE(fake, 0), in float64."""
    return F.softplus(-real_logits.double()).mean() + F.softplus(fake_logits.double()).mean()


def reference_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss -mean log D(G(z)) = BCE(fake, 1), in float64."""
    return F.softplus(-fake_logits.double()).mean()


def reference_train_step(generator: nn.Module, discriminator: nn.Module, optimizer_g: torch.optim.Optimizer,
                         optimizer_d: torch.optim.Optimizer, real: torch.Tensor, z: torch.Tensor) -> tuple[float, float]:
    """One alternating update, D first, then G, as :func:`coursekit.models.gan.train_step` with the z passed in."""
    fake = generator(z)
    # 1. D's step: the fakes are detached, so D's loss moves D only
    d_loss = discriminator_loss(discriminator(real), discriminator(fake.detach()))
    optimizer_d.zero_grad()
    d_loss.backward()
    optimizer_d.step()
    # 2. G's step: the updated D scores the same fakes again, and the gradient flows through D into G
    g_loss = generator_loss_nonsaturating(discriminator(fake))
    optimizer_g.zero_grad()
    g_loss.backward()
    optimizer_g.step()
    return d_loss.item(), g_loss.item()


def reference_gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                               epsilon: torch.Tensor) -> torch.Tensor:
    """mean_i (||grad D(x_hat_i)||_2 - 1)^2, x_hat_i = epsilon_i real_i + (1 - epsilon_i) fake_i, one image at a time.

    Differentiating each interpolate on its own is slow but obviously per sample; it equals the batched
    form for a critic that treats the images of a batch independently (no batch norm)."""
    penalties = []
    for i in range(real.shape[0]):
        point = (epsilon[i] * real[i] + (1 - epsilon[i]) * fake[i]).unsqueeze(0).detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(critic(point).sum(), point, create_graph=True)
        penalties.append((gradient.norm() - 1) ** 2)
    return torch.stack(penalties).mean()


# --- models for the checks -----------------------------------------------------------------------------

class LinearCritic(nn.Module):
    """``D(x) = <weight, x>`` for each image: its gradient is ``weight`` at every x, so the penalty is
    exactly ``(||weight|| - 1)^2`` wherever it is evaluated."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())  # (C, H, W) or (1, C, H, W)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images * self.weight).flatten(1).sum(dim=1)  # (B,)


def tiny_gan(seed: int, config: GANConfig = TINY) -> GAN:
    """A small :class:`~coursekit.models.gan.GAN` with weights drawn from ``seed`` (the global RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GAN(config)


class BackwardPasses:
    """Counts, while active, the backward passes that reach ``module``'s parameters.

    ``with BackwardPasses(gan.generator) as passes: ...`` then ``passes.count``: one train step should
    reach the generator once (G's loss), never through D's loss."""

    def __init__(self, module: nn.Module):
        self.parameters = list(module.parameters())
        self.counts = [0] * len(self.parameters)
        self.handles = []

    def _hook(self, index: int):
        def count(grad: torch.Tensor) -> None:
            self.counts[index] += 1
        return count

    def __enter__(self) -> "BackwardPasses":
        self.counts = [0] * len(self.parameters)
        self.handles = [p.register_hook(self._hook(i)) for i, p in enumerate(self.parameters)]
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    @property
    def count(self) -> int:
        return max(self.counts, default=0)


class CallCounts:
    """Counts, while active, the forward calls of modules and the ``step()`` calls of optimizers, by name.

    ``with CallCounts(generator=gan.generator, optimizer_d=optimizer_d) as calls: ...`` then
    ``calls["generator"]``: one train step runs the generator once, the discriminator three times
    (real, ``fake.detach()``, and ``fake`` again for G's step), and steps each optimizer once."""

    def __init__(self, **counted: nn.Module | torch.optim.Optimizer):
        for name, thing in counted.items():
            if not isinstance(thing, (nn.Module, torch.optim.Optimizer)):
                raise TypeError(f"{name}: expected a module or an optimizer, got {type(thing).__name__}")
        self.counted = counted
        self.counts = dict.fromkeys(counted, 0)
        self.handles = []

    def _hook(self, name: str):
        def count(*args) -> None:
            self.counts[name] += 1
        return count

    def __enter__(self) -> "CallCounts":
        self.counts = dict.fromkeys(self.counted, 0)
        self.handles = [thing.register_forward_hook(self._hook(name)) if isinstance(thing, nn.Module)
                        else thing.register_step_post_hook(self._hook(name)) for name, thing in self.counted.items()]
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __getitem__(self, name: str) -> int:
        return self.counts[name]


def _snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _equal_parameters(module: nn.Module, parameters: list[torch.Tensor], rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    return all(_close(p.detach(), q, rtol=rtol, atol=atol) for p, q in zip(module.parameters(), parameters))


# --- the checks --------------------------------------------------------------------------------------

def check_discriminator_loss(discriminator_loss: Callable) -> None:
    """Part (a): BCE(real_logits, 1) + BCE(fake_logits, 0), each a mean over its own batch."""
    real_logits, fake_logits = 2 * _random(6, seed=1), 2 * _random(4, seed=2) - 1
    loss = discriminator_loss(real_logits, fake_logits)
    _require_scalar(loss, "discriminator_loss")
    expected = reference_discriminator_loss(real_logits, fake_logits).item()
    real_term, fake_term = F.softplus(-real_logits), F.softplus(fake_logits)  # -log D(x), -log(1 - D(G(z)))
    mistakes = {
        "labels swapped: real images should be labelled 1 and fakes 0 (D says 'real' with a large logit)":
            F.softplus(real_logits).mean() + F.softplus(-fake_logits).mean(),
        "the loss is summed over the batch: take the mean of each term (binary_cross_entropy_with_logits does by default)":
            real_term.sum() + fake_term.sum(),
        "the two terms are averaged: the loss is their sum, BCE(real, 1) + BCE(fake, 0), each a mean over its own batch":
            (real_term.mean() + fake_term.mean()) / 2,
        "real and fake logits were averaged as one batch: the loss is BCE(real, 1) + BCE(fake, 0), "
        "each a mean over its own batch": torch.cat([real_term, fake_term]).mean(),
        "the inputs are logits: binary_cross_entropy_with_logits applies the sigmoid itself, do not apply torch.sigmoid first":
            F.softplus(-torch.sigmoid(real_logits)).mean() + F.softplus(torch.sigmoid(fake_logits)).mean(),
        "only the real images are scored: add the term for the fakes, BCE(fake_logits, 0)": real_term.mean(),
        "only the fakes are scored: add the term for the real images, BCE(real_logits, 1)": fake_term.mean(),
        "the loss has the wrong sign: D minimises BCE(real, 1) + BCE(fake, 0), a positive number":
            -(real_term.mean() + fake_term.mean()),
    }
    message = _first_match(loss.item(), expected, mistakes)
    if message:
        raise AssertionError(message)
    assert math.isclose(loss.item(), expected, rel_tol=1e-5), (
        f"expected BCE(real_logits, 1) + BCE(fake_logits, 0) = {expected:.6f}, got {loss.item():.6f}"
    )
    real_logits, fake_logits = real_logits.clone().requires_grad_(), fake_logits.clone().requires_grad_()
    loss = discriminator_loss(real_logits, fake_logits)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad, (
        "the loss carries no gradient: D is trained through it (no .item(), .detach() or torch.no_grad())"
    )
    loss.backward()
    expected_grad = (torch.sigmoid(real_logits.detach()) - 1) / 6  # d/dl of softplus(-l), averaged over 6 images
    assert real_logits.grad is not None and _close(real_logits.grad, expected_grad), (
        "the gradient with respect to the real logits should be (sigmoid(l) - 1) / batch size"
    )


def check_generator_loss(generator_loss: Callable) -> None:
    """Part (b): the non-saturating loss -mean log D(G(z)) = BCE(fake_logits, 1)."""
    fake_logits = 2 * _random(5, seed=3) - 1
    loss = generator_loss(fake_logits)
    _require_scalar(loss, "generator_loss")
    expected = reference_generator_loss(fake_logits).item()
    mistakes = {
        "this is the minimax loss mean log(1 - D(G(z))), whose gradient vanishes when D rejects the fakes: "
        "use the non-saturating loss -mean log D(G(z)) = BCE(fake_logits, 1)": -F.softplus(fake_logits).mean(),
        "labels swapped: the generator wants its fakes called real, label 1; BCE(fake_logits, 0) rewards fakes "
        "that D rejects": F.softplus(fake_logits).mean(),
        "the loss is summed over the batch: take the mean": F.softplus(-fake_logits).sum(),
        "the loss has the wrong sign: minimise -mean log D(G(z)), a positive number": -F.softplus(-fake_logits).mean(),
        "the inputs are logits: binary_cross_entropy_with_logits applies the sigmoid itself, do not apply torch.sigmoid first":
            F.softplus(-torch.sigmoid(fake_logits)).mean(),
    }
    message = _first_match(loss.item(), expected, mistakes)
    if message:
        raise AssertionError(message)
    assert math.isclose(loss.item(), expected, rel_tol=1e-5), (
        f"expected -mean log sigmoid(fake_logits) = BCE(fake_logits, 1) = {expected:.6f}, got {loss.item():.6f}"
    )
    # where D is sure a fake is fake (D(G(z)) = sigmoid(-8) = 3e-4) the gradient should still be strong
    logit = torch.tensor([-8.0], requires_grad=True)
    loss = generator_loss(logit)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad, (
        "the loss carries no gradient: G is trained through it (no .item(), .detach() or torch.no_grad())"
    )
    (gradient,) = torch.autograd.grad(loss, logit)
    expected_gradient = torch.sigmoid(torch.tensor(-8.0)) - 1  # d/dl -log sigmoid(l) = sigmoid(l) - 1
    assert math.isclose(gradient.item(), expected_gradient.item(), rel_tol=1e-4), (
        f"at logit -8 (D(G(z)) = 3e-4) d loss / d logit should be sigmoid(-8) - 1 = {expected_gradient.item():.4f}, "
        f"got {gradient.item():.4g}"
    )


def _new_pair(seed: int) -> tuple[GAN, GAN]:
    """Two identical tiny GANs: one for the answer, one for the reference."""
    gan = tiny_gan(seed)
    return gan, copy.deepcopy(gan)


def _adam_pair(gan: GAN) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    return (torch.optim.Adam(gan.generator.parameters(), lr=1e-3, betas=(0.5, 0.999)),
            torch.optim.Adam(gan.discriminator.parameters(), lr=1e-3, betas=(0.5, 0.999)))


DETACH_MESSAGE = ("D's loss sent gradients into the generator: score fake.detach() in D's step, so that D's "
                  "backward pass stops at the fakes and moves D only (retain_graph=True only hides this)")


def _call_train_step(train_step: Callable, gan: GAN, optimizer_g, optimizer_d, real, z) -> tuple[Any, int]:
    """Run the answer; return its result and how many backward passes reached the generator."""
    with BackwardPasses(gan.generator) as passes:
        try:
            result = train_step(gan.generator, gan.discriminator, optimizer_g, optimizer_d, real, z)
        except RuntimeError as error:
            if "backward through the graph a second time" in str(error):
                raise AssertionError(f"{DETACH_MESSAGE} (got: {str(error).splitlines()[0]})") from None
            raise
    return result, passes.count


def check_train_step(train_step: Callable) -> None:
    """Part (c): D's step on real and fake.detach(), then G's step through the updated D; the losses as floats."""
    gan, reference = _new_pair(seed=10)
    initial = copy.deepcopy(gan)
    optimizer_g, optimizer_d = _adam_pair(gan)
    reference_g, reference_d = _adam_pair(reference)
    real, z = _random(8, 1, 28, 28, seed=11).clamp(-1, 1), _random(8, TINY.latent_dim, seed=12)
    result, passes = _call_train_step(train_step, gan, optimizer_g, optimizer_d, real, z)
    assert isinstance(result, (tuple, list)) and len(result) == 2, "train_step should return two numbers: (d_loss, g_loss)"
    assert all(isinstance(value, float) for value in result), (
        "train_step should return (d_loss, g_loss) as Python floats: d_loss.item(), g_loss.item(); "
        f"got {tuple(type(value).__name__ for value in result)}"
    )
    assert passes <= 1, DETACH_MESSAGE
    expected_d_loss, expected_g_loss = reference_train_step(reference.generator, reference.discriminator,
                                                            reference_g, reference_d, real, z)
    d_loss, g_loss = result
    assert math.isclose(d_loss, expected_d_loss, rel_tol=1e-4), (
        f"d_loss should be discriminator_loss(D(real), D(fake.detach())) with fake = generator(z) for the z passed in, "
        f"before any update, real and fake scored in two separate calls of D (its batch norm normalises each batch "
        f"on its own); expected {expected_d_loss:.6f}, got {d_loss:.6f}"
    )
    assert not _equal_parameters(gan.discriminator, _snapshot(initial.discriminator), rtol=0, atol=0), (
        "D's parameters did not change: zero its gradients, d_loss.backward(), then optimizer_d.step()"
    )
    assert _equal_parameters(gan.discriminator, _snapshot(reference.discriminator)), (
        "after one call D's parameters differ from the reference: D's step is optimizer_d.zero_grad(), "
        "d_loss.backward(), optimizer_d.step(), before G's step, and G's step must not step optimizer_d"
    )
    with torch.no_grad():
        stale_g_loss = generator_loss_nonsaturating(initial.discriminator(initial.generator(z))).item()
    if math.isclose(g_loss, stale_g_loss, rel_tol=1e-5) and not math.isclose(g_loss, expected_g_loss, rel_tol=1e-5):
        raise AssertionError("g_loss scores the fakes with D from before its step: score them again with the updated D")
    assert math.isclose(g_loss, expected_g_loss, rel_tol=1e-4), (
        "g_loss should be generator_loss_nonsaturating(D(fake)) with the updated D and the fakes not detached; "
        f"expected {expected_g_loss:.6f}, got {g_loss:.6f}"
    )
    assert passes == 1 and not _equal_parameters(gan.generator, _snapshot(initial.generator), rtol=0, atol=0), (
        "G's parameters did not change: zero its gradients, g_loss.backward() on the fakes scored without detach, "
        "then optimizer_g.step()"
    )
    assert _equal_parameters(gan.generator, _snapshot(reference.generator)), (
        "after one call G's parameters differ from the reference: G's step is optimizer_g.zero_grad(), "
        "g_loss.backward(), optimizer_g.step(), and only G's step moves G"
    )
    # a second call on a new batch: PyTorch adds gradients into .grad, so each step must start from zero
    real, z = _random(8, 1, 28, 28, seed=13).clamp(-1, 1), _random(8, TINY.latent_dim, seed=14)
    result, passes = _call_train_step(train_step, gan, optimizer_g, optimizer_d, real, z)
    assert passes <= 1, DETACH_MESSAGE
    reference_train_step(reference.generator, reference.discriminator, reference_g, reference_d, real, z)
    assert _equal_parameters(gan.discriminator, _snapshot(reference.discriminator)), (
        "the first call agreed with the reference but the second does not: D's gradients accumulate across calls "
        "(G's backward pass leaves gradients in D too); call optimizer_d.zero_grad() right before d_loss.backward()"
    )
    assert _equal_parameters(gan.generator, _snapshot(reference.generator)), (
        "the first call agreed with the reference but the second does not: G's gradients accumulate across calls; "
        "call optimizer_g.zero_grad() right before g_loss.backward()"
    )


def check_gradient_penalty(gradient_penalty: Callable) -> None:
    """Part (d): mean over the batch of (||grad_x critic(x_hat)||_2 - 1)^2 at x_hat = eps real + (1 - eps) fake."""
    weight = _random(1, 1, 4, 4, seed=20)  # ||weight|| is about 4
    critic = LinearCritic(weight)
    real, fake = _random(3, 1, 4, 4, seed=21), _random(3, 1, 4, 4, seed=22)
    epsilon = torch.rand(3, 1, 1, 1, generator=torch.Generator().manual_seed(23))
    try:
        penalty = gradient_penalty(critic, real, fake, epsilon)
    except RuntimeError as error:
        if "does not require grad" in str(error):
            raise AssertionError("x_hat must require gradients before the critic scores it: "
                                 "x_hat = (epsilon * real + (1 - epsilon) * fake).requires_grad_(True)") from None
        raise
    _require_scalar(penalty, "gradient_penalty")
    norm = weight.norm().double()
    expected = ((norm - 1) ** 2).item()
    mistakes = {
        "the penalty uses the squared norm: take the norm itself, (||gradient|| - 1)**2 with ||g|| = sqrt(sum g**2)":
            (norm**2 - 1) ** 2,
        "one norm over the whole batch: take one norm per image, over all its dimensions except the batch "
        "(gradients.flatten(1).norm(dim=1))": (math.sqrt(3) * norm - 1) ** 2,
        "the penalty is summed over the batch: take the mean over the images": 3 * (norm - 1) ** 2,
        "the penalty is not squared: mean of (||gradient|| - 1)**2": (norm - 1).abs(),
        "the penalty pulls the gradient norm to 0: it is (||gradient|| - 1)**2, the norm minus one": norm**2,
    }
    message = _first_match(penalty.item(), expected, mistakes)
    if message:
        raise AssertionError(f"a linear critic D(x) = <w, x> with ||w|| = {norm.item():.4f}: {message}")
    assert math.isclose(penalty.item(), expected, rel_tol=1e-4), (
        f"a linear critic D(x) = <w, x> has gradient w at every point, so the penalty should be (||w|| - 1)**2 = "
        f"{expected:.6f}; got {penalty.item():.6f}"
    )
    assert penalty.requires_grad, (
        "the penalty carries no gradient to the critic's weights: call torch.autograd.grad(..., create_graph=True), "
        "so that the critic can be trained on it"
    )
    penalty.backward()
    expected_grad = 2 * (norm - 1) * weight.double() / norm  # d/dw (||w|| - 1)^2
    assert critic.weight.grad is not None and _close(critic.weight.grad, expected_grad), (
        "backpropagating the penalty should give the critic's weights the gradient 2 (||w|| - 1) w / ||w||"
    )


PARTS = (
    Part("a", "discriminator_loss", 2, ("discriminator_loss",), check_discriminator_loss),
    Part("b", "generator_loss", 2, ("generator_loss",), check_generator_loss),
    Part("c", "train_step", 4, ("train_step",), check_train_step),
    Part("d", "gradient_penalty", 4, ("gradient_penalty",), check_gradient_penalty),
)


def run_checks(namespace: dict[str, Any]) -> list[tuple[Part, str, str]]:
    """``(part, status, reason)`` for every part, status one of "pass", "FAIL", "not attempted"."""
    return selfcheck.run_checks(PARTS, namespace)


def self_check(namespace: dict[str, Any]) -> list[tuple[Part, str, str]]:
    """Print which parts pass their visible checks; call it as ``self_check(globals())``."""
    return selfcheck.self_check(PARTS, namespace)
