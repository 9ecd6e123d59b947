"""Visible checks for exercise set ps6 (chapter 6: latent diffusion and Stable Diffusion).

Each ``check_*`` function takes the student's answer, raises ``AssertionError`` with a message
that says what was expected, and returns ``None`` when the answer passes. The visible test cells
of ``ps6.ipynb`` call them, and the notebook's last cell runs them all with
``self_check(globals())``. Passing here is necessary for the points, not sufficient: the grader
also runs hidden tests.

The references are diffusers' own code paths for the parts of :mod:`coursekit.stable_diffusion`:

- encoding: the mean of q(z|x) (``retrieve_latents(..., sample_mode="argmax")``) of the padded digit,
  times ``vae.config.scaling_factor``, as the pipelines scale latents (``_encode_vae_image``);
- decoding: ``vae.decode(z / scaling_factor)``, mapped from [-1, 1] to [0, 1] and clamped, as the
  pipelines' ``VaeImageProcessor`` does, then cropped back to the 28 x 28 digit;
- the guided loop: ``StableDiffusionPipeline(..., latents=..., output_type="latent")``, whose
  guidance is eps_neg + w (eps_cond - eps_neg) with the negative prompt (default "") in the
  unconditional model's place;
- img2img's start: ``StableDiffusionImg2ImgPipeline.get_timesteps`` (strength -> the timesteps
  that are run) and the latents noised to the first of them by ``scheduler.add_noise``;
- inpainting's blend: the formula of ``StableDiffusionInpaintPipeline`` for U-Nets with 4 input
  channels: after step i, the known region (mask 0) is the image's latents noised to
  ``timesteps[i + 1]`` with the initial noise (clean after the last step), the rest (mask 1) the
  sampler's latents.

The checks need no data and no checkpoint: tiny random-weight models built from fixed seeds, in
a second or two.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Any, Callable

import torch

from coursekit.exercises import selfcheck
from coursekit.exercises.selfcheck import Part
from coursekit.stable_diffusion import (EMPTY_PROMPT, LatentAutoencoderConfig, LatentUNetConfig, build_pipeline,
                                        clip_tokenizer, crop_digits, latent_autoencoder, latent_unet, noise_scheduler,
                                        pad_digits, text_encoder_from_clip)

STABLE_DIFFUSION_SCALING_FACTOR = 0.18215   # Stable Diffusion 1.x's: 1 / the std of its autoencoder's latents


def _random(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _close(a, b: torch.Tensor, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    return (isinstance(a, torch.Tensor) and a.shape == b.shape
            and torch.allclose(a.detach().double(), b.detach().double(), rtol=rtol, atol=atol))


def _require_tensor(value: Any, name: str) -> None:
    assert isinstance(value, torch.Tensor), f"{name} should return a tensor, got {type(value).__name__}"


# --- tiny models from fixed seeds -------------------------------------------------------------------

def tiny_autoencoder(scaling_factor: float = STABLE_DIFFUSION_SCALING_FACTOR, seed: int = 0):
    """A random-weight ``AutoencoderKL`` with the course's layout (32 x 32 -> 4 x 8 x 8), frozen, in eval mode."""
    config = LatentAutoencoderConfig(block_out_channels=(8, 16, 16), norm_num_groups=4, scaling_factor=scaling_factor)
    with torch.random.fork_rng():  # the global random state is left as it was
        torch.manual_seed(seed)
        return latent_autoencoder(config).eval().requires_grad_(False)


def tiny_unet(cross_attention_dim: int = 32, seed: int = 0):
    """A random-weight ``UNet2DConditionModel`` for 4 x 8 x 8 latents, frozen, in eval mode."""
    config = LatentUNetConfig(block_out_channels=(16, 32), layers_per_block=1, attention_heads=2,
                              cross_attention_dim=cross_attention_dim, norm_num_groups=8)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return latent_unet(config).eval().requires_grad_(False)


def tiny_text_encoder(width: int = 32, seed: int = 0):
    """The text tower of a random-weight ``DigitCLIP`` as a transformers ``CLIPTextModel``, and its tokenizer."""
    from coursekit.clip import CLIPConfig, DigitCLIP

    with torch.random.fork_rng():  # building a transformers model draws its initial weights too
        torch.manual_seed(seed)
        clip = DigitCLIP(CLIPConfig(embed_dim=16, image_channels=(8, 8, 8), text_width=width, text_layers=2, text_heads=2))
        return text_encoder_from_clip(clip.eval()), clip_tokenizer()


def tiny_parts(seed: int = 0, scaling_factor: float = STABLE_DIFFUSION_SCALING_FACTOR, scheduler: str = "DDIMScheduler"):
    """``(vae, text_encoder, tokenizer, unet, scheduler)``: tiny and random, the scheduler one of diffusers'
    (by class name) on Stable Diffusion's schedule (:func:`coursekit.stable_diffusion.noise_scheduler`)."""
    text_encoder, tokenizer = tiny_text_encoder(seed=seed)
    return (tiny_autoencoder(scaling_factor, seed), text_encoder, tokenizer, tiny_unet(seed=seed),
            make_scheduler(scheduler))


def make_scheduler(name: str = "DDIMScheduler"):
    """A fresh diffusers scheduler of class ``name`` with Stable Diffusion's schedule, epsilon prediction."""
    import diffusers

    return getattr(diffusers, name).from_config(noise_scheduler().config)


@contextlib.contextmanager
def recording_unet_calls(unet):
    """Inside the block, ``calls`` lists the batch size of every forward call of ``unet``."""
    calls: list[int] = []

    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample")
        calls.append(int(sample.shape[0]))

    handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


# --- the references: diffusers' code paths ------------------------------------------------------------

@torch.no_grad()
def reference_encode(vae, digits: torch.Tensor, *, sample_generator: torch.Generator | None = None,
                     scale: float | None = None) -> torch.Tensor:
    """Scaled latents ``(N, 4, 8, 8)`` of ``(N, 1, 28, 28)`` digits in [0, 1]: the mean of q(z|x) of the padded
    digits times ``vae.config.scaling_factor``. ``sample_generator`` (a sample of q(z|x) instead of its mean) and
    ``scale`` (another factor) turn it into common mistakes."""
    posterior = vae.encode(pad_digits(digits)).latent_dist
    latents = posterior.mean if sample_generator is None else posterior.sample(generator=sample_generator)
    return latents * (vae.config.scaling_factor if scale is None else scale)


@torch.no_grad()
def reference_decode(vae, z: torch.Tensor, *, scale: float | None = None, crop: bool = True,
                     clamp: bool = True) -> torch.Tensor:
    """``(N, 1, 28, 28)`` digits in [0, 1] from scaled latents ``z``: decode ``z / scaling_factor``, map [-1, 1]
    to [0, 1], clamp, crop. ``scale``, ``crop`` and ``clamp`` turn it into common mistakes."""
    factor = vae.config.scaling_factor if scale is None else scale
    images = vae.decode(z / factor).sample / 2 + 0.5                # (N, 1, 32, 32)
    images = images.clamp(0, 1) if clamp else images
    return crop_digits(images) if crop else images


@torch.no_grad()
def reference_guided_latents(unet, scheduler_name: str, text_encoder, tokenizer, vae, prompts, latents, guidance_scale,
                             num_inference_steps, negative_prompts=None) -> torch.Tensor:
    """The final latents of diffusers' ``StableDiffusionPipeline`` from the given start ``latents``."""
    pipe = build_pipeline(vae, text_encoder, tokenizer, unet, make_scheduler(scheduler_name))
    return pipe(list(prompts), num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                negative_prompt=None if negative_prompts is None else list(negative_prompts), latents=latents.clone(),
                output_type="latent").images


def reference_img2img_timesteps(scheduler, num_inference_steps: int, strength: float) -> torch.Tensor:
    """diffusers' ``StableDiffusionImg2ImgPipeline.get_timesteps`` on ``scheduler`` (whose ``set_timesteps`` has run):
    the timesteps that img2img runs for this ``strength``."""
    from diffusers import StableDiffusionImg2ImgPipeline

    timesteps, _ = StableDiffusionImg2ImgPipeline.get_timesteps(SimpleNamespace(scheduler=scheduler), num_inference_steps,
                                                                 strength, "cpu")
    return timesteps


def reference_img2img_start(scheduler_name: str, z0: torch.Tensor, noise: torch.Tensor, strength: float,
                            num_inference_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(timesteps, z_t)``: the timesteps img2img runs, and ``z0`` noised to the first of them, as diffusers does."""
    scheduler = make_scheduler(scheduler_name)
    scheduler.set_timesteps(num_inference_steps)
    timesteps = reference_img2img_timesteps(scheduler, num_inference_steps, strength)
    return timesteps, scheduler.add_noise(z0, noise, timesteps[:1].repeat(len(z0)))


def reference_inpaint_blend(latents: torch.Tensor, image_latents: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor,
                            scheduler, timesteps: torch.Tensor, i: int, *, level: str = "next",
                            invert: bool = False) -> torch.Tensor:
    """The blend of ``StableDiffusionInpaintPipeline`` (4-channel U-Net) after step ``i``: the known region
    (``mask`` 0) from ``image_latents`` noised to ``timesteps[i + 1]`` with ``noise`` (clean after the last step),
    the region to repaint (``mask`` 1) from ``latents``. ``level`` ("current": noised to ``timesteps[i]``;
    "clean": never noised) and ``invert`` turn it into common mistakes."""
    known = image_latents
    if level == "current":
        known = scheduler.add_noise(image_latents, noise, torch.tensor([int(timesteps[i])]))
    elif level == "next" and i < len(timesteps) - 1:
        known = scheduler.add_noise(image_latents, noise, torch.tensor([int(timesteps[i + 1])]))
    mask = 1 - mask if invert else mask
    return (1 - mask) * known + mask * latents


# --- the checks --------------------------------------------------------------------------------------

def _digits(n: int, seed: int) -> torch.Tensor:
    """Digit-like pictures: ``(n, 1, 28, 28)`` in [0, 1], a bright blob on a dark background."""
    noise = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    rows = torch.arange(28).view(28, 1).float()
    blob = (-((rows - 14) ** 2 + (rows.T - 14) ** 2) / 40).exp()
    return (0.7 * blob + 0.3 * noise).clamp(0, 1)


def check_encode_digits(encode_digits: Callable) -> None:
    """Part (a): scaled latents (N, 4, 8, 8): the mean of q(z|x) of the padded digits times the scaling factor."""
    vae = tiny_autoencoder(STABLE_DIFFUSION_SCALING_FACTOR, seed=1)
    digits = _digits(3, seed=2)
    original = digits.clone()
    with torch.no_grad():
        z = encode_digits(vae, digits)
    _require_tensor(z, "encode_digits")
    if tuple(z.shape) == (3, 4, 7, 7):
        raise AssertionError("the latents are 4 x 7 x 7: the digits went into the autoencoder at 28 x 28; pad them to "
                             "32 x 32 first (pad_digits), which the autoencoder maps to 4 x 8 x 8")
    assert tuple(z.shape) == (3, 4, 8, 8), (
        f"3 digits should give latents of shape (3, 4, 8, 8), got {tuple(z.shape)}")
    assert torch.equal(digits, original), "encode_digits changed the digits passed in"
    expected = reference_encode(vae, digits)
    if _close(z, expected):
        with torch.no_grad():
            again = encode_digits(vae, digits)
        assert _close(again, z, rtol=0, atol=0), "the same digits gave other latents the second time"
        return
    factor = vae.config.scaling_factor
    with torch.no_grad():
        mean = vae.encode(pad_digits(digits)).latent_dist.mean
        unmapped = vae.encode(torch.nn.functional.pad(digits, (2, 2, 2, 2), value=0.0)).latent_dist.mean * factor
        gray_border = vae.encode(torch.nn.functional.pad(digits * 2 - 1, (2, 2, 2, 2), value=0.0)).latent_dist.mean * factor
        again = encode_digits(vae, digits)
    mistakes = {
        f"the latents are divided by the scaling factor ({factor}): multiply by it, z = scaling_factor * latents, so that "
        "they have about unit variance": mean / factor,
        "the latents are not scaled: multiply by vae.config.scaling_factor": mean,
        "the digits went into the autoencoder in [0, 1]: it takes images in [-1, 1] (pad_digits maps and pads them)": unmapped,
        "the padding is 0, which is gray in [-1, 1]: the background is -1 (pad_digits pads with it)": gray_border,
    }
    for message, wrong in mistakes.items():
        if _close(z, wrong):
            raise AssertionError(message)
    if not _close(again, z, rtol=0, atol=0):
        raise AssertionError("the same digits gave other latents the second time: that is a sample of q(z|x); take its "
                             "mean, latent_dist.mean, which is deterministic")
    raise AssertionError(
        "expected vae.encode(pad_digits(digits)).latent_dist.mean * vae.config.scaling_factor; first values expected "
        f"{[round(v, 4) for v in expected.flatten()[:3].tolist()]}, got {[round(v, 4) for v in z.flatten()[:3].tolist()]}")


def check_decode_latents(decode_latents: Callable) -> None:
    """Part (b): digits (N, 1, 28, 28) in [0, 1] from scaled latents: divide, decode, map to [0, 1], clamp, crop."""
    vae = tiny_autoencoder(STABLE_DIFFUSION_SCALING_FACTOR, seed=3)
    z = _random(2, 4, 8, 8, seed=4)
    original = z.clone()
    with torch.no_grad():
        digits = decode_latents(vae, z)
    _require_tensor(digits, "decode_latents")
    assert torch.equal(z, original), "decode_latents changed the latents passed in"
    if tuple(digits.shape) == (2, 1, 32, 32):
        raise AssertionError("the digits are 32 x 32: crop the 2 pixels of padding off every side (crop_digits) to get "
                             "the 28 x 28 digits back")
    assert tuple(digits.shape) == (2, 1, 28, 28), (
        f"latents (2, 4, 8, 8) should give digits of shape (2, 1, 28, 28), got {tuple(digits.shape)}")
    expected = reference_decode(vae, z)
    if _close(digits, expected):
        return
    factor = vae.config.scaling_factor
    with torch.no_grad():
        corner = (vae.decode(z / factor).sample / 2 + 0.5).clamp(0, 1)[:, :, :28, :28]
        mistakes = {
            f"the latents are multiplied by the scaling factor ({factor}): decoding undoes the encoding's scaling, "
            "so divide, vae.decode(z / scaling_factor)": reference_decode(vae, z, scale=1 / factor),
            "the scaling is not undone: decode z / vae.config.scaling_factor, not z": reference_decode(vae, z, scale=1.0),
            "the digits are not clamped to [0, 1]: the decoder's output can leave [-1, 1]; clamp after mapping":
                reference_decode(vae, z, clamp=False),
            "the decoder's output is in [-1, 1]: map it to [0, 1] with x / 2 + 0.5 (and clamp)":
                crop_digits(vae.decode(z / factor).sample.clamp(-1, 1)),
            "the crop is off-centre: the padding is 2 pixels on every side, so the digit is rows and columns 2 .. 29 "
            "(crop_digits)": corner,
        }
    for message, wrong in mistakes.items():
        if _close(digits, wrong):
            raise AssertionError(message)
    raise AssertionError(
        "expected crop_digits((vae.decode(z / scaling_factor).sample / 2 + 0.5).clamp(0, 1)); first values expected "
        f"{[round(v, 4) for v in expected.flatten()[:3].tolist()]}, got {[round(v, 4) for v in digits.flatten()[:3].tolist()]}")


CHECK_PROMPTS = ["a seven", "a thick, left-slanted two"]
CHECK_NEGATIVES = ["a one", "a thin nine"]


def check_guided_latents(guided_latents: Callable) -> None:
    """Part (c): the guided loop from components equals StableDiffusionPipeline's latents (DDIM, 3 steps)."""
    vae, text_encoder, tokenizer, unet, _ = tiny_parts(seed=5)
    latents = _random(2, 4, 8, 8, seed=6)
    original = latents.clone()
    for negatives in (None, CHECK_NEGATIVES):
        scheduler = make_scheduler("DDIMScheduler")
        with torch.no_grad(), recording_unet_calls(unet) as calls:
            z0 = guided_latents(CHECK_PROMPTS, latents, unet, scheduler, text_encoder, tokenizer, 3.0, 3, negatives)
        _require_tensor(z0, "guided_latents")
        assert torch.equal(latents, original), "guided_latents changed the latents passed in"
        assert tuple(z0.shape) == (2, 4, 8, 8), (
            f"two prompts and latents (2, 4, 8, 8) should give final latents (2, 4, 8, 8), got {tuple(z0.shape)}")
        with_negatives = "with negative prompts" if negatives else "without negative prompts"
        assert len(calls) == 3 and all(size == 4 for size in calls), (
            f"{with_negatives}, 3 steps: the U-Net ran {len(calls)} times on batches of {sorted(set(calls))}; expected once per "
            "step on the doubled batch of 4, torch.cat([latents, latents]), with the negative and the prompt features")
        expected = reference_guided_latents(unet, "DDIMScheduler", text_encoder, tokenizer, vae, CHECK_PROMPTS, latents, 3.0,
                                            3, negatives)
        if _close(z0, expected):
            continue
        swapped_prompts = negatives or [EMPTY_PROMPT] * 2
        mistakes = {
            "the guidance is applied to the wrong half of the batch: the first half of the U-Net's output belongs to the "
            "first half of the context; with the negative (or empty) prompts first, eps_neg, eps_cond = eps.chunk(2)":
                reference_guided_latents(unet, "DDIMScheduler", text_encoder, tokenizer, vae, swapped_prompts, latents, 3.0, 3,
                                         CHECK_PROMPTS),
            "the guidance scale is not used: eps = eps_neg + guidance_scale * (eps_cond - eps_neg)":
                reference_guided_latents(unet, "DDIMScheduler", text_encoder, tokenizer, vae, CHECK_PROMPTS, latents, 1.0, 3),
        }
        if negatives:
            mistakes["the negative prompts are ignored: when they are given, they replace the empty prompt as the "
                     "unconditional input"] = reference_guided_latents(unet, "DDIMScheduler", text_encoder, tokenizer, vae,
                                                                       CHECK_PROMPTS, latents, 3.0, 3)
        for message, wrong in mistakes.items():
            if _close(z0, wrong):
                raise AssertionError(f"{with_negatives}: {message}")
        raise AssertionError(
            f"{with_negatives}: expected the final latents of StableDiffusionPipeline with the same parts and start latents; "
            f"first values expected {[round(v, 4) for v in expected.flatten()[:3].tolist()]}, "
            f"got {[round(v, 4) for v in z0.flatten()[:3].tolist()]}")


def check_img2img_start(img2img_start: Callable) -> None:
    """Part (d): img2img's timesteps from the strength (diffusers' get_timesteps) and z0 noised to the first one."""
    z0, noise = _random(2, 4, 8, 8, seed=7), _random(2, 4, 8, 8, seed=8)
    copies = (z0.clone(), noise.clone())
    for strength in (0.3, 1.0):
        scheduler = make_scheduler("DDIMScheduler")
        result = img2img_start(scheduler, z0, noise, strength, 10)
        assert isinstance(result, (tuple, list)) and len(result) == 2, (
            "img2img_start should return two things: the timesteps to run and the noised latents z_t")
        timesteps, z_t = result
        _require_tensor(timesteps, "img2img_start's timesteps")
        _require_tensor(z_t, "img2img_start's z_t")
        assert torch.equal(z0, copies[0]) and torch.equal(noise, copies[1]), "img2img_start changed the tensors passed in"
        expected_timesteps, expected_z_t = reference_img2img_start("DDIMScheduler", z0, noise, strength, 10)
        all_timesteps = make_scheduler("DDIMScheduler")
        all_timesteps.set_timesteps(10)
        all_timesteps = all_timesteps.timesteps.tolist()
        got = [int(t) for t in timesteps.flatten().tolist()]
        if got != expected_timesteps.tolist():
            steps = len(expected_timesteps)
            message = (f"strength {strength}, 10 steps: expected the last {steps} of the 10 timesteps, "
                       f"{expected_timesteps.tolist()}, got {got}")
            if got == all_timesteps[len(all_timesteps) - int(10 * (1 - strength)):]:
                message += (": the strength is inverted; it is the fraction of the steps that are run (strength 1: all of "
                            "them, from the noisiest), so int(num_inference_steps * strength) steps are run")
            elif len(got) in (steps - 1, steps + 1) and got and got[-1] == all_timesteps[-1]:
                message += (": one step off; t_start = num_inference_steps - int(num_inference_steps * strength), and the "
                            "timesteps run are scheduler.timesteps[t_start:]")
            elif got and got[0] == all_timesteps[0] and len(got) == 10:
                message += ": every step is run; img2img skips the noisiest ones and starts at t_start"
            raise AssertionError(message)
        assert tuple(z_t.shape) == (2, 4, 8, 8), f"z_t should have the shape of z0, (2, 4, 8, 8), got {tuple(z_t.shape)}"
        if not _close(z_t, expected_z_t):
            scheduler = make_scheduler("DDIMScheduler")
            scheduler.set_timesteps(10)
            if _close(z_t, z0):
                raise AssertionError(f"strength {strength}: z_t is z0 itself: noise it to the first timestep run, "
                                     "scheduler.add_noise(z0, noise, timesteps[:1])")
            if _close(z_t, scheduler.add_noise(z0, noise, torch.tensor([int(timesteps[-1])]))):
                raise AssertionError(f"strength {strength}: z0 is noised to the last timestep run; img2img starts from the "
                                     "first, the noisiest: scheduler.add_noise(z0, noise, timesteps[:1])")
            raise AssertionError(
                f"strength {strength}: expected z_t = scheduler.add_noise(z0, noise, timesteps[:1]), z0 noised to timestep "
                f"{int(expected_timesteps[0])}; first values expected {[round(v, 4) for v in expected_z_t.flatten()[:3].tolist()]}, "
                f"got {[round(v, 4) for v in z_t.flatten()[:3].tolist()]}")


def check_inpaint_blend(inpaint_blend: Callable) -> None:
    """Part (e): the known region (mask 0) from the image's latents noised to timesteps[i + 1], the rest sampled."""
    scheduler = make_scheduler("DDIMScheduler")
    scheduler.set_timesteps(10)
    timesteps = scheduler.timesteps
    latents, image_latents, noise = _random(2, 4, 8, 8, seed=9), _random(2, 4, 8, 8, seed=10), _random(2, 4, 8, 8, seed=11)
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, 4:] = 1.0       # example 0: repaint the lower half
    mask[1, :, :, :3] = 1.0    # example 1: repaint the left three columns
    copies = [x.clone() for x in (latents, image_latents, mask, noise)]
    i = 3
    blended = inpaint_blend(latents, image_latents, mask, noise, scheduler, timesteps, i)
    _require_tensor(blended, "inpaint_blend")
    assert all(torch.equal(x, c) for x, c in zip((latents, image_latents, mask, noise), copies)), (
        "inpaint_blend changed the tensors passed in")
    assert tuple(blended.shape) == (2, 4, 8, 8), f"the blend should have the shape of the latents, (2, 4, 8, 8), got {tuple(blended.shape)}"
    expected = reference_inpaint_blend(latents, image_latents, mask, noise, scheduler, timesteps, i)
    if _close(blended, expected):
        return
    mistakes = {
        "the mask is inverted: 1 (white) marks the region to repaint, which takes the sampler's latents; 0 the known "
        "region, which takes the image's": reference_inpaint_blend(latents, image_latents, mask, noise, scheduler, timesteps, i,
                                                                   invert=True),
        "the known region is blended in clean: the sampler's latents after step i are at the noise level of "
        "timesteps[i + 1], so noise the image's latents to it, scheduler.add_noise(image_latents, noise, ...)":
            reference_inpaint_blend(latents, image_latents, mask, noise, scheduler, timesteps, i, level="clean"),
        "the known region is noised to timesteps[i], the level before the step: after step i the latents are at "
        "timesteps[i + 1]": reference_inpaint_blend(latents, image_latents, mask, noise, scheduler, timesteps, i,
                                                    level="current"),
    }
    for message, wrong in mistakes.items():
        if _close(blended, wrong):
            raise AssertionError(message)
    raise AssertionError(
        "expected (1 - mask) * add_noise(image_latents, noise, timesteps[i + 1]) + mask * latents; first values expected "
        f"{[round(v, 4) for v in expected.flatten()[:3].tolist()]}, got {[round(v, 4) for v in blended.flatten()[:3].tolist()]}")


PARTS = (
    Part("a", "encode_digits", 2, ("encode_digits",), check_encode_digits),
    Part("b", "decode_latents", 2, ("decode_latents",), check_decode_latents),
    Part("c", "guided_latents", 4, ("guided_latents",), check_guided_latents),
    Part("d", "img2img_start", 3, ("img2img_start",), check_img2img_start),
    Part("e", "inpaint_blend", 3, ("inpaint_blend",), check_inpaint_blend),
)


def run_checks(namespace: dict[str, Any]) -> list[tuple[Part, str, str]]:
    """``(part, status, reason)`` for every part, status one of "pass", "FAIL", "not attempted"."""
    return selfcheck.run_checks(PARTS, namespace)


def self_check(namespace: dict[str, Any]) -> list[tuple[Part, str, str]]:
    """Print which parts pass their visible checks; call it as ``self_check(globals())``."""
    return selfcheck.self_check(PARTS, namespace)
