"""coursekit.models.gan: shapes, the losses on hand-computed inputs, the gradient penalty against an
autograd reference, what one training step changes, and save/load identity."""

import math

import pytest
import torch
from torch import nn

from coursekit.checkpoint import load_checkpoint, save_checkpoint
from coursekit.models.gan import (GAN, GANConfig, critic_loss, discriminator_loss, generator_loss_minimax,
                                  generator_loss_nonsaturating, gradient_penalty, optimizers, train_gan, train_step,
                                  wasserstein_generator_loss)


def small(**kwargs) -> GAN:
    torch.manual_seed(0)
    return GAN(GANConfig(latent_dim=8, generator_channels=8, discriminator_channels=8, **kwargs))


@pytest.mark.parametrize("kwargs", [{}, {"loss": "wgan-gp"}, {"num_classes": 10}, {"in_channels": 3, "image_size": 32}])
def test_shapes_and_range(kwargs):
    gan = small(**kwargs)
    config = gan.config
    labels = torch.tensor([0, 3, 9]) if config.num_classes else None
    images = gan.generator(torch.randn(3, 8), labels)
    assert images.shape == (3, config.in_channels, config.image_size, config.image_size)
    assert images.min() >= -1 and images.max() <= 1
    assert gan.discriminator(images, labels).shape == (3,)
    samples = gan.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, config.in_channels, config.image_size, config.image_size)
    assert samples.min() >= 0 and samples.max() <= 1


def test_conditional_networks_use_the_label_and_insist_on_one():
    gan = small(num_classes=10).eval()
    z = torch.randn(2, 8)
    assert not torch.allclose(gan.generator(z, torch.tensor([1, 1])), gan.generator(z, torch.tensor([7, 7])))
    with pytest.raises(ValueError, match="pass labels"):
        gan.generator(z)
    with pytest.raises(ValueError, match="loss must be one of"):
        GANConfig(loss="hinge")


def test_losses_on_hand_computed_logits():
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([0.0, -1.0])
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected_d = (-math.log(0.5) - math.log(sigmoid(2.0))) / 2 + (-math.log(0.5) - math.log(1 - sigmoid(-1.0))) / 2
    assert discriminator_loss(real, fake).item() == pytest.approx(expected_d, rel=1e-6)
    assert generator_loss_nonsaturating(fake).item() == pytest.approx((-math.log(0.5) - math.log(sigmoid(-1.0))) / 2, rel=1e-6)
    assert generator_loss_minimax(fake).item() == pytest.approx((math.log(0.5) + math.log(1 - sigmoid(-1.0))) / 2, rel=1e-6)
    assert critic_loss(torch.tensor([3.0, 1.0]), torch.tensor([-1.0, 0.0])).item() == pytest.approx(-0.5 - 2.0)
    assert wasserstein_generator_loss(torch.tensor([-1.0, 0.0])).item() == pytest.approx(0.5)
    # stable where D is sure: no inf or nan at logits of +-100
    assert torch.isfinite(discriminator_loss(torch.tensor([100.0]), torch.tensor([-100.0])))
    assert torch.isfinite(generator_loss_minimax(torch.tensor([-100.0])))


def test_minimax_generator_gradient_vanishes_where_nonsaturating_does_not():
    logits = torch.tensor([-8.0], requires_grad=True)  # D is sure the fake is fake: D(G(z)) ~ 3e-4
    (minimax,) = torch.autograd.grad(generator_loss_minimax(logits), logits)
    (nonsaturating,) = torch.autograd.grad(generator_loss_nonsaturating(logits), logits)
    # d/dl log(1 - sigmoid(l)) = -sigmoid(l); d/dl -log sigmoid(l) = sigmoid(l) - 1
    assert minimax.item() == pytest.approx(-torch.sigmoid(torch.tensor(-8.0)).item(), rel=1e-5)
    assert nonsaturating.item() == pytest.approx(torch.sigmoid(torch.tensor(-8.0)).item() - 1, rel=1e-5)
    assert abs(minimax.item()) < 1e-3 < 0.99 < abs(nonsaturating.item())


def test_gradient_penalty_matches_a_closed_form_and_an_autograd_reference():
    # a linear critic D(x) = <w, x> has gradient w everywhere: penalty (||w|| - 1)^2
    w = torch.randn(1, 1, 4, 4)

    def linear(x):
        return (x * w).flatten(1).sum(1)

    real, fake = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    assert gradient_penalty(linear, real, fake).item() == pytest.approx(((w.norm() - 1) ** 2).item(), rel=1e-5)

    # a real critic: recompute the interpolates with the same random numbers and differentiate one by one
    gan = small(loss="wgan-gp")
    real, fake = torch.rand(4, 1, 28, 28) * 2 - 1, gan.generator(torch.randn(4, 8)).detach()
    penalty = gradient_penalty(gan.discriminator, real, fake, generator=torch.Generator().manual_seed(5))
    epsilon = torch.rand(4, 1, 1, 1, generator=torch.Generator().manual_seed(5))
    norms = []
    for i in range(4):
        point = (epsilon[i] * real[i] + (1 - epsilon[i]) * fake[i]).unsqueeze(0).requires_grad_(True)
        (gradient,) = torch.autograd.grad(gan.discriminator(point).sum(), point)
        norms.append(gradient.norm())
    assert penalty.item() == pytest.approx(((torch.stack(norms) - 1) ** 2).mean().item(), rel=1e-4)
    # and it is differentiable in the critic's weights
    penalty.backward()
    assert gan.discriminator.score.weight.grad is not None and gan.discriminator.score.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("loss", ["non-saturating", "wgan-gp"])
def test_a_training_step_changes_only_what_each_optimizer_owns(loss):
    gan = small(loss=loss)
    optimizer_g, optimizer_d = optimizers(gan)
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    before = {name: p.detach().clone() for name, p in gan.named_parameters()}

    result = train_step(gan, real, optimizer_g, optimizer_d, generator=torch.Generator().manual_seed(0),
                        update_generator=False)
    changed = {name for name, p in gan.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(name.startswith("discriminator.") for name in changed), changed
    assert "g_loss" not in result and math.isfinite(result["d_loss"])

    after_d = {name: p.detach().clone() for name, p in gan.named_parameters()}
    result = train_step(gan, real, optimizer_g, optimizer_d, generator=torch.Generator().manual_seed(1))
    assert any(not torch.equal(p, after_d[n]) for n, p in gan.named_parameters() if n.startswith("generator."))
    assert math.isfinite(result["g_loss"])
    if loss == "wgan-gp":
        assert result["gradient_penalty"] >= 0


def test_the_discriminator_step_sees_a_detached_fake():
    """D's step must not put gradients into G (it would, if the fake batch were not detached)."""
    gan = small()
    optimizer_g, optimizer_d = optimizers(gan)
    train_step(gan, torch.rand(4, 1, 28, 28) * 2 - 1, optimizer_g, optimizer_d, update_generator=False)
    assert all(p.grad is None for p in gan.generator.parameters())


def test_training_separates_real_from_fake_and_records_grids():
    torch.manual_seed(0)
    real = torch.zeros(64, 1, 28, 28) - 1
    real[:, :, 10:18, 10:18] = 1  # one white square: easy to learn
    loader = torch.utils.data.DataLoader(real, batch_size=16, shuffle=True)
    gan = small()
    history = train_gan(gan, loader, epochs=3, device="cpu", progress=False, fixed_noise=4)
    assert len(history.steps) == 12 and len(history.grids) == 3 and history.grids[0].shape == (4, 1, 28, 28)
    assert history.series("d_real")[-1] > history.series("d_fake")[-1]
    assert history.steps[-1]["d_loss"] < history.steps[0]["d_loss"]


def test_save_load_identity(tmp_path):
    gan = small(num_classes=10, loss="wgan-gp")
    save_checkpoint(gan, tmp_path / "gan")
    loaded = load_checkpoint(tmp_path / "gan")
    assert isinstance(loaded, GAN) and loaded.config == gan.config
    for (name, p), (_, q) in zip(gan.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(p, q), name
    z, labels = torch.randn(3, 8), torch.tensor([1, 2, 3])
    assert torch.equal(gan.eval().generator(z, labels), loaded.generator(z, labels))


def test_pretrained_gan_loader_uses_the_one_hub_id_and_explains_a_missing_hub(monkeypatch):
    import urllib.error

    from coursekit import pretrained

    calls = []

    class FakeProGAN:
        def buildNoiseData(self, n):
            return torch.randn(n, 512), None

        def test(self, noise):
            return torch.randn(noise.shape[0], 3, 8, 8) * 3  # outside [-1, 1] on purpose

    def fake_load(repo, model, **kwargs):
        calls.append((repo, model, kwargs))
        return FakeProGAN()

    monkeypatch.setattr(torch.hub, "load", fake_load)
    model = pretrained.load_pretrained_gan(device="cpu")
    assert calls == [(pretrained.PRETRAINED_GAN["repo"], pretrained.PRETRAINED_GAN["model"],
                      {"model_name": pretrained.PRETRAINED_GAN["model_name"], "pretrained": True, "useGPU": False,
                       "trust_repo": True})]
    images = pretrained.sample_pretrained_gan(model, 4, seed=1)
    assert images.shape == (4, 3, 8, 8) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, pretrained.sample_pretrained_gan(model, 4, seed=1))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load", offline)
    with pytest.raises(pretrained.HubUnavailable, match="needs the internet: run it in Colab") as error:
        pretrained.load_pretrained_gan(device="cpu")
    assert pretrained.PRETRAINED_GAN["repo"] in str(error.value)
