"""Published generative models from a model hub, for Colab (they need the internet).

Every hub id the course uses is in this module, once. Without a reachable hub the loaders raise
:class:`HubUnavailable` with what was tried and what to do, instead of a long download traceback.

- :data:`PRETRAINED_GAN`: a progressive GAN (ProGAN, Karras et al. 2018) trained on CelebA-HQ
  faces at 256x256, from PyTorch Hub (facebookresearch/pytorch_GAN_zoo). Chapter 3 samples it.
- :data:`PRETRAINED_CLIP`: OpenAI's CLIP ViT-B/32 (Radford et al. 2021), from the Hugging Face
  Hub through transformers. Chapter 5 classifies digits zero-shot with it and draws its attention.
- :data:`PRETRAINED_STABLE_DIFFUSION`: Stable Diffusion 1.5 (Rombach et al. 2022) from the Hugging Face
  Hub through diffusers, in float16 on a GPU (about 2.7 GB of weights with the safety checker: it fits a
  free Colab T4). Chapter 6 runs text-to-image, img2img and inpainting with it, and its own sampling
  loop on the same weights.
"""

from __future__ import annotations

import torch

PRETRAINED_GAN = {
    "repo": "facebookresearch/pytorch_GAN_zoo:hub",
    "model": "PGAN",
    "model_name": "celebAHQ-256",
    "description": "ProGAN (Karras et al. 2018) trained on CelebA-HQ faces, 256x256 RGB, 512-number noise",
}


PRETRAINED_CLIP = {
    "repo_id": "openai/clip-vit-base-patch32",
    "description": "OpenAI CLIP ViT-B/32: a 12-layer vision transformer on 32x32-pixel patches of 224x224 images "
                   "and a 12-layer text transformer, trained on 400 million image-text pairs",
}


PRETRAINED_STABLE_DIFFUSION = {
    "repo_id": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "description": "Stable Diffusion 1.5: a KL autoencoder (512x512x3 images <-> 4x64x64 latents, scaling factor "
                   "0.18215), an 860M-parameter UNet2DConditionModel cross-attending to OpenAI CLIP ViT-L/14's text "
                   "features (77 tokens x 768), trained on LAION-5B subsets; epsilon prediction, scaled_linear betas",
}


class HubUnavailable(RuntimeError):
    """A published model could not be downloaded (no internet, hub down, or the repository changed)."""


def load_pretrained_gan(spec: dict | None = None, device: torch.device | str | None = None):
    """Download and build the pretrained GAN of ``spec`` (default :data:`PRETRAINED_GAN`) with
    ``torch.hub``. Raises :class:`HubUnavailable` where that fails."""
    from coursekit.device import get_device

    spec = spec or PRETRAINED_GAN
    device = torch.device(device) if device is not None else get_device()
    try:
        return torch.hub.load(spec["repo"], spec["model"], model_name=spec["model_name"], pretrained=True,
                              useGPU=device.type == "cuda", trust_repo=True)
    except Exception as error:  # urllib, http, git and unpickling errors all mean "not available here"
        raise HubUnavailable(
            f"could not load {spec['model']} '{spec['model_name']}' from PyTorch Hub ({spec['repo']}): "
            f"{type(error).__name__}: {error}. This cell needs the internet: run it in Colab, or on a machine "
            "that can reach github.com and download.pytorch.org.") from error


@torch.no_grad()
def sample_pretrained_gan(model, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` images from a pytorch_GAN_zoo model as (n, 3, H, W) floats in [0, 1] on the CPU."""
    torch.manual_seed(seed)  # buildNoiseData draws with torch's global generator
    noise, _ = model.buildNoiseData(n)
    images = model.test(noise)
    return ((images.clamp(-1, 1) + 1) / 2).cpu()


def load_pretrained_clip(spec: dict | None = None, device: torch.device | str | None = None):
    """Download OpenAI's CLIP (default :data:`PRETRAINED_CLIP`) with transformers: ``(model, processor)``.
    Raises :class:`HubUnavailable` where that fails."""
    from transformers import CLIPModel, CLIPProcessor

    from coursekit.device import get_device

    spec = spec or PRETRAINED_CLIP
    device = torch.device(device) if device is not None else get_device()
    try:
        model = CLIPModel.from_pretrained(spec["repo_id"], attn_implementation="eager")  # eager: it can return attentions
        processor = CLIPProcessor.from_pretrained(spec["repo_id"])
    except Exception as error:  # connection, HTTP and missing-file errors all mean "not available here"
        raise HubUnavailable(
            f"could not load {spec['repo_id']} from the Hugging Face Hub: {type(error).__name__}: {error}. This cell "
            "needs the internet: run it in Colab, or on a machine that can reach huggingface.co.") from error
    return model.to(device).eval(), processor


def _rgb_pil(images: torch.Tensor) -> list:
    """(N, 1 or 3, H, W) tensors in [0, 1] as RGB PIL images (what CLIP's processor expects)."""
    from PIL import Image

    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, 1 or 3, H, W) in [0, 1], got {tuple(images.shape)}")
    pixels = (images.clamp(0, 1) * 255).round().byte().expand(-1, 3, -1, -1).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(p) for p in pixels]


@torch.no_grad()
def clip_zero_shot(model, processor, images: torch.Tensor, class_names: list[str],
                   template: str = "a photo of the number {}.") -> torch.Tensor:
    """Zero-shot class probabilities (N, len(class_names)) of a transformers ``CLIPModel``: the softmax
    over the scaled cosine similarities between each image and the prompts ``template.format(name)``."""
    device = next(model.parameters()).device
    inputs = processor(text=[template.format(name) for name in class_names], images=_rgb_pil(images),
                       return_tensors="pt", padding=True)
    outputs = model(**{k: v.to(device) for k, v in inputs.items()})
    return outputs.logits_per_image.softmax(dim=-1).cpu()


@torch.no_grad()
def clip_attention_map(model, processor, image: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """How much the class token of a CLIP vision transformer attends to each image patch in ``layer``
    (averaged over heads): a (side, side) map over the patch grid, summing to at most 1 (the rest of
    the attention goes to the class token itself)."""
    device = next(model.parameters()).device
    inputs = processor(images=_rgb_pil(image[None] if image.ndim == 3 else image), return_tensors="pt")
    outputs = model.vision_model(pixel_values=inputs["pixel_values"].to(device), output_attentions=True)
    attention = outputs.attentions[layer][0].mean(0)  # (tokens, tokens): token 0 is the class token
    patches = attention[0, 1:]
    side = int(round(patches.numel() ** 0.5))
    return patches.reshape(side, side).cpu()


def load_stable_diffusion(pipeline_class=None, spec: dict | None = None, device: torch.device | str | None = None,
                          progress: bool = True):
    """Download Stable Diffusion (default :data:`PRETRAINED_STABLE_DIFFUSION`) into ``pipeline_class`` (default
    diffusers' ``StableDiffusionPipeline``; ``StableDiffusionImg2ImgPipeline`` and
    ``StableDiffusionInpaintPipeline`` take the same weights, or build them from a loaded pipeline with
    ``from_pipe`` without a second download). On a GPU the float16 weights, on the CPU float32 (slow: minutes
    per image). The safety checker stays as the model's authors ship it. Raises :class:`HubUnavailable` where the
    download fails."""
    from diffusers import StableDiffusionPipeline

    from coursekit.device import get_device

    spec = spec or PRETRAINED_STABLE_DIFFUSION
    device = torch.device(device) if device is not None else get_device()
    half = device.type == "cuda"
    try:
        pipe = (pipeline_class or StableDiffusionPipeline).from_pretrained(
            spec["repo_id"], torch_dtype=torch.float16 if half else torch.float32, variant="fp16" if half else None)
    except Exception as error:  # connection, HTTP and missing-file errors all mean "not available here"
        raise HubUnavailable(
            f"could not load {spec['repo_id']} from the Hugging Face Hub: {type(error).__name__}: {error}. This cell "
            "needs the internet and, to be quick, a GPU: run it in Colab with a T4 runtime.") from error
    pipe.set_progress_bar_config(disable=not progress)
    return pipe.to(device)
