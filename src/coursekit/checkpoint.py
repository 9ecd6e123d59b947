"""Checkpoints: ``config.json`` + ``model.safetensors`` (+ ``training.json``), never pickles.

``config.json`` names the model type and holds its dataclass config, so :func:`load_checkpoint`
can rebuild the model before loading the weights. ``training.json`` records how the checkpoint was
made (command, data, device, time) and what it scored.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
RECORD_NAME = "training.json"

_REGISTRY: dict[str, tuple[type, type]] = {}


def register_model(model_type: str, config_class: type):
    """Class decorator: make a model rebuildable from its ``config.json``."""

    def decorate(model_class: type) -> type:
        _REGISTRY[model_type] = (config_class, model_class)
        model_class.model_type = model_type
        return model_class

    return decorate


def _ensure_registered() -> None:
    # Importing the model modules runs their @register_model decorators.
    import coursekit.eval.classifier  # noqa: F401
    import coursekit.models.autoencoder  # noqa: F401
    import coursekit.models.vae  # noqa: F401
    import coursekit.models.gan  # noqa: F401
    import coursekit.models.unet  # noqa: F401
    import coursekit.diffusion  # noqa: F401
    import coursekit.models.noisy_classifier  # noqa: F401
    import coursekit.clip  # noqa: F401


def shipped_dir() -> Path:
    """The folder inside the installed package that holds the shipped checkpoints."""
    return Path(str(resources.files("coursekit") / "checkpoints"))


def shipped_checkpoints() -> list[str]:
    """Names of the checkpoints that ship with coursekit."""
    return sorted(p.name for p in shipped_dir().iterdir() if (p / CONFIG_NAME).is_file())


def resolve(path_or_name: str | Path) -> Path:
    """A checkpoint folder from a path, or from the name of a shipped checkpoint."""
    path = Path(path_or_name)
    if (path / CONFIG_NAME).is_file():
        return path
    shipped = shipped_dir() / str(path_or_name)
    if (shipped / CONFIG_NAME).is_file():
        return shipped
    raise FileNotFoundError(
        f"no checkpoint at {str(path_or_name)!r}: expected a folder with {CONFIG_NAME} and {WEIGHTS_NAME}, "
        f"or one of the shipped names {shipped_checkpoints()}"
    )


def save_checkpoint(model: nn.Module, directory: str | Path, record: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (and an optional training ``record``) to ``directory``."""
    from safetensors.torch import save_file

    if not dataclasses.is_dataclass(getattr(model, "config", None)) or not hasattr(model, "model_type"):
        raise TypeError("save_checkpoint needs a registered coursekit model with a dataclass .config")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"model_type": model.model_type, "config": dataclasses.asdict(model.config)}
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME))
    if record is not None:
        (directory / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
    return directory


def load_checkpoint(path_or_name: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the model saved in a checkpoint folder (or a shipped checkpoint) in eval mode."""
    from safetensors.torch import load_file

    _ensure_registered()
    directory = resolve(path_or_name)
    stored = json.loads((directory / CONFIG_NAME).read_text())
    model_type = stored.get("model_type")
    if model_type not in _REGISTRY:
        raise ValueError(f"{directory / CONFIG_NAME} names model_type {model_type!r}; known types: {sorted(_REGISTRY)}")
    config_class, model_class = _REGISTRY[model_type]
    fields = {f.name: f.type for f in dataclasses.fields(config_class)}
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in stored["config"].items() if key in fields}
    model = model_class(config_class(**values))
    model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
    return model.to(device).eval()


def read_record(path_or_name: str | Path) -> dict[str, Any]:
    """The training record (command, data, device, time, metrics) stored with a checkpoint."""
    record = resolve(path_or_name) / RECORD_NAME
    if not record.is_file():
        raise FileNotFoundError(f"checkpoint {path_or_name!r} has no {RECORD_NAME}")
    return json.loads(record.read_text())
