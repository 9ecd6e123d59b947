import math

import pytest
import torch

from coursekit.checkpoint import load_checkpoint, read_record, save_checkpoint
from coursekit.models.vae import (VAE, VAEConfig, attribute_vector, binarize, elbo, gaussian_kl, importance_weighted_log_likelihood,
                                  log_likelihood, reparameterize, vae_loss)
from coursekit.training import train

TINY = dict(channels=(4,), image_size=8)


def test_shapes_and_bad_input():
    model = VAE(VAEConfig(latent_dim=5))
    x = torch.rand(3, 1, 28, 28)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, 5)
    assert model(x, torch.Generator().manual_seed(0)).shape == (3, 1, 28, 28)
    samples = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, 1, 28, 28) and 0 <= samples.min() and samples.max() <= 1
    path = model.interpolate(x[0], x[1], steps=6)
    assert path.shape == (6, 1, 28, 28)
    torch.testing.assert_close(path[0], model.decode(model.encode(x[:1])[0])[0])
    torch.testing.assert_close(path[-1], model.decode(model.encode(x[1:2])[0])[0])
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, 28, 28\)"):
        model.encode(torch.rand(3, 28, 28))
    with pytest.raises(ValueError, match=r"expected codes of shape \(B, 5\)"):
        model.decode(torch.rand(3, 4))
    with pytest.raises(ValueError, match="decoder must be one of"):
        VAEConfig(decoder="laplace")
    with pytest.raises(ValueError, match="steps"):
        model.interpolate(x[0], x[1], steps=1)


def test_reparameterize_is_exact_and_lets_gradients_through():
    mu = torch.tensor([[0.5, -1.0]], requires_grad=True)
    logvar = torch.tensor([[0.0, math.log(4.0)]], requires_grad=True)
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    eps = torch.randn(1, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z, mu + torch.tensor([[1.0, 2.0]]) * eps)
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones(1, 2))
    torch.testing.assert_close(logvar.grad, 0.5 * torch.tensor([[1.0, 2.0]]) * eps)


def test_closed_form_kl_matches_monte_carlo():
    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 4, generator=generator)
    logvar = torch.randn(3, 4, generator=generator) * 0.5
    closed = gaussian_kl(mu, logvar)
    z = reparameterize(mu.expand(200_000, 3, 4), logvar.expand(200_000, 3, 4), generator)  # (S, B, D)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(0.0, 1.0)
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean(0)  # (B,)
    torch.testing.assert_close(monte_carlo, closed, atol=0.03, rtol=0.01)
    exact = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(closed, exact)
    assert torch.all(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)) == 0)


def test_log_likelihoods_match_torch_distributions():
    x = binarize(torch.rand(2, 1, 8, 8), torch.Generator().manual_seed(0))
    logits = torch.randn(2, 1, 8, 8)
    bernoulli = VAE(VAEConfig(latent_dim=2, **TINY))
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(dim=(1, 2, 3))
    torch.testing.assert_close(log_likelihood(bernoulli, x, logits), expected)
    gaussian = VAE(VAEConfig(latent_dim=2, decoder="gaussian", decoder_std=0.2, **TINY))
    grey = torch.rand(2, 1, 8, 8)
    expected = torch.distributions.Normal(torch.sigmoid(logits), 0.2).log_prob(grey).sum(dim=(1, 2, 3))
    torch.testing.assert_close(log_likelihood(gaussian, grey, logits), expected)


def test_elbo_lower_bounds_the_exact_log_likelihood_of_a_tiny_model():
    """With a 1-D latent, log p(x) and the ELBO are integrals over z that quadrature computes exactly."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=1, **TINY))
    x = binarize(torch.rand(3, 1, 8, 8), torch.Generator().manual_seed(1))
    train(model, [(x,)] * 300, vae_loss, lr=3e-3, device="cpu", progress=False)  # so that z matters
    z = torch.linspace(-10, 10, 8001)[:, None]  # (G, 1)
    dz = float(z[1, 0] - z[0, 0])
    with torch.no_grad():
        log_px_z = torch.stack([log_likelihood(model, image.expand(len(z), 1, 8, 8), model.decode_logits(z)) for image in x])
        mu, logvar = model.encode(x)  # (3, 1) each
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z[:, 0])  # (G,)
    exact_log_px = torch.logsumexp(log_px_z + log_pz, dim=1) + math.log(dz)  # (3,)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z[:, 0]).exp()  # (3, G)
    exact_elbo = (q * log_px_z).sum(dim=1) * dz - gaussian_kl(mu, logvar)  # (3,)
    assert torch.all(exact_elbo < exact_log_px)  # Jensen's inequality
    with torch.no_grad():
        monte_carlo = torch.stack([elbo(model, x, 1.0, torch.Generator().manual_seed(s))["elbo"] for s in range(400)])
    torch.testing.assert_close(monte_carlo.mean(0), exact_elbo, atol=4 * float(monte_carlo.std(0).max()) / 20, rtol=0)
    # The importance-weighted bound with many samples closes the gap to log p(x).
    iw_5000 = importance_weighted_log_likelihood(model, x, 5000, torch.Generator().manual_seed(3))
    torch.testing.assert_close(iw_5000, exact_log_px, atol=0.02, rtol=0)
    assert torch.all(iw_5000 > exact_elbo)


def test_beta_weights_the_kl_term_and_loss_binarizes():
    model = VAE(VAEConfig(latent_dim=3, **TINY))
    x = binarize(torch.rand(4, 1, 8, 8), torch.Generator().manual_seed(0))
    one = elbo(model, x, 1.0, torch.Generator().manual_seed(5))
    four = elbo(model, x, 4.0, torch.Generator().manual_seed(5))
    torch.testing.assert_close(four["elbo"], one["reconstruction"] - 4 * one["kl"])
    grey = torch.rand(4, 1, 8, 8)
    loss = vae_loss(model, (grey,), torch.Generator().manual_seed(7))
    generator = torch.Generator().manual_seed(7)
    binary = binarize(grey, generator)
    torch.testing.assert_close(loss, -elbo(model, binary, 1.0, generator)["elbo"].mean())


def test_save_load_identity(tmp_path):
    model = VAE(VAEConfig(latent_dim=3, beta=2.0, **TINY)).eval()
    save_checkpoint(model, tmp_path / "vae")
    loaded = load_checkpoint(tmp_path / "vae")
    assert loaded.config == model.config
    x = torch.rand(2, 1, 8, 8)
    for a, b in zip(model.encode(x), loaded.encode(x)):
        assert torch.equal(a, b)
    assert torch.equal(loaded.sample(3, torch.Generator().manual_seed(0)), model.sample(3, torch.Generator().manual_seed(0)))


def test_tiny_batch_is_overfit():
    torch.manual_seed(0)
    x = binarize(torch.rand(8, 1, 8, 8), torch.Generator().manual_seed(0))
    model = VAE(VAEConfig(latent_dim=4, channels=(16,), image_size=8))
    history = train(model, [(x,)] * 600, vae_loss, epochs=1, lr=3e-3, device="cpu", progress=False)
    start, end = sum(history.step_losses[:20]) / 20, sum(history.step_losses[-20:]) / 20
    assert end < 0.6 * start, (start, end)  # 64 fair coins cost 44 nats; memorising costs far less


@pytest.mark.parametrize("name", ["vae", "vae-beta0.25", "vae-beta4", "vae-latent2", "vae-anomaly"])
def test_shipped_vaes_match_their_records(name, mnist_test):
    model = load_checkpoint(name)
    metrics = read_record(name)["metrics"]
    x = binarize(mnist_test.images, torch.Generator().manual_seed(0))
    with torch.no_grad():
        terms = elbo(model, x, 1.0, torch.Generator().manual_seed(1))
    assert abs(float(terms["elbo"].mean()) - metrics["test_elbo"]) < 1e-3
    assert metrics["test_iw_nll"] <= -metrics["test_elbo"]  # the IW bound is tighter than the ELBO
    assert metrics["evaluation"]["samples"]["fid_over_floor"] > 1.0
    assert sum(metrics["evaluation"]["samples"]["class_histogram"]) == 1000


def test_attribute_vector_is_a_difference_of_mean_codes_within_classes():
    codes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0],
                          [10.0, 0.0], [10.0, 1.0], [10.0, 2.0], [10.0, 3.0]])
    scores = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    # Class 0 grows along z_1 by 3 from its lowest to its highest quarter, class 1 along z_2.
    torch.testing.assert_close(attribute_vector(codes, scores, labels), torch.tensor([1.5, 1.5]))
    # Without labels the class difference leaks into the vector: the top quarter is all class 1.
    torch.testing.assert_close(attribute_vector(codes, scores), torch.tensor([9.5, 2.5]))
    with pytest.raises(ValueError, match="fraction"):
        attribute_vector(codes, scores, fraction=0.6)
    with pytest.raises(ValueError, match=r"scores \(N,\)"):
        attribute_vector(codes, scores[:3])
