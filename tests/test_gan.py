"""coursekit.models.gan: shapes, the losses on hand-computed inputs, the gradient penalty against an
autograd reference, what one training step changes, and save/load identity."""

import math

import pytest
import torch
from torch import nn

from coursekit.checkpoint import load_checkpoint, save_checkpoint
from coursekit.models.gan import (GAN, GANConfig, critic_loss, diff_augment, discriminator_loss,
                                  generator_loss_minimax, generator_loss_nonsaturating, gradient_penalty, optimizers, r1_penalty,
                                  train_gan, train_step, wasserstein_generator_loss)


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


def test_minibatch_std_lets_d_see_how_varied_a_batch_is():
    from coursekit.models.gan import MinibatchStd

    varied, same = torch.randn(6, 3, 4, 4), torch.randn(1, 3, 4, 4).expand(6, 3, 4, 4)
    out = MinibatchStd()(varied)
    assert out.shape == (6, 4, 4, 4) and torch.equal(out[:, :3], varied)
    assert torch.allclose(out[:, 3], varied.std(dim=0, unbiased=False).mean().expand(6, 4, 4))
    assert torch.all(MinibatchStd()(same)[:, 3] == 0)  # identical images: no spread
    with pytest.raises(ValueError, match="per-sample gradient penalty"):
        GANConfig(loss="wgan-gp", minibatch_std=True)


def test_r1_penalty_matches_the_closed_form_of_a_linear_discriminator_and_enters_d_loss():
    weight = torch.randn(784)
    linear = lambda x: x.flatten(1) @ weight + 0.3  # noqa: E731  grad_x = weight for every image
    real = torch.rand(5, 1, 28, 28)
    assert r1_penalty(linear, real).item() == pytest.approx(weight.pow(2).sum().item(), rel=1e-5)

    gan = small(r1_weight=2.0)
    optimizer_g, optimizer_d = optimizers(gan)
    result = train_step(gan, torch.rand(4, 1, 28, 28) * 2 - 1, optimizer_g, optimizer_d,
                        generator=torch.Generator().manual_seed(0))
    assert result["r1"] > 0
    with pytest.raises(ValueError, match="own gradient penalty"):
        GANConfig(loss="wgan-gp", r1_weight=1.0)


@pytest.mark.parametrize("minibatch_std", [False, True])
def test_extra_layers_refine_each_resolution_and_zero_keeps_the_old_layout(minibatch_std):
    plain, deep = small(), small(extra_layers=1, minibatch_std=minibatch_std)
    assert len(deep.generator.upsample) == len(plain.generator.upsample) + 6
    kernels = [m.kernel_size for m in deep.generator.upsample if isinstance(m, nn.Conv2d)]
    assert kernels == [(3, 3), (3, 3)]  # one 3x3 convolution at 7x7 and one at 14x14
    images = deep.generator(torch.randn(2, 8))
    assert images.shape == (2, 1, 28, 28) and deep.discriminator(images).shape == (2,)
    kernels = [m.kernel_size for m in deep.discriminator.features if isinstance(m, nn.Conv2d)]
    assert kernels == [(4, 4), (3, 3), (4, 4), (3, 3)]  # and in D, at 14x14 and at 7x7
    assert small(minibatch_std=minibatch_std).discriminator(images).shape == (2,)
    # with extra_layers=0 the parameter names are those of the checkpoints trained before the option
    assert [name for name, _ in plain.generator.named_parameters()] == [
        "project.0.weight", "project.1.weight", "project.1.bias", "upsample.0.weight", "upsample.1.weight",
        "upsample.1.bias", "upsample.3.weight", "upsample.3.bias"]


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


def test_diff_augment_shifts_and_cuts_out_per_image_and_passes_gradients():
    images = torch.full((64, 1, 28, 28), -1.0)
    images[:, :, 12, 12] = 1.0  # one bright pixel: where it lands is the shift
    shifted = diff_augment(images, ("translation",), torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    lit = (shifted == 1).flatten(1)
    assert torch.all(lit.sum(1) == 1)  # a shift of at most 3 pixels keeps the pixel inside the image
    rows, cols = lit.float().argmax(1) // 28, lit.float().argmax(1) % 28
    assert rows.min() >= 9 and rows.max() <= 15 and cols.min() >= 9 and cols.max() <= 15
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 20  # one draw per image, not one per batch
    # pixels shifted in from outside are the background; the set of values is otherwise untouched
    assert set(shifted.unique().tolist()) == {-1.0, 1.0}

    white = torch.ones(64, 1, 28, 28)
    cut = diff_augment(white, ("cutout",), torch.Generator().manual_seed(0))
    painted = (cut == -1).flatten(1).sum(1)
    assert painted.max() == 14 * 14 and painted.min() >= 7 * 7  # a 14 x 14 square, clipped at the border
    assert torch.equal(cut, diff_augment(white, ("cutout",), torch.Generator().manual_seed(0)))  # reproducible

    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    diff_augment(x, generator=torch.Generator().manual_seed(1)).sum().backward()
    # the gradient is 1 on the pixels that stayed visible and 0 on those shifted out or cut out
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0} and 0 < x.grad.sum() < x.numel()
    with pytest.raises(ValueError, match="augmentations must be among"):
        diff_augment(images, ("flip",))


def test_an_augmented_step_shows_d_only_augmented_images(monkeypatch):
    """With augment, every batch D scores (real, detached fake, fake in G's step) went through diff_augment."""
    from coursekit.models import gan as gan_module

    gan = small()
    optimizer_g, optimizer_d = optimizers(gan)
    marked, seen = [], []
    original_forward = gan.discriminator.forward

    def mark(images, policy, generator=None, **kwargs):
        out = diff_augment(images, policy, generator, **kwargs)
        marked.append(out)
        return out

    def record(images, labels=None):
        seen.append(images)
        return original_forward(images, labels)

    monkeypatch.setattr(gan_module, "diff_augment", mark)
    monkeypatch.setattr(gan.discriminator, "forward", record)
    result = train_step(gan, torch.rand(4, 1, 28, 28) * 2 - 1, optimizer_g, optimizer_d,
                        generator=torch.Generator().manual_seed(0), augment=("translation", "cutout"))
    assert len(seen) == 3 and all(any(s is m for m in marked) for s in seen)
    assert math.isfinite(result["g_loss"]) and all(p.grad is not None for p in gan.generator.parameters())


def test_training_keeps_a_moving_average_of_the_generator():
    torch.manual_seed(0)
    real = torch.zeros(64, 1, 28, 28) - 1
    real[:, :, 10:18, 10:18] = 1
    loader = torch.utils.data.DataLoader(real, batch_size=16, shuffle=True)
    gan = small()
    start = {name: p.detach().clone() for name, p in gan.generator.named_parameters()}
    history = train_gan(gan, loader, epochs=3, device="cpu", progress=False, fixed_noise=4, ema_decay=0.9,
                        augment=("translation",))
    ema = history.ema
    assert ema is not None and ema.reached == pytest.approx(12 / 21)  # the warm-up (1 + s) / (10 + s) at G step s = 11
    averaged = dict(ema.model.named_parameters())
    for name, p in gan.generator.named_parameters():
        # the average lies between the start and the last iterate, and is neither
        assert not torch.equal(averaged[name], p) and not torch.equal(averaged[name], start[name]), name
    for (name, b), (_, e) in zip(gan.generator.named_buffers(), ema.model.named_buffers()):
        assert torch.equal(b, e), name  # batch norm's statistics are copied, not averaged
    with torch.no_grad():  # the last grid was drawn by the average
        noise = torch.randn(4, 8, generator=torch.Generator().manual_seed(1234))
        assert torch.allclose(history.grids[-1], (ema.model(noise) + 1) / 2)
    with pytest.raises(ValueError, match="augment must name"):
        train_gan(small(), loader, device="cpu", progress=False, augment=("flip",))


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


def test_shipped_dcgan_is_the_recorded_recipe_and_rescores_as_its_record_says():
    """The shipped dcgan: the recipe its record names, its moving average scored at the record's N and
    seed gives the record's numbers, and the former recipe's record is kept beside it."""
    from coursekit.checkpoint import read_record
    from coursekit.cli import evaluate_model_samples

    gan, record = load_checkpoint("dcgan"), read_record("dcgan")
    command, metrics = record["command"].split(), record["metrics"]
    assert gan.config.extra_layers == int(command[command.index("--extra-layers") + 1])
    assert gan.config.minibatch_std == ("--minibatch-std" in command)
    assert gan.config.r1_weight == float(command[command.index("--r1-weight") + 1]) > 0
    assert metrics["ema_decay"] == float(command[command.index("--ema-decay") + 1])
    assert 0 < metrics["ema_decay_reached"] <= metrics["ema_decay"]
    again = evaluate_model_samples(gan, 1000, metrics["evaluation"]["seed"], "rescored")["samples"]
    recorded = metrics["evaluation"]["samples"]
    assert again["fid"] == pytest.approx(recorded["fid"], rel=1e-4)
    assert again["class_histogram"] == recorded["class_histogram"]
    # the last iterate was scored on the same noise, and it is not what ships
    assert metrics["evaluation_last_iterate"]["seed"] == metrics["evaluation"]["seed"]
    assert metrics["evaluation_last_iterate"]["samples"]["fid"] != pytest.approx(recorded["fid"])
    former = record["former_recipe"]
    assert "--extra-layers" not in former["command"] and former["metrics"]["evaluation"]["num_samples"] == 1000
    assert former["metrics"]["evaluation"]["floor"]["fid"] == pytest.approx(metrics["evaluation"]["floor"]["fid"])


def test_shipped_wgan_gp_has_the_shipped_dcgan_generator():
    """Chapter 3 compares the two shipped GANs as two games played by the same generator."""
    dcgan, wgan = load_checkpoint("dcgan"), load_checkpoint("wgan-gp")
    shapes = lambda module: {name: tuple(p.shape) for name, p in module.state_dict().items()}  # noqa: E731
    assert shapes(dcgan.generator) == shapes(wgan.generator)
    assert wgan.config.loss == "wgan-gp" and wgan.config.extra_layers == dcgan.config.extra_layers
    assert not wgan.config.minibatch_std and wgan.config.r1_weight == 0
