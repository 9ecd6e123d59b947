"""Guidance: steering a diffusion model's sampling loop towards a condition (chapter 5).

Both kinds below wrap a model so that ``wrapped(x_t, t)`` returns a *guided* prediction in the
model's own parameterisation; the wrapped model then goes into any sampling loop -- ours
(:func:`coursekit.diffusion.sample_loop` with our schedulers) or diffusers' schedulers -- unchanged.

**Classifier-free guidance** (Ho & Salimans 2021). A model trained with condition dropout (the
condition replaced by a "null" condition a fraction of the time, :func:`drop_labels`) predicts
both eps(x_t, c) and eps(x_t, null). At sampling time

    eps_guided = eps_uncond + w * (eps_cond - eps_uncond)

Convention: ``guidance_scale`` is this w, as in diffusers' pipelines. w = 0 is the unconditional
model, w = 1 the plain conditional model, w > 1 pushes past it, away from the unconditional
prediction. Ho & Salimans write (1 + w') eps_cond - w' eps_uncond, which is the same line with
w = 1 + w': their w' = 0 is our w = 1. The weights (1 - w) and w sum to one, and v and x0 are
affine in eps at a fixed (x_t, t), so combining v- or x0-predictions with the same formula gives
exactly the guided eps's v or x0: the wrapper works for every prediction type. The conditional
and the unconditional prediction come from one batched forward pass of 2B inputs.

**Classifier guidance** (Dhariwal & Nichol 2021, algorithm 2). A classifier p(y | x_t, t) trained
on noisy images gives the gradient of log p(y | x_t), which is added to the score:

    eps_guided = eps - s * sqrt(1 - alpha_bar_t) * grad_x log p(y | x_t, t)

(the score is -eps / sqrt(1 - alpha_bar_t), so this is score + s * grad log p(y | x_t)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from coursekit.schedulers import PREDICTION_TYPES, NoiseSchedule

__all__ = ["drop_labels", "Conditioned", "ClassifierFreeGuidance", "ClassifierGuidance", "CLIPGuidance", "prediction_to_eps", "eps_to_prediction"]


def drop_labels(labels: torch.Tensor, drop_prob: float, null_label: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Condition dropout: each label replaced by ``null_label`` with probability ``drop_prob``.

    Trained this way, one network learns both the conditional and the unconditional model.
    """
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"drop_prob must lie in [0, 1], got {drop_prob}")
    if drop_prob == 0:
        return labels
    gen_device = generator.device if generator is not None else labels.device
    drop = torch.rand(labels.shape, generator=generator, device=gen_device).to(labels.device) < drop_prob
    return torch.where(drop, torch.full_like(labels, null_label), labels)


def _batch_cat(first, second):
    if first is None and second is None:
        return None
    if first is None or second is None:
        raise ValueError("the conditional and unconditional inputs must both give this argument, or neither")
    if isinstance(first, torch.Tensor):
        if first.shape[1:] != second.shape[1:]:
            raise ValueError(f"conditional and unconditional inputs differ in shape: {tuple(first.shape)} vs "
                             f"{tuple(second.shape)} (pad contexts to the same number of tokens)")
        return torch.cat([first, second])
    raise TypeError(f"expected tensors, got {type(first).__name__}")


class Conditioned(nn.Module):
    """``model`` with its condition fixed: ``forward(x_t, t)`` -> ``model(x_t, t, **cond)`` (no guidance),
    so that a sampling loop that only knows ``(x_t, t)`` can run a conditional model."""

    def __init__(self, model: nn.Module, cond: dict):
        super().__init__()
        self.model, self.cond = model, cond

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.model(x, timesteps, **{k: v.to(x.device) if isinstance(v, torch.Tensor) else v
                                           for k, v in self.cond.items()})


class ClassifierFreeGuidance(nn.Module):
    """``model`` guided by classifier-free guidance: ``forward(x_t, t)`` -> guided prediction.

    ``cond`` and ``uncond`` are the keyword arguments of ``model`` for the condition and for "no
    condition", each tensor with the batch as its first dimension, e.g.
    ``cond={"labels": y}``, ``uncond={"labels": torch.full_like(y, num_classes)}``, or
    ``cond={"context": text, "context_mask": mask}`` with the empty prompt's encoding as ``uncond``.
    Use :meth:`for_labels` for a class-conditional :class:`coursekit.diffusion.DiffusionModel`.
    """

    def __init__(self, model: nn.Module, cond: dict, uncond: dict, guidance_scale: float):
        super().__init__()
        if set(cond) != set(uncond):
            raise ValueError(f"cond and uncond must name the same arguments, got {sorted(cond)} and {sorted(uncond)}")
        self.model, self.cond, self.uncond, self.guidance_scale = model, cond, uncond, float(guidance_scale)

    @classmethod
    def for_labels(cls, model: nn.Module, labels: torch.Tensor, guidance_scale: float) -> "ClassifierFreeGuidance":
        num_classes = getattr(getattr(model, "config", None), "num_classes", None)
        if not num_classes:
            raise ValueError("classifier-free guidance on labels needs a class-conditional model (config.num_classes)")
        labels = torch.as_tensor(labels)
        return cls(model, {"labels": labels}, {"labels": torch.full_like(labels, num_classes)}, guidance_scale)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        w = self.guidance_scale
        b = x.shape[0]
        for name, value in self.cond.items():
            if isinstance(value, torch.Tensor) and value.shape[0] != b:
                raise ValueError(f"{name} has {value.shape[0]} rows for a batch of {b} images")
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(b)
        device = lambda v: v.to(x.device) if isinstance(v, torch.Tensor) else v  # noqa: E731
        if w == 1.0:   # plain conditional model: the unconditional half would get weight 0
            return self.model(x, timesteps, **{k: device(v) for k, v in self.cond.items()})
        if w == 0.0:   # plain unconditional model
            return self.model(x, timesteps, **{k: device(v) for k, v in self.uncond.items()})
        both = {k: device(_batch_cat(self.cond[k], self.uncond[k])) for k in self.cond}
        out_cond, out_uncond = self.model(torch.cat([x, x]), torch.cat([timesteps, timesteps]), **both).chunk(2)
        return out_uncond + w * (out_cond - out_uncond)


def _alpha_bar(schedule: NoiseSchedule, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return schedule.alphas_cumprod.to(like.device, like.dtype)[timesteps.long()].reshape(-1, *([1] * (like.ndim - 1)))


def prediction_to_eps(output: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor, schedule: NoiseSchedule,
                      prediction_type: str) -> torch.Tensor:
    """The noise eps that a model's output (eps, v or x0) implies at x_t."""
    alpha_bar = _alpha_bar(schedule, timesteps, x_t)
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1 - a) x0,  x_t = sqrt(a) x0 + sqrt(1 - a) eps
        return alpha_bar.sqrt() * output + (1 - alpha_bar).sqrt() * x_t
    if prediction_type == "sample":
        return (x_t - alpha_bar.sqrt() * output) / (1 - alpha_bar).sqrt()
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def eps_to_prediction(eps: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor, schedule: NoiseSchedule,
                      prediction_type: str) -> torch.Tensor:
    """The inverse of :func:`prediction_to_eps`: what a model of ``prediction_type`` outputs for this eps."""
    alpha_bar = _alpha_bar(schedule, timesteps, x_t)
    x0 = (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0
    if prediction_type == "sample":
        return x0
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


class ClassifierGuidance(nn.Module):
    """``model`` guided by a noise-aware classifier: ``forward(x_t, t)`` -> guided prediction.

    ``classifier(x_t, t)`` returns logits over the classes; ``labels`` are the classes wanted;
    ``scale`` is s above (s = 0: no guidance). ``schedule`` and ``prediction_type`` default to the
    model's (a :class:`coursekit.diffusion.DiffusionModel`). The gradient is taken at the model's
    input x_t, with the classifier in eval mode; the model itself is evaluated without gradients.
    """

    def __init__(self, model: nn.Module, classifier: nn.Module, labels: torch.Tensor, scale: float,
                 schedule: NoiseSchedule | None = None, prediction_type: str | None = None):
        super().__init__()
        self.model, self.classifier = model, classifier
        self.labels, self.scale = torch.as_tensor(labels).long(), float(scale)
        self.schedule = schedule if schedule is not None else model.schedule
        self.prediction_type = prediction_type or getattr(model.config, "prediction_type", "epsilon")

    def log_prob_gradient(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """grad_x log p(y | x_t, t), one gradient per image (the sum over the batch separates)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            log_probs = F.log_softmax(self.classifier(x, timesteps), dim=-1)
            chosen = log_probs.gather(1, self.labels.to(x.device)[:, None]).sum()
            return torch.autograd.grad(chosen, x)[0]

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.labels.shape != (x.shape[0],):
            raise ValueError(f"expected {x.shape[0]} labels, one per image, got shape {tuple(self.labels.shape)}")
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])
        with torch.no_grad():
            output = self.model(x, timesteps)
        if self.scale == 0:
            return output
        eps = prediction_to_eps(output, x, timesteps, self.schedule, self.prediction_type)
        sigma = (1 - _alpha_bar(self.schedule, timesteps, x)).sqrt()
        eps = eps - self.scale * sigma * self.log_prob_gradient(x, timesteps)
        return eps_to_prediction(eps, x, timesteps, self.schedule, self.prediction_type)


class CLIPGuidance(nn.Module):
    """``model`` guided towards texts by a CLIP, as in GLIDE: ``forward(x_t, t)`` -> guided prediction.

    GLIDE (Nichol et al. 2022) adds ``s * grad_{x_t} (f(x_t) . g(c))``, the gradient of the similarity between
    a noise-aware CLIP's image embedding f and the text embedding g(c), to the score, as classifier
    guidance does with log p(y | x_t). The course's CLIP was trained on clean digits only, so here f
    looks at the model's current estimate of x0 (clipped to [-1, 1], mapped to [0, 1]) and the gradient
    flows back to x_t through the U-Net:

        eps_hat = eps - s * sqrt(1 - alpha_bar_t) * grad_{x_t} cos(f(x0_hat(x_t)), g(c)).

    ``text_embeddings``: (B, D) unit vectors, one per image (e.g. ``clip.encode_prompts(prompts)``).
    """

    def __init__(self, model: nn.Module, clip: nn.Module, text_embeddings: torch.Tensor, scale: float,
                 schedule: NoiseSchedule | None = None, prediction_type: str | None = None):
        super().__init__()
        self.model, self.clip = model, clip
        self.text_embeddings, self.scale = text_embeddings.detach(), float(scale)
        self.schedule = schedule if schedule is not None else model.schedule
        self.prediction_type = prediction_type or getattr(model.config, "prediction_type", "epsilon")

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.text_embeddings.shape[0] != x.shape[0]:
            raise ValueError(f"expected {x.shape[0]} text embeddings, one per image, got {self.text_embeddings.shape[0]}")
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])
        if self.scale == 0:
            with torch.no_grad():
                return self.model(x, timesteps)
        alpha_bar = _alpha_bar(self.schedule, timesteps, x)
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            eps = prediction_to_eps(self.model(x, timesteps), x, timesteps, self.schedule, self.prediction_type)
            x0 = (x - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
            images = (x0.clamp(-1, 1) + 1) / 2
            similarity = (self.clip.encode_image(images) * self.text_embeddings.to(x.device)).sum()
            gradient = torch.autograd.grad(similarity, x)[0]
        eps = eps.detach() - self.scale * (1 - alpha_bar).sqrt() * gradient
        return eps_to_prediction(eps, x.detach(), timesteps, self.schedule, self.prediction_type)
