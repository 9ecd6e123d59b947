"""Text-to-image diffusion on digits: a U-Net that cross-attends to the small CLIP's text features (chapter 5).

The pieces are the ones Stable Diffusion puts together, at the size of a digit:

- a frozen text encoder (the text tower of :class:`coursekit.clip.DigitCLIP`) turns a prompt into
  one feature vector per token, ``(B, 12, 64)``, with a padding mask;
- the U-Net (:class:`coursekit.diffusion.DiffusionModel` with ``context_dim=64``) cross-attends to
  those features in its spatial transformers;
- training drops the prompt with probability ``cond_drop_prob``, i.e. replaces it by the empty
  prompt ``""`` *before* encoding, so that the same network also learns the unconditional model;
- sampling combines the two with classifier-free guidance (:class:`coursekit.guidance.ClassifierFreeGuidance`).

Captions are generated from each training image's own pixels (:func:`coursekit.clip.random_captions`),
so what a prompt asks for can be checked on the samples: :func:`prompt_accuracy` measures how often
a sample is the requested digit and lands in the requested third of thickness, size and slant.
"""

from __future__ import annotations

import torch
from torch import nn

from coursekit.clip import ATTRIBUTES, DigitCLIP, attribute_levels, caption, random_captions
from coursekit.diffusion import DiffusionModel, diffusion_loss

EMPTY_PROMPT = ""

__all__ = ["EMPTY_PROMPT", "encode_prompts", "drop_prompts", "text_diffusion_loss", "TextToImage", "prompt_accuracy",
           "clip_prompt_accuracy", "evaluation_prompts"]


@torch.no_grad()
def encode_prompts(clip: DigitCLIP, prompts: list[str], batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen text encoder's per-token features ``(B, L, text_width)`` and attention mask ``(B, L)``."""
    if isinstance(prompts, str):
        prompts = [prompts]
    clip.eval()
    parts = [clip.text_features(prompts[i:i + batch_size]) for i in range(0, len(prompts), batch_size)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def drop_prompts(prompts: list[str], drop_prob: float, generator: torch.Generator | None = None) -> list[str]:
    """Condition dropout for text: each prompt replaced by the empty prompt with probability ``drop_prob``."""
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"drop_prob must lie in [0, 1], got {drop_prob}")
    if drop_prob == 0:
        return list(prompts)
    device = generator.device if generator is not None else "cpu"
    drop = (torch.rand(len(prompts), generator=generator, device=device) < drop_prob).tolist()
    return [EMPTY_PROMPT if d else p for p, d in zip(prompts, drop)]


def text_diffusion_loss(model: DiffusionModel, batch, generator: torch.Generator | None = None, *, clip: DigitCLIP,
                        cond_drop_prob: float = 0.1, keep_prob: float = 0.5) -> torch.Tensor:
    """The diffusion loss of a text-conditional model on ``batch = (images in [-1, 1], labels, attribute levels)``:
    a fresh caption per image (each attribute said with probability ``keep_prob``), dropped to the empty
    prompt with probability ``cond_drop_prob``, encoded by the frozen ``clip``."""
    if not getattr(model.config, "context_dim", None):
        raise ValueError("text_diffusion_loss needs a model that cross-attends to a context (config.context_dim)")
    images, labels, levels = batch[0], batch[1], batch[2]
    prompts = drop_prompts(random_captions(labels, levels, keep_prob, generator), cond_drop_prob, generator)
    context, mask = encode_prompts(clip, prompts)
    return diffusion_loss(model, images, generator, context=context.to(images.device), context_mask=mask.to(images.device))


class TextToImage(nn.Module):
    """A text-conditional :class:`DiffusionModel` and the CLIP whose text tower it was trained on."""

    def __init__(self, diffusion: DiffusionModel, clip: DigitCLIP):
        super().__init__()
        context_dim = getattr(diffusion.config, "context_dim", None)
        if context_dim != clip.config.text_width:
            raise ValueError(f"the diffusion model cross-attends to {context_dim}-wide features; this CLIP's text "
                             f"features are {clip.config.text_width} wide")
        self.diffusion, self.clip = diffusion, clip

    @torch.no_grad()
    def sample(self, prompts: list[str], guidance_scale: float | None = 3.0, generator: torch.Generator | None = None,
               sampler: str = "ddim", num_inference_steps: int = 50, batch_size: int = 500, **kwargs) -> torch.Tensor:
        """One image in [0, 1] per prompt; ``guidance_scale`` w (None: the conditional model alone, as w = 1)."""
        device = next(self.diffusion.parameters()).device
        self.clip.to(device)
        context, mask = encode_prompts(self.clip, list(prompts))
        uncond, uncond_mask = encode_prompts(self.clip, [EMPTY_PROMPT])
        return self.diffusion.sample(len(prompts), generator, sampler=sampler, num_inference_steps=num_inference_steps,
                                     batch_size=batch_size, context=context, context_mask=mask, uncond_context=uncond,
                                     uncond_context_mask=uncond_mask, guidance_scale=guidance_scale, **kwargs)


def evaluation_prompts(num_samples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Digits 0..9 in turn, each attribute's third drawn uniformly (seeded), and the full captions
    (a middle thickness or size goes unsaid, a middle slant is "upright")."""
    digits = torch.arange(num_samples) % 10
    levels = torch.randint(0, 3, (num_samples, len(ATTRIBUTES)), generator=torch.Generator().manual_seed(seed))
    return digits, levels, [caption(int(d), lv.tolist()) for d, lv in zip(digits, levels)]


def prompt_accuracy(images: torch.Tensor, digits: torch.Tensor, levels: torch.Tensor) -> dict:
    """How often samples do what their prompts said: the evaluation classifier's digit ("not a digit"
    counts as wrong) against the requested one, and for each attribute the prompts said, how often
    the sample's measured third (within the requested digit's class) is the requested one (chance: 1/3)."""
    from coursekit.eval.robust import NOT_A_DIGIT, load_robust_classifier, predict_with_reject

    predicted = predict_with_reject(images, load_robust_classifier())
    measured = attribute_levels(images, digits)
    out = {"digit_accuracy": float((predicted == digits).double().mean()), "not_a_digit": int((predicted == NOT_A_DIGIT).sum())}
    for column, name in enumerate(ATTRIBUTES):
        said = levels[:, column] != 1 if name != "slant" else torch.ones(len(levels), dtype=torch.bool)
        hits = measured[said, column] == levels[said, column]
        out[f"{name}_accuracy"] = float(hits.double().mean())
        out[f"{name}_prompts"] = int(said.sum())
    return out


@torch.no_grad()
def clip_prompt_accuracy(clip: DigitCLIP, images: torch.Tensor, digits: torch.Tensor, levels: torch.Tensor) -> dict:
    """The same question as :func:`prompt_accuracy`, judged by the small CLIP instead of the classifier and the
    pixel measurements: its zero-shot digit (the closest of "a zero" ... "a nine") against the requested one, and
    for each attribute the prompt gave an extreme third (low or high), whether the image is closer to "a <asked
    word> <digit>" than to "a <opposite word> <digit>" (chance 1/2). A second judge: CLIP was trained on the same
    captions, so it can be fooled in ways the classifier is not, and the other way round."""
    from coursekit.clip import zero_shot_digits

    digits, levels = torch.as_tensor(digits).long().cpu(), torch.as_tensor(levels).long().cpu()
    out = {"clip_digit_accuracy": float((zero_shot_digits(clip, images) == digits).double().mean())}
    device = clip.logit_scale.device
    embeddings = torch.cat([clip.encode_image(images[i:i + 500].to(device)).cpu() for i in range(0, len(images), 500)])
    for column, name in enumerate(ATTRIBUTES):
        only = [j == column for j in range(3)]            # the prompts say this attribute and the digit, nothing else
        low = clip.encode_prompts([caption(d, [0, 0, 0], only) for d in range(10)]).cpu()     # (10, embed)
        high = clip.encode_prompts([caption(d, [2, 2, 2], only) for d in range(10)]).cpu()
        extreme = levels[:, column] != 1
        chosen, asked = embeddings[extreme], digits[extreme]
        closer_to_high = (chosen * high[asked]).sum(1) > (chosen * low[asked]).sum(1)
        out[f"clip_{name}_accuracy"] = float((closer_to_high == (levels[extreme, column] == 2)).double().mean())
    return out
