"""Diffusion models end to end: the forward process, the training loss, and the sampling loop.

- :func:`q_sample` draws x_t ~ q(x_t | x_0) in one jump (DDPM eq. 4).
- :func:`diffusion_loss` is DDPM's simplified objective (algorithm 1): || eps - eps_theta(x_t, t) ||^2, or
  the same squared error on v or x0 for a model that predicts those (:func:`training_target`).
- :func:`sample_loop` is the whole reverse process in one function. It takes any scheduler with
  diffusers' interface: ours (:mod:`coursekit.schedulers`) or diffusers' own ``DDPMScheduler``,
  ``DDIMScheduler``, ``DPMSolverMultistepScheduler``.
- :class:`DiffusionModel` is what a checkpoint holds: the U-Net plus the schedule and the prediction type
  (``"epsilon"``, ``"v_prediction"`` or ``"sample"``) it was trained with, so that samplers are built
  with the right betas and read the network's output the right way.

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
from coursekit.schedulers import (PREDICTION_TYPES, TIMESTEP_SPACINGS, DDIMScheduler, DDPMScheduler, NoiseSchedule,
                                  make_schedule)

SAMPLERS = ("ddpm", "ddim", "dpmsolver")


def training_target(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule,
                    prediction_type: str = "epsilon") -> torch.Tensor:
    """What the network learns to output for x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps
    (diffusers' names for the three parameterisations):

    - ``"epsilon"``: the noise eps (DDPM);
    - ``"v_prediction"``: v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 (Salimans & Ho 2022, sec. 4);
    - ``"sample"``: x0 itself.
    """
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        alpha_bar = schedule.alphas_cumprod.to(x0.device, x0.dtype)[t].reshape(-1, *([1] * (x0.ndim - 1)))
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


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
    prediction_type: str = "epsilon"

    def __post_init__(self):
        super().__post_init__()
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")

    def unet_config(self) -> UNetConfig:
        names = {f.name for f in dataclasses.fields(UNetConfig)}
        return UNetConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})


@register_model("ddpm", DiffusionConfig)
class DiffusionModel(nn.Module):
    """A U-Net together with its noise schedule and what it predicts (``config.prediction_type``)."""

    def __init__(self, config: DiffusionConfig | None = None):
        super().__init__()
        self.config = config = config or DiffusionConfig()
        self.unet = UNet(config.unet_config())
        self.schedule = make_schedule(config.schedule, config.num_train_timesteps, config.beta_start, config.beta_end)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x, timesteps, labels, context, context_mask)

    def scheduler(self, kind: str = "ddim", *, clip_sample: bool = True, timestep_spacing: str = "leading"):
        """A fresh scheduler with this model's schedule and prediction type:

        - ``"ddpm"``, ``"ddim"``: the course's own (:mod:`coursekit.schedulers`), x0 clipped to
          [-1, 1] when ``clip_sample``;
        - ``"dpmsolver"``: diffusers' ``DPMSolverMultistepScheduler`` (DPM-Solver++, 2nd order),
          and where ``clip_sample`` its ``thresholding`` with ``sample_max_value=1``,
          which clips x0 to [-1, 1] exactly as DDIM does (the threshold s is clamped to [1, 1]).

        All visit the timesteps of ``timestep_spacing``: ``"leading"`` (every T // n-th from 0,
        the course's default) or ``"trailing"`` (from T - 1 down in steps of T / n), as diffusers
        defines them.
        """
        if timestep_spacing not in TIMESTEP_SPACINGS:  # diffusers' DPM-Solver would also take others
            raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {timestep_spacing!r}")
        c = self.config
        kwargs = dict(num_train_timesteps=c.num_train_timesteps, beta_start=c.beta_start, beta_end=c.beta_end,
                      beta_schedule=c.schedule, prediction_type=c.prediction_type, timestep_spacing=timestep_spacing)
        if kind == "ddpm":
            return DDPMScheduler(clip_sample=clip_sample, **kwargs)
        if kind == "ddim":
            return DDIMScheduler(clip_sample=clip_sample, **kwargs)
        if kind == "dpmsolver":
            from diffusers import DPMSolverMultistepScheduler

            return DPMSolverMultistepScheduler(**self.diffusers_config(), algorithm_type="dpmsolver++", solver_order=2,
                                               thresholding=clip_sample, sample_max_value=1.0,
                                               timestep_spacing=timestep_spacing)
        raise ValueError(f"kind must be one of {SAMPLERS}, got {kind!r}")

    def diffusers_config(self) -> dict:
        """Keyword arguments that build a diffusers scheduler with the same schedule and prediction type."""
        c = self.config
        return dict(num_train_timesteps=c.num_train_timesteps, beta_start=c.beta_start, beta_end=c.beta_end,
                    beta_schedule="squaredcos_cap_v2" if c.schedule == "cosine" else c.schedule,
                    prediction_type=c.prediction_type)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None, *, sampler: str = "ddim",
               num_inference_steps: int = 50, eta: float = 0.0, labels: torch.Tensor | None = None,
               batch_size: int = 500, progress: bool = False, clip: bool = True,
               use_clipped_model_output: bool | None = None, guidance_scale: float | None = None,
               context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
               uncond_context: torch.Tensor | None = None, uncond_context_mask: torch.Tensor | None = None,
               timestep_spacing: str = "leading") -> torch.Tensor:
        """``num_samples`` images in [0, 1], drawn with ``sampler`` (``"ddpm"``, ``"ddim"`` or
        ``"dpmsolver"``, see :meth:`scheduler`, on the timesteps of ``timestep_spacing``) in batches
        of ``batch_size``.

        ``clip``: clip the predicted x0 to [-1, 1] at every step (DPM-Solver: the equivalent
        thresholding), so that samplers are compared under one x0 treatment. DDIM recomputes the
        noise from the clipped x0 (``use_clipped_model_output``, the course's default; pass False
        for diffusers' default, which keeps the raw noise).
        A model with ``config.context_dim`` needs ``context`` (num_samples, L, context_dim) and its
        mask; with ``guidance_scale`` it also needs the unconditional ``uncond_context`` (one row,
        e.g. the empty prompt's encoding, or one per sample) and its mask.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if labels is not None:
            labels = torch.as_tensor(labels).long()
            if labels.shape != (num_samples,):
                raise ValueError(f"expected one label per sample, shape ({num_samples},), got {tuple(labels.shape)}")
        if getattr(self.config, "context_dim", None):
            if context is None:
                raise ValueError("this model cross-attends to a context: pass context= (e.g. encoded prompts) and context_mask=")
            if context.shape[0] != num_samples:
                raise ValueError(f"expected one context per sample, {num_samples} rows, got {tuple(context.shape)}")
            if guidance_scale is not None and uncond_context is None:
                raise ValueError("guidance_scale with a context needs uncond_context (e.g. the empty prompt's encoding)")
            if uncond_context is not None and uncond_context.shape[0] == 1:
                uncond_context = uncond_context.expand(num_samples, *uncond_context.shape[1:])
                if uncond_context_mask is not None:
                    uncond_context_mask = uncond_context_mask.expand(num_samples, *uncond_context_mask.shape[1:])
        elif context is not None:
            raise ValueError("context= needs a model with config.context_dim (cross-attention)")
        if guidance_scale is not None and labels is None and context is None:
            raise ValueError("guidance_scale needs labels or a context (the condition to guide towards)")
        if use_clipped_model_output is not None and sampler != "ddim":
            raise ValueError("use_clipped_model_output applies to the DDIM sampler only")
        scheduler = self.scheduler(sampler, clip_sample=clip, timestep_spacing=timestep_spacing)
        step_kwargs = None
        if sampler == "ddim":
            step_kwargs = {"use_clipped_model_output": True if use_clipped_model_output is None else use_clipped_model_output}
        c = self.config
        out = []
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            batch_labels = labels[start:start + n] if labels is not None else None
            net = self
            if context is not None:
                from coursekit.guidance import ClassifierFreeGuidance, Conditioned

                rows = slice(start, start + n)
                cond = {"context": context[rows], "context_mask": None if context_mask is None else context_mask[rows]}
                if batch_labels is not None:
                    cond["labels"] = batch_labels
                if guidance_scale is None:
                    net = Conditioned(self, cond)
                else:
                    uncond = {"context": uncond_context[rows],
                              "context_mask": None if uncond_context_mask is None else uncond_context_mask[rows]}
                    if batch_labels is not None:
                        uncond["labels"] = torch.full_like(batch_labels, self.config.num_classes)
                    net = ClassifierFreeGuidance(self, cond, uncond, guidance_scale)
                batch_labels = None
            elif guidance_scale is not None:
                from coursekit.guidance import ClassifierFreeGuidance

                net, batch_labels = ClassifierFreeGuidance.for_labels(self, batch_labels, guidance_scale), None
            x = sample_loop(net, scheduler, (n, c.image_channels, c.image_size, c.image_size), generator=generator,
                            num_inference_steps=num_inference_steps, eta=eta, labels=batch_labels, progress=progress,
                            step_kwargs=step_kwargs)
            out.append(((x + 1) / 2).clamp(0, 1).cpu())
        return torch.cat(out)


def diffusion_loss(model: nn.Module, batch, generator: torch.Generator | None = None,
                   schedule: NoiseSchedule | None = None, *, cond_drop_prob: float = 0.0,
                   context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None) -> torch.Tensor:
    """DDPM's simple loss for one batch (algorithm 1):

    1. pick t uniformly from 0 .. T-1 for each image;
    2. draw eps ~ N(0, I) and form x_t with :func:`q_sample`;
    3. return the mean squared error between eps and the model's prediction eps_theta(x_t, t).

    A model whose ``config.prediction_type`` is ``"v_prediction"`` or ``"sample"`` regresses v or x0
    instead (:func:`training_target`). A class-conditional model (``config.num_classes``) is given the
    batch's labels (``batch = (images, labels)``), each replaced by the null label with probability
    ``cond_drop_prob`` (condition dropout, for classifier-free guidance). A model with
    ``config.context_dim`` cross-attends to ``context`` (B, L, context_dim) with its padding mask
    (B, L); text conditioning drops its condition before encoding, as the empty prompt (see
    :func:`coursekit.text_diffusion.text_diffusion_loss`).
    """
    x0 = batch[0] if isinstance(batch, (list, tuple)) else batch
    schedule = schedule if schedule is not None else model.schedule
    device = generator.device if generator is not None else x0.device
    t = torch.randint(0, len(schedule), (x0.shape[0],), generator=generator, device=device).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype).to(x0.device)
    x_t = q_sample(x0, t, noise, schedule)
    config = getattr(model, "config", None)
    prediction_type = getattr(config, "prediction_type", "epsilon")
    num_classes = getattr(config, "num_classes", None)
    extra = {} if context is None else {"context": context, "context_mask": context_mask}
    if context is None and getattr(config, "context_dim", None):
        raise ValueError("this model cross-attends to a context: pass context= (and context_mask=)")
    if num_classes:
        if not isinstance(batch, (list, tuple)) or len(batch) < 2:
            raise ValueError("a class-conditional model trains on (images, labels) batches")
        from coursekit.guidance import drop_labels

        labels = drop_labels(batch[1].long(), cond_drop_prob, num_classes, generator)
        prediction = model(x_t, t, labels, **extra)
    elif cond_drop_prob:
        raise ValueError("cond_drop_prob needs a class-conditional model (config.num_classes)")
    else:
        prediction = model(x_t, t, **extra)
    return F.mse_loss(prediction, training_target(x0, noise, t, schedule, prediction_type))


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
        # 3. the network's output at x_t: the noise (DDPM), or v or x0, as the scheduler's prediction_type says
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
                 seed: int = 0, batch_size: int = 500, clip: bool = True, eta: float = 0.0,
                 use_clipped_model_output: bool | None = None, labels: torch.Tensor | None = None,
                 guidance_scale: float | None = None, timestep_spacing: str = "leading") -> tuple[torch.Tensor, float]:
    """Draw ``num_samples`` images and return them with the seconds it took."""
    start = time.perf_counter()
    images = model.sample(num_samples, torch.Generator().manual_seed(seed), sampler=sampler,
                          num_inference_steps=num_inference_steps, batch_size=batch_size, clip=clip, eta=eta,
                          use_clipped_model_output=use_clipped_model_output, labels=labels,
                          guidance_scale=guidance_scale, timestep_spacing=timestep_spacing)
    return images, time.perf_counter() - start
