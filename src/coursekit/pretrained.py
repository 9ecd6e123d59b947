"""Published generative models from a model hub, for Colab (they need the internet).

Every hub id the course uses is in this module, once. Without a reachable hub the loaders raise
:class:`HubUnavailable` with what was tried and what to do, instead of a long download traceback.

- :data:`PRETRAINED_GAN`: a progressive GAN (ProGAN, Karras et al. 2018) trained on CelebA-HQ
  faces at 256x256, from PyTorch Hub (facebookresearch/pytorch_GAN_zoo). Chapter 3 samples it.
"""

from __future__ import annotations

import torch

PRETRAINED_GAN = {
    "repo": "facebookresearch/pytorch_GAN_zoo:hub",
    "model": "PGAN",
    "model_name": "celebAHQ-256",
    "description": "ProGAN (Karras et al. 2018) trained on CelebA-HQ faces, 256x256 RGB, 512-number noise",
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
