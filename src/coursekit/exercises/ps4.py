"""Visible checks for exercise set ps4 (chapter 4, diffusion models: DDPM and DDIM).

Each ``check_*`` function takes the student's answer, raises ``AssertionError`` with a message
that says what was expected, and returns ``None`` when the answer passes. The visible test cells
of ``ps4.ipynb`` call them, and the notebook's last cell runs them all with
``self_check(globals())``. Passing here is necessary for the points, not sufficient: the grader
also runs hidden tests.

The references below are the formulas of the papers, evaluated in float64 (Ho et al. 2020, DDPM;
Song et al. 2021, DDIM), with timesteps indexed 0 .. T-1 as in :mod:`coursekit.schedulers`
(index ``t`` is the papers' ``t + 1``) and no clipping of the predicted x_0. Notation:
``alpha_bar_t`` is the cumulative product of the alphas up to and including ``t``, and
``alpha_bar_prev`` is 1 before the first step (``t - 1 = -1``).

Part (f) is the Fréchet distance between two Gaussians (Heusel et al. 2017, the formula behind FID),
``||mu_1 - mu_2||^2 + Tr(Sigma_1 + Sigma_2 - 2 (Sigma_1 Sigma_2)^(1/2))``, checked against closed forms
for diagonal covariances.

The checks need no data and no checkpoint: they use random tensors from fixed seeds and a tiny
:class:`ToyNoisePredictor`, and take milliseconds.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from coursekit.exercises import selfcheck
from coursekit.exercises.selfcheck import Part

NUM_TIMESTEPS, BETA_START, BETA_END = 1000, 1e-4, 0.02  # the DDPM paper's linear schedule


def _random(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol)


def _require_tensor(value: Any, name: str) -> None:
    assert isinstance(value, torch.Tensor), f"{name} should return a tensor, got {type(value).__name__}"


def _per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` values shaped ``(B, 1, ..., 1)`` to broadcast against ``like`` (one value per example)."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


# --- the references: the papers' formulas in float64 ----------------------------------------------

def reference_schedule(num_timesteps: int, beta_start: float, beta_end: float):
    """``(betas, alphas, alpha_bars)`` in float64: beta_t linear from beta_start to beta_end, both included."""
    betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
    alphas = 1 - betas
    return betas, alphas, torch.cumprod(alphas, dim=0)


def reference_schedule_float32(num_timesteps: int = NUM_TIMESTEPS, beta_start: float = BETA_START,
                               beta_end: float = BETA_END) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What part (a) should return: the linear schedule computed in float64, stored as float32."""
    return tuple(values.float() for values in reference_schedule(num_timesteps, beta_start, beta_end))


def reference_q_sample(x0, t, noise, alpha_bars) -> torch.Tensor:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, one t per example (DDPM eq. 4)."""
    alpha_bar = _per_example(alpha_bars.double()[t], x0)
    return alpha_bar.sqrt() * x0.double() + (1 - alpha_bar).sqrt() * noise.double()


def _alpha_bar_prev(alpha_bars: torch.Tensor, t_prev: int) -> torch.Tensor:
    return alpha_bars.double()[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)


def reference_ddpm_mean(eps_hat, t, x_t, betas, alpha_bars) -> torch.Tensor:
    """mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_t)  (DDPM eq. 11)."""
    beta_t, alpha_bar_t = betas.double()[t], alpha_bars.double()[t]
    return (x_t.double() - beta_t / (1 - alpha_bar_t).sqrt() * eps_hat.double()) / (1 - beta_t).sqrt()


def reference_ddpm_std(t, betas, alpha_bars) -> torch.Tensor:
    """sqrt(beta_tilde_t), beta_tilde_t = (1 - alpha_bar_prev) / (1 - alpha_bar_t) beta_t  (DDPM eq. 7); 0 at t = 0."""
    beta_t, alpha_bar_t, alpha_bar_prev = betas.double()[t], alpha_bars.double()[t], _alpha_bar_prev(alpha_bars, t - 1)
    return ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t).sqrt()


def reference_ddpm_step(eps_hat, t, x_t, betas, alpha_bars, z) -> torch.Tensor:
    """x_{t-1} = mu_theta + sqrt(beta_tilde_t) z, with no noise on the last step t = 0 (DDPM algorithm 2)."""
    mean = reference_ddpm_mean(eps_hat, t, x_t, betas, alpha_bars)
    return mean if t == 0 else mean + reference_ddpm_std(t, betas, alpha_bars) * z.double()


def _wrong_prev_std(t, betas, alpha_bars) -> torch.Tensor:
    """sqrt(beta_tilde_t) computed with alpha_bars[t + 1] in place of alpha_bar_prev (a mistake the checks name)."""
    beta_t, alpha_bar_t, alpha_bar_next = betas.double()[t], alpha_bars.double()[t], alpha_bars.double()[t + 1]
    return ((1 - alpha_bar_next) / (1 - alpha_bar_t) * beta_t).sqrt()


def reference_ddim_sigma(t, t_prev, alpha_bars, eta) -> torch.Tensor:
    """sigma_t = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev)  (DDIM eq. 16)."""
    alpha_bar_t, alpha_bar_prev = alpha_bars.double()[t], _alpha_bar_prev(alpha_bars, t_prev)
    return eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)).sqrt()


def reference_ddim_step(eps_hat, t, t_prev, x_t, alpha_bars, eta, z, *, final_alpha_bar=None,
                         direction_sigma=True) -> torch.Tensor:
    """x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma^2) eps_hat + sigma z  (DDIM eq. 12).

    ``final_alpha_bar`` and ``direction_sigma`` change the formula into two common mistakes."""
    alpha_bar_t = alpha_bars.double()[t]
    alpha_bar_prev = _alpha_bar_prev(alpha_bars, t_prev)
    if t_prev < 0 and final_alpha_bar is not None:
        alpha_bar_prev = torch.as_tensor(final_alpha_bar, dtype=torch.float64)
    sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)).sqrt()
    x0_hat = (x_t.double() - (1 - alpha_bar_t).sqrt() * eps_hat.double()) / alpha_bar_t.sqrt()  # eq. 9
    direction = (1 - alpha_bar_prev - (sigma**2 if direction_sigma else 0)).sqrt() * eps_hat.double()
    return alpha_bar_prev.sqrt() * x0_hat + direction + sigma * z.double()


def reference_frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^(1/2)) in float64, with scipy's matrix
    square root and the imaginary part that rounding leaves in it dropped (Heusel et al. 2017)."""
    import numpy as np
    import scipy.linalg

    mu1, sigma1, mu2, sigma2 = (torch.as_tensor(value).double().numpy() for value in (mu1, sigma1, mu2, sigma2))
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)  # (D, D)
    diff = mu1 - mu2
    return float((diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)).real)


# --- models for the checks and the demos -----------------------------------------------------------

class ToyNoisePredictor(nn.Module):
    """A stand-in for a noise-predicting network: ``eps_hat = weight * x_t + bias * t / 1000``.

    Two learnable numbers, drawn from ``seed``; works for any shape of ``x_t`` with one ``t`` per example.
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(0.5 + torch.rand((), generator=generator))
        self.bias = nn.Parameter(1.0 + torch.rand((), generator=generator))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.weight * x_t + self.bias * _per_example(t.to(x_t.dtype), x_t) / 1000


class RecordingModel(nn.Module):
    """Wraps a noise predictor and records a copy of the ``(x_t, t)`` of every call in ``calls``.

    The output, and its gradients, are those of ``model``: a loss computed through the wrapper
    trains the wrapped network. The tests use it to see how often, and on what, a loss runs the network.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.calls: list[tuple[torch.Tensor, Any]] = []

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append((x_t.detach().clone(), t.detach().clone() if isinstance(t, torch.Tensor) else t))
        return self.model(x_t, t)


class ExactNoisePredictor(nn.Module):
    """The best possible noise predictor for a training set of finitely many points ``data``.

    For x_t ~ q(x_t | x_0) with x_0 drawn uniformly from ``data``, the mean squared error of part (c)
    is minimised by eps(x_t, t) = (x_t - sqrt(alpha_bar_t) E[x_0 | x_t]) / sqrt(1 - alpha_bar_t), where
    E[x_0 | x_t] averages the data points with weights softmax(-|x_t - sqrt(alpha_bar_t) x_i|^2 / (2 (1 - alpha_bar_t))).
    With one point, E[x_0 | x_t] is that point. Computed in float64, returned in the dtype of ``x_t``.
    """

    def __init__(self, data: torch.Tensor, alpha_bars: torch.Tensor):
        super().__init__()
        self.data = data.double()  # (N, ...)
        self.alpha_bars = alpha_bars.double()  # (T,)

    def posterior_mean(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """E[x_0 | x_t] under the training set, in float64, with the shape of ``x_t``."""
        t = torch.as_tensor(t).long().expand(x_t.shape[0])
        alpha_bar = self.alpha_bars[t][:, None]  # (B, 1)
        x = x_t.double().flatten(1)  # (B, D)
        data = self.data.flatten(1)  # (N, D)
        squared_distances = ((x[:, None, :] - alpha_bar.sqrt()[:, :, None] * data[None]) ** 2).sum(dim=2)  # (B, N)
        weights = torch.softmax(-squared_distances / (2 * (1 - alpha_bar)), dim=1)  # (B, N)
        return (weights @ data).reshape(x_t.shape)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t).long().expand(x_t.shape[0])
        alpha_bar = _per_example(self.alpha_bars[t], x_t)
        eps = (x_t.double() - alpha_bar.sqrt() * self.posterior_mean(x_t, t)) / (1 - alpha_bar).sqrt()
        return eps.to(x_t.dtype)


# --- the checks --------------------------------------------------------------------------------------

def check_linear_schedule(linear_schedule: Callable) -> None:
    """Part (a): ``(betas, alphas, alpha_bars)``, float32 of shape ``(T,)``, alpha_bar the cumulative product."""
    result = linear_schedule(NUM_TIMESTEPS, BETA_START, BETA_END)
    assert isinstance(result, (tuple, list)) and len(result) == 3, (
        "linear_schedule should return three tensors: betas, alphas, alpha_bars"
    )
    for name, values in zip(("betas", "alphas", "alpha_bars"), result):
        _require_tensor(values, f"linear_schedule's {name}")
        assert tuple(values.shape) == (NUM_TIMESTEPS,), (
            f"{name} should have one value per timestep, shape ({NUM_TIMESTEPS},), got {tuple(values.shape)}"
        )
        assert values.dtype == torch.float32, (
            f"{name} should be float32 (compute in float64, then .float()), got {values.dtype}"
        )
    betas, alphas, alpha_bars = result
    assert abs(betas[0].item() - BETA_START) < 1e-9, f"betas[0] should be beta_start = {BETA_START}, got {betas[0].item()}"
    assert (betas.diff() > 0).all(), "betas should rise from beta_start to beta_end"
    assert _close(alphas, 1 - betas.double(), rtol=1e-6, atol=1e-7), "alphas should be 1 - betas"
    expected = torch.cumprod(alphas.double(), dim=0)
    if _close(alpha_bars, torch.cumsum(alphas.double(), dim=0)):
        raise AssertionError("alpha_bar is a cumulative product of the alphas (torch.cumprod), not a sum")
    if abs(alpha_bars[0].item() - 1) < 1e-9 or _close(alpha_bars[1:], expected[:-1], rtol=1e-5, atol=0):
        raise AssertionError(
            "alpha_bars is shifted by one: alpha_bar_t = prod_{s <= t} alpha_s includes alpha_t itself, "
            f"so alpha_bars[0] = alphas[0] = {alphas[0].item():.6f}, not 1"
        )
    assert _close(alpha_bars, expected, rtol=1e-5, atol=0), (
        "expected alpha_bars = torch.cumprod(alphas) (computed in float64); "
        f"alpha_bars[999] expected {expected[-1].item():.6e}, got {alpha_bars[-1].item():.6e}"
    )
    betas, _, alpha_bars = linear_schedule(4, 0.1, 0.4)
    assert tuple(betas.shape) == (4,) and abs(betas[0].item() - 0.1) < 1e-7, (
        "linear_schedule(4, 0.1, 0.4) should give 4 betas starting at 0.1: use the arguments, not fixed values"
    )


def check_q_sample(q_sample: Callable) -> None:
    """Part (b): x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise with each example's own t."""
    _, _, alpha_bars = reference_schedule_float32()
    x0, noise = _random(4, 1, 5, 5, seed=1), _random(4, 1, 5, 5, seed=2)
    t = torch.tensor([0, 1, 500, 998])
    try:
        x_t = q_sample(x0, t, noise, alpha_bars)
    except RuntimeError as error:
        if "size of tensor" in str(error):
            raise AssertionError(
                f"{error}: alpha_bars[t] has shape (4,) for 4 examples; reshape it to (4, 1, 1, 1) "
                "so that each example is scaled by its own alpha_bar"
            ) from None
        raise
    _require_tensor(x_t, "q_sample")
    assert tuple(x_t.shape) == (4, 1, 5, 5), f"x_t should have the shape of x0, (4, 1, 5, 5), got {tuple(x_t.shape)}"
    ab = _per_example(alpha_bars.double()[t], x0)
    if _close(x_t, ab * x0 + (1 - ab) * noise):
        raise AssertionError("x_t uses alpha_bar where it needs sqrt(alpha_bar): x_t = sqrt(ab) x0 + sqrt(1 - ab) noise")
    for shifted, index in (("t - 1", (t - 1) % NUM_TIMESTEPS), ("t + 1", t + 1)):
        if _close(x_t, reference_q_sample(x0, index, noise, alpha_bars)):
            raise AssertionError(
                f"x_t uses alpha_bars[{shifted}]: timesteps are indexed from 0 here, use alpha_bars[t]"
            )
    for i in range(4):
        if _close(x_t, reference_q_sample(x0, t[i].expand(4), noise, alpha_bars)):
            raise AssertionError(f"every example got t = {t[i].item()}: use each example's own t[i]")
    expected = reference_q_sample(x0, t, noise, alpha_bars)
    assert _close(x_t, expected), (
        "expected x_t = sqrt(alpha_bars[t]) x0 + sqrt(1 - alpha_bars[t]) noise, one alpha_bar per example; "
        f"x_t[1, 0, 0] expected {expected[1, 0, 0].tolist()}, got {x_t[1, 0, 0].tolist()}"
    )


def check_noise_prediction_loss(noise_prediction_loss: Callable) -> None:
    """Part (c): mean over every number of (model(x_t, t) - noise)^2, with x_t from q(x_t | x0)."""
    _, _, alpha_bars = reference_schedule_float32()
    model = ToyNoisePredictor(seed=3)
    x0, noise = _random(4, 1, 5, 5, seed=4), _random(4, 1, 5, 5, seed=5)
    t = torch.tensor([3, 250, 600, 999])
    loss = noise_prediction_loss(model, x0, t, noise, alpha_bars)
    _require_tensor(loss, "noise_prediction_loss")
    assert loss.dim() == 0, f"the loss should be a single number (a 0-d tensor), got shape {tuple(loss.shape)}"
    with torch.no_grad():
        x_t = reference_q_sample(x0, t, noise, alpha_bars).float()
        eps_hat = model(x_t, t)
        expected = F.mse_loss(eps_hat, noise).item()
        mistakes = {
            "the target is the noise, not x0: the network learns to predict eps": F.mse_loss(eps_hat, x0),
            "the network sees the noisy x_t, not the clean x0: eps_hat = model(x_t, t)": F.mse_loss(model(x0, t), noise),
            f"the loss is {x0.numel()} times too large: average the squared error (mean), do not sum it":
                F.mse_loss(eps_hat, noise, reduction="sum"),
            "the loss is not squared: use the mean squared error": (eps_hat - noise).abs().mean(),
        }
    value = loss.item()
    for message, wrong in mistakes.items():
        if abs(value - wrong.item()) <= 1e-5 * abs(wrong.item()) and abs(value - expected) > 1e-5 * abs(expected):
            raise AssertionError(message)
    assert abs(value - expected) <= 1e-5 * abs(expected), (
        f"expected mean((model(x_t, t) - noise)**2) = {expected:.6f} with x_t from q(x_t | x0), got {value:.6f}"
    )


# Near t = 0, 1 - alpha_bar_t is about 1e-4, and the float32 alpha_bars lose 3 of their digits there. The
# form of the mean in eq. 11 keeps them; the equivalent form through x0_hat and the posterior mean
# (DDPM eqs. 6-7) does not, and is off by up to about 3e-4 at t = 1. Both are right, so both pass.
DDPM_TOLERANCE = {"rtol": 1e-3, "atol": 1e-4}


def check_ddpm_step(ddpm_step: Callable) -> None:
    """Part (d): x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_t) + sqrt(beta_tilde_t) z."""
    betas, alphas, alpha_bars = reference_schedule_float32()
    x_t, eps_hat, z = _random(2, 1, 4, 4, seed=6), _random(2, 1, 4, 4, seed=7), _random(2, 1, 4, 4, seed=8)
    for t in (1, 500, 999):
        mean = ddpm_step(eps_hat, t, x_t, betas, alphas, alpha_bars, torch.zeros_like(z))
        _require_tensor(mean, "ddpm_step")
        assert tuple(mean.shape) == (2, 1, 4, 4), f"x_(t-1) should have the shape of x_t, (2, 1, 4, 4), got {tuple(mean.shape)}"
        expected_mean = reference_ddpm_mean(eps_hat, t, x_t, betas, alpha_bars)
        if not _close(mean, expected_mean, **DDPM_TOLERANCE):
            beta_t, alpha_bar_t = betas.double()[t], alpha_bars.double()[t]
            wrong_means = {
                "divide by sqrt(alpha_t), not alpha_t": (x_t - beta_t / (1 - alpha_bar_t).sqrt() * eps_hat) / (1 - beta_t),
                "the noise coefficient is beta_t / sqrt(1 - alpha_bar_t), not beta_t / (1 - alpha_bar_t)":
                    (x_t - beta_t / (1 - alpha_bar_t) * eps_hat) / (1 - beta_t).sqrt(),
            }
            for shifted in (t - 1, t + 1):
                if 0 <= shifted < NUM_TIMESTEPS:
                    wrong = (x_t - beta_t / (1 - alpha_bars.double()[shifted]).sqrt() * eps_hat) / (1 - beta_t).sqrt()
                    wrong_means[f"alpha_bar_t is alpha_bars[t], not alpha_bars[{'t - 1' if shifted < t else 't + 1'}]: "
                                "timesteps are indexed from 0 here"] = wrong
            for message, wrong in wrong_means.items():
                if _close(mean, wrong, **DDPM_TOLERANCE):
                    raise AssertionError(f"t={t}, z = 0: {message} (DDPM eq. 11)")
            raise AssertionError(
                f"t={t}: with z = 0 the step should return the mean "
                "(x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_t) "
                f"(DDPM eq. 11); first value expected {expected_mean.flatten()[0].item():.6f}, got {mean.flatten()[0].item():.6f}"
            )
        x_prev = ddpm_step(eps_hat, t, x_t, betas, alphas, alpha_bars, z)
        std = ((x_prev.double() - mean.double()) * z).sum() / (z * z).sum()  # the scale that z was given
        expected_std = reference_ddpm_std(t, betas, alpha_bars)
        if not torch.isclose(std, expected_std, rtol=1e-3, atol=1e-7):
            beta_t = betas.double()[t]
            if torch.isclose(std, beta_t.sqrt(), rtol=1e-3):
                raise AssertionError(f"t={t}: the noise has variance beta_t; this set uses the posterior variance "
                                     "beta_tilde_t = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t (DDPM eq. 7)")
            if torch.isclose(std, expected_std**2, rtol=1e-3):
                raise AssertionError(f"t={t}: z is scaled by the variance beta_tilde_t; scale it by the standard "
                                     "deviation, sqrt(beta_tilde_t)")
            if t < NUM_TIMESTEPS - 1 and torch.isclose(std, _wrong_prev_std(t, betas, alpha_bars), rtol=1e-3):
                raise AssertionError(f"t={t}: beta_tilde uses alpha_bars[t + 1] for alpha_bar_prev: the step goes from "
                                     "t to t - 1, so alpha_bar_prev = alpha_bars[t - 1]")
            raise AssertionError(
                f"t={t}: the noise should be sqrt(beta_tilde_t) z = {expected_std.item():.6f} z, got {std.item():.6f} z"
            )
        assert _close(x_prev, expected_mean + expected_std * z, **DDPM_TOLERANCE), (
            f"t={t}: expected x_(t-1) = mean + sqrt(beta_tilde_t) z, with the z passed in"
        )


def check_ddim_step(ddim_step: Callable) -> None:
    """Part (e): x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z (DDIM eq. 12)."""
    _, _, alpha_bars = reference_schedule_float32()
    x_t, eps_hat, z = _random(2, 1, 4, 4, seed=9), _random(2, 1, 4, 4, seed=10), _random(2, 1, 4, 4, seed=11)
    for t, t_prev, eta in ((999, 899, 0.0), (500, 400, 1.0), (99, -1, 0.0), (300, 250, 1.0), (20, 0, 0.0)):
        x_prev = ddim_step(eps_hat, t, t_prev, x_t, alpha_bars, eta, z)
        _require_tensor(x_prev, "ddim_step")
        assert tuple(x_prev.shape) == (2, 1, 4, 4), (
            f"x_prev should have the shape of x_t, (2, 1, 4, 4), got {tuple(x_prev.shape)}"
        )
        expected = reference_ddim_step(eps_hat, t, t_prev, x_t, alpha_bars, eta, z)
        if _close(x_prev, expected):
            continue
        case = f"t={t}, t_prev={t_prev}, eta={eta}"
        if eta == 0 and _close(x_prev, reference_ddim_step(eps_hat, t, t_prev, x_t, alpha_bars, 1.0, z)):
            raise AssertionError(f"{case}: with eta = 0 the step is deterministic (sigma = 0): sigma_t = eta * sqrt(...)")
        if t_prev < 0 and (not torch.isfinite(x_prev).all() or _close(
                x_prev, reference_ddim_step(eps_hat, t, t_prev, x_t, alpha_bars, eta, z, final_alpha_bar=alpha_bars[-1]))):
            raise AssertionError(f"{case}: t_prev = -1 means the clean x_0, alpha_bar_prev = 1; alpha_bars[-1] is "
                                 "alpha_bar at the last timestep, T - 1 (got "
                                 f"{'NaN, the square root of a negative number' if x_prev.isnan().any() else 'a noisy x'})")
        if eta > 0 and _close(x_prev, reference_ddim_step(eps_hat, t, t_prev, x_t, alpha_bars, eta, z,
                                                           direction_sigma=False)):
            raise AssertionError(f"{case}: the direction pointing to x_t is sqrt(1 - alpha_bar_prev - sigma_t**2) eps_hat: "
                                 "the noise sigma_t z takes its share of the variance")
        raise AssertionError(
            f"{case}: expected sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma**2) eps_hat + sigma z "
            f"(DDIM eq. 12); first value expected {expected.flatten()[0].item():.6f}, got {x_prev.flatten()[0].item():.6f}"
        )


def _diagonal_frechet(mu1, variances1, mu2, variances2) -> float:
    """The closed form for diagonal covariances: ||mu1 - mu2||^2 + sum_i (sqrt(v1_i) - sqrt(v2_i))^2."""
    return float(((mu1 - mu2) ** 2).sum() + ((variances1.sqrt() - variances2.sqrt()) ** 2).sum())


def check_frechet_distance(frechet_distance: Callable) -> None:
    """Part (f): ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), a Python float."""
    mu1, mu2 = _random(6, seed=12).double(), _random(6, seed=13).double()
    variances1 = 0.5 + torch.rand(6, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    variances2 = 0.5 + 2 * torch.rand(6, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    sigma1, sigma2 = torch.diag(variances1), torch.diag(variances2)
    value = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert isinstance(value, float), f"frechet_distance should return a Python float, got {type(value).__name__}"
    expected = _diagonal_frechet(mu1, variances1, mu2, variances2)
    if abs(value - expected) > 1e-6 * expected:
        mean_term = float(((mu1 - mu2) ** 2).sum())
        traces = float(variances1.sum() + variances2.sum())
        cross = float((variances1 * variances2).sqrt().sum())  # Tr((sigma1 sigma2)^(1/2)) for diagonal covariances
        mistakes = {
            "the cross term is -2 Tr((Sigma1 Sigma2)^(1/2)): the factor 2 is missing": mean_term + traces - cross,
            "the cross term needs the matrix square root, Tr((Sigma1 Sigma2)^(1/2)), not Tr(Sigma1 Sigma2)":
                mean_term + traces - 2 * float((variances1 * variances2).sum()),
            "the mean term is the squared distance ||mu1 - mu2||^2, not the distance itself":
                mean_term ** 0.5 + traces - 2 * cross,
        }
        for message, wrong in mistakes.items():
            if abs(value - wrong) <= 1e-6 * abs(wrong):
                raise AssertionError(message)
        raise AssertionError(
            f"diagonal covariances: expected ||mu1 - mu2||^2 + sum_i (sqrt(v1_i) - sqrt(v2_i))^2 = {expected:.6f}, "
            f"got {value:.6f}")
    same = frechet_distance(mu1, sigma1, mu1.clone(), sigma1.clone())
    assert abs(same) < 1e-8, f"two identical Gaussians are at distance 0, got {same}"
    shifted = frechet_distance(mu1, sigma1, mu2, sigma1)
    expected_shift = float(((mu1 - mu2) ** 2).sum())
    assert abs(shifted - expected_shift) <= 1e-6 * expected_shift, (
        f"the same covariance and means apart: expected ||mu1 - mu2||^2 = {expected_shift:.6f}, got {shifted:.6f}")


PARTS = (
    Part("a", "linear_schedule", 2, ("linear_schedule",), check_linear_schedule),
    Part("b", "q_sample", 3, ("q_sample",), check_q_sample),
    Part("c", "noise_prediction_loss", 2, ("noise_prediction_loss",), check_noise_prediction_loss),
    Part("d", "ddpm_step", 4, ("ddpm_step",), check_ddpm_step),
    Part("e", "ddim_step", 4, ("ddim_step",), check_ddim_step),
    Part("f", "frechet_distance", 3, ("frechet_distance",), check_frechet_distance),
)


def run_checks(namespace: dict[str, Any]) -> list[tuple[Part, str, str]]:
    """``(part, status, reason)`` for every part, status one of "pass", "FAIL", "not attempted"."""
    return selfcheck.run_checks(PARTS, namespace)


def self_check(namespace: dict[str, Any]) -> list[tuple[Part, str, str]]:
    """Print which parts pass their visible checks; call it as ``self_check(globals())``."""
    return selfcheck.self_check(PARTS, namespace)
