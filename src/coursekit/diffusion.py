"""Diffusion models end to end: the forward process, the training loss, and the sampling loop.

- :func:`q_sample` draws x_t ~ q(x_t | x_0) in one jump (DDPM eq. 4).
- :func:`diffusion_loss` is DDPM's simplified objective (algorithm 1): || eps - eps_theta(x_t, t) ||^2.
- :func:`sample_loop` is the whole reverse process in one function. It takes any scheduler with
  diffusers' interface: ours (:mod:`coursekit.schedulers`) or diffusers' own ``DDPMScheduler``,
  ``DDIMScheduler``, ``DPMSolverMultistepScheduler``.
- :class:`DiffusionModel` is what a checkpoint holds: the U-Net plus the schedule it was trained
  with, so that samplers are built with the right betas.

Images live in [-1, 1] inside a diffusion model (``load_mnist(scale="symmetric")``);
:meth:`DiffusionModel.sample` returns them in [0, 1] like the other models' ``sample``.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from coursekit.checkpoint import register_model
from coursekit.models.unet import UNet, UNetConfig
from coursekit.schedulers import DDIMScheduler, DDPMScheduler, NoiseSchedule, make_schedule


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, one alpha_bar per batch element (DDPM eq. 4)."""
    t = torch.as_tensor(t, device=x0.device).long()
    if (t < 0).any() or (t >= len(schedule)).any():
        raise ValueError(f"timesteps must lie in 0 .. {len(schedule) - 1}, got {t.tolist()}")
    alpha_bar = schedule.alphas_cumprod.to(x0.device, x0.dtype)[t].reshape(-1, *([1] * (x0.ndim - 1)))
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise


@dataclass
class DiffusionConfig(UNetConfig):
    """The U-Net's config plus the noise schedule it is trained for."""

    schedule: str = "linear"
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def unet_config(self) -> UNetConfig:
        names = {f.name for f in dataclasses.fields(UNetConfig)}
        return UNetConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})


@register_model("ddpm", DiffusionConfig)
class DiffusionModel(nn.Module):
    """A noise-predicting U-Net together with its noise schedule."""

    def __init__(self, config: DiffusionConfig | None = None):
        super().__init__()
        self.config = config = config or DiffusionConfig()
        self.unet = UNet(config.unet_config())
        self.schedule = make_schedule(config.schedule, config.num_train_timesteps, config.beta_start, config.beta_end)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x, timesteps, labels)

    def scheduler(self, kind: str = "ddim"):
        """A fresh scheduler (``"ddpm"`` or ``"ddim"``) with this model's schedule."""
        c = self.config
        kwargs = dict(num_train_timesteps=c.num_train_timesteps, beta_start=c.beta_start, beta_end=c.beta_end,
                      beta_schedule=c.schedule)
        if kind == "ddpm":
            return DDPMScheduler(**kwargs)
        if kind == "ddim":
            return DDIMScheduler(**kwargs)
        raise ValueError(f"kind must be 'ddpm' or 'ddim', got {kind!r}")

    def diffusers_config(self) -> dict:
        """Keyword arguments that build a diffusers scheduler with the same schedule."""
        c = self.config
        return dict(num_train_timesteps=c.num_train_timesteps, beta_start=c.beta_start, beta_end=c.beta_end,
                    beta_schedule="squaredcos_cap_v2" if c.schedule == "cosine" else c.schedule)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None, *, sampler: str = "ddim",
               num_inference_steps: int = 50, eta: float = 0.0, labels: torch.Tensor | None = None,
               batch_size: int = 500, progress: bool = False, use_clipped_model_output: bool = False) -> torch.Tensor:
        """``num_samples`` images in [0, 1], drawn with DDPM or DDIM in batches of ``batch_size``.

        ``use_clipped_model_output=True`` makes DDIM recompute the noise from the clipped x0
        (chapter 4 compares both; the default, False, is diffusers' default).
        """
        scheduler = self.scheduler(sampler)
        if use_clipped_model_output and sampler != "ddim":
            raise ValueError("use_clipped_model_output applies to the DDIM sampler only")
        step_kwargs = {"use_clipped_model_output": True} if use_clipped_model_output else None
        c = self.config
        out = []
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            batch_labels = labels[start:start + n] if labels is not None else None
            x = sample_loop(self, scheduler, (n, c.image_channels, c.image_size, c.image_size), generator=generator,
                            num_inference_steps=num_inference_steps, eta=eta, labels=batch_labels, progress=progress,
                            step_kwargs=step_kwargs)
            out.append(((x + 1) / 2).clamp(0, 1).cpu())
        return torch.cat(out)


def diffusion_loss(model: nn.Module, batch, generator: torch.Generator | None = None,
                   schedule: NoiseSchedule | None = None) -> torch.Tensor:
    """DDPM's simple loss for one batch (algorithm 1):

    1. pick t uniformly from 0 .. T-1 for each image;
    2. draw eps ~ N(0, I) and form x_t with :func:`q_sample`;
    3. return the mean squared error between eps and the model's prediction eps_theta(x_t, t).
    """
    x0 = batch[0] if isinstance(batch, (list, tuple)) else batch
    schedule = schedule if schedule is not None else model.schedule
    device = generator.device if generator is not None else x0.device
    t = torch.randint(0, len(schedule), (x0.shape[0],), generator=generator, device=device).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype).to(x0.device)
    x_t = q_sample(x0, t, noise, schedule)
    return F.mse_loss(model(x_t, t), noise)


def _accepts(function: Callable, name: str) -> bool:
    return name in inspect.signature(function).parameters


@torch.no_grad()
def sample_loop(model: nn.Module, scheduler, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
                num_inference_steps: int | None = None, eta: float = 0.0, labels: torch.Tensor | None = None,
                device: torch.device | str | None = None, progress: bool = False,
                callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
                step_kwargs: dict | None = None) -> torch.Tensor:
    """Run the reverse process from pure noise to images (in the model's [-1, 1] scale).

    ``scheduler`` is ours or diffusers' (anything with ``set_timesteps``, ``timesteps``,
    ``scale_model_input``, ``init_noise_sigma`` and ``step``). ``callback(i, t, x0_pred)`` sees the
    current guess of x_0 after every step (for pictures of the process). ``step_kwargs`` go to
    every ``scheduler.step`` call (e.g. ``{"use_clipped_model_output": True}`` for DDIM).
    """
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else next(model.parameters()).device
    # 1. choose which timesteps to visit (all T of them for DDPM, a subset for DDIM and friends)
    train_steps = getattr(getattr(scheduler, "config", None), "num_train_timesteps", None) or scheduler.num_train_timesteps
    scheduler.set_timesteps(num_inference_steps or train_steps)
    # 2. start from pure noise x_T ~ N(0, I) (scaled as the scheduler asks; 1 for DDPM/DDIM)
    gen_device = generator.device if generator is not None else device
    x = torch.randn(shape, generator=generator, device=gen_device).to(device) * scheduler.init_noise_sigma
    step_kwargs = {"generator": generator, **(step_kwargs or {})}
    if _accepts(scheduler.step, "eta"):
        step_kwargs["eta"] = eta
    elif eta:
        raise ValueError(f"{type(scheduler).__name__}.step takes no eta; use eta=0 with this scheduler")
    model.eval()
    for i, t in enumerate(tqdm(scheduler.timesteps, disable=not progress, leave=False)):
        # 3. predict the noise in x_t
        model_input = scheduler.scale_model_input(x, t)
        t_batch = torch.full((shape[0],), int(t), device=device, dtype=torch.long)
        eps = model(model_input, t_batch, labels) if labels is not None else model(model_input, t_batch)
        # 4. let the scheduler take one step back: x_t -> x_{t-1} (or to the next, coarser, grid point)
        out = scheduler.step(eps, t, x, **step_kwargs)
        x = out.prev_sample
        if callback is not None:
            x0 = getattr(out, "pred_original_sample", None)
            callback(i, t, x0 if x0 is not None else x)
    # 5. x is now a sample of x_0
    return x


def time_sampler(model: DiffusionModel, sampler: str, num_inference_steps: int, num_samples: int,
                 seed: int = 0, batch_size: int = 500, use_clipped_model_output: bool = False) -> tuple[torch.Tensor, float]:
    """Draw ``num_samples`` images and return them with the seconds it took."""
    start = time.perf_counter()
    images = model.sample(num_samples, torch.Generator().manual_seed(seed), sampler=sampler,
                          num_inference_steps=num_inference_steps, batch_size=batch_size,
                          use_clipped_model_output=use_clipped_model_output)
    return images, time.perf_counter() - start
