"""The one training loop that every coursekit model uses.

A model is trained by a ``loss_fn(model, batch, generator) -> scalar loss``; the loop handles the
device, the optimizer, optional mixed precision on a GPU, progress bars and the loss history.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from coursekit.device import get_device

LossFn = Callable[[nn.Module, object, torch.Generator], torch.Tensor]


@dataclass
class History:
    """What a training run measured: one loss per step, the mean per epoch, and wall time."""

    step_losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"


def to_device(batch, device: torch.device):
    """Move a tensor, or a tuple/list/dict of tensors, to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(item, device) for item in batch)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    return batch


def train(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: LossFn,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    device: torch.device | str | None = None,
    amp: bool = False,
    generator: torch.Generator | None = None,
    eval_fn: Callable[[nn.Module], float] | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    optimizer: torch.optim.Optimizer | None = None,
    lr_schedule: Callable[[torch.optim.Optimizer], object] | None = None,
    on_step: Callable[[nn.Module, int], None] | None = None,
) -> History:
    """Train ``model`` in place with Adam(W) and return its :class:`History`.

    ``generator`` drives the randomness inside ``loss_fn`` (noise, corruption); it should live on
    the training device. ``amp=True`` uses bfloat16 autocast on a CUDA GPU (float16 with a gradient
    scaler where bfloat16 is missing) and is ignored on the CPU. ``eval_fn(model)`` is called after
    every epoch and its value appended to ``History.eval_losses``. ``max_steps`` stops early
    (for short demonstration runs in the book).
    ``lr_schedule(optimizer)`` builds a torch LR scheduler that is stepped after every optimizer step.
    ``on_step(model, step)`` is called after every optimizer step (e.g. to update an EMA copy).
    """
    from tqdm.auto import tqdm

    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)
    if optimizer is None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = lr_schedule(optimizer) if lr_schedule is not None else None
    use_amp = amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    history = History(device=str(device))
    start = time.perf_counter()
    step = 0
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for batch in bar:
            batch = to_device(batch, device)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                loss = loss_fn(model, batch, generator)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step}; try a smaller lr")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            if on_step is not None:
                on_step(model, step)
            value = loss.item()
            history.step_losses.append(value)
            total, count = total + value, count + 1
            step += 1
            bar.set_postfix(loss=f"{value:.4f}")
            if max_steps is not None and step >= max_steps:
                break
        history.epoch_losses.append(total / max(count, 1))
        if eval_fn is not None:
            model.eval()
            with torch.no_grad():
                history.eval_losses.append(float(eval_fn(model)))
        if max_steps is not None and step >= max_steps:
            break
    model.eval()
    history.seconds = time.perf_counter() - start
    return history
