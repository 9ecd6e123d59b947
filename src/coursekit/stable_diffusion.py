"""A small Stable Diffusion for digits, built from the course's parts and run by diffusers' pipelines (chapter 6).

Latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion
Models", LDM) splits image generation in two: an autoencoder compresses images to latents once
(sec. 3.1, "perceptual image compression"), and a diffusion model learns the latents (eq. 2),
conditioned on text by cross-attention to a text encoder's per-token features (sec. 3.3, eqs. 3-4).
Stable Diffusion is that recipe with a CLIP text encoder. Here each part is the small version:

- **the latent autoencoder**: diffusers' ``AutoencoderKL`` (the "KL-reg." autoencoder of LDM), one
  channel in and out. The 28 x 28 digits are padded with 2 pixels of background on every side to
  32 x 32, and three encoder blocks (two downsamplings, f = 4) map them to **4 x 8 x 8 latents**:
  256 numbers for 1,024 pixels. Why 32 and not 28 (which would give 4 x 7 x 7): diffusers'
  pipelines refuse a height or width that is not divisible by 8 (``check_inputs``), and their
  inpainting pipeline accepts only 4-channel latents (or 9-channel inputs of inpainting U-Nets);
- **the scaling factor**: latents are multiplied by 1 / std(latents) before diffusion, measured on
  the training digits' latents (:func:`scaling_factor_from_latents`), exactly how Stable Diffusion's
  0.18215 was computed (``scale_by_std`` in the LDM code: 1 / the std of the first batch's latents).
  It is stored in the autoencoder's ``config.scaling_factor``, where the pipelines read it;
- **the text encoder and tokenizer**: chapter 5's CLIP text tower as a transformers ``CLIPTextModel``
  (:func:`text_encoder_from_clip`) and a ``CLIPTokenizer`` on the vocabulary that
  :func:`coursekit.clip.write_tokenizer` writes (:func:`clip_tokenizer`); nothing is downloaded;
- **the latent U-Net**: diffusers' ``UNet2DConditionModel`` (:func:`latent_unet`), cross-attending to
  the text features, trained with condition dropout (the prompt replaced by the empty prompt "")
  so that one network is both the conditional and the unconditional model of classifier-free guidance;
- **the scheduler**: Stable Diffusion's noise schedule (:func:`noise_scheduler`): 1000 steps, sqrt(beta)
  linear from sqrt(0.00085) to sqrt(0.012) (diffusers' "scaled_linear"), and **epsilon prediction**,
  as Stable Diffusion 1.x: the small model and the real one (in Colab) then share the schedule, the
  parametrisation and every sampler, so the chapter can swap one for the other. (``v_prediction``,
  the choice of Stable Diffusion 2's 768-pixel model and of the course's pixel ``ddpm``, is an option.)

:func:`build_pipeline` puts the parts into a ``StableDiffusionPipeline``; the saved folder
(:func:`save_pipeline`) loads offline in ``StableDiffusionPipeline``, ``StableDiffusionImg2ImgPipeline``
and ``StableDiffusionInpaintPipeline``. Images given to img2img and inpainting must be one-channel:
``(B, 1, 32, 32)`` tensors in [0, 1] or "L"-mode PIL images (an RGB picture would give the one-channel
encoder three channels). :func:`generate` is the pipeline's sampling loop written out.

Notation: ``x0`` an image in [-1, 1], ``z`` its latent times the scaling factor, ``z_t`` the noisy
latent at step ``t``, ``eps`` the noise, ``alpha_bar_t`` the cumulative product of the alphas.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from coursekit.clip import DigitCLIP, text_config, write_tokenizer

DIGIT_SIZE = 28
IMAGE_SIZE = 32                          # what the pipelines see: height and width divisible by 8
PAD = (IMAGE_SIZE - DIGIT_SIZE) // 2     # background pixels added on every side
EMPTY_PROMPT = ""                        # the dropped condition, and the default negative prompt
RECORD_NAME = "training.json"

__all__ = ["LatentAutoencoderConfig", "LatentUNetConfig", "pad_digits", "crop_digits", "latent_autoencoder",
           "latent_autoencoder_loss", "encode_latents", "scaling_factor_from_latents", "latent_statistics",
           "text_encoder_from_clip", "clip_tokenizer", "encode_text", "latent_unet", "noise_scheduler",
           "latent_diffusion_loss", "latent_moments", "build_pipeline", "save_pipeline", "load_pipeline",
           "load_latent_autoencoder", "read_pipeline_record", "generate"]


# ----------------------------------------------------------------------------------------------
# Images: 28 x 28 digits in [0, 1] <-> 32 x 32 autoencoder inputs in [-1, 1]
# ----------------------------------------------------------------------------------------------

def pad_digits(images: torch.Tensor) -> torch.Tensor:
    """``(N, 1, 28, 28)`` digits in [0, 1] -> ``(N, 1, 32, 32)`` in [-1, 1], with 2 pixels of background (-1) around."""
    if images.ndim != 4 or images.shape[1:] != (1, DIGIT_SIZE, DIGIT_SIZE):
        raise ValueError(f"expected digits of shape (N, 1, 28, 28) in [0, 1], got {tuple(images.shape)}")
    return F.pad(images * 2 - 1, (PAD, PAD, PAD, PAD), value=-1.0)


def crop_digits(images: torch.Tensor) -> torch.Tensor:
    """``(N, 1, 32, 32)`` images (any range) -> the central ``(N, 1, 28, 28)``, where the digits were."""
    if images.ndim != 4 or images.shape[2:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected images of shape (N, C, 32, 32), got {tuple(images.shape)}")
    return images[:, :, PAD:PAD + DIGIT_SIZE, PAD:PAD + DIGIT_SIZE]


# ----------------------------------------------------------------------------------------------
# The latent autoencoder
# ----------------------------------------------------------------------------------------------

@dataclass
class LatentAutoencoderConfig:
    """A small ``AutoencoderKL``: each entry of ``block_out_channels`` is one encoder (and decoder) block,
    and all blocks but the last halve the resolution: 3 blocks take 32 x 32 to 8 x 8 (f = 4)."""
    block_out_channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 8
    mid_block_add_attention: bool = True   # self-attention at the lowest resolution, as in Stable Diffusion's VAE
    scaling_factor: float = 1.0            # replaced by 1 / std(latents) after training

    def __post_init__(self):
        self.block_out_channels = tuple(self.block_out_channels)


def latent_autoencoder(config: LatentAutoencoderConfig | None = None):
    """diffusers' ``AutoencoderKL`` for one-channel 32 x 32 images, configured by ``config``."""
    from diffusers import AutoencoderKL

    config = config or LatentAutoencoderConfig()
    if any(width % config.norm_num_groups for width in config.block_out_channels):
        raise ValueError(f"every block width must be divisible by norm_num_groups={config.norm_num_groups}, "
                         f"got {config.block_out_channels}")
    levels = len(config.block_out_channels)
    return AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * levels,
                         up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=config.block_out_channels,
                         layers_per_block=config.layers_per_block, latent_channels=config.latent_channels,
                         norm_num_groups=config.norm_num_groups, sample_size=IMAGE_SIZE,
                         scaling_factor=config.scaling_factor, mid_block_add_attention=config.mid_block_add_attention)


def _images_of(batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def latent_autoencoder_loss(vae, batch, generator: torch.Generator | None = None, kl_weight: float = 1e-6) -> torch.Tensor:
    """The loss of LDM's KL-regularised autoencoder on ``batch = (images,)``, 32 x 32 in [-1, 1]:
    per image, the L1 reconstruction error summed over pixels plus ``kl_weight`` times KL(q(z|x) || N(0, I)),
    averaged over the batch. ``kl_weight = 1e-6`` is LDM's KL-f8 setting (Rombach et al. 2022, sec. 3.1:
    "a slight KL-penalty towards a standard normal"), so the latents are nearly those of a plain autoencoder
    and their scale is free: hence the scaling factor. LDM adds a perceptual (LPIPS) term and a patch
    discriminator to the L1 term; for digits the L1 term alone is used."""
    images = _images_of(batch)
    if images.ndim != 4 or images.shape[1] != vae.config.in_channels or images.shape[2] % 8 or images.shape[3] % 8:
        raise ValueError(f"expected images of shape (N, {vae.config.in_channels}, H, W) in [-1, 1] with H and W "
                         f"divisible by 8 (pad_digits makes 32 x 32), got {tuple(images.shape)}")
    posterior = vae.encode(images).latent_dist            # q(z|x) = N(mu, sigma^2), mu and logvar (B, 4, 8, 8)
    z = posterior.sample(generator=generator)             # reparameterised: mu + sigma * eps
    reconstruction = vae.decode(z).sample                 # (B, 1, 32, 32)
    l1 = (reconstruction - images).abs().sum(dim=(1, 2, 3))
    kl = posterior.kl()                                   # (B,): 0.5 * sum(mu^2 + sigma^2 - 1 - logvar)
    return (l1 + kl_weight * kl).mean()


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True,
                   batch_size: int = 500) -> torch.Tensor:
    """Unscaled latents ``(N, 4, 8, 8)`` of ``(N, 1, 32, 32)`` images in [-1, 1]: samples of q(z|x)
    (as LDM trains its diffusion model on) or, with ``sample=False``, its means."""
    vae.eval()
    device = next(vae.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        posterior = vae.encode(images[start:start + batch_size].to(device)).latent_dist
        out.append((posterior.sample(generator=generator) if sample else posterior.mode()).cpu())
    return torch.cat(out)


def scaling_factor_from_latents(latents: torch.Tensor) -> float:
    """1 / the standard deviation of all the numbers in ``latents``: the factor that gives the diffusion model
    latents of unit variance, which its noise schedule assumes (x_T ~ N(0, I)). Stable Diffusion's 0.18215
    is this number for its autoencoder (latent std about 5.49). Only a scale, no shift: the latents are not centred."""
    if latents.numel() < 2:
        raise ValueError(f"need at least two latent values to measure a standard deviation, got {latents.numel()}")
    std = latents.double().flatten().std().item()
    if not std > 0 or std != std:
        raise ValueError(f"the latents' standard deviation is {std}: cannot scale them to unit variance")
    return 1.0 / std


def latent_statistics(latents: torch.Tensor) -> dict:
    """Per-channel mean and std of ``(N, C, H, W)`` latents, the overall std, and the scaling factor."""
    per_channel = latents.double().transpose(0, 1).flatten(1)      # (C, N * H * W)
    return {"channel_mean": [round(v, 5) for v in per_channel.mean(1).tolist()],
            "channel_std": [round(v, 5) for v in per_channel.std(1).tolist()],
            "std": round(latents.double().std().item(), 5), "scaling_factor": scaling_factor_from_latents(latents),
            "latents": int(len(latents)), "shape": list(latents.shape[1:])}


# ----------------------------------------------------------------------------------------------
# The text encoder and tokenizer: chapter 5's CLIP text tower
# ----------------------------------------------------------------------------------------------

def text_encoder_from_clip(clip: DigitCLIP):
    """A transformers ``CLIPTextModel`` holding the text tower of ``clip`` (its ``CLIPTextModelWithProjection``
    without the projection): ``last_hidden_state`` is ``clip.text_features``, the per-token features
    ``(B, 12, text_width)`` that the U-Net cross-attends to. Its config sets ``use_attention_mask``, so that
    diffusers' pipelines pass the padding mask as ``DigitCLIP.text_features`` does (without it the features
    at the padding positions would differ). The pipelines' ``clip_skip`` does not work with it: diffusers looks
    for ``text_encoder.text_model.final_layer_norm``, which transformers 5's ``CLIPTextModel`` no longer has."""
    from transformers import CLIPTextModel

    if not isinstance(clip, DigitCLIP):
        raise TypeError(f"expected a coursekit.clip.DigitCLIP, got {type(clip).__name__}")
    config = text_config(clip.config)
    config.use_attention_mask = True
    text_encoder = CLIPTextModel(config)
    text_encoder.load_state_dict(clip.text_encoder.text_model.state_dict())
    return text_encoder.to(clip.logit_scale.device).eval().requires_grad_(False)


def clip_tokenizer():
    """transformers' ``CLIPTokenizer`` on the caption vocabulary that :func:`coursekit.clip.write_tokenizer` writes
    (a fresh object, read from a temporary folder: ``model_max_length`` 12, padding with the end token)."""
    import tempfile

    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="coursekit-tokenizer-") as directory:
        return CLIPTokenizer.from_pretrained(str(write_tokenizer(directory)))


@torch.no_grad()
def encode_text(text_encoder, tokenizer, prompts: list[str]) -> torch.Tensor:
    """The per-token features ``(B, L, width)`` of ``prompts``, tokenized and encoded as the pipelines do it."""
    tokens = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    device = text_encoder.device
    mask = tokens.attention_mask.to(device) if getattr(text_encoder.config, "use_attention_mask", False) else None
    return text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]


# ----------------------------------------------------------------------------------------------
# The latent U-Net and the scheduler
# ----------------------------------------------------------------------------------------------

@dataclass
class LatentUNetConfig:
    """A small ``UNet2DConditionModel`` for ``latent_channels x sample_size x sample_size`` latents. Level 0 is
    the full latent resolution; each further level halves it. ``cross_attention_levels`` get spatial
    transformers (self-attention, then cross-attention to the text features); the middle block always has one."""
    sample_size: int = 8
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 2
    cross_attention_levels: tuple[int, ...] = (0, 1)
    attention_heads: int = 4
    cross_attention_dim: int = 64          # the text encoder's width (DigitCLIP's text_width)
    norm_num_groups: int = 8

    def __post_init__(self):
        self.block_out_channels = tuple(self.block_out_channels)
        self.cross_attention_levels = tuple(self.cross_attention_levels)


def latent_unet(config: LatentUNetConfig | None = None):
    """diffusers' ``UNet2DConditionModel`` configured by ``config``."""
    from diffusers import UNet2DConditionModel

    config = config or LatentUNetConfig()
    levels = len(config.block_out_channels)
    if any(level not in range(levels) for level in config.cross_attention_levels):
        raise ValueError(f"cross_attention_levels must lie in 0..{levels - 1}, got {config.cross_attention_levels}")
    if config.sample_size % 2 ** (levels - 1):
        raise ValueError(f"{levels} levels halve a {config.sample_size} x {config.sample_size} latent {levels - 1} "
                         f"times: sample_size must be divisible by {2 ** (levels - 1)}")
    down = tuple("CrossAttnDownBlock2D" if level in config.cross_attention_levels else "DownBlock2D" for level in range(levels))
    up = tuple("CrossAttnUpBlock2D" if level in config.cross_attention_levels else "UpBlock2D" for level in reversed(range(levels)))
    # diffusers' attention_head_dim is, for this model, the number of heads (a naming slip diffusers keeps
    # for compatibility with existing configs; Stable Diffusion 1.x's value 8 means 8 heads)
    return UNet2DConditionModel(sample_size=config.sample_size, in_channels=config.latent_channels,
                                out_channels=config.latent_channels, down_block_types=down, up_block_types=up,
                                block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
                                cross_attention_dim=config.cross_attention_dim, attention_head_dim=config.attention_heads,
                                norm_num_groups=config.norm_num_groups)


def noise_scheduler(prediction_type: str = "epsilon", num_train_timesteps: int = 1000):
    """A diffusers ``DDPMScheduler`` with Stable Diffusion's schedule: sqrt(beta_t) linear in t from sqrt(0.00085)
    to sqrt(0.012) ("scaled_linear", LDM's "linear"), so alpha_bar_T is about 0.0047, not 0. No clipping of the
    predicted z0 (latents are not bounded like pixels), and ``steps_offset=1`` as in Stable Diffusion."""
    from diffusers import DDPMScheduler

    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", prediction_type=prediction_type, clip_sample=False,
                         steps_offset=1, timestep_spacing="leading")


@torch.no_grad()
def latent_moments(vae, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The parameters of q(z|x) for ``(N, 1, 32, 32)`` images in [-1, 1]: ``(N, 2 * latent_channels, 8, 8)``, the
    means then the log-variances, as diffusers' ``DiagonalGaussianDistribution`` takes them. Encoding the
    training set once and sampling z from these moments at every step gives the same objective as encoding each
    batch afresh (the autoencoder is frozen), without running the encoder at every step."""
    vae.eval()
    device = next(vae.parameters()).device
    return torch.cat([vae.encode(images[start:start + batch_size].to(device)).latent_dist.parameters.cpu()
                      for start in range(0, len(images), batch_size)])


def latent_diffusion_loss(unet, batch, generator: torch.Generator | None = None, *, vae, text_encoder, tokenizer,
                          scheduler, cond_drop_prob: float = 0.1, scaling_factor: float | None = None,
                          keep_prob: float = 0.5, text_cache: dict | None = None) -> torch.Tensor:
    """LDM's conditional objective (Rombach et al. 2022, eq. 4) on ``batch = (images 32 x 32 in [-1, 1], labels,
    attribute levels)``: encode each image with the frozen autoencoder and scale it (z = scaling_factor * a sample
    of q(z|x); default ``vae.config.scaling_factor``), caption it afresh (:func:`coursekit.clip.random_captions`),
    drop the caption to the empty prompt with probability ``cond_drop_prob``, encode the captions with the frozen
    text encoder, noise z to z_t with ``scheduler``, and return the MSE between the U-Net's output and its target
    (eps, or v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) z with ``v_prediction``).

    The first entry of ``batch`` may instead hold the posterior moments that :func:`latent_moments` computed
    (``2 * latent_channels`` channels); z is then sampled from them. ``text_cache`` (a dict, kept by the caller)
    remembers the features of each prompt seen, since the frozen text encoder gives a prompt the same features
    every time."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    from coursekit.clip import random_captions
    from coursekit.text_diffusion import drop_prompts

    images, labels, levels = batch[0], batch[1], batch[2]
    scaling_factor = vae.config.scaling_factor if scaling_factor is None else scaling_factor
    device = images.device
    with torch.no_grad():
        if images.shape[1] == 2 * vae.config.latent_channels:          # moments from latent_moments
            posterior = DiagonalGaussianDistribution(images)
        else:
            posterior = vae.encode(images).latent_dist
        z = posterior.sample(generator=generator) * scaling_factor                          # (B, 4, 8, 8)
        prompts = drop_prompts(random_captions(labels, levels, keep_prob, generator), cond_drop_prob, generator)
        if text_cache is None:
            context = encode_text(text_encoder, tokenizer, prompts)                         # (B, 12, width)
        else:
            new = sorted(set(prompts) - text_cache.keys())
            if new:
                text_cache.update(zip(new, encode_text(text_encoder, tokenizer, new)))
            context = torch.stack([text_cache[prompt] for prompt in prompts])               # (B, 12, width)
    eps = torch.randn(z.shape, generator=generator, device=device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(z),), generator=generator, device=device)
    z_t = scheduler.add_noise(z, eps, t)          # sqrt(alpha_bar_t) z + sqrt(1 - alpha_bar_t) eps
    target = eps if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(z, eps, t)
    prediction = unet(z_t, t, encoder_hidden_states=context).sample
    return F.mse_loss(prediction, target)


# ----------------------------------------------------------------------------------------------
# The pipeline: build, save, load
# ----------------------------------------------------------------------------------------------

def build_pipeline(vae, text_encoder, tokenizer, unet, scheduler, progress: bool = False):
    """The parts as a diffusers ``StableDiffusionPipeline`` (no safety checker, no feature extractor), after
    checking that they fit together: the U-Net's latents are the autoencoder's, 32 x 32 images, and it
    cross-attends to features as wide as the text encoder's."""
    from diffusers import StableDiffusionPipeline

    vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if unet.config.in_channels != vae.config.latent_channels or unet.config.out_channels != vae.config.latent_channels:
        raise ValueError(f"the U-Net takes {unet.config.in_channels}-channel latents; the autoencoder makes "
                         f"{vae.config.latent_channels}-channel ones")
    if vae.config.latent_channels != 4:
        raise ValueError("StableDiffusionInpaintPipeline accepts only 4-channel latents (or 9-channel inputs of "
                         f"inpainting U-Nets); this autoencoder makes {vae.config.latent_channels}")
    if unet.config.sample_size * vae_scale_factor != IMAGE_SIZE:
        raise ValueError(f"the U-Net's {unet.config.sample_size} x {unet.config.sample_size} latents decode to "
                         f"{unet.config.sample_size * vae_scale_factor} pixels, not {IMAGE_SIZE} (f = {vae_scale_factor})")
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise ValueError(f"the U-Net cross-attends to {unet.config.cross_attention_dim}-wide features; the text "
                         f"encoder's are {text_encoder.config.hidden_size} wide")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=not progress)
    return pipe


def save_pipeline(pipe, path: str | Path, record: dict | None = None) -> Path:
    """Write ``pipe`` with diffusers' ``save_pretrained`` (``model_index.json`` and one folder per part:
    ``vae/``, ``text_encoder/``, ``tokenizer/``, ``unet/``, ``scheduler/``) and, if given, ``training.json``."""
    path = Path(path)
    pipe.save_pretrained(str(path))
    if record is not None:
        (path / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
    return path


def _resolve_folder(name_or_path: str | Path, marker: str, what: str) -> Path:
    """A folder holding ``marker``, from a path or the name of a folder shipped in coursekit/checkpoints/."""
    from coursekit.checkpoint import shipped_dir

    path = Path(name_or_path)
    if (path / marker).is_file():
        return path
    shipped = shipped_dir() / str(name_or_path)
    if (shipped / marker).is_file():
        return shipped
    names = sorted(p.parent.name for p in shipped_dir().glob(f"*/{marker}"))
    raise FileNotFoundError(f"no {what} at {str(name_or_path)!r}: expected a folder with {marker}, or one of the "
                            f"shipped names {names}")


def load_pipeline(name_or_path: str | Path, pipeline_class=None, device: torch.device | str = "cpu", progress: bool = False):
    """A saved pipeline folder (a path, or the name of one shipped in coursekit/checkpoints/) loaded offline by
    ``pipeline_class.from_pretrained`` (default ``StableDiffusionPipeline``; ``StableDiffusionImg2ImgPipeline``
    and ``StableDiffusionInpaintPipeline`` load the same folder). A folder shipped inside the package needs
    its parts' subfolders (``*/*/*.json``, ``*/*/*.safetensors``) in pyproject.toml's package-data."""
    from diffusers import StableDiffusionPipeline

    folder = _resolve_folder(name_or_path, "model_index.json", "pipeline")
    pipe = (pipeline_class or StableDiffusionPipeline).from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=not progress)
    return pipe.to(device)


def read_pipeline_record(name_or_path: str | Path) -> dict:
    """The ``training.json`` of a pipeline folder or of a latent autoencoder folder (a path or a shipped name):
    the command that trained it, device, time and measurements."""
    path = Path(name_or_path)
    folder = path if (path / RECORD_NAME).is_file() else _resolve_folder(name_or_path, RECORD_NAME, "training record")
    return json.loads((folder / RECORD_NAME).read_text())


def load_latent_autoencoder(name_or_path: str | Path, device: torch.device | str = "cpu"):
    """The ``AutoencoderKL`` saved by ``coursekit train latent-autoencoder`` (the folder's ``vae/``), or by
    ``save_pretrained`` in any folder: a path, or a shipped name. Frozen and in eval mode."""
    from diffusers import AutoencoderKL

    path = Path(name_or_path)
    for candidate in (path / "vae", path):
        if (candidate / "config.json").is_file():
            break
    else:
        candidate = _resolve_folder(name_or_path, "vae/config.json", "latent autoencoder") / "vae"
    return AutoencoderKL.from_pretrained(str(candidate), local_files_only=True).to(device).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# The sampling loop, written out
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def generate(prompts: list[str] | str, vae, text_encoder, tokenizer, unet, scheduler, guidance_scale: float = 5.0,
             num_inference_steps: int = 50, generator: torch.Generator | None = None,
             negative_prompt: list[str] | str | None = None, latents: torch.Tensor | None = None) -> torch.Tensor:
    """Text to image with classifier-free guidance: one ``(1, 32, 32)`` image in [0, 1] per prompt, the same
    numbers as ``StableDiffusionPipeline(...)(prompts, ..., output_type="pt").images`` for the same parts,
    ``generator`` and ``latents``. The guided prediction is eps_neg + w (eps_cond - eps_neg): the negative prompt
    (default the empty prompt, the unconditional model) takes the unconditional model's place. ``w = 1`` is the
    conditional model alone; the pipeline also skips guidance for any ``w < 1`` (it cannot show ``w = 0``, the
    unconditional model), this loop does not."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("generate needs at least one prompt")
    if negative_prompt is None or isinstance(negative_prompt, str):
        negative_prompts = [EMPTY_PROMPT if negative_prompt is None else negative_prompt] * len(prompts)
    else:
        negative_prompts = list(negative_prompt)
        if len(negative_prompts) != len(prompts):
            raise ValueError(f"{len(negative_prompts)} negative prompts for {len(prompts)} prompts: give one each, or one string")
    device, dtype = unet.device, unet.dtype
    guided = guidance_scale != 1.0

    # 1. tokenize and encode: the prompts' per-token features (B, 12, width), and the negative prompts'
    context = encode_text(text_encoder, tokenizer, prompts)
    if guided:
        negative_context = encode_text(text_encoder, tokenizer, negative_prompts)
        context = torch.cat([negative_context, context])                     # (2B, 12, width): negatives first

    # 2. draw z_T ~ N(0, I) in latent space, times the scheduler's starting sigma (1 for DDPM and DDIM, sigma_max for Euler)
    shape = (len(prompts), unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    if latents is None:
        noise_device = generator.device if generator is not None else device
        latents = torch.randn(shape, generator=generator, device=noise_device, dtype=dtype).to(device)
    elif tuple(latents.shape) != shape:
        raise ValueError(f"latents must have shape {shape} (one per prompt), got {tuple(latents.shape)}")
    latents = latents.to(device) * scheduler.init_noise_sigma

    # 3. the timesteps of the sampler, from the noisiest
    scheduler.set_timesteps(num_inference_steps, device=device)
    # DDPM (and the ancestral samplers) draw fresh noise in every step: from the same generator as the pipeline
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}

    # 4. the loop: one batched U-Net call on [negative; conditional], then guidance, then the scheduler's step
    for t in scheduler.timesteps:
        model_input = torch.cat([latents, latents]) if guided else latents
        model_input = scheduler.scale_model_input(model_input, t)            # Euler divides by sqrt(sigma^2 + 1)
        prediction = unet(model_input, t, encoder_hidden_states=context).sample
        if guided:
            prediction_negative, prediction_cond = prediction.chunk(2)
            prediction = prediction_negative + guidance_scale * (prediction_cond - prediction_negative)
        latents = scheduler.step(prediction, t, latents, **step_kwargs).prev_sample    # z_t -> z_{t-1}

    # 5. decode: undo the scaling, decode to [-1, 1], map to [0, 1]
    images = vae.decode(latents / vae.config.scaling_factor).sample
    return (images / 2 + 0.5).clamp(0, 1)
