"""Noise schedules and the DDPM / DDIM samplers, written out so each line can be read against the papers.

Notation (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", hereafter DDPM; Song et al.
2021, "Denoising Diffusion Implicit Models", hereafter DDIM):

    beta_t         variance of the noise added at forward step t           (DDPM eq. 2)
    alpha_t        = 1 - beta_t
    alpha_bar_t    = prod_{s <= t} alpha_s                                 (DDPM, before eq. 4)
    q(x_t | x_0)   = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)        (DDPM eq. 4)

Timesteps are indexed 0 .. T-1 as in diffusers (the papers count 1 .. T): index ``t`` here is the
paper's ``t + 1``. Schedules are computed in float64 and stored as float32.

The two scheduler classes use diffusers' method names (``set_timesteps``, ``timesteps``,
``add_noise``, ``scale_model_input``, ``step`` returning ``prev_sample`` and
``pred_original_sample``), so a sampling loop written for one runs with the other, and the tests
check that both give the same numbers as diffusers' ``DDPMScheduler`` and ``DDIMScheduler``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

SCHEDULES = ("linear", "cosine")
# What the network outputs (diffusers' names): the noise eps, v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0
# (Salimans & Ho 2022), or x0 itself.
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing")


def linear_betas(num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """beta_t rising linearly from ``beta_start`` to ``beta_end`` (DDPM section 4)."""
    _check_steps(num_train_timesteps)
    return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64).float()


def cosine_alpha_bar(t: torch.Tensor | float, s: float = 0.008) -> torch.Tensor:
    """The cosine schedule's alpha_bar at continuous time ``t`` in [0, 1] (Nichol & Dhariwal 2021, eq. 17)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2


def cosine_betas(num_train_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """beta_t = 1 - alpha_bar(t+1) / alpha_bar(t) for the cosine alpha_bar, capped at ``max_beta``
    so that the last step does not destroy the chain (Nichol & Dhariwal 2021, section 3.2)."""
    _check_steps(num_train_timesteps)
    steps = torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
    alpha_bar = cosine_alpha_bar(steps, s)
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta).float()


@dataclass
class NoiseSchedule:
    """One noise schedule: every per-timestep quantity the samplers need, as float32 tensors of length T."""

    betas: torch.Tensor

    def __post_init__(self):
        betas = self.betas.double()
        if betas.ndim != 1 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("betas must be a 1-D tensor of values strictly between 0 and 1")
        alphas = 1 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        # The samplers compute their coefficients from these float64 values: near t = 0 a step divides
        # tiny numbers (beta_t ~ 1e-4 by 1 - alpha_bar_t ~ 1e-4), where float32 alone loses 3 digits.
        self.alphas_cumprod64 = alphas_cumprod
        self.betas = betas.float()
        self.alphas = alphas.float()
        self.alphas_cumprod = alphas_cumprod.float()
        # Signal-to-noise ratio of x_t: signal variance alpha_bar over noise variance 1 - alpha_bar.
        self.snr = (alphas_cumprod / (1 - alphas_cumprod)).float()

    def __len__(self) -> int:
        return len(self.betas)


def make_schedule(kind: str = "linear", num_train_timesteps: int = 1000, beta_start: float = 1e-4,
                  beta_end: float = 0.02) -> NoiseSchedule:
    """A :class:`NoiseSchedule` by name: ``"linear"`` or ``"cosine"``."""
    if kind == "linear":
        return NoiseSchedule(linear_betas(num_train_timesteps, beta_start, beta_end))
    if kind == "cosine":
        return NoiseSchedule(cosine_betas(num_train_timesteps))
    raise ValueError(f"unknown schedule {kind!r}; expected one of {SCHEDULES}")


def _check_steps(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of timesteps must be a positive int, got {n!r}")


def _gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] shaped to broadcast against ``like`` (one value per batch element)."""
    out = values.to(device=like.device, dtype=like.dtype)[t.to(like.device).long()]
    return out.reshape(out.shape + (1,) * (like.ndim - out.ndim))


@dataclass
class SchedulerOutput:
    """What ``step`` returns: x_{t-1} and the model's current guess of x_0."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor

    def __iter__(self):  # allows ``prev, x0 = scheduler.step(...)``
        return iter((self.prev_sample, self.pred_original_sample))


class _Scheduler:
    """What DDPM and DDIM share: the schedule, the forward process and the timestep grid."""

    init_noise_sigma = 1.0  # x_T ~ N(0, I): the start noise is not scaled (diffusers' name)
    order = 1

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 beta_schedule: str = "linear", clip_sample: bool = True, clip_sample_range: float = 1.0,
                 prediction_type: str = "epsilon", timestep_spacing: str = "leading"):
        # diffusers calls the cosine schedule "squaredcos_cap_v2"; both names are accepted here.
        kind = "cosine" if beta_schedule == "squaredcos_cap_v2" else beta_schedule
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {timestep_spacing!r}")
        self.prediction_type = prediction_type
        self.timestep_spacing = timestep_spacing
        self.schedule = make_schedule(kind, num_train_timesteps, beta_start, beta_end)
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = kind
        self.clip_sample = clip_sample
        self.clip_sample_range = clip_sample_range
        self.betas = self.schedule.betas
        self.alphas = self.schedule.alphas
        self.alphas_cumprod = self.schedule.alphas_cumprod
        self._alpha_bar64 = self.schedule.alphas_cumprod64
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)

    def _check_timesteps(self, timesteps: torch.Tensor) -> torch.Tensor:
        timesteps = torch.as_tensor(timesteps)
        if timesteps.dtype.is_floating_point and not torch.equal(timesteps, timesteps.round()):
            raise ValueError(f"timesteps must be whole numbers, got {timesteps}")
        timesteps = timesteps.long()
        if (timesteps < 0).any() or (timesteps >= self.num_train_timesteps).any():
            raise ValueError(f"timesteps must lie in 0 .. {self.num_train_timesteps - 1} "
                             f"(num_train_timesteps={self.num_train_timesteps}), got {timesteps.tolist()}")
        return timesteps

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """Choose the ``n`` timesteps to visit when sampling, from the largest (diffusers' two spacings):

        - ``"leading"``: every ``T // n``-th one counting up from 0 (0, 20, ..., 980 for n = 50), so
          the first step starts below T - 1;
        - ``"trailing"``: counting down from T - 1 in steps of T / n, rounded (999, 979, ..., 19),
          so the first step starts where the training noise ends (Lin et al. 2024).
        """
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be an int in 1 .. {self.num_train_timesteps}, "
                             f"got {num_inference_steps!r}")
        self.num_inference_steps = num_inference_steps
        T = self.num_train_timesteps
        if self.timestep_spacing == "leading":
            self.timesteps = (torch.arange(num_inference_steps) * (T // num_inference_steps)).flip(0).to(device)
        else:  # as diffusers: np.round(np.arange(T, 0, -T / n)) - 1, in float64
            grid = np.round(np.arange(T, 0, -T / num_inference_steps)).astype(np.int64) - 1
            self.timesteps = torch.from_numpy(grid).to(device)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Jump straight to x_t: sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4)."""
        timesteps = self._check_timesteps(timesteps)
        alpha_bar = _gather(self.alphas_cumprod, timesteps, original_samples)
        return alpha_bar.sqrt() * original_samples + (1 - alpha_bar).sqrt() * noise

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """DDPM and DDIM feed x_t to the model unchanged (other diffusers schedulers rescale it)."""
        return sample

    def _predict_x0_and_eps(self, model_output: torch.Tensor, sample: torch.Tensor,
                            alpha_bar_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's guess of x0 (clipped if ``clip_sample``) and of the noise eps, from its output.

        With a = sqrt(alpha_bar_t) and s = sqrt(1 - alpha_bar_t), x_t = a x0 + s eps, and:

        - epsilon:      x0 = (x_t - s eps) / a          (DDPM eq. 15; DDIM eq. 9)
        - v_prediction: x0 = a x_t - s v,  eps = a v + s x_t   (since a^2 + s^2 = 1)
        - sample:       x0 is the output,  eps = (x_t - a x0) / s

        Under epsilon-prediction an error in eps becomes an error s / a times larger in x0 (about 160
        at t = 999 of the linear schedule); under v-prediction x0's error is at most v's.
        The returned eps is the unclipped one (diffusers' ``pred_epsilon``).
        """
        a, s = float(alpha_bar_t.sqrt()), float((1 - alpha_bar_t).sqrt())
        if self.prediction_type == "epsilon":
            x0, eps = (sample - s * model_output) / a, model_output
        elif self.prediction_type == "v_prediction":
            x0, eps = a * sample - s * model_output, a * model_output + s * sample
        else:
            x0, eps = model_output, (sample - a * model_output) / s
        if self.clip_sample:
            x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        return x0, eps

    def _predict_x0(self, model_output: torch.Tensor, sample: torch.Tensor, alpha_bar_t: torch.Tensor) -> torch.Tensor:
        return self._predict_x0_and_eps(model_output, sample, alpha_bar_t)[0]

    def _noise(self, like: torch.Tensor, generator: torch.Generator | None,
               variance_noise: torch.Tensor | None = None) -> torch.Tensor:
        if variance_noise is not None:  # the caller supplies z (as diffusers' variance_noise=)
            if variance_noise.shape != like.shape:
                raise ValueError(f"variance_noise must have the sample's shape {tuple(like.shape)}, "
                                 f"got {tuple(variance_noise.shape)}")
            return variance_noise.to(like.device, like.dtype)
        device = generator.device if generator is not None else like.device
        return torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype).to(like.device)

    def __len__(self) -> int:
        return self.num_train_timesteps


class DDPMScheduler(_Scheduler):
    """Ancestral DDPM sampling (DDPM algorithm 2), optionally on a coarser timestep grid.

    ``variance_type="fixed_small"`` uses the posterior variance beta-tilde (DDPM eq. 7);
    ``"fixed_large"`` uses beta_t. The DDPM paper reports both give similar samples.
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 beta_schedule: str = "linear", variance_type: str = "fixed_small", clip_sample: bool = True,
                 clip_sample_range: float = 1.0, prediction_type: str = "epsilon", timestep_spacing: str = "leading"):
        if variance_type not in ("fixed_small", "fixed_large"):
            raise ValueError(f"variance_type must be 'fixed_small' or 'fixed_large', got {variance_type!r}")
        super().__init__(num_train_timesteps, beta_start, beta_end, beta_schedule, clip_sample, clip_sample_range,
                         prediction_type, timestep_spacing)
        self.variance_type = variance_type

    def previous_timestep(self, timestep: int) -> int:
        """The next timestep on the sampling grid (-1 after the last one), as diffusers' DDPM finds it."""
        if self.num_inference_steps is None:
            return timestep - 1
        later = self.timesteps[self.timesteps < timestep]
        return int(later.max()) if len(later) else -1

    def _alpha_bars(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        # float64 scalars: alpha_bar at t and at the previous grid point (1 before the first step)
        prev_t = self.previous_timestep(t)
        alpha_bar_t = self._alpha_bar64[t]
        alpha_bar_prev = self._alpha_bar64[prev_t] if prev_t >= 0 else torch.tensor(1.0, dtype=torch.float64)
        return alpha_bar_t, alpha_bar_prev

    def posterior_variance(self, timestep: int) -> torch.Tensor:
        """Variance of the reverse step t -> prev_t: beta-tilde = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t
        (DDPM eq. 7; with a coarse grid, beta_t is the effective 1 - alpha_bar_t / alpha_bar_prev)."""
        t = int(self._check_timesteps(timestep))
        alpha_bar_t, alpha_bar_prev = self._alpha_bars(t)
        beta_t = 1 - alpha_bar_t / alpha_bar_prev
        if self.variance_type == "fixed_large":
            return beta_t.float()
        return ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t).clamp(min=1e-20).float()

    def step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor,
             generator: torch.Generator | None = None, variance_noise: torch.Tensor | None = None,
             return_dict: bool = True):
        """One reverse step x_t -> x_{t-1} from the model's output (noise, v or x0: ``prediction_type``).

        The fresh noise z is drawn with ``generator``, or given as ``variance_noise``.
        """
        t = int(self._check_timesteps(timestep))
        alpha_bar_t, alpha_bar_prev = self._alpha_bars(t)
        alpha_t = alpha_bar_t / alpha_bar_prev  # = alpha_t on the full grid
        beta_t = 1 - alpha_t
        # 1. the model's current guess of x_0 (eq. 15), clipped to the data range
        x0 = self._predict_x0(model_output, sample, alpha_bar_t)
        # 2. mean of the posterior q(x_{t-1} | x_t, x_0) (eq. 7):
        #    mu = sqrt(alpha_bar_prev) beta_t / (1 - alpha_bar_t) x0 + sqrt(alpha_t) (1 - alpha_bar_prev) / (1 - alpha_bar_t) x_t
        x0_coeff = float(alpha_bar_prev.sqrt() * beta_t / (1 - alpha_bar_t))
        xt_coeff = float(alpha_t.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar_t))
        prev_sample = x0_coeff * x0 + xt_coeff * sample
        # 3. add noise with the posterior variance, except on the final step to x_0 (algorithm 2, line 3: z = 0 if t = 1)
        if t > 0:
            std = float(self.posterior_variance(t).double().sqrt())
            prev_sample = prev_sample + std * self._noise(model_output, generator, variance_noise)
        return SchedulerOutput(prev_sample, x0) if return_dict else (prev_sample, x0)


class DDIMScheduler(_Scheduler):
    """DDIM sampling (DDIM eq. 12): deterministic for ``eta=0``, DDPM-like for ``eta=1``.

    ``set_alpha_to_one=True`` makes the last step land on alpha_bar = 1, i.e. on a clean x_0.
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 beta_schedule: str = "linear", clip_sample: bool = True, set_alpha_to_one: bool = True,
                 clip_sample_range: float = 1.0, prediction_type: str = "epsilon", timestep_spacing: str = "leading"):
        super().__init__(num_train_timesteps, beta_start, beta_end, beta_schedule, clip_sample, clip_sample_range,
                         prediction_type, timestep_spacing)
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self._final_alpha_bar64 = torch.tensor(1.0, dtype=torch.float64) if set_alpha_to_one else self._alpha_bar64[0]

    def step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor, eta: float = 0.0,
             use_clipped_model_output: bool = True, generator: torch.Generator | None = None,
             variance_noise: torch.Tensor | None = None, return_dict: bool = True):
        """One DDIM update x_t -> x_prev on the grid chosen by :meth:`set_timesteps`
        (z drawn with ``generator`` or given as ``variance_noise``).

        ``use_clipped_model_output=True`` (diffusers' name; **the course's default**, diffusers'
        default is False) recomputes the noise from the clipped x0,
        eps = (x_t - sqrt(alpha_bar_t) x0) / sqrt(1 - alpha_bar_t), so that both terms of eq. 12
        describe the same x0 and the step is the exact DDIM step for that x0. With False, clipping
        moves x0 but the direction term keeps the unclipped noise: the step is the exact one minus a
        term of fixed size, and a deterministic sampler adds one such term per step, so its error
        grows with the number of steps. Without clipping the two are the same.
        """
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before step()")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        t = int(self._check_timesteps(timestep))
        # as diffusers' DDIM, for either spacing: the next grid point when n divides T
        prev_t = t - self.num_train_timesteps // self.num_inference_steps
        alpha_bar_t = self._alpha_bar64[t]
        alpha_bar_prev = self._alpha_bar64[prev_t] if prev_t >= 0 else self._final_alpha_bar64
        # 1. predicted x_0 ("predicted x_0" term of eq. 12), clipped, and the predicted noise
        x0, eps = self._predict_x0_and_eps(model_output, sample, alpha_bar_t)
        # 2. sigma_t (eq. 16): eta = 1 gives the DDPM posterior standard deviation, eta = 0 a deterministic step
        variance = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)
        sigma = eta * variance.sqrt()
        if use_clipped_model_output and self.clip_sample:  # without clipping the recomputed noise is eps itself
            eps = (sample - float(alpha_bar_t.sqrt()) * x0) / float((1 - alpha_bar_t).sqrt())
        # 3. "direction pointing to x_t" term of eq. 12
        direction = float((1 - alpha_bar_prev - sigma**2).sqrt()) * eps
        prev_sample = float(alpha_bar_prev.sqrt()) * x0 + direction
        # 4. random noise sigma_t * z (zero when eta = 0)
        if eta > 0:
            prev_sample = prev_sample + float(sigma) * self._noise(model_output, generator, variance_noise)
        return SchedulerOutput(prev_sample, x0) if return_dict else (prev_sample, x0)
