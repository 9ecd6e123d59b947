"""Our diffusion U-Net and recipe against diffusers' UNet2DModel with the recipe of diffusers'
unconditional image-generation example, on the same digits, for the same wall-clock budget.

Full benchmark (about 2 x 40 minutes of training plus sampling; run it on a quiet machine):

    python benchmarks/ddpm_vs_diffusers.py --budget-seconds 2400 --num-samples 1000 \
        --out benchmarks/ddpm_vs_diffusers.json

Quick look (minutes): ``--budget-seconds 120 --num-samples 200 --samplers ddim-10``.

Contestants, each trained for ``--budget-seconds`` of wall-clock time on ``--device`` on
``coursekit.data.load_mnist("train", scale="symmetric", source="bundled")`` (4,000 digits in [-1, 1]):

- ``coursekit``: ``DiffusionModel(DiffusionConfig(base_channels=16, channel_mults=(1, 2, 2),
  prediction_type="v_prediction"))`` trained as ``coursekit train ddpm`` trains it
  (``coursekit.training.train`` with ``coursekit.diffusion.diffusion_loss``, AdamW lr 2e-3 without
  weight decay, batch 128, the command's warm-up and linear decay to 5 %, its EMA (decay 0.999 with
  the warm-up min(decay, (1 + s) / (10 + s)), ``coursekit.training.EMA``); the schedule's step fractions
  are replaced by fractions of the wall-clock budget, see ``coursekit_lr_factor``.
- ``diffusers``: ``diffusers.UNet2DModel`` with the example's block layout shrunk for 28-pixel digits
  (``--diffusers-channels``, ``--diffusers-layers-per-block``) and the example's recipe
  (examples/unconditional_image_generation/train_unconditional.py in huggingface/diffusers): AdamW
  lr 1e-4, betas (0.95, 0.999), weight decay 1e-6, eps 1e-8, batch 16, cosine schedule after 500
  linear warm-up steps, gradient norm clipped to 1, ``diffusers.training_utils.EMAModel`` (max decay
  0.9999, warm-up with inv_gamma 1, power 3/4), ``DDPMScheduler(1000, "linear")``, epsilon
  prediction, MSE loss, no horizontal flip. The cosine's length is unknown in advance: its progress
  is the fraction of the budget left after the 500 warm-up steps, see ``diffusers_lr_factor``.

Both are sampled by the same code, the course's samplers (``DiffusionModel.sample`` through
``coursekit.diffusion.time_sampler``; the diffusers U-Net sits in an adapter that answers
``model(x, t)`` with ``unet(x, t).sample``), with x0 clipped to [-1, 1] at every step, N samples
from ``--seed`` per sampler spec (``ddpm-1000``, ``ddim-50``, ``ddim-20-eta1``, ...), and scored
with ``coursekit.eval.quality.score_samples`` and ``memorisation_report`` at that N, beside the
real-vs-real floor at that N. Prints a Markdown table and writes everything as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZE = 28
COURSEKIT_RECIPE = {"lr": 2e-3, "batch_size": 128, "weight_decay": 0.0, "ema_decay": 0.999,
                    "warmup_steps_max": 200, "warmup_fraction": 0.1, "final_lr_fraction": 0.05}
# The defaults of examples/unconditional_image_generation/train_unconditional.py (huggingface/diffusers).
DIFFUSERS_RECIPE = {"lr": 1e-4, "betas": (0.95, 0.999), "weight_decay": 1e-6, "eps": 1e-8, "batch_size": 16,
                    "lr_scheduler": "cosine", "lr_warmup_steps": 500, "max_grad_norm": 1.0,
                    "ema_max_decay": 0.9999, "ema_inv_gamma": 1.0, "ema_power": 3 / 4, "ddpm_num_steps": 1000,
                    "ddpm_beta_schedule": "linear", "prediction_type": "epsilon", "random_flip": False,
                    "mixed_precision": "no"}


class Clock:
    """Wall-clock time since ``begin()``, as seconds and as a fraction of the budget."""

    def __init__(self, budget_seconds: float):
        self.budget = float(budget_seconds)
        self.start = time.perf_counter()

    def begin(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def fraction(self) -> float:
        return min(1.0, self.elapsed() / self.budget) if self.budget > 0 else 1.0

    def expired(self) -> bool:
        return self.elapsed() >= self.budget


def coursekit_lr_factor(step: int, fraction: float) -> float:
    """``coursekit train ddpm``'s factor ``min(1, (step + 1) / W) * max(0.05, 1 - step / total)`` with
    ``W = max(1, min(200, total // 10))``, for an unknown ``total``: ``step / total`` becomes the
    fraction of the budget used, and ``(step + 1) / W = max((step + 1) / 200, (step / total) / 0.1)``."""
    r = COURSEKIT_RECIPE
    warm = min(1.0, max((step + 1) / r["warmup_steps_max"], fraction / r["warmup_fraction"]))
    return warm * max(r["final_lr_fraction"], 1.0 - fraction)


class DiffusersSchedule:
    """diffusers' ``get_cosine_schedule_with_warmup`` (linear warm-up from 0 over 500 steps, then a half
    cosine to 0) with the cosine's progress measured in wall-clock time: the fraction of the time left
    after the warm-up (the time at which step 500 came) that has passed."""

    def __init__(self, clock: Clock, warmup_steps: int):
        self.clock, self.warmup_steps = clock, warmup_steps
        self.warmup_ended_at: float | None = None
        self.last = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            self.last = step / max(1, self.warmup_steps)
            return self.last
        if self.warmup_ended_at is None:
            self.warmup_ended_at = self.clock.elapsed()
        left = max(1e-9, self.clock.budget - self.warmup_ended_at)
        progress = min(1.0, max(0.0, (self.clock.elapsed() - self.warmup_ended_at) / left))
        self.last = max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        return self.last


class UntilDeadline:
    """Batches of ``loader``, epoch after epoch, until ``clock`` runs out (checked before every batch,
    so the step in progress finishes). Lets ``coursekit.training.train`` run for a time budget with
    ``epochs=1``."""

    def __init__(self, loader, clock: Clock):
        self.loader, self.clock = loader, clock
        self.batches = 0

    def __iter__(self):
        while True:
            for batch in self.loader:
                if self.clock.expired():
                    return
                self.batches += 1
                yield batch


def final_loss(losses: list[float], window: int = 100) -> float | None:
    tail = losses[-window:]
    return sum(tail) / len(tail) if tail else None


def train_coursekit(train_set, budget: float, device: torch.device, seed: int):
    from coursekit.training import EMA
    from coursekit.data import make_loader
    from coursekit.diffusion import DiffusionConfig, DiffusionModel, diffusion_loss
    from coursekit.training import train

    r = COURSEKIT_RECIPE
    torch.manual_seed(seed)
    model = DiffusionModel(DiffusionConfig(base_channels=16, channel_mults=(1, 2, 2), prediction_type="v_prediction"))
    ema = EMA(model, r["ema_decay"])
    ema.model.to(device)
    clock = Clock(budget)
    last = {"lr_factor": 0.0}

    def factor(step: int) -> float:
        last["lr_factor"] = coursekit_lr_factor(step, clock.fraction())
        return last["lr_factor"]

    loader = UntilDeadline(make_loader(train_set, r["batch_size"], generator=torch.Generator().manual_seed(seed)), clock)
    clock.begin()
    history = train(model, loader, diffusion_loss, epochs=1, lr=r["lr"], weight_decay=r["weight_decay"], device=device,
                    generator=torch.Generator(device=device).manual_seed(seed), progress=False,
                    lr_schedule=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor), on_step=ema.update)
    seconds = clock.elapsed()
    steps = len(history.step_losses)
    steps_per_epoch = math.ceil(len(train_set) / r["batch_size"])
    record = {
        "model": "coursekit.diffusion.DiffusionModel",
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(model.config).items()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps, "epochs": round(steps / steps_per_epoch, 3), "train_seconds": round(seconds, 2),
        "final_loss": final_loss(history.step_losses), "loss_target": "v (v_prediction)",
        "recipe": {"loop": "coursekit.training.train with coursekit.diffusion.diffusion_loss (the loop of `coursekit train ddpm`)",
                   "optimizer": f"AdamW lr {r['lr']}, betas (0.9, 0.999), weight decay {r['weight_decay']}",
                   "batch_size": r["batch_size"],
                   "lr_schedule": "coursekit train ddpm's min(1, (step + 1) / W) * max(0.05, 1 - step / total) with "
                                  "W = max(1, min(200, total // 10)); total is unknown under a time budget, so step / total "
                                  "is replaced by f = elapsed / budget: min(1, max((step + 1) / 200, f / 0.1)) * max(0.05, 1 - f)",
                   "lr_factor_reached": round(last["lr_factor"], 6),
                   "ema": f"coursekit.training.EMA, decay {r['ema_decay']} with warm-up min(decay, (1 + s) / (10 + s))",
                   "ema_decay_reached": round(ema.reached, 6), "amp": False},
    }
    return ema.model.to(device).eval(), record


class DiffusersAdapter(nn.Module):
    """A diffusers UNet2DModel dressed as a ``coursekit.diffusion.DiffusionModel`` for sampling:
    ``model(x, t)`` returns ``unet(x, t).sample``; ``sample`` is DiffusionModel's (the course's samplers)
    on ``size`` x ``size`` images, cropped back to 28 x 28 if the U-Net needed padding."""

    def __init__(self, unet: nn.Module, size: int, pad: tuple[int, int]):
        from coursekit.diffusion import DiffusionConfig
        from coursekit.schedulers import make_schedule

        super().__init__()
        r = DIFFUSERS_RECIPE
        self.unet, self.pad = unet, pad
        # diffusers' DDPMScheduler defaults: beta_start 1e-4, beta_end 0.02, as coursekit's.
        self.config = DiffusionConfig(image_size=size, schedule=r["ddpm_beta_schedule"],
                                      num_train_timesteps=r["ddpm_num_steps"], prediction_type=r["prediction_type"])
        self.schedule = make_schedule(self.config.schedule, self.config.num_train_timesteps,
                                      self.config.beta_start, self.config.beta_end)

    def scheduler(self, kind: str = "ddim", *, clip_sample: bool = True, timestep_spacing: str = "leading"):
        from coursekit.diffusion import DiffusionModel

        return DiffusionModel.scheduler(self, kind, clip_sample=clip_sample, timestep_spacing=timestep_spacing)

    def diffusers_config(self) -> dict:
        from coursekit.diffusion import DiffusionModel

        return DiffusionModel.diffusers_config(self)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, labels=None) -> torch.Tensor:
        return self.unet(x, timesteps).sample

    @torch.no_grad()
    def sample(self, num_samples: int, generator=None, **kwargs) -> torch.Tensor:
        from coursekit.diffusion import DiffusionModel

        images = DiffusionModel.sample(self, num_samples, generator, **kwargs)
        before, after = self.pad
        return images[..., before:images.shape[-2] - after, before:images.shape[-1] - after]


def diffusers_unet(channels: tuple[int, ...], layers_per_block: int):
    """UNet2DModel laid out like the example's (DownBlock2D everywhere but one AttnDownBlock2D at the
    second-coarsest level, mirrored on the way up), with ``channels`` per level, for 1-channel digits
    padded (value -1, the background) to the next multiple of 2 ** (levels - 1)."""
    from diffusers import UNet2DModel

    levels = len(channels)
    if levels < 2:
        raise SystemExit("--diffusers-channels needs at least two levels")
    factor = 2 ** (levels - 1)
    size = math.ceil(IMAGE_SIZE / factor) * factor
    pad = ((size - IMAGE_SIZE) // 2, size - IMAGE_SIZE - (size - IMAGE_SIZE) // 2)
    down = ["DownBlock2D"] * levels
    down[-2] = "AttnDownBlock2D"
    up = list(reversed(["UpBlock2D" if d == "DownBlock2D" else "AttnUpBlock2D" for d in down]))
    groups = math.gcd(32, *channels)  # diffusers' default 32 groups where the channels allow it
    unet = UNet2DModel(sample_size=size, in_channels=1, out_channels=1, layers_per_block=layers_per_block,
                       block_out_channels=tuple(channels), down_block_types=tuple(down), up_block_types=tuple(up),
                       norm_num_groups=groups)
    return unet, size, pad


def train_diffusers(train_set, budget: float, device: torch.device, seed: int, channels: tuple[int, ...],
                    layers_per_block: int, batch_size: int):
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel

    from coursekit.data import make_loader

    r = DIFFUSERS_RECIPE
    torch.manual_seed(seed)
    unet, size, pad = diffusers_unet(channels, layers_per_block)
    noise_scheduler = DDPMScheduler(num_train_timesteps=r["ddpm_num_steps"], beta_schedule=r["ddpm_beta_schedule"],
                                    prediction_type=r["prediction_type"])
    adapter = DiffusersAdapter(unet, size, pad)
    if not torch.allclose(noise_scheduler.alphas_cumprod.double(), adapter.schedule.alphas_cumprod.double(), atol=1e-6):
        raise RuntimeError("diffusers' DDPMScheduler and coursekit's schedule differ; the samplers would not match training")
    unet.to(device)
    ema = EMAModel(unet.parameters(), decay=r["ema_max_decay"], use_ema_warmup=True, inv_gamma=r["ema_inv_gamma"],
                   power=r["ema_power"], model_cls=UNet2DModel, model_config=unet.config)
    ema.to(device)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=r["lr"], betas=r["betas"], weight_decay=r["weight_decay"],
                                  eps=r["eps"])
    clock = Clock(budget)
    schedule = DiffusersSchedule(clock, r["lr_warmup_steps"])
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    loader = make_loader(train_set, batch_size, generator=torch.Generator().manual_seed(seed))
    generator = torch.Generator(device=device).manual_seed(seed)
    losses: list[float] = []
    clock.begin()
    unet.train()
    while not clock.expired():
        for batch in loader:
            if clock.expired():
                break
            clean = F.pad(batch[0].to(device), (pad[0], pad[1], pad[0], pad[1]), value=-1.0)
            noise = torch.randn(clean.shape, generator=generator, device=device)
            timesteps = torch.randint(0, r["ddpm_num_steps"], (clean.shape[0],), generator=generator, device=device)
            noisy = noise_scheduler.add_noise(clean, noise, timesteps)
            loss = F.mse_loss(unet(noisy, timesteps).sample.float(), noise.float())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), r["max_grad_norm"])
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step(unet.parameters())
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"diffusers contestant: loss became {value} at step {len(losses)}")
            losses.append(value)
    seconds = clock.elapsed()
    ema.copy_to(unet.parameters())  # sample from the EMA weights, as the example's pipeline does
    unet.eval()
    steps = len(losses)
    steps_per_epoch = math.ceil(len(train_set) / batch_size)
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(unet.config).items() if not k.startswith("_")}
    record = {
        "model": "diffusers.UNet2DModel",
        "config": config,
        "input": f"28 x 28 digits padded with -1 to {size} x {size} (pad {list(pad)}), cropped back to 28 x 28 to score"
                 if size != IMAGE_SIZE else "28 x 28 digits as they are (the U-Net's down-sampling needs no padding)",
        "parameters": sum(p.numel() for p in unet.parameters()),
        "steps": steps, "epochs": round(steps / steps_per_epoch, 3), "train_seconds": round(seconds, 2),
        "final_loss": final_loss(losses), "loss_target": "epsilon",
        "recipe": {"source": "huggingface/diffusers examples/unconditional_image_generation/train_unconditional.py "
                             "(its argparse defaults)",
                   "optimizer": f"AdamW lr {r['lr']}, betas {r['betas']}, weight decay {r['weight_decay']}, eps {r['eps']}",
                   "batch_size": batch_size,
                   "lr_schedule": f"linear warm-up from 0 over {r['lr_warmup_steps']} steps, then a half cosine to 0 "
                                  "(get_cosine_schedule_with_warmup) whose progress is the fraction of the wall-clock time "
                                  "left after the warm-up that has passed (the number of steps is unknown in advance)",
                   "lr_warmup_ended_at_seconds": None if schedule.warmup_ended_at is None else round(schedule.warmup_ended_at, 2),
                   "lr_factor_reached": round(schedule.last, 6),
                   "max_grad_norm": r["max_grad_norm"],
                   "ema": f"diffusers.training_utils.EMAModel, decay {r['ema_max_decay']}, use_ema_warmup, "
                          f"inv_gamma {r['ema_inv_gamma']}, power {r['ema_power']}",
                   "ema_decay_reached": None if ema.cur_decay_value is None else round(float(ema.cur_decay_value), 6),
                   "noise_scheduler": f"DDPMScheduler(num_train_timesteps={r['ddpm_num_steps']}, "
                                      f"beta_schedule={r['ddpm_beta_schedule']!r}, prediction_type={r['prediction_type']!r})",
                   "loss": "F.mse_loss(unet(noisy, t).sample, noise)", "random_flip": r["random_flip"],
                   "mixed_precision": r["mixed_precision"]},
    }
    return adapter.to(device).eval(), record


def evaluate(model, specs: list[str], num_samples: int, seed: int) -> dict:
    from coursekit.cli import REFERENCE_SEED, parse_sampler_spec, quality_row
    from coursekit.diffusion import time_sampler
    from coursekit.eval.quality import memorisation_report, score_samples

    rows = {}
    for spec in specs:
        p = parse_sampler_spec(spec)
        images, seconds = time_sampler(model, p["sampler"], p["steps"], num_samples, seed=seed, clip=True, eta=p["eta"],
                                       timestep_spacing=p["timestep_spacing"])
        if tuple(images.shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE):
            raise RuntimeError(f"samples of shape {tuple(images.shape)}; expected (N, 1, 28, 28)")
        scores = score_samples(images, pixel_range=(0, 1), num_samples=num_samples, seed=REFERENCE_SEED)
        memorisation = memorisation_report(images, pixel_range=(0, 1), num_samples=num_samples, seed=REFERENCE_SEED)
        rows[spec] = {"num_samples": scores["num_samples"], **quality_row(scores, memorisation),
                      "floor_fid": scores["floor"]["fid"], "floor_num_samples": scores["floor"]["num_samples"],
                      "sampling_seconds": round(seconds, 2)}
    return rows


def markdown_table(result: dict) -> str:
    lines = ["| contestant | params | steps | epochs | train s | final loss | sampler | FID | FID/floor | KID | precision "
             "| recall | not a digit | near copies | sampling s |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    floor = result["floor"]
    lines.append(f"| floor (held-out digits) | | | | | | | {floor['fid']:.3f} | 1.00 | {floor['kid']:.3g} | "
                 f"{floor['precision']:.3f} | {floor['recall']:.3f} | {floor['not_a_digit']} | {floor['near_copies']:.3f} | |")
    for name, c in result["contestants"].items():
        loss = "" if c["final_loss"] is None else f"{c['final_loss']:.4f} ({c['loss_target'].split()[0]})"
        for spec, row in c["samplers"].items():
            lines.append(f"| {name} | {c['parameters']:,} | {c['steps']} | {c['epochs']:.1f} | {c['train_seconds']:.0f} | "
                         f"{loss} | {spec} | {row['fid']:.3f} | {row['fid_over_floor']:.2f} | {row['kid']:.3g} | "
                         f"{row['precision']:.3f} | {row['recall']:.3f} | {row['not_a_digit']} | {row['near_copies']:.3f} | "
                         f"{row['sampling_seconds']:.1f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-seconds", type=float, required=True, help="wall-clock training time per contestant")
    parser.add_argument("--num-samples", type=int, default=1000, help="N: samples per sampler, and the floor's N")
    parser.add_argument("--samplers", nargs="+", default=["ddpm-1000", "ddim-50"],
                        help="sampler specs: ddpm-N, ddim-N, ddim-N-etaE, dpmsolver-N (quick run: ddim-10)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    parser.add_argument("--out", default=None, help="write the results here as JSON")
    parser.add_argument("--seed", type=int, default=0, help="training seed and sampling seed")
    parser.add_argument("--diffusers-channels", type=int, nargs="+", default=[32, 64, 64],
                        help="UNet2DModel block_out_channels (one level per entry)")
    parser.add_argument("--diffusers-layers-per-block", type=int, default=1)
    parser.add_argument("--diffusers-batch-size", type=int, default=DIFFUSERS_RECIPE["batch_size"],
                        help="the example's train_batch_size (default 16)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    import diffusers

    from coursekit import __version__
    from coursekit.cli import evaluation_header, parse_sampler_spec
    from coursekit.data import load_mnist
    from coursekit.device import get_device

    args = build_parser().parse_args(argv)
    if args.budget_seconds <= 0:
        raise SystemExit("--budget-seconds must be positive")
    for spec in args.samplers:
        parse_sampler_spec(spec)  # fail before training, not after
    device = torch.device(args.device) if args.device else get_device()
    command = "python " + shlex.join([sys.argv[0] if argv is None else "benchmarks/ddpm_vs_diffusers.py",
                                      *(sys.argv[1:] if argv is None else argv)])
    train_set = load_mnist("train", scale="symmetric", source="bundled")
    header = evaluation_header(args.num_samples, args.seed)
    result = {"command": command, "date": datetime.date.today().isoformat(), "device": str(device),
              "torch": torch.__version__, "diffusers": diffusers.__version__, "coursekit": __version__,
              "python": platform.python_version(), "machine": platform.platform(), "threads": torch.get_num_threads(),
              "data": f"coursekit.data.load_mnist('train', scale='symmetric', source='bundled'): {len(train_set)} digits in [-1, 1]",
              "budget_seconds": args.budget_seconds,
              "budget_control": "each contestant trains until its wall-clock budget is spent (checked before every "
                                "batch, so the last step finishes); learning-rate schedules whose length depends on the "
                                "number of steps use the fraction of the budget spent instead (see each recipe's lr_schedule)",
              "num_samples": args.num_samples, "sampling_seed": args.seed, "training_seed": args.seed,
              "metric": header["metric"], "reference_seed": header["reference_seed"], "floor": {"num_samples": args.num_samples, **header["floor"]},
              "sampling": "coursekit's samplers for both (DiffusionModel.sample via coursekit.diffusion.time_sampler): "
                          "'leading' timestep spacing, x0 clipped to [-1, 1] at every step (DDIM recomputes the noise "
                          "from the clipped x0), samples clamped to [0, 1]; noise drawn on the CPU from the seed, "
                          "batches of 500",
              "samplers": args.samplers, "contestants": {}}

    contestants = {
        "coursekit": lambda: train_coursekit(train_set, args.budget_seconds, device, args.seed),
        "diffusers": lambda: train_diffusers(train_set, args.budget_seconds, device, args.seed,
                                             tuple(args.diffusers_channels), args.diffusers_layers_per_block,
                                             args.diffusers_batch_size),
    }
    for name, build in contestants.items():
        print(f"training {name} for {args.budget_seconds:g} s on {device} ...", flush=True)
        model, record = build()
        print(f"  {record['steps']} steps ({record['epochs']:.1f} epochs), final loss {record['final_loss']}", flush=True)
        record["samplers"] = evaluate(model, args.samplers, args.num_samples, args.seed)
        for spec, row in record["samplers"].items():
            print(f"  {spec:12s} FID {row['fid']:.3f} ({row['fid_over_floor']:.2f}x floor) KID {row['kid']:.3g} "
                  f"P {row['precision']:.3f} R {row['recall']:.3f} not-a-digit {row['not_a_digit']} "
                  f"near-copies {row['near_copies']:.3f} {row['sampling_seconds']:.1f} s", flush=True)
        result["contestants"][name] = record
        del model
    table = markdown_table(result)
    result["table"] = table
    print()
    print(f"N = {args.num_samples}, floor FID {result['floor']['fid']:.3f}, budget {args.budget_seconds:g} s per contestant, "
          f"device {device}")
    print(table)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
