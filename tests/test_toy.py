"""The 2-D toy data and the three toy generative models of chapter 0 (coursekit.toy)."""

import math

import pytest
import torch

from coursekit.toy import (
    ToyDiffusion,
    ToyDiffusionConfig,
    ToyGAN,
    ToyVAE,
    best_noise_prediction,
    linear_beta_schedule,
    nearest_distance,
    noise_error_by_step,
    ring_centres,
    toy_data,
    train_toy_diffusion,
    train_toy_gan,
    train_toy_vae,
)

TRAINERS = [train_toy_vae, train_toy_gan, train_toy_diffusion]


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def data():
    return toy_data(2000, seeded(0))


@pytest.fixture(scope="module")
def standard_normal_distance(data):
    """Mean distance to the data of a cloud that knows nothing about it (about 0.7)."""
    return nearest_distance(torch.randn(1000, 2, generator=seeded(1)), data).mean().item()


@pytest.fixture(scope="module")
def trained(data):
    """Each model after its default training, trained once for the whole module."""
    return {trainer.__name__: trainer(data, generator=seeded(0)) for trainer in TRAINERS}


def test_toy_data_is_a_ring_of_blobs():
    points, labels = toy_data(4000, seeded(0), return_labels=True)
    assert points.shape == (4000, 2) and points.dtype == torch.float32
    assert labels.shape == (4000,) and set(labels.tolist()) == set(range(8))
    # Every point sits near radius 2, at the angle of its blob: nothing in the middle.
    radius = points.norm(dim=1)
    assert (radius - 2).abs().max() < 0.6
    angles = 2 * math.pi * labels.float() / 8
    centres = 2 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    assert (points - centres).std() == pytest.approx(0.1, abs=0.01)
    assert torch.equal(toy_data(100, seeded(3)), toy_data(100, seeded(3)))


@pytest.mark.parametrize("trainer", TRAINERS)
def test_training_is_deterministic_and_samples_have_shape(trainer, data):
    model_a, losses_a = trainer(data, steps=20, generator=seeded(5))
    model_b, losses_b = trainer(data, steps=20, generator=seeded(5))
    assert losses_a == losses_b
    assert all(len(values) == 20 for values in losses_a.values())
    samples_a = model_a.sample(7, generator=seeded(6))
    samples_b = model_b.sample(7, generator=seeded(6))
    assert samples_a.shape == (7, 2)
    assert torch.equal(samples_a, samples_b)
    _, losses_other = trainer(data, steps=20, generator=seeded(8))
    assert losses_other != losses_a


@pytest.mark.parametrize("name, key", [("train_toy_vae", "loss"), ("train_toy_diffusion", "loss")])
def test_loss_goes_down(trained, name, key):
    values = trained[name][1][key]
    first, last = sum(values[:100]) / 100, sum(values[-100:]) / 100
    assert last < 0.75 * first, (first, last)


def test_vae_loss_is_reconstruction_plus_kl(trained):
    losses = trained["train_toy_vae"][1]
    total = [r + k for r, k in zip(losses["reconstruction"], losses["kl"])]
    assert losses["loss"] == pytest.approx(total, rel=1e-5)
    assert min(losses["kl"]) >= 0


# Measured with these seeds: standard normal ~0.69, VAE ~0.31, GAN ~0.12, diffusion ~0.02.
@pytest.mark.parametrize("name, threshold", [
    ("train_toy_vae", 0.55),
    ("train_toy_gan", 0.35),
    ("train_toy_diffusion", 0.12),
])
def test_samples_land_near_the_data(trained, data, standard_normal_distance, name, threshold):
    model = trained[name][0]
    distance = nearest_distance(model.sample(1000, generator=seeded(2)), data).mean().item()
    assert distance < threshold < standard_normal_distance, (distance, standard_normal_distance)


def test_diffusion_samples_cover_every_blob(trained, data):
    model = trained["train_toy_diffusion"][0]
    samples = model.sample(1000, generator=seeded(2))
    angles = torch.atan2(samples[:, 1], samples[:, 0])  # (N,) in (-pi, pi]
    blob = torch.round(angles / (2 * math.pi / 8)).long() % 8
    counts = torch.bincount(blob, minlength=8)
    assert (counts > 50).all(), counts  # 125 each if perfect; a collapsed model misses some


def test_diffusion_schedule_and_forward_process():
    config = ToyDiffusionConfig()
    betas = linear_beta_schedule(config)
    assert betas.shape == (100,)
    assert betas[0].item() == pytest.approx(1e-3) and betas[-1].item() == pytest.approx(0.2)
    model = ToyDiffusion(config)
    assert model.alpha_bar[-1] < 1e-3  # x_T is (almost) pure noise
    x0, eps = torch.ones(3, 2), torch.zeros(3, 2)
    t = torch.tensor([0, 50, 99])
    expected = model.alpha_bar[t].sqrt()[:, None] * x0
    assert torch.allclose(model.add_noise(x0, eps, t), expected)


def test_conditional_diffusion_follows_the_label():
    points, labels = toy_data(2000, seeded(0), return_labels=True)
    config = ToyDiffusionConfig(num_classes=8)
    model, _ = train_toy_diffusion(points, steps=600, generator=seeded(0), config=config, labels=labels)
    samples = model.sample(200, generator=seeded(1), labels=2)  # blob 2 is at (0, 2)
    assert (samples - torch.tensor([0.0, 2.0])).norm(dim=1).median() < 0.5


@pytest.mark.parametrize("bad", [torch.zeros(10, 3), torch.zeros(10), torch.zeros(0, 2), [[0.0, 1.0]]])
@pytest.mark.parametrize("trainer", TRAINERS)
def test_bad_data_raises(trainer, bad):
    with pytest.raises(ValueError, match=r"\(N, 2\)|at least one point"):
        trainer(bad, steps=1)


def test_bad_arguments_raise(data):
    with pytest.raises(ValueError, match="steps"):
        train_toy_vae(data, steps=0)
    with pytest.raises(ValueError, match="num_points"):
        toy_data(0)
    with pytest.raises(ValueError, match="labels"):
        train_toy_diffusion(data, steps=1, config=ToyDiffusionConfig(num_classes=8))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        ToyVAE().encode(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        ToyGAN().discriminate(torch.zeros(4, 2, 1))
    with pytest.raises(ValueError, match="t of shape"):
        ToyDiffusion()(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"t in \[0, 99\]"):
        ToyDiffusion()(torch.zeros(2, 2), torch.tensor([0, 100]))


def test_ring_centres_are_the_blob_means():
    points, labels = toy_data(4000, seeded(0), return_labels=True)
    offsets = points - ring_centres()[labels]  # (N, 2): each point minus its blob's centre
    assert offsets.mean(dim=0).abs().max() < 0.01
    assert offsets.std().item() == pytest.approx(0.1, rel=0.05)


def test_best_noise_prediction_closed_form():
    alpha_bar = torch.tensor([0.999, 0.5, 0.01])
    x_t = torch.randn(3, 2, generator=seeded(1))
    # One blob at (2, 0): E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) m) / (a std^2 + 1 - a).
    variance = (alpha_bar * 0.1**2 + 1 - alpha_bar)[:, None]
    expected = (1 - alpha_bar).sqrt()[:, None] * (x_t - alpha_bar.sqrt()[:, None] * torch.tensor([2.0, 0.0])) / variance
    torch.testing.assert_close(best_noise_prediction(x_t, alpha_bar, num_modes=1), expected)
    # Eight blobs: the same as the exact mixture predictor of exercise set ps5, written independently.
    from coursekit.exercises.ps5 import GaussianMixturePredictor

    schedule = ToyDiffusion().alpha_bar  # (T,)
    mixture = GaussianMixturePredictor(ring_centres(), 0.1, schedule)
    t = torch.tensor([0, 10, 40, 70, 99] * 4)
    x_t = torch.randn(20, 2, generator=seeded(2)) * 2
    torch.testing.assert_close(best_noise_prediction(x_t, schedule[t]),
                               mixture(x_t, t, torch.full((20,), 8)), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="alpha_bar"):
        best_noise_prediction(x_t, schedule[:3])


def test_noise_error_by_step(trained, data):
    model, losses = trained["train_toy_diffusion"]
    errors = noise_error_by_step(model, data, generator=seeded(3))
    assert errors["network"].shape == errors["best"].shape == (100,)
    # At t = 0 even the best prediction must guess eps inside a blob: a std^2 / (a std^2 + 1 - a) = 0.909.
    assert errors["best"][0].item() == pytest.approx(0.909, abs=0.05)
    assert errors["best"][-1] < 0.01  # x_T is almost pure noise, so eps is almost x_T itself
    assert errors["network"].mean() >= errors["best"].mean()
    # The training loss averages the per-step error over t drawn uniformly.
    assert errors["network"].mean().item() == pytest.approx(sum(losses["loss"][-50:]) / 50, rel=0.1)


def test_mode_counts_assigns_points_to_blobs():
    from coursekit.toy import mode_counts

    centres = ring_centres()  # (8, 2)
    points = torch.cat([centres[[0, 0, 3]], centres[[5]] + torch.tensor([0.3, 0.0]), torch.zeros(1, 2),
                        centres[[2]] * 1.5])  # (6, 2)
    # two at blob 0, one at blob 3, one 0.3 (3 std) from blob 5, one at the centre and one far out: on no blob
    assert mode_counts(points) == [2, 0, 0, 1, 0, 1, 0, 0, 2]
    assert mode_counts(points, within=2.0) == [2, 0, 0, 1, 0, 0, 0, 0, 3]
    points, labels = toy_data(4000, seeded(0), return_labels=True)
    counts, blob_sizes = mode_counts(points), torch.bincount(labels, minlength=8).tolist()
    # within 4 std of its centre: all but a share exp(-8) = 0.03% of a 2-D Gaussian blob's points
    assert sum(counts) == 4000 and counts[8] <= 4 and all(0 <= n - c <= 2 for n, c in zip(blob_sizes, counts))
    with pytest.raises(ValueError, match="half-way"):
        mode_counts(points, within=10.0)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        mode_counts(torch.zeros(3, 3))


def test_toy_gan_callback_and_generator_steps(data):
    from coursekit.toy import ToyGANConfig

    seen = []
    model, losses = train_toy_gan(data, steps=5, generator=seeded(0), callback=lambda step, m: seen.append(step))
    assert seen == [0, 1, 2, 3, 4, 5]
    plain, _ = train_toy_gan(data, steps=5, generator=seeded(0))  # the callback changes nothing
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), plain.parameters()))

    # with the discriminator's learning rate at 0 only the generator moves, generator_steps times per step
    config = ToyGANConfig(lr_discriminator=0.0, generator_steps=3)
    frozen, _ = train_toy_gan(data, steps=2, generator=seeded(0), config=config)
    with torch.random.fork_rng():
        torch.manual_seed(torch.randint(2**31 - 1, (1,), generator=seeded(0)).item())
        start = ToyGAN(config)  # the same initial weights as train_toy_gan draws
    assert all(torch.equal(p, q) for p, q in zip(frozen.discriminator.parameters(), start.discriminator.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(frozen.generator.parameters(), start.generator.parameters()))
    with pytest.raises(ValueError, match="generator_steps"):
        train_toy_gan(data, steps=1, config=ToyGANConfig(generator_steps=0))
