"""The one training loop that every coursekit model uses.

A model is trained by a ``loss_fn(model, batch, generator) -> scalar loss``; the loop handles the
device, the optimizer, optional mixed precision on a GPU, progress bars and the loss history.

Started by ``accelerate launch`` (HuggingFace Accelerate, installed with the extra
``distributed-training``), the same loop runs data-parallel: every process trains a copy of the model
wrapped in DistributedDataParallel and takes its share of every batch, so that ``batch_size`` of the
loader stays the global batch. Run plainly, the loop never imports accelerate.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from coursekit.device import get_device

LossFn = Callable[[nn.Module, object, torch.Generator], torch.Tensor]


class EMA:
    """An exponential moving average of a model's weights (sampled from instead of the raw weights).

    ``update(model, step)`` after every optimizer step moves each averaged parameter towards the
    model's by ``1 - decay``, with a warm-up, ``decay = min(decay, (1 + step) / (10 + step))``, so that
    the average does not remember the random initialisation for thousands of steps; ``reached`` is the
    decay of the last update. Buffers (batch norm's running statistics) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float):
        import copy

        if not 0.0 <= decay < 1.0:
            raise ValueError(f"an EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.reached = 0.0  # the decay of the last update (the warm-up below starts far lower)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))  # average over fewer steps early in training
        self.reached = decay
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)


@dataclass
class History:
    """What a training run measured: one loss per step, the mean per epoch, and wall time."""

    step_losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    main_process: bool = True  # False on every process but the first of an ``accelerate launch`` run
    distributed: dict | None = None  # an ``accelerate launch`` run: world size, mixed precision, ... (see train)
    precision: str = "float32"  # the autocast dtype of the forward pass ("bfloat16", "float16") or float32


def to_device(batch, device: torch.device):
    """Move a tensor, or a tuple/list/dict of tensors, to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(item, device) for item in batch)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    return batch


# Rank r > 0 of a several-process run draws its randomness (noise, timesteps) from the training seed
# + r * RANK_SEED_STRIDE; rank 0 draws from the seed itself, as a one-process run does.
RANK_SEED_STRIDE = 1_000_003


def launched_by_accelerate() -> bool:
    """True when this process was started by ``accelerate launch`` (which always sets
    ``ACCELERATE_MIXED_PRECISION``) or by another torch.distributed launcher (``WORLD_SIZE`` > 1)."""
    return "ACCELERATE_MIXED_PRECISION" in os.environ or world_size() > 1


def world_size() -> int:
    """The number of training processes the launcher started (``WORLD_SIZE``; 1 for a plain run)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True for a plain run and for the first process (``RANK`` 0) of a launched one."""
    return int(os.environ.get("RANK", "0")) == 0


def training_device(prefer: torch.device | str | None = None) -> torch.device:
    """The device this process trains on: ``prefer`` or :func:`coursekit.device.get_device` for a plain
    run; under ``accelerate launch`` the process's own device (``cuda:<local rank>``, or the CPU when
    ``prefer`` is the CPU or the launcher said ``--cpu``). Call it before putting anything on a GPU."""
    device = torch.device(prefer) if prefer is not None else get_device()
    if not launched_by_accelerate():
        return device
    device = _accelerate().PartialState(cpu=device.type == "cpu").device
    return torch.device("cpu") if device.type == "cpu" else device  # accelerate says cpu:0 on the CPU


def _accelerate():
    """The accelerate package, imported only for a launched run (it is the optional extra ``distributed-training``)."""
    try:
        import accelerate
    except ImportError as error:
        raise ImportError("this process was started by a distributed launcher, which needs HuggingFace Accelerate: "
                          "pip install 'coursekit[distributed-training]'") from error
    return accelerate


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), where bfloat16 autocast
    speeds up convolutions; elsewhere it would emulate bfloat16 and run slower than float32."""
    cpu = getattr(torch, "cpu", None)
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:  # an older torch without these probes
        return False


def amp_dtype_for(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype of :func:`train`'s one-process loop, or None for float32 throughout:
    with ``amp``, bfloat16 on a CUDA GPU that has it, else float16 (with a gradient scaler);
    bfloat16 on a CPU that computes it natively (:func:`cpu_has_bf16`); float32 anywhere else."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None


def mixed_precision_for(device: torch.device, amp: bool) -> str:
    """Accelerate's mixed precision for a launched run: ``"no"`` off a CUDA GPU; else the launcher's
    ``--mixed_precision`` if it is not ``"no"``; else, with ``amp``, ``"bf16"`` where the GPU has
    bfloat16 (no loss scaling needed: bfloat16 keeps float32's exponent range) and ``"fp16"`` with
    accelerate's gradient scaler where it has not (before Ampere), as the one-process loop chooses."""
    if device.type != "cuda":
        return "no"
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launcher != "no":
        return launcher
    if amp:
        return "bf16" if amp_dtype_for(device, amp) == torch.bfloat16 else "fp16"
    return "no"


def batch_length(batch) -> int:
    """The number of examples in a tensor, or in the first tensor of a tuple/list/dict."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, (list, tuple)):
        return batch_length(batch[0])
    if isinstance(batch, dict):
        return batch_length(next(iter(batch.values())))
    raise TypeError(f"expected a tensor or a tuple/list/dict of tensors as a batch, got {type(batch).__name__}")


def shard(batch, rank: int, world: int):
    """Process ``rank``'s share of a global batch: the ``rank``-th of ``world`` consecutive slices of every
    tensor (``torch.tensor_split``: sizes differ by at most one when the batch does not divide)."""
    if isinstance(batch, torch.Tensor):
        return torch.tensor_split(batch, world)[rank]
    if isinstance(batch, (list, tuple)):
        return type(batch)(shard(item, rank, world) for item in batch)
    if isinstance(batch, dict):
        return {key: shard(value, rank, world) for key, value in batch.items()}
    return batch


def rank_generator(generator: torch.Generator | None, rank: int, device: torch.device) -> torch.Generator:
    """The generator that process ``rank`` draws its randomness from, on ``device``: ``generator`` itself
    for rank 0 (a fresh one with its seed if it lives on another device; seed 0 if it is None), and a
    generator seeded with its seed + ``rank * RANK_SEED_STRIDE`` for the other ranks, so that the
    processes draw different noise for their different images."""
    seed = generator.initial_seed() if generator is not None else 0
    if rank == 0 and generator is not None and generator.device == device:
        return generator
    return torch.Generator(device=device).manual_seed(seed + rank * RANK_SEED_STRIDE)


class _ThroughWrapper:
    """What ``loss_fn`` is given under DDP: calling it calls the DDP wrapper (whose forward prepares the
    gradient averaging of the backward pass); attributes (``config``, ``schedule``, ...) are the model's."""

    def __init__(self, wrapped: nn.Module, model: nn.Module):
        self._wrapped, self._model, self.calls = wrapped, model, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._wrapped(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


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
    scaler where bfloat16 is missing) and on a CPU with native bfloat16 (:func:`amp_dtype_for`); the
    weights, gradients and optimizer state stay float32. ``History.precision`` records what ran.
    ``eval_fn(model)`` is called after every epoch and its value appended to ``History.eval_losses``. ``max_steps`` stops early
    (for short demonstration runs in the book).
    ``lr_schedule(optimizer)`` builds a torch LR scheduler that is stepped after every optimizer step.
    ``on_step(model, step)`` is called after every optimizer step (e.g. to update an EMA copy).

    Under ``accelerate launch`` (see :func:`launched_by_accelerate`) the loop runs on every process:

    - ``loader.batch_size`` is the global batch B: every process iterates the same loader (its
      shuffling generator seeded alike) and trains on its slice of each batch (:func:`shard`), B / N
      examples with N processes; B must be a multiple of N. A last batch with fewer than N examples
      is skipped. The loss of a slice is weighted by its share of the batch, so that the averaged
      gradient is the gradient of the global batch's mean loss.
    - the model is wrapped by ``accelerator.prepare`` (DistributedDataParallel), ``loss_fn`` receives
      a stand-in that calls the wrapper and reads the model's attributes, and must call it.
    - process r draws from :func:`rank_generator` (``generator``'s seed + r * RANK_SEED_STRIDE).
    - an optimizer step is one global step: ``lr_schedule`` and ``on_step`` see the same step count
      on every process, and ``on_step`` receives the unwrapped model, whose weights are the same on
      every process after each step (checked at the end), so an EMA copy stays identical too.
    - ``amp`` maps to accelerate's mixed precision (:func:`mixed_precision_for`; off on the CPU).
    - ``History.step_losses`` holds the global batch's loss, only the first process shows progress,
      ``History.main_process`` says which process should write the checkpoint, and
      ``History.distributed`` records the world size, the mixed precision and the per-step losses.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if launched_by_accelerate():
        return _train_distributed(model, loader, loss_fn, epochs=epochs, lr=lr, weight_decay=weight_decay,
                                  device=device, amp=amp, generator=generator, eval_fn=eval_fn, max_steps=max_steps,
                                  progress=progress, optimizer=optimizer, lr_schedule=lr_schedule, on_step=on_step)
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)
    if optimizer is None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = lr_schedule(optimizer) if lr_schedule is not None else None
    amp_dtype = amp_dtype_for(device, amp)
    use_amp = amp_dtype is not None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    history = History(device=str(device), precision=str(amp_dtype).removeprefix("torch.") if use_amp else "float32")
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


def _train_distributed(model: nn.Module, loader: DataLoader, loss_fn: LossFn, *, epochs: int, lr: float,
                       weight_decay: float, device: torch.device | str | None, amp: bool,
                       generator: torch.Generator | None, eval_fn: Callable[[nn.Module], float] | None,
                       max_steps: int | None, progress: bool, optimizer: torch.optim.Optimizer | None,
                       lr_schedule: Callable[[torch.optim.Optimizer], object] | None,
                       on_step: Callable[[nn.Module, int], None] | None) -> History:
    """:func:`train` under ``accelerate launch``: the same loop, data-parallel (see its docstring)."""
    from tqdm.auto import tqdm

    device = training_device(device)
    mixed_precision = mixed_precision_for(device, amp)
    accelerator = _accelerate().Accelerator(cpu=device.type == "cpu", mixed_precision=mixed_precision)
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    if loader.batch_size is not None and loader.batch_size % world:
        raise ValueError(f"batch size {loader.batch_size} is the global batch and must divide among the {world} "
                         f"processes (each takes batch size / {world}); give a multiple of {world}")
    model.to(device)
    generator = rank_generator(generator, rank, device)
    if optimizer is None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    # The schedule is built on the optimizer itself and stepped once per optimizer step: global steps.
    # (accelerate's prepared scheduler would step once per process and step.)
    scheduler = lr_schedule(optimizer) if lr_schedule is not None else None
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    forward = _ThroughWrapper(wrapped, model)

    device = torch.device("cpu") if device.type == "cpu" else device
    history = History(device=str(device), main_process=accelerator.is_main_process)
    start = time.perf_counter()
    step = 0
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not (progress and accelerator.is_main_process),
                   leave=False)
        for index, batch in enumerate(bar):
            global_size = batch_length(batch)
            if global_size < world:
                continue
            if index == 0:
                _check_same_on_every_process(accelerator, batch, "the first batch of an epoch",
                                             "give the DataLoader a generator seeded alike on every process")
            local = to_device(shard(batch, rank, world), device)
            calls = forward.calls
            with accelerator.autocast():
                loss = loss_fn(forward, local, generator)
            if forward.calls == calls:
                raise RuntimeError("under accelerate launch loss_fn must call the model it is given (its forward), "
                                   "which averages the gradients across processes; this loss_fn did not")
            weight = batch_length(local) * world / global_size  # 1 when the batch divides evenly
            weighted = loss * weight if weight != 1 else loss
            value = accelerator.reduce(weighted.detach().float().clone(), reduction="sum").item() / world
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} at step {step}; try a smaller lr")
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(weighted)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if on_step is not None:
                on_step(model, step)
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
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(wrapped, keep_fp32_wrapper=False)  # the model itself, its forward restored
    model.eval()
    _check_same_on_every_process(accelerator, list(model.parameters()), "the trained weights",
                                 "the processes did not take the same optimizer steps")
    history.seconds = time.perf_counter() - start
    history.distributed = {
        "launcher": "accelerate launch", "world_size": world,
        "distributed_type": str(accelerator.distributed_type.value),
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "mixed_precision": mixed_precision, "global_batch_size": loader.batch_size,
        "per_process_batch_size": loader.batch_size // world if loader.batch_size is not None else None,
        "rank_seeds": f"process r draws its randomness from the seed + r * {RANK_SEED_STRIDE}",
        "step_losses": history.step_losses}
    return history


def _check_same_on_every_process(accelerator, tensors, what: str, hint: str) -> None:
    """Raise unless ``tensors`` (a tensor or a tuple/list/dict of them) hold the same values on every
    process, compared through a float64 checksum of each tensor gathered from all processes."""
    if accelerator.num_processes == 1:
        return
    if isinstance(tensors, dict):
        tensors = list(tensors.values())
    if isinstance(tensors, torch.Tensor):
        tensors = [tensors]
    sums = torch.stack([t.detach().double().sum() for t in tensors if isinstance(t, torch.Tensor)])
    gathered = accelerator.gather(sums.to(accelerator.device)[None]).reshape(accelerator.num_processes, -1)
    if not bool((gathered == gathered[0]).all()):
        raise RuntimeError(f"{what} differ between the processes: {hint}")
