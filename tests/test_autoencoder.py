import json

import pytest
import torch

from coursekit.checkpoint import load_checkpoint, read_record, save_checkpoint
from coursekit.models.autoencoder import (Autoencoder, AutoencoderConfig, corrupt, encode_all, fitted_gaussian_sample,
                                          reconstruction_error, reconstruction_loss)
from coursekit.training import train


@pytest.mark.parametrize("latent_dim", [1, 2, 16])
@pytest.mark.parametrize("channels", [(8,), (8, 16)])
def test_shapes(latent_dim, channels):
    model = Autoencoder(AutoencoderConfig(latent_dim=latent_dim, channels=channels))
    x = torch.rand(5, 1, 28, 28)
    z = model.encode(x)
    assert z.shape == (5, latent_dim)
    x_hat = model.decode(z)
    assert x_hat.shape == (5, 1, 28, 28)
    assert 0.0 <= x_hat.min() and x_hat.max() <= 1.0
    assert model.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 1, 28, 28)


def test_bad_input_raises():
    model = Autoencoder(AutoencoderConfig(latent_dim=4))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, 28, 28\)"):
        model(torch.rand(2, 28, 28))
    with pytest.raises(ValueError, match=r"expected codes of shape \(B, 4\)"):
        model.decode(torch.rand(2, 3))
    with pytest.raises(ValueError, match="latent_dim"):
        AutoencoderConfig(latent_dim=0)
    with pytest.raises(ValueError, match="divisible"):
        AutoencoderConfig(image_size=30)


def test_save_load_identity(tmp_path):
    torch.manual_seed(0)
    model = Autoencoder(AutoencoderConfig(latent_dim=3, channels=(8, 16), noise_std=0.2)).eval()
    save_checkpoint(model, tmp_path / "ae", record={"metrics": {"test_mse": 0.5}})
    assert sorted(p.name for p in (tmp_path / "ae").iterdir()) == ["config.json", "model.safetensors", "training.json"]
    stored = json.loads((tmp_path / "ae" / "config.json").read_text())
    assert stored["model_type"] == "autoencoder" and stored["config"]["channels"] == [8, 16]
    loaded = load_checkpoint(tmp_path / "ae")
    assert loaded.config == model.config
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))
    assert read_record(tmp_path / "ae")["metrics"]["test_mse"] == 0.5


def test_loss_decreases_and_tiny_batch_is_overfit():
    torch.manual_seed(0)
    x = torch.rand(8, 1, 28, 28).round()  # 8 random binary images: nothing to generalise, only to memorise
    model = Autoencoder(AutoencoderConfig(latent_dim=16, channels=(16, 32)))
    history = train(model, [(x,)] * 400, reconstruction_loss, epochs=1, lr=3e-3, device="cpu", progress=False)
    assert history.step_losses[-1] < 0.5 * history.step_losses[0]
    assert reconstruction_error(model, x).mean() < 0.02  # started near 0.25


def test_denoising_corrupts_inputs_reproducibly():
    x = torch.rand(4, 1, 28, 28)
    noisy = corrupt(x, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, corrupt(x, 0.5, torch.Generator().manual_seed(0)))
    assert 0.0 <= noisy.min() and noisy.max() <= 1.0 and not torch.equal(noisy, x)
    plain = Autoencoder(AutoencoderConfig(latent_dim=4))
    denoising = Autoencoder(AutoencoderConfig(latent_dim=4, noise_std=0.5))
    denoising.load_state_dict(plain.state_dict())
    with torch.no_grad():
        expected = ((denoising(corrupt(x, 0.5, torch.Generator().manual_seed(1))) - x) ** 2).mean()
        loss = reconstruction_loss(denoising, (x,), torch.Generator().manual_seed(1))
        assert torch.allclose(loss, expected)
        assert not torch.allclose(loss, reconstruction_loss(plain, (x,), None))


def test_reconstruction_error_is_per_image_mse():
    model = Autoencoder(AutoencoderConfig(latent_dim=2)).eval()
    x = torch.rand(7, 1, 28, 28)
    with torch.no_grad():
        expected = ((model(x) - x) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(reconstruction_error(model, x, batch_size=3), expected)
    assert encode_all(model, x, batch_size=3).shape == (7, 2)


SWEEP = ["ae-latent2", "ae-latent4", "ae-latent8", "ae-latent16", "ae-latent32"]


@pytest.mark.parametrize("name", SWEEP + ["ae-denoising", "ae-anomaly"])
def test_shipped_autoencoders_match_their_records(name, mnist_test):
    model = load_checkpoint(name)
    metrics = read_record(name)["metrics"]
    errors = reconstruction_error(model, mnist_test.images)
    if "held_out_digit" in metrics:
        errors = errors[mnist_test.labels != metrics["held_out_digit"]]
    assert abs(float(errors.mean()) - metrics["test_mse"]) < 1e-5


def test_bigger_bottleneck_reconstructs_better():
    mses = [read_record(name)["metrics"]["test_mse"] for name in SWEEP]
    assert mses == sorted(mses, reverse=True), mses
    assert mses[-1] < 0.5 * mses[0]


def test_shipped_denoiser_removes_noise(mnist_test):
    model = load_checkpoint("ae-denoising")
    noisy = corrupt(mnist_test.images, 0.5, torch.Generator().manual_seed(1))
    with torch.no_grad():
        denoised_mse = ((model(noisy) - mnist_test.images) ** 2).mean()
    assert denoised_mse < 0.25 * ((noisy - mnist_test.images) ** 2).mean()


def test_fitted_gaussian_sample_draws_from_the_codes_distribution():
    model = Autoencoder(AutoencoderConfig(latent_dim=3)).eval()
    images = torch.rand(50, 1, 28, 28)
    samples = fitted_gaussian_sample(model, images, 6, generator=torch.Generator().manual_seed(0))
    codes = encode_all(model, images)
    eps = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))  # the draws model.sample makes
    expected_codes = codes.mean(0) + eps @ torch.linalg.cholesky(torch.cov(codes.T)).T
    with torch.no_grad():
        torch.testing.assert_close(samples, model.decode(expected_codes))
    with pytest.raises(ValueError, match="more images than code dimensions"):
        fitted_gaussian_sample(model, images[:3], 2)
