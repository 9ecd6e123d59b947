"""``coursekit`` command line: train models into checkpoints, sample from them, inspect them.

    coursekit train classifier --out src/coursekit/checkpoints/mnist-classifier
    coursekit train robust-classifier --out src/coursekit/checkpoints/mnist-robust-classifier
    coursekit train autoencoder --latent-dim 2 --out src/coursekit/checkpoints/ae-latent2
    coursekit train vae --latent-dim 16 --beta 1 --out src/coursekit/checkpoints/vae
    coursekit train ddpm --epochs 820 --prediction-type v_prediction --amp --out src/coursekit/checkpoints/ddpm
    coursekit evaluate ddpm --samplers ddpm-1000 ddim-50 dpmsolver-20 --x0 clip none --write
    coursekit train dcgan --out src/coursekit/checkpoints/dcgan
    coursekit train wgan-gp --out src/coursekit/checkpoints/wgan-gp
    coursekit train latent-autoencoder --out src/coursekit/checkpoints/latent-vae
    coursekit train latent-diffusion --vae latent-vae --clip clip --out src/coursekit/checkpoints/tiny-sd
    coursekit sample ae-latent16 --num-samples 64 --out grid.png
    coursekit sample tiny-sd --prompt "a thick seven" "a two" --guidance-scale 5 --scheduler dpmsolver++
    coursekit info ae-latent16
    coursekit grade ps1 submissions.zip --jobs 2

Every ``train`` writes ``config.json`` + ``model.safetensors`` and a ``training.json`` record with
the command, the data, the device, the time taken and the held-out metrics.

``train ddpm`` and ``train autoencoder`` also run data-parallel, with the same options and checkpoint, under

    accelerate launch --multi_gpu --num_processes 2 -m coursekit.cli train ddpm --out DIR

where ``--batch-size`` stays the global batch; the record adds a ``distributed`` entry (see coursekit.training).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from coursekit.device import get_device


def _data(args, split: str, scale: str = "unit"):
    from coursekit.data import load_mnist

    return load_mnist(split, scale=scale, source=args.data)


def _record(args, model, history, dataset, metrics: dict) -> dict:
    from coursekit import __version__

    return {
        "command": "coursekit " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if args.argv is None else "coursekit " + " ".join(shlex.quote(a) for a in args.argv),
        "data": {"name": "mnist", "source": dataset.source, "train_images": len(dataset)},
        "device": history.device if not history.device.startswith("cuda") else f"{history.device} ({torch.cuda.get_device_name()})",
        "train_seconds": round(history.seconds, 1),
        **({"precision": f"{history.precision} autocast (weights, gradients and optimizer state float32)"}
           if getattr(history, "precision", "float32") != "float32" else {}),
        "epochs": len(history.epoch_losses),
        "steps": len(history.step_losses),
        "final_train_loss": history.epoch_losses[-1],
        "seed": args.seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
        "coursekit": __version__,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
        "metrics": metrics,
        **({"distributed": history.distributed} if getattr(history, "distributed", None) else {}),
    }


# Subcommands that train data-parallel under `accelerate launch` with several processes: their loss goes through
# the model's forward and averages over examples. The others are refused (see _refuse_several_processes).
DISTRIBUTED_MODELS = ("ddpm", "autoencoder")


def _refuse_several_processes(args) -> None:
    """Under ``accelerate launch`` with N > 1 processes: refuse a subcommand that cannot train data-parallel,
    and a ``--batch-size`` (the global batch) that N does not divide."""
    from coursekit.training import world_size

    world = world_size()
    if world == 1:
        return
    if args.model not in DISTRIBUTED_MODELS:
        why = {"dcgan": "its loop alternates two optimizers", "wgan-gp": "its loop alternates two optimizers",
               "vae": "its loss calls encode and decode, not the model's forward",
               "clip": "its contrastive loss would see only each process's share of the batch as negatives",
               "latent-autoencoder": "its loss calls encode and decode, not the model's forward"}.get(
                   args.model, "it has not been checked under DistributedDataParallel")
        raise SystemExit(f"coursekit train {args.model} runs in one process only ({why}); under accelerate launch "
                         f"with {world} processes, train one of: {', '.join(DISTRIBUTED_MODELS)}")
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} is the global batch and must divide among the {world} "
                         f"processes (each takes --batch-size / {world}); give a multiple of {world}")


def _train_split(args):
    """The training digits, without ``--exclude-digit`` if one is given (for anomaly detection)."""
    train_set = _data(args, "train")
    if getattr(args, "exclude_digit", None) is None:
        return train_set
    keep = train_set.labels != args.exclude_digit
    return type(train_set)(train_set.images[keep], train_set.labels[keep], name=f"{train_set.name}-without-{args.exclude_digit}",
                           source=train_set.source, scale=train_set.scale)


def train_classifier(args) -> dict:
    from coursekit.checkpoint import save_checkpoint
    from coursekit.data import make_loader
    from coursekit.eval.classifier import Classifier, ClassifierConfig, classifier_loss
    from coursekit.eval.metrics import accuracy
    from coursekit.training import train

    train_set, test_set = _data(args, "train"), _data(args, "test")
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    model = Classifier(ClassifierConfig())
    steps = args.epochs * ((len(train_set) + args.batch_size - 1) // args.batch_size)
    device = torch.device(args.device) if args.device else get_device()
    history = train(model, make_loader(train_set, args.batch_size, generator=generator), classifier_loss,
                    epochs=args.epochs, lr=args.lr, weight_decay=1e-4, device=device, progress=not args.quiet,
                    generator=torch.Generator(device=device).manual_seed(args.seed),
                    lr_schedule=lambda optimizer: torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=steps))
    model.cpu().eval()
    metrics = {"test_accuracy": accuracy(test_set.images, test_set.labels, model), "test_images": len(test_set),
               "train_accuracy": accuracy(train_set.images, train_set.labels, model)}
    save_checkpoint(model, args.out, _record(args, model, history, train_set, metrics))
    return metrics


def train_robust_classifier(args) -> dict:
    """The evaluation classifier with an 11th "not a digit" class, trained on corrupted digits and
    synthetic non-digits (see coursekit.eval.robust); records held-out accuracy under each
    corruption, the non-digit rejection rates and (unless --sensitivity-samples 0) the
    sensitivity table of coursekit.eval.quality at that N."""
    from coursekit.checkpoint import save_checkpoint
    from coursekit.data import make_loader
    from coursekit.eval.classifier import Classifier, ClassifierConfig
    from coursekit.eval.quality import sensitivity_table
    from coursekit.eval.robust import (NOT_A_DIGIT, calibrate_reject_threshold, held_out_report, predict_with_reject,
                                       random_decode_histogram, robust_classifier_loss)
    from coursekit.training import train

    train_set, test_set = _data(args, "train"), _data(args, "test")
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    model = Classifier(ClassifierConfig(num_classes=NOT_A_DIGIT + 1))
    steps = args.epochs * ((len(train_set) + args.batch_size - 1) // args.batch_size)
    device = torch.device(args.device) if args.device else get_device()
    cpu_start = time.process_time()
    history = train(model, make_loader(train_set, args.batch_size, generator=generator), robust_classifier_loss,
                    epochs=args.epochs, lr=args.lr, weight_decay=1e-4, device=device, progress=not args.quiet,
                    generator=torch.Generator(device=device).manual_seed(args.seed), max_steps=args.max_steps,
                    lr_schedule=lambda optimizer: torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=steps))
    train_cpu_seconds = time.process_time() - cpu_start
    model.cpu().eval()
    argmax_accuracy = float((predict_with_reject(test_set.images, model) == test_set.labels).float().mean())
    model.config.reject_threshold = calibrate_reject_threshold(model, train_set.images, args.max_train_reject)
    metrics = held_out_report(model, test_set.images, test_set.labels, seed=args.seed + 1)
    metrics["reject_threshold"] = model.config.reject_threshold
    metrics["reject_threshold_rule"] = (f"smallest P(not a digit) threshold >= 0.5 that rejects at most "
                                        f"{args.max_train_reject:g} of the clean training digits")
    metrics["test_accuracy_plain_argmax"] = argmax_accuracy
    metrics["train_accuracy"] = float((predict_with_reject(train_set.images, model) == train_set.labels).float().mean())
    metrics["ae_latent16_random_decodes_histogram"] = random_decode_histogram(model, seed=args.seed)
    record = _record(args, model, history, train_set, metrics)
    record["train_cpu_seconds"] = round(train_cpu_seconds, 1)
    record["torch_threads"] = torch.get_num_threads()
    if args.sensitivity_samples:
        record["sensitivity"] = {"command": record["command"],
                                 **sensitivity_table(num_samples=args.sensitivity_samples, seed=args.seed, classifier=model)}
    save_checkpoint(model, args.out, record)
    return metrics

def train_autoencoder(args) -> dict:
    from sklearn.metrics import roc_auc_score

    from coursekit.checkpoint import save_checkpoint
    from coursekit.data import make_loader
    from coursekit.models.autoencoder import (Autoencoder, AutoencoderConfig, corrupt, reconstruction_error,
                                              reconstruction_loss)
    from coursekit.training import train, training_device

    train_set, test_set = _train_split(args), _data(args, "test")
    torch.manual_seed(args.seed)
    model = Autoencoder(AutoencoderConfig(latent_dim=args.latent_dim, noise_std=args.noise_std))
    device = training_device(args.device)
    history = train(model, make_loader(train_set, args.batch_size, generator=torch.Generator().manual_seed(args.seed)),
                    reconstruction_loss, epochs=args.epochs, lr=args.lr, device=device, amp=args.amp,
                    generator=torch.Generator(device=device).manual_seed(args.seed), progress=not args.quiet,
                    max_steps=args.max_steps)
    if not history.main_process:
        return {}  # under accelerate launch the first process evaluates and writes the checkpoint
    model.cpu().eval()
    errors = reconstruction_error(model, test_set.images)
    metrics: dict = {"test_mse": float(errors.mean()), "test_images": len(test_set)}
    if args.noise_std > 0:
        noisy = corrupt(test_set.images, args.noise_std, torch.Generator().manual_seed(1))
        with torch.no_grad():
            metrics["test_denoised_mse"] = float(((model(noisy) - test_set.images) ** 2).mean())
        metrics["test_noisy_input_mse"] = float(((noisy - test_set.images) ** 2).mean())
    if args.exclude_digit is not None:
        is_anomaly = test_set.labels == args.exclude_digit
        metrics["test_mse"] = float(errors[~is_anomaly].mean())
        metrics["held_out_digit"] = args.exclude_digit
        metrics["held_out_digit_mse"] = float(errors[is_anomaly].mean())
        metrics["anomaly_auc"] = float(roc_auc_score(is_anomaly.numpy(), errors.numpy()))
    if args.eval_samples:
        metrics["evaluation"] = evaluate_model_samples(model, args.eval_samples, args.seed,
                                                       SAMPLING_OF["autoencoder"] + f", seed {args.seed}")
    save_checkpoint(model, args.out, _record(args, model, history, train_set, metrics))
    return metrics


def train_vae(args) -> dict:
    from sklearn.metrics import roc_auc_score

    from coursekit.checkpoint import save_checkpoint
    from coursekit.data import make_loader
    from coursekit.models.vae import VAE, VAEConfig, binarize, elbo, importance_weighted_log_likelihood, vae_loss
    from coursekit.training import train

    train_set, test_set = _train_split(args), _data(args, "test")
    torch.manual_seed(args.seed)
    model = VAE(VAEConfig(latent_dim=args.latent_dim, beta=args.beta, decoder=args.decoder))
    device = torch.device(args.device) if args.device else get_device()
    history = train(model, make_loader(train_set, args.batch_size, generator=torch.Generator().manual_seed(args.seed)),
                    vae_loss, epochs=args.epochs, lr=args.lr, device=device, amp=args.amp,
                    generator=torch.Generator(device=device).manual_seed(args.seed), progress=not args.quiet)
    model.cpu().eval()
    # Held-out digits: one fixed binarisation (seed 0) for a Bernoulli decoder, the grey values otherwise.
    x = binarize(test_set.images, torch.Generator().manual_seed(0)) if args.decoder == "bernoulli" else test_set.images
    with torch.no_grad():
        terms = elbo(model, x, 1.0, torch.Generator().manual_seed(1))
    log_px = importance_weighted_log_likelihood(model, x, args.iw_samples, torch.Generator().manual_seed(2))
    metrics: dict = {
        "test_elbo": float(terms["elbo"].mean()), "test_reconstruction": float(terms["reconstruction"].mean()),
        "test_kl": float(terms["kl"].mean()), "test_iw_nll": float(-log_px.mean()), "iw_samples": args.iw_samples,
        "test_images": len(test_set), "likelihood_data": "fixed binarisation (seed 0) of the held-out digits"
        if args.decoder == "bernoulli" else "grey-valued held-out digits (continuous density)",
    }
    if args.exclude_digit is not None:
        is_anomaly = test_set.labels == args.exclude_digit
        metrics["held_out_digit"] = args.exclude_digit
        metrics["anomaly_auc_elbo"] = float(roc_auc_score(is_anomaly.numpy(), (-terms["elbo"]).numpy()))
    metrics["evaluation"] = evaluate_model_samples(model, 1000, args.seed, SAMPLING_OF["vae"] + f", seed {args.seed}")
    save_checkpoint(model, args.out, _record(args, model, history, train_set, metrics))
    return metrics


def train_gan_command(args) -> dict:
    """``coursekit train dcgan`` / ``train wgan-gp``: a GAN on the digits, with the validated metric and the rarest digit."""
    from types import SimpleNamespace

    from coursekit.checkpoint import save_checkpoint
    from coursekit.data import make_loader
    from coursekit.models.gan import GAN, GANConfig, train_gan

    train_set = _data(args, "train", scale="symmetric")
    torch.manual_seed(args.seed)
    config = GANConfig(latent_dim=args.latent_dim, generator_channels=args.channels, discriminator_channels=args.channels,
                       num_classes=10 if args.conditional else 0,
                       loss="wgan-gp" if args.model == "wgan-gp" else args.loss, gp_weight=args.gp_weight,
                       extra_layers=args.extra_layers, r1_weight=args.r1_weight,
                       minibatch_std=args.minibatch_std)
    gan = GAN(config)
    device = torch.device(args.device) if args.device else get_device()
    history = train_gan(gan, make_loader(train_set, args.batch_size, generator=torch.Generator().manual_seed(args.seed)),
                        epochs=args.epochs, lr_g=args.lr, lr_d=args.lr_d or args.lr, critic_steps=args.critic_steps,
                        device=device, generator=torch.Generator(device=device).manual_seed(args.seed),
                        max_steps=args.max_steps, progress=not args.quiet, augment=tuple(args.augment),
                        ema_decay=args.ema_decay)
    gan.cpu().eval()
    last_iterate = None
    if history.ema is not None:  # score the last iterate too, then ship the average
        last_iterate = evaluate_model_samples(gan, args.eval_samples, args.seed + 1,
                                              SAMPLING_OF["gan"] + f", seed {args.seed + 1}")
        gan.generator.load_state_dict(history.ema.model.state_dict())
    evaluation = evaluate_model_samples(gan, args.eval_samples, args.seed + 1, SAMPLING_OF["gan"] + f", seed {args.seed + 1}")
    histogram = evaluation["samples"]["class_histogram"][:10]
    last = history.steps[-min(len(history.steps), 50):]
    metrics = {"eval_samples": args.eval_samples, "rarest_digit": int(min(range(10), key=histogram.__getitem__)),
               "rarest_digit_count": min(histogram),
               "last_50_steps": {key: sum(s[key] for s in last if key in s) / max(1, sum(key in s for s in last))
                                 for key in ("d_loss", "g_loss", "d_real", "d_fake")},
               "evaluation": evaluation}
    if history.ema is not None:
        metrics.update(generator_weights=f"moving average of G's weights, decay {args.ema_decay} with warm-up "
                                         "min(decay, (1 + s) / (10 + s)) over G's steps s",
                       ema_decay=args.ema_decay, ema_decay_reached=round(history.ema.reached, 6),
                       evaluation_last_iterate=last_iterate)
    if args.augment:
        metrics["augment"] = ("DiffAugment (Zhao et al. 2020): " + ", ".join(args.augment)
                              + " on every image D sees, real and fake, in D's and G's steps")
    shim = SimpleNamespace(device=history.device, seconds=history.seconds, step_losses=history.steps,
                           epoch_losses=[None] * len(history.grids))
    record = _record(args, gan, shim, train_set, metrics)
    record["final_train_loss"] = metrics["last_50_steps"]
    record["generator_parameters"] = sum(p.numel() for p in gan.generator.parameters())
    # every 10th step of the training curves, for plots (the chapter compares DCGAN and WGAN-GP)
    record["curves"] = {"every": 10, **{key: [round(v, 5) for v in history.series(key)[::10]]
                                        for key in ("d_loss", "g_loss", "d_real", "d_fake", "gradient_penalty", "r1")
                                        if history.series(key)}}
    save_checkpoint(gan, args.out, record)
    if args.grid:
        from coursekit.plotting import save_grid

        save_grid(history.grids[-1], args.grid)
    return metrics


def parse_sampler_spec(spec: str) -> dict:
    """``"ddpm-1000"``, ``"ddim-50"``, ``"ddim-20-eta1"``, ``"dpmsolver-20"``, any of them ending in
    ``"-trailing"`` (the "trailing" timesteps instead of the default "leading" ones) -> sampler,
    steps, eta, timestep spacing."""
    parts = spec.split("-")
    spacing = "leading"
    if len(parts) > 2 and parts[-1] == "trailing":
        spacing, parts = "trailing", parts[:-1]
    sampler, steps = parts[0], parts[1] if len(parts) > 1 else ""
    eta = 0.0
    if len(parts) == 3 and parts[2].startswith("eta") and sampler == "ddim":
        try:
            eta = float(parts[2][3:])
        except ValueError:
            eta = -1.0
    if sampler not in ("ddpm", "ddim", "dpmsolver") or not steps.isdigit() or len(parts) > 3 or eta < 0 \
            or (len(parts) == 3 and not parts[2].startswith("eta")) or (len(parts) == 3 and sampler != "ddim"):
        raise SystemExit(f"sampler spec {spec!r}: expected 'ddpm-N', 'ddim-N', 'ddim-N-etaE' or 'dpmsolver-N', "
                         "optionally ending in '-trailing', e.g. ddim-50, ddim-20-eta1 or ddim-50-trailing")
    return {"sampler": sampler, "steps": int(steps), "eta": eta, "timestep_spacing": spacing}


X0_TREATMENTS = {"clip": "x0 clipped to [-1, 1] at every step (DDIM recomputes the noise from it; "
                         "DPM-Solver's thresholding with sample_max_value=1, the same clipping)",
                 "none": "x0 used as predicted, never clipped (the final image is clamped to [0, 1], as every sampler's output is)"}


def quality_row(scores: dict, memorisation: dict | None = None, seconds: float | None = None) -> dict:
    """One row of a record's ``evaluation``: FID and KID beside the floor at the same N,
    precision, recall, the 11-class histogram, and optionally memorisation and time."""
    floor = scores["floor"]
    row = {"fid": scores["fid"], "fid_over_floor": scores["fid"] / floor["fid"], "kid": scores["kid"],
           "kid_interval": scores["kid_interval"], "precision": scores["precision"], "recall": scores["recall"],
           "not_a_digit": scores["not_a_digit"], "class_histogram": scores["class_histogram"]}
    if memorisation is not None:
        row["nearest_train_median"] = memorisation["median"]
        row["near_copies"] = memorisation["near_copies"]
    if seconds is not None:
        row["seconds"] = round(seconds, 1)
    return row


REFERENCE_SEED = 0  # which N training digits are the reference, and which N held-out digits the floor's samples


def evaluation_header(num_samples: int, seed: int) -> dict:
    """What every ``evaluation`` entry states once: the metric, N, the sampling seed, and the floor at
    that N (always with the reference drawn by ``REFERENCE_SEED``, as :func:`score_samples` is called)."""
    from coursekit.eval.quality import memorisation_report, real_floor, reference_digits

    floor = real_floor(num_samples=num_samples, seed=REFERENCE_SEED)
    held_out = memorisation_report(reference_digits(num_samples, REFERENCE_SEED)["held_out"], pixel_range=(0, 1),
                                   num_samples=num_samples, seed=REFERENCE_SEED)
    return {"metric": "coursekit.eval.quality.score_samples: FID, KID, precision/recall (k=3) on the "
                      "mnist-robust-classifier's features, against N bundled training digits",
            "num_samples": num_samples, "seed": seed, "reference_seed": REFERENCE_SEED,
            "floor": {"fid": floor["fid"], "kid": floor["kid"], "kid_interval": floor["kid_interval"],
                      "precision": floor["precision"], "recall": floor["recall"], "not_a_digit": floor["not_a_digit"],
                      "class_histogram": floor["class_histogram"], "nearest_train_median": held_out["held_out_median"],
                      "near_copies": held_out["near_copies"],
                      "what": f"{num_samples} bundled held-out digits scored like samples"}}


def evaluate_model_samples(model, num_samples: int, seed: int, what: str) -> dict:
    """The validated metric for a model with ``sample(n, generator)`` (autoencoder random codes, VAE,
    GAN): ``num_samples`` samples drawn with ``seed``, scored at that N beside the floor at that N."""
    from coursekit.eval.quality import memorisation_report, score_samples

    start = time.perf_counter()
    samples = model.sample(num_samples, generator=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - start
    scores = score_samples(samples, pixel_range=(0, 1), num_samples=num_samples, seed=REFERENCE_SEED)
    memorisation = memorisation_report(samples, pixel_range=(0, 1), num_samples=num_samples, seed=REFERENCE_SEED)
    return {**evaluation_header(num_samples, seed), "sampling": what,
            "samples": quality_row(scores, memorisation, seconds)}


def evaluate_samplers(model, specs: list[str], num_samples: int, seed: int, quiet: bool = True,
                      x0: tuple[str, ...] = ("clip",), use_clipped_model_output: bool | None = None) -> dict:
    """Sample quality of a diffusion model per sampler spec (``"ddpm-1000"``, ``"ddim-50"``,
    ``"ddim-20-eta1"``, ``"dpmsolver-20"``) and x0 treatment (``"clip"``, ``"none"``), each on
    ``num_samples`` samples drawn from seed ``seed``, on the validated metric at that N beside the
    floor at that N (:func:`coursekit.eval.quality.score_samples`), with memorisation and time."""
    from coursekit.diffusion import time_sampler
    from coursekit.eval.quality import memorisation_report, score_samples

    parsed = {spec: parse_sampler_spec(spec) for spec in specs}
    for treatment in x0:
        if treatment not in X0_TREATMENTS:
            raise SystemExit(f"x0 treatment {treatment!r}: expected one of {sorted(X0_TREATMENTS)}")
    if use_clipped_model_output is not None and any(p["sampler"] != "ddim" for p in parsed.values()):
        raise SystemExit("--use-clipped-model-output applies to DDIM only")
    results = {**evaluation_header(num_samples, seed), "x0": {t: X0_TREATMENTS[t] for t in x0},
               "timestep_spacing": "leading (every T // steps-th timestep, from the largest), except specs ending "
                                   "in -trailing: from T - 1 down in steps of T / steps (diffusers' 'trailing')",
               "prediction_type": model.config.prediction_type, "samplers": {}}
    for spec, p in parsed.items():
        for treatment in x0:
            images, seconds = time_sampler(model, p["sampler"], p["steps"], num_samples, seed=seed, clip=treatment == "clip",
                                           eta=p["eta"], use_clipped_model_output=use_clipped_model_output,
                                           timestep_spacing=p["timestep_spacing"])
            scores = score_samples(images, pixel_range=(0, 1), num_samples=num_samples, seed=REFERENCE_SEED)
            memorisation = memorisation_report(images, pixel_range=(0, 1), num_samples=num_samples, seed=REFERENCE_SEED)
            row = quality_row(scores, memorisation, seconds)
            if use_clipped_model_output is False:
                row["use_clipped_model_output"] = False
            results["samplers"].setdefault(spec, {})[treatment] = row
            if not quiet:
                print(f"{spec:14s} x0={treatment:4s} FID {row['fid']:7.3f} ({row['fid_over_floor']:5.2f}x floor) "
                      f"KID {row['kid']:.3g} P {row['precision']:.3f} R {row['recall']:.3f} "
                      f"not-a-digit {row['not_a_digit']} near-copies {row['near_copies']:.3f} {seconds:.0f} s", flush=True)
    return results


def evaluate_guidance(model, scales: list[float], spec: str, num_samples: int, seed: int, quiet: bool = True) -> dict:
    """Classifier-free guidance of a class-conditional diffusion model over guidance scales w: for each
    w, ``num_samples`` samples asking for each digit equally often (labels 0, 1, ..., 9, 0, 1, ...),
    drawn with ``spec`` (x0 clipped) from ``seed``; the fraction that the evaluation classifier files
    under the requested digit ("not a digit" counts as wrong), and the validated metric at that N
    beside the floor at that N (fidelity against diversity), memorisation and sampling time."""
    from coursekit.diffusion import time_sampler
    from coursekit.eval.quality import memorisation_report, score_samples
    from coursekit.eval.robust import load_robust_classifier, predict_with_reject

    if not getattr(model.config, "num_classes", None):
        raise SystemExit("guidance scales apply to a class-conditional model (trained with --num-classes)")
    p = parse_sampler_spec(spec)
    labels = torch.arange(num_samples) % model.config.num_classes
    classifier = load_robust_classifier()
    results = {**evaluation_header(num_samples, seed), "sampler": spec, "x0": {"clip": X0_TREATMENTS["clip"]},
               "labels": "0, 1, ..., 9 repeated (each digit asked for equally often)",
               "guidance": "eps_uncond + w (eps_cond - eps_uncond): w = 0 unconditional, w = 1 conditional",
               "scales": {}}
    for w in scales:
        images, seconds = time_sampler(model, p["sampler"], p["steps"], num_samples, seed=seed, eta=p["eta"],
                                       labels=labels, guidance_scale=w, timestep_spacing=p["timestep_spacing"])
        scores = score_samples(images, pixel_range=(0, 1), num_samples=num_samples, seed=REFERENCE_SEED)
        memorisation = memorisation_report(images, pixel_range=(0, 1), num_samples=num_samples, seed=REFERENCE_SEED)
        row = quality_row(scores, memorisation, seconds)
        row["class_accuracy"] = float((predict_with_reject(images, classifier) == labels).double().mean())
        results["scales"][f"{w:g}"] = row
        if not quiet:
            print(f"w={w:<4g} accuracy {row['class_accuracy']:.3f} FID {row['fid']:7.3f} ({row['fid_over_floor']:5.2f}x floor) "
                  f"P {row['precision']:.3f} R {row['recall']:.3f} {seconds:.0f} s", flush=True)
    return results


SAMPLING_OF = {"autoencoder": "decodes of codes z ~ N(0, I) (the autoencoder was never trained to make these)",
               "vae": "decodes of z ~ N(0, I), the prior (the decoder's mean image)",
               "gan": "G(z), z ~ N(0, I)"}


def _training_sample_seed(record: dict) -> int:
    """The seed the training command drew its evaluation samples with (GANs: seed + 1, others: seed)."""
    seed = int(record.get("seed", 0))
    return seed + 1 if record.get("command", "").split()[2:3] in (["dcgan"], ["wgan-gp"]) else seed


def evaluate(args) -> dict:
    """Re-measure samplers of a diffusion checkpoint on the validated metric; ``--write`` stores them
    in its training.json under ``metrics.evaluation`` (merged per sampler and x0 treatment), with the
    command in the record's ``evaluations`` list."""
    from coursekit import __version__
    from coursekit.checkpoint import RECORD_NAME, load_checkpoint, read_record, resolve

    device = torch.device(args.device) if args.device else get_device()
    model = load_checkpoint(args.checkpoint, device=device)
    if not hasattr(model, "sample"):
        raise SystemExit(f"checkpoint {args.checkpoint!r} holds a {model.model_type}, which cannot sample")
    record = read_record(args.checkpoint)
    if args.guidance_scales:
        return evaluate_guidance_command(args, model, record, device)
    if model.model_type != "ddpm":
        seed = args.seed if args.seed is not None else _training_sample_seed(record)
        what = SAMPLING_OF.get(model.model_type, "model.sample") + f", seed {seed}"
        results = evaluate_model_samples(model.cpu(), args.num_samples, seed, what)
        row = results["samples"]
        print(f"{args.checkpoint}: FID {row['fid']:.3f} ({row['fid_over_floor']:.2f}x the floor {results['floor']['fid']:.3f} "
              f"at N={args.num_samples}) KID {row['kid']:.3g} P {row['precision']:.3f} R {row['recall']:.3f} "
              f"not-a-digit {row['not_a_digit']} near-copies {row['near_copies']:.3f}", flush=True)
    else:
        results = evaluate_samplers(model, args.samplers, args.num_samples, 1 if args.seed is None else args.seed,
                                    quiet=False, x0=tuple(args.x0), use_clipped_model_output=False if args.raw_noise else None)
    results["device"] = str(device)
    if args.write:
        metrics = record.setdefault("metrics", {})
        stored = metrics.get(args.key) if model.model_type == "ddpm" else None
        if stored and (stored.get("num_samples"), stored.get("seed")) != (results["num_samples"], results["seed"]):
            raise SystemExit(f"metrics.{args.key} holds N={stored.get('num_samples')}, seed {stored.get('seed')}; "
                             f"this run is N={args.num_samples}, seed {args.seed}: use another --key")
        if stored:
            for spec, rows in results.pop("samplers").items():
                stored["samplers"].setdefault(spec, {}).update(rows)
            stored["x0"].update(results.pop("x0"))
            stored.update(results)
        else:
            metrics[args.key] = results
        argv = args.argv if args.argv is not None else sys.argv[1:]
        record.setdefault("evaluations", []).append({
            "command": "coursekit " + " ".join(shlex.quote(a) for a in argv), "date": datetime.date.today().isoformat(),
            "device": str(device), "samples": args.num_samples, "coursekit": __version__,
            **({"measured": args.samplers, "x0": args.x0} if model.model_type == "ddpm" else {}),
            "stored_in": f"metrics.{args.key}", "why": args.why})
        (resolve(args.checkpoint) / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
    return results


def evaluate_guidance_command(args, model, record: dict, device) -> dict:
    """``coursekit evaluate --guidance-scales``: the guidance sweep of a class- or text-conditional
    diffusion checkpoint, stored with ``--write`` under ``metrics.guidance`` (class labels) or
    ``metrics.prompt_guidance`` (prompts), replacing the scales it measures."""
    from coursekit import __version__
    from coursekit.checkpoint import RECORD_NAME, load_checkpoint, resolve

    if model.model_type != "ddpm":
        raise SystemExit(f"--guidance-scales needs a conditional diffusion checkpoint, not a {model.model_type}")
    seed = 1 if args.seed is None else args.seed
    spec = args.samplers[0] if len(args.samplers) == 1 else "ddim-50"
    if len(args.samplers) > 1 and args.samplers != ["ddpm-1000", "ddim-50", "dpmsolver-20"]:
        raise SystemExit("--guidance-scales measures one sampler: give one --samplers spec (default ddim-50)")
    if getattr(model.config, "context_dim", None):
        from coursekit.text_diffusion import TextToImage

        encoder = record.get("metrics", {}).get("text_encoder")
        if not encoder:
            raise SystemExit(f"{args.checkpoint}'s record names no text_encoder (the clip it was trained with)")
        t2i = TextToImage(model, load_checkpoint(encoder, device=device))
        results, key = evaluate_text_guidance(t2i, args.guidance_scales, spec, args.num_samples, seed, quiet=False), "prompt_guidance"
    else:
        results, key = evaluate_guidance(model, args.guidance_scales, spec, args.num_samples, seed, quiet=False), "guidance"
    results["device"] = str(device)
    if args.write:
        from coursekit.checkpoint import read_record

        record = read_record(args.checkpoint)  # afresh: another evaluation may have written while this one sampled
        key = args.key if args.key != "evaluation" else key
        metrics = record.setdefault("metrics", {})
        stored = metrics.get(key)
        if stored and (stored.get("num_samples"), stored.get("seed"), stored.get("sampler")) != (
                results["num_samples"], results["seed"], results["sampler"]):
            raise SystemExit(f"metrics.{key} holds N={stored.get('num_samples')}, seed {stored.get('seed')}, "
                             f"{stored.get('sampler')}; this run differs: use another --key")
        if stored:
            stored["scales"].update(results.pop("scales"))
            stored.update(results)
        else:
            metrics[key] = results
        argv = args.argv if args.argv is not None else sys.argv[1:]
        record.setdefault("evaluations", []).append({
            "command": "coursekit " + " ".join(shlex.quote(a) for a in argv), "date": datetime.date.today().isoformat(),
            "device": str(device), "samples": args.num_samples, "coursekit": __version__,
            "measured": {"guidance_scales": args.guidance_scales, "sampler": spec},
            "stored_in": f"metrics.{key}", "why": args.why})
        (resolve(args.checkpoint) / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
    return results


def train_ddpm(args) -> dict:
    from coursekit.checkpoint import save_checkpoint
    from coursekit.data import make_loader
    from coursekit.diffusion import DiffusionConfig, DiffusionModel, diffusion_loss
    from coursekit.training import train, training_device

    train_set = _data(args, "train", scale="symmetric")
    torch.manual_seed(args.seed)
    if args.text_clip and args.num_classes:
        raise SystemExit("choose --num-classes (class labels) or --text-clip (prompts), not both")
    if args.cond_drop and not (args.num_classes or args.text_clip):
        raise SystemExit("--cond-drop needs --num-classes or --text-clip (condition dropout of a conditional model)")
    if args.eval_guidance_scales and not (args.num_classes or args.text_clip):
        raise SystemExit("--eval-guidance-scales needs --num-classes or --text-clip")
    device = training_device(args.device)
    clip = None
    if args.text_clip:
        from coursekit.checkpoint import load_checkpoint

        clip = load_checkpoint(args.text_clip, device=device).eval().requires_grad_(False)
        if clip.model_type != "clip":
            raise SystemExit(f"--text-clip {args.text_clip!r} holds a {clip.model_type}, not a clip")
    model = DiffusionModel(DiffusionConfig(base_channels=args.base_channels, channel_mults=tuple(args.channel_mults),
                                           attention_levels=tuple(args.attention_levels), schedule=args.schedule,
                                           num_train_timesteps=args.timesteps, prediction_type=args.prediction_type,
                                           num_classes=args.num_classes,
                                           context_dim=clip.config.text_width if clip is not None else None,
                                           cross_attention_levels=tuple(args.cross_attention_levels) if clip is not None else ()))
    loss_fn = functools.partial(diffusion_loss, cond_drop_prob=args.cond_drop)
    data = train_set
    if clip is not None:
        from torch.utils.data import TensorDataset

        from coursekit.clip import attribute_levels
        from coursekit.text_diffusion import text_diffusion_loss

        levels = attribute_levels((train_set.images + 1) / 2, train_set.labels)
        data = TensorDataset(train_set.images, train_set.labels, levels)
        loss_fn = functools.partial(text_diffusion_loss, clip=clip, cond_drop_prob=args.cond_drop, keep_prob=args.keep_prob)
    from coursekit.training import EMA

    ema = EMA(model, args.ema_decay)
    ema.model.to(device)
    steps_per_epoch = (len(train_set) + args.batch_size - 1) // args.batch_size
    total = args.epochs * steps_per_epoch
    warmup = max(1, min(200, total // 10))  # learning-rate warm-up steps (at least one: a 1-epoch run has few)
    history = train(model, make_loader(data, args.batch_size, generator=torch.Generator().manual_seed(args.seed)),
                    loss_fn, epochs=args.epochs, lr=args.lr, device=device, amp=args.amp,
                    generator=torch.Generator(device=device).manual_seed(args.seed), progress=not args.quiet,
                    lr_schedule=lambda opt: torch.optim.lr_scheduler.LambdaLR(
                        opt, lambda step: min(1.0, (step + 1) / warmup) * max(0.05, 1 - step / total)),
                    on_step=ema.update, max_steps=args.max_steps)
    if not history.main_process:
        return {}  # under accelerate launch the first process evaluates and writes the checkpoint
    model = ema.model.to(device).eval()
    metrics: dict = {"ema_decay": args.ema_decay, "ema_decay_reached": round(ema.reached, 6),
                     "ema_warmup": "decay at step s = min(ema_decay, (1 + s) / (10 + s))", "eval_samples": args.eval_samples, "sampling_device": str(device)}
    if args.eval_samplers:
        metrics["evaluation"] = evaluate_samplers(model, args.eval_samplers, args.eval_samples, args.seed + 1, args.quiet,
                                                  x0=tuple(args.eval_x0))
    if clip is not None:
        from coursekit.text_diffusion import TextToImage

        metrics.update(text_encoder=args.text_clip, cond_drop=args.cond_drop, keep_prob=args.keep_prob,
                       condition_dropout="the prompt replaced by the empty prompt before encoding")
        if args.eval_guidance_scales:
            metrics["prompt_guidance"] = evaluate_text_guidance(TextToImage(model, clip), args.eval_guidance_scales,
                                                                args.eval_guidance_sampler, args.eval_samples,
                                                                args.seed + 1, args.quiet)
    if args.num_classes:
        metrics["cond_drop"] = args.cond_drop
        if args.eval_guidance_scales:
            metrics["guidance"] = evaluate_guidance(model, args.eval_guidance_scales, args.eval_guidance_sampler,
                                                    args.eval_samples, args.seed + 1, args.quiet)
    save_checkpoint(model.cpu(), args.out, _record(args, model, history, train_set, metrics))
    return metrics


def train_noisy_classifier(args) -> dict:
    from coursekit.checkpoint import save_checkpoint
    from coursekit.data import make_loader
    from coursekit.models.noisy_classifier import (NoisyClassifier, NoisyClassifierConfig, accuracy_by_timestep,
                                                   noisy_classifier_loss)
    from coursekit.training import train

    train_set, test_set = _data(args, "train", scale="symmetric"), _data(args, "test", scale="symmetric")
    torch.manual_seed(args.seed)
    model = NoisyClassifier(NoisyClassifierConfig(base_channels=args.base_channels, channel_mults=tuple(args.channel_mults),
                                                  schedule=args.schedule, num_train_timesteps=args.timesteps))
    device = torch.device(args.device) if args.device else get_device()
    steps = args.epochs * ((len(train_set) + args.batch_size - 1) // args.batch_size)
    history = train(model, make_loader(train_set, args.batch_size, generator=torch.Generator().manual_seed(args.seed)),
                    noisy_classifier_loss, epochs=args.epochs, lr=args.lr, weight_decay=1e-4, device=device,
                    generator=torch.Generator(device=device).manual_seed(args.seed), progress=not args.quiet,
                    lr_schedule=lambda optimizer: torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=steps),
                    max_steps=args.max_steps)
    model.cpu().eval()
    metrics = {"test_accuracy_at_t": accuracy_by_timestep(model, test_set.images, test_set.labels, seed=args.seed),
               "test_images": len(test_set),
               "what": "accuracy of the class of x_0 from x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, "
                       "held-out digits, one fixed noise draw per t"}
    save_checkpoint(model, args.out, _record(args, model, history, train_set, metrics))
    return metrics


PIPELINE_SCHEDULERS = {"ddim": "DDIMScheduler", "dpmsolver++": "DPMSolverMultistepScheduler",
                       "euler": "EulerDiscreteScheduler", "ddpm": "DDPMScheduler"}


def _is_pipeline(name_or_path: str) -> bool:
    from coursekit.stable_diffusion import _resolve_folder

    try:
        _resolve_folder(name_or_path, "model_index.json", "pipeline")
    except FileNotFoundError:
        return False
    return True


def sample_pipeline(args) -> torch.Tensor:
    """``coursekit sample PIPELINE --prompt ...``: a saved Stable Diffusion folder (chapter 6's, or any local one)
    driven through diffusers' ``StableDiffusionPipeline``: ``--num-samples`` images per prompt, classifier-free
    guidance at ``--guidance-scale``, an optional ``--negative-prompt``, and the scheduler swapped for
    ``--scheduler``. Returns the images ``(N, C, H, W)`` in [0, 1]."""
    import diffusers

    from coursekit.stable_diffusion import load_pipeline

    if not args.prompt:
        raise SystemExit(f"{args.checkpoint!r} is a text-to-image pipeline: give at least one --prompt")
    device = torch.device(args.device) if args.device else get_device()
    pipe = load_pipeline(args.checkpoint, device=device, progress=False)
    scheduler_class = getattr(diffusers, PIPELINE_SCHEDULERS[args.scheduler])
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    prompts = [prompt for prompt in args.prompt for _ in range(args.num_samples)]
    negative = [args.negative_prompt] * len(prompts) if args.negative_prompt is not None else None
    generator = torch.Generator(device=device).manual_seed(args.seed)
    images = pipe(prompts, negative_prompt=negative, guidance_scale=args.guidance_scale,
                  num_inference_steps=args.steps, generator=generator, output_type="pt").images
    return images.cpu()


def sample(args) -> None:
    from coursekit.checkpoint import load_checkpoint
    from coursekit.plotting import save_grid

    if _is_pipeline(args.checkpoint):
        images = sample_pipeline(args)
        out = Path(args.out)
        if out.suffix == ".pt":
            torch.save(images, out)
        else:
            save_grid(images, out, nrow=args.num_samples)  # a row per prompt
        print(f"wrote {len(images)} samples ({args.num_samples} for each of {len(args.prompt)} prompts) to {out}")
        return
    if args.prompt:
        raise SystemExit(f"--prompt needs a text-to-image pipeline folder (with model_index.json); "
                         f"{args.checkpoint!r} is not one")
    model = load_checkpoint(args.checkpoint)
    if not hasattr(model, "sample"):
        raise SystemExit(f"checkpoint {args.checkpoint!r} holds a {model.model_type}, which cannot sample")
    images = model.sample(args.num_samples, generator=torch.Generator().manual_seed(args.seed))
    out = Path(args.out)
    if out.suffix == ".pt":
        torch.save(images, out)
    else:
        save_grid(images, out)
    print(f"wrote {args.num_samples} samples to {out}")


def _summary(key: str, value) -> str:
    """One ``key=value`` item of ``coursekit info``'s listing: numbers, the validated metric's headline
    (FID over the floor at N), nothing for nested records such as the superseded metric."""
    if isinstance(value, float):
        return f"{key}={value:.4g}"
    if isinstance(value, dict) and "floor" in value and "num_samples" in value:
        rows = value.get("samplers") or ({"samples": {"": value["samples"]}} if "samples" in value else {})
        ratios = [f"{spec}{'/' + x0 if x0 else ''} {row['fid_over_floor']:.3g}" for spec, by_x0 in rows.items()
                  for x0, row in by_x0.items()]
        return f"{key}: FID/floor at N={value['num_samples']}: " + "; ".join(ratios)
    if isinstance(value, (dict, list)):
        return ""
    return f"{key}={value}"


def info(args) -> None:
    from coursekit.checkpoint import read_record, resolve, shipped_checkpoints

    if args.checkpoint is None:
        for name in shipped_checkpoints():
            metrics = read_record(name).get("metrics", {})
            print(f"{name:24s} " + ", ".join(_summary(k, v) for k, v in metrics.items() if _summary(k, v)))
        return
    print((resolve(args.checkpoint) / "config.json").read_text())
    print(json.dumps(read_record(args.checkpoint), indent=2))


def grade(args) -> int:
    from coursekit.grading.collect import DEFAULT_PATTERN
    from coursekit.grading.workflow import GradingError, grade as grade_batch

    try:
        report = grade_batch(args.assignment, args.submissions, args.course, jobs=args.jobs,
                             student_pattern=args.student_pattern or DEFAULT_PATTERN, cell_timeout=args.cell_timeout,
                             wall_factor=args.wall_factor, memory_mb=args.memory_mb, output_limit=args.output_limit,
                             submission_timeout=args.submission_timeout, feedback=not args.no_feedback,
                             csv_path=args.csv, db_url=args.db_url, landlock=not args.no_landlock,
                             cluster=args.cluster)
    except (GradingError, FileNotFoundError, ValueError) as error:
        print(f"coursekit grade: {error}", file=sys.stderr)
        return 2
    return 3 if report.failed or report.needs_review or report.unassigned else 0


def train_clip(args) -> dict:
    from torch.utils.data import TensorDataset

    from coursekit.checkpoint import save_checkpoint
    from coursekit.clip import (CLIPConfig, DigitCLIP, attribute_accuracy, attribute_levels, clip_loss, retrieval_recall,
                                zero_shot_digits)
    from coursekit.data import make_loader
    from coursekit.training import train

    train_set, test_set = _data(args, "train"), _data(args, "test")
    torch.manual_seed(args.seed)
    levels = attribute_levels(train_set.images, train_set.labels)
    model = DigitCLIP(CLIPConfig(embed_dim=args.embed_dim, text_width=args.text_width, text_layers=args.text_layers,
                                 text_heads=args.text_heads))
    device = torch.device(args.device) if args.device else get_device()
    steps = args.epochs * ((len(train_set) + args.batch_size - 1) // args.batch_size)
    if args.max_steps:
        steps = min(steps, args.max_steps)
    history = train(model, make_loader(TensorDataset(train_set.images, train_set.labels, levels), args.batch_size,
                                       generator=torch.Generator().manual_seed(args.seed)),
                    functools.partial(clip_loss, keep_prob=args.keep_prob, max_shift=args.max_shift),
                    epochs=args.epochs, lr=args.lr, weight_decay=1e-4, device=device,
                    generator=torch.Generator(device=device).manual_seed(args.seed), progress=not args.quiet,
                    lr_schedule=lambda optimizer: torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=steps),
                    max_steps=args.max_steps)
    model.cpu().eval()
    zero_shot = zero_shot_digits(model, test_set.images)
    metrics = {"zero_shot_accuracy": float((zero_shot == test_set.labels).double().mean()),
               "zero_shot_prompts": "a zero, a one, ..., a nine",
               "zero_shot_train_accuracy": float((zero_shot_digits(model, train_set.images) == train_set.labels).double().mean()),
               "attribute_accuracy": attribute_accuracy(model, test_set.images, test_set.labels),
               "retrieval": retrieval_recall(model, test_set.images, test_set.labels),
               "temperature": round(1 / model.logit_scale.clamp(max=math.log(100)).exp().item(), 5),
               "test_images": len(test_set), "keep_prob": args.keep_prob, "max_shift": args.max_shift,
               "what": "held-out digits: zero-shot digit from the ten prompts alone; attribute accuracy over the digits in "
                       "the lowest or highest third of each attribute, between the two prompts 'a <low> <digit>' and "
                       "'a <high> <digit>'; recall@k between images and their full captions (a repeated caption text "
                       "counts as a hit)"}
    save_checkpoint(model, args.out, _record(args, model, history, train_set, metrics))
    return metrics


def evaluate_text_guidance(t2i, scales: list[float], spec: str, num_samples: int, seed: int, quiet: bool = True) -> dict:
    """Prompt accuracy of a text-conditional diffusion model over guidance scales w: ``num_samples``
    prompts (:func:`coursekit.text_diffusion.evaluation_prompts`, seed ``seed``), one sample each
    drawn with ``spec`` (x0 clipped) from ``seed``; digit and attribute accuracy, and the validated
    metric at that N beside the floor at that N."""
    from coursekit.eval.quality import score_samples
    from coursekit.text_diffusion import evaluation_prompts, prompt_accuracy

    p = parse_sampler_spec(spec)
    if p["timestep_spacing"] != "leading":
        raise SystemExit(f"sampler spec {spec!r}: prompt guidance is measured on the leading timesteps only")
    digits, levels, prompts = evaluation_prompts(num_samples, seed)
    results = {**evaluation_header(num_samples, seed), "sampler": spec, "x0": {"clip": X0_TREATMENTS["clip"]},
               "prompts": "full captions: digits 0..9 in turn, each attribute's third drawn uniformly (seeded); "
                          "accuracy of an attribute over the prompts that say it (chance 1/3)",
               "example_prompts": prompts[:10],
               "guidance": "eps_uncond + w (eps_cond - eps_uncond) with the empty prompt as the unconditional input",
               "scales": {}}
    for w in scales:
        start = time.perf_counter()
        images = t2i.sample(prompts, guidance_scale=w, generator=torch.Generator().manual_seed(seed), sampler=p["sampler"],
                            num_inference_steps=p["steps"], eta=p["eta"])
        seconds = time.perf_counter() - start
        scores = score_samples(images, pixel_range=(0, 1), num_samples=num_samples, seed=REFERENCE_SEED)
        row = {**quality_row(scores, None, seconds), **prompt_accuracy(images, digits, levels)}
        results["scales"][f"{w:g}"] = row
        if not quiet:
            print(f"w={w:<4g} digit {row['digit_accuracy']:.3f} thickness {row['thickness_accuracy']:.3f} size "
                  f"{row['size_accuracy']:.3f} slant {row['slant_accuracy']:.3f} FID {row['fid']:7.3f} "
                  f"({row['fid_over_floor']:5.2f}x floor) {seconds:.0f} s", flush=True)
    return results


def train_latent_autoencoder(args) -> dict:
    """``coursekit train latent-autoencoder``: chapter 6's KL-regularised ``AutoencoderKL`` on the digits padded to
    32 x 32 (coursekit.stable_diffusion). Records the held-out reconstruction error (decoding the posterior
    means), the FID/KID of the held-out reconstructions beside the floor, the latent statistics per channel and the
    scaling factor 1 / std of the training digits' latents, which is also stored in the autoencoder's config.
    Writes ``OUT/vae/`` (diffusers' save_pretrained layout) and ``OUT/training.json``."""
    import dataclasses

    from torch.utils.data import TensorDataset

    from coursekit.data import make_loader
    from coursekit.eval.quality import score_samples
    from coursekit.stable_diffusion import (LatentAutoencoderConfig, crop_digits, encode_latents, latent_autoencoder,
                                            latent_autoencoder_loss, latent_statistics, pad_digits)
    from coursekit.training import train

    train_set, test_set = _data(args, "train"), _data(args, "test")
    torch.manual_seed(args.seed)
    config = LatentAutoencoderConfig(block_out_channels=tuple(args.block_out_channels), layers_per_block=args.layers_per_block,
                                     latent_channels=args.latent_channels, norm_num_groups=args.norm_num_groups)
    vae = latent_autoencoder(config)
    device = torch.device(args.device) if args.device else get_device()
    history = train(vae, make_loader(TensorDataset(pad_digits(train_set.images)), args.batch_size,
                                     generator=torch.Generator().manual_seed(args.seed)),
                    functools.partial(latent_autoencoder_loss, kl_weight=args.kl_weight), epochs=args.epochs, lr=args.lr,
                    device=device, generator=torch.Generator(device=device).manual_seed(args.seed),
                    progress=not args.quiet, max_steps=args.max_steps)
    vae.cpu().eval()
    test_images = pad_digits(test_set.images)
    with torch.no_grad():
        decoded = torch.cat([vae.decode(vae.encode(test_images[i:i + 500]).latent_dist.mode()).sample
                             for i in range(0, len(test_images), 500)])
    reconstructions = crop_digits((decoded.clamp(-1, 1) + 1) / 2)   # (N, 1, 28, 28) in [0, 1], as the digits
    train_latents = encode_latents(vae, pad_digits(train_set.images), generator=torch.Generator().manual_seed(args.seed))
    statistics = latent_statistics(train_latents)
    vae.register_to_config(scaling_factor=statistics["scaling_factor"])
    held_out = latent_statistics(encode_latents(vae, test_images, generator=torch.Generator().manual_seed(args.seed)))
    metrics: dict = {
        "test_mse": float(((reconstructions - test_set.images) ** 2).mean()), "test_images": len(test_set),
        "test_mse_what": "held-out digits, pixels in [0, 1], the 28 x 28 digit area of decode(posterior mean)",
        "scaling_factor": statistics["scaling_factor"], "kl_weight": args.kl_weight,
        "latent_statistics": {"train": statistics, "held_out": held_out,
                              "what": "latents sampled from q(z|x) (seed as the command's), unscaled; the scaling "
                                      "factor is 1 / the std of all training latents (as Stable Diffusion's 0.18215)"},
        "loss": "per image: L1 reconstruction summed over the 32 x 32 pixels + kl_weight * KL(q(z|x) || N(0, I)) (LDM's "
                "KL-reg. autoencoder without its LPIPS and discriminator terms)"}
    if args.eval_samples:
        scores = score_samples(reconstructions, pixel_range=(0, 1), num_samples=min(args.eval_samples, len(test_set)),
                               seed=REFERENCE_SEED)
        metrics["reconstruction_quality"] = {**evaluation_header(scores["num_samples"], args.seed),
                                             "samples": quality_row(scores),
                                             "sampling": "reconstructions of the first N held-out digits"}
    record = _record(args, vae, history, train_set, metrics)
    # the config as saved in vae/config.json: the scaling factor measured above, not the dataclass's placeholder 1.0
    record["config"] = {**dataclasses.asdict(config), "scaling_factor": vae.config.scaling_factor}
    out = Path(args.out)
    vae.save_pretrained(str(out / "vae"))
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return {key: value for key, value in metrics.items() if key != "latent_statistics"}


def evaluate_latent_guidance(pipe, scales: list[float], num_inference_steps: int, num_samples: int, seed: int,
                             quiet: bool = True, batch_size: int = 250, clip=None) -> dict:
    """Prompt accuracy and the validated metric of a small Stable Diffusion pipeline over guidance scales w:
    ``num_samples`` prompts (:func:`coursekit.text_diffusion.evaluation_prompts`, seed ``seed``), one sample each
    from :func:`coursekit.stable_diffusion.generate` with the pipeline's scheduler, cropped to the 28 x 28 digit;
    digit and attribute accuracy (by the evaluation classifier and pixel measurements, and, given ``clip``, by the
    small CLIP as a second judge), FID/KID beside the floor at that N, and sampling speed."""
    from coursekit.eval.quality import score_samples
    from coursekit.stable_diffusion import crop_digits, generate
    from coursekit.text_diffusion import clip_prompt_accuracy, evaluation_prompts, prompt_accuracy

    digits, levels, prompts = evaluation_prompts(num_samples, seed)
    results = {**evaluation_header(num_samples, seed),
               "sampler": f"{type(pipe.scheduler).__name__}, {num_inference_steps} steps",
               "prompts": "full captions: digits 0..9 in turn, each attribute's third drawn uniformly (seeded); "
                          "accuracy of an attribute over the prompts that say it (chance 1/3)",
               "example_prompts": prompts[:10],
               "guidance": "eps_neg + w (eps_cond - eps_neg) with the empty prompt as the negative prompt",
               "scales": {}}
    for w in scales:
        generator = torch.Generator(device=pipe.unet.device).manual_seed(seed)
        start = time.perf_counter()
        images = torch.cat([generate(prompts[i:i + batch_size], pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.unet,
                                     pipe.scheduler, guidance_scale=w, num_inference_steps=num_inference_steps,
                                     generator=generator).cpu() for i in range(0, num_samples, batch_size)])
        seconds = time.perf_counter() - start
        images = crop_digits(images)
        scores = score_samples(images, pixel_range=(0, 1), num_samples=num_samples, seed=REFERENCE_SEED)
        row = {**quality_row(scores, None, seconds), **prompt_accuracy(images, digits, levels),
               **(clip_prompt_accuracy(clip, images, digits, levels) if clip is not None else {}),
               "images_per_second": round(num_samples / seconds, 2)}
        results["scales"][f"{w:g}"] = row
        if not quiet:
            print(f"w={w:<4g} digit {row['digit_accuracy']:.3f} thickness {row['thickness_accuracy']:.3f} size "
                  f"{row['size_accuracy']:.3f} slant {row['slant_accuracy']:.3f} FID {row['fid']:7.3f} "
                  f"({row['fid_over_floor']:5.2f}x floor) {seconds:.0f} s", flush=True)
    return results


def train_latent_diffusion(args) -> dict:
    """``coursekit train latent-diffusion --vae DIR --clip NAME``: chapter 6's small Stable Diffusion. Trains a
    ``UNet2DConditionModel`` on the frozen autoencoder's scaled latents, cross-attending to the frozen CLIP text
    tower, with empty-prompt condition dropout and an EMA of the weights; writes the whole pipeline folder
    (diffusers' layout, DDIM as its scheduler) with ``training.json``, and records prompt accuracy and FID/KID
    over ``--eval-guidance-scales``."""
    import dataclasses

    from diffusers import DDIMScheduler
    from torch.utils.data import TensorDataset

    from coursekit.checkpoint import load_checkpoint
    from coursekit.clip import attribute_levels
    from coursekit.data import make_loader
    from coursekit.stable_diffusion import (IMAGE_SIZE, LatentUNetConfig, build_pipeline, clip_tokenizer,
                                            latent_diffusion_loss, latent_moments, latent_unet, load_latent_autoencoder,
                                            noise_scheduler, pad_digits, save_pipeline, text_encoder_from_clip)
    from coursekit.training import train

    train_set = _data(args, "train")
    torch.manual_seed(args.seed)
    device = torch.device(args.device) if args.device else get_device()
    vae = load_latent_autoencoder(args.vae, device=device)
    clip = load_checkpoint(args.clip, device=device).eval().requires_grad_(False)
    if clip.model_type != "clip":
        raise SystemExit(f"--clip {args.clip!r} holds a {clip.model_type}, not a clip")
    text_encoder, tokenizer = text_encoder_from_clip(clip), clip_tokenizer()
    config = LatentUNetConfig(sample_size=IMAGE_SIZE // 2 ** (len(vae.config.block_out_channels) - 1),
                              latent_channels=vae.config.latent_channels, block_out_channels=tuple(args.block_out_channels),
                              layers_per_block=args.layers_per_block, cross_attention_levels=tuple(args.cross_attention_levels),
                              attention_heads=args.attention_heads, cross_attention_dim=clip.config.text_width,
                              norm_num_groups=args.norm_num_groups)
    unet = latent_unet(config)
    scheduler = noise_scheduler(args.prediction_type)
    levels = attribute_levels(train_set.images, train_set.labels)
    # q(z|x) of every training digit, computed once (the autoencoder is frozen); z is sampled afresh each step
    data = TensorDataset(latent_moments(vae, pad_digits(train_set.images).to(device)).cpu(), train_set.labels, levels)
    loss_fn = functools.partial(latent_diffusion_loss, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                scheduler=scheduler, cond_drop_prob=args.cond_drop, keep_prob=args.keep_prob,
                                text_cache={})
    from coursekit.training import EMA

    ema = EMA(unet, args.ema_decay)
    ema.model.to(device)
    total = args.epochs * ((len(train_set) + args.batch_size - 1) // args.batch_size)
    warmup = max(1, min(200, total // 10))  # learning-rate warm-up steps, then a linear decay (as train ddpm)
    history = train(unet, make_loader(data, args.batch_size, generator=torch.Generator().manual_seed(args.seed)), loss_fn,
                    epochs=args.epochs, lr=args.lr, device=device,
                    generator=torch.Generator(device=device).manual_seed(args.seed), progress=not args.quiet,
                    lr_schedule=lambda opt: torch.optim.lr_scheduler.LambdaLR(
                        opt, lambda step: min(1.0, (step + 1) / warmup) * max(0.05, 1 - step / total)),
                    on_step=ema.update, max_steps=args.max_steps)
    unet = ema.model.to(device).eval()
    pipe = build_pipeline(vae, text_encoder, tokenizer, unet, DDIMScheduler.from_config(scheduler.config))
    metrics: dict = {"ema_decay": args.ema_decay, "ema_decay_reached": round(ema.reached, 6),
                     "prediction_type": args.prediction_type, "cond_drop": args.cond_drop, "keep_prob": args.keep_prob,
                     "condition_dropout": "the prompt replaced by the empty prompt before encoding",
                     "scaling_factor": vae.config.scaling_factor, "sampling_device": str(device)}
    if args.eval_guidance_scales and args.eval_samples:
        metrics["prompt_guidance"] = evaluate_latent_guidance(pipe, args.eval_guidance_scales, args.eval_steps,
                                                              args.eval_samples, args.seed + 1, args.quiet, clip=clip)
    record = _record(args, unet, history, train_set, metrics)
    record["config"] = dataclasses.asdict(config)
    record["parts"] = {"vae": args.vae, "clip": args.clip, "scheduler_trained_with": "DDPMScheduler",
                       "parameters": {"vae": sum(p.numel() for p in vae.parameters()),
                                      "text_encoder": sum(p.numel() for p in text_encoder.parameters()),
                                      "unet": sum(p.numel() for p in unet.parameters())}}
    save_pipeline(pipe.to("cpu"), args.out, record)
    return {key: value for key, value in metrics.items() if key != "prompt_guidance"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coursekit", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    trainer = commands.add_parser("train", help="train a model and write a checkpoint")
    models = trainer.add_subparsers(dest="model", required=True)
    for name, defaults in {"classifier": dict(epochs=30, lr=3e-3, batch_size=128),
                           "robust-classifier": dict(epochs=30, lr=3e-3, batch_size=128),
                           "autoencoder": dict(epochs=30, lr=2e-3, batch_size=128),
                           "vae": dict(epochs=60, lr=2e-3, batch_size=128),
                           "ddpm": dict(epochs=100, lr=2e-3, batch_size=128),
                           "noisy-classifier": dict(epochs=30, lr=3e-3, batch_size=128),
                           "clip": dict(epochs=40, lr=5e-4, batch_size=256),
                           "dcgan": dict(epochs=40, lr=2e-4, batch_size=64),
                           "wgan-gp": dict(epochs=40, lr=2e-4, batch_size=64),
                           "latent-autoencoder": dict(epochs=30, lr=1e-3, batch_size=128),
                           "latent-diffusion": dict(epochs=100, lr=5e-4, batch_size=128)}.items():
        sub = models.add_parser(name)
        sub.add_argument("--out", required=True, help="checkpoint folder to write")
        sub.add_argument("--epochs", type=int, default=defaults["epochs"])
        sub.add_argument("--lr", type=float, default=defaults["lr"])
        sub.add_argument("--batch-size", type=int, default=defaults["batch_size"],
                         help="the global batch: under accelerate launch with N processes each process takes "
                              "--batch-size / N examples of every batch (N must divide it)")
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--data", choices=["auto", "bundled", "torchvision"], default="bundled",
                         help="MNIST source (default: the bundled 4,000-digit train split, as the shipped checkpoints)")
        sub.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "robust-classifier":
            sub.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (smoke tests)")
            sub.add_argument("--sensitivity-samples", type=int, default=1000,
                             help="N of the sensitivity table stored in training.json (0: skip it)")
            sub.add_argument("--max-train-reject", type=float, default=0.0025,
                             help="calibrate the not-a-digit threshold to reject at most this fraction of training digits")
        if name in ("autoencoder", "vae"):
            sub.add_argument("--latent-dim", type=int, default=16)
            sub.add_argument("--exclude-digit", type=int, default=None, help="leave one digit out (anomaly detection)")
        if name in ("autoencoder", "vae", "ddpm"):
            sub.add_argument("--amp", action="store_true",
                             help="mixed precision: on a GPU bfloat16 where it has it, else float16 with loss "
                                  "scaling; on a CPU with native bfloat16 (AMX or AVX-512 BF16) bfloat16, elsewhere "
                                  "float32; under accelerate launch its --mixed_precision, if given, wins (GPU only)")
        if name == "ddpm":
            sub.add_argument("--base-channels", type=int, default=16)
            sub.add_argument("--channel-mults", type=int, nargs="+", default=[1, 2, 2])
            sub.add_argument("--attention-levels", type=int, nargs="*", default=[],
                             help="levels with self-attention besides the middle block (0 = full resolution)")
            sub.add_argument("--schedule", choices=["linear", "cosine"], default="linear")
            sub.add_argument("--timesteps", type=int, default=1000)
            sub.add_argument("--prediction-type", choices=["epsilon", "v_prediction", "sample"], default="epsilon",
                             help="what the U-Net predicts: the noise, v = sqrt(a) eps - sqrt(1-a) x0, or x0")
            sub.add_argument("--ema-decay", type=float, default=0.999)
            sub.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (smoke tests)")
            sub.add_argument("--eval-samples", type=int, default=1000)
            sub.add_argument("--eval-samplers", nargs="*", default=["ddpm-1000", "ddim-50", "dpmsolver-20"],
                             help="sampler specs to score on the validated metric (none: skip; then use coursekit evaluate)")
            sub.add_argument("--num-classes", type=int, default=None,
                             help="class-conditional model on the digit labels (chapter 5; 10 for digits)")
            sub.add_argument("--cond-drop", type=float, default=0.0,
                             help="probability of replacing a label by the null label (classifier-free guidance)")
            sub.add_argument("--eval-guidance-scales", type=float, nargs="*", default=[],
                             help="guidance scales w to evaluate a class-conditional model at")
            sub.add_argument("--eval-guidance-sampler", default="ddim-50", help="sampler spec for --eval-guidance-scales")
            sub.add_argument("--text-clip", default=None,
                             help="a clip checkpoint: condition on prompts, cross-attending to its frozen text encoder")
            sub.add_argument("--cross-attention-levels", type=int, nargs="*", default=[1],
                             help="levels with a spatial transformer (self- and cross-attention) besides the middle (--text-clip)")
            sub.add_argument("--keep-prob", type=float, default=0.5,
                             help="probability that a training caption says each attribute (--text-clip)")
            sub.add_argument("--eval-x0", nargs="+", choices=["clip", "none"], default=["clip", "none"],
                             help="x0 treatments to score each sampler under")
        if name == "noisy-classifier":
            sub.add_argument("--base-channels", type=int, default=16)
            sub.add_argument("--channel-mults", type=int, nargs="+", default=[1, 2, 2])
            sub.add_argument("--schedule", choices=["linear", "cosine"], default="linear",
                             help="the noise schedule of the diffusion model it will guide")
            sub.add_argument("--timesteps", type=int, default=1000)
            sub.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (smoke tests)")
        if name == "clip":
            sub.add_argument("--embed-dim", type=int, default=64)
            sub.add_argument("--text-width", type=int, default=64, help="the text transformer's width")
            sub.add_argument("--text-layers", type=int, default=3)
            sub.add_argument("--text-heads", type=int, default=4)
            sub.add_argument("--keep-prob", type=float, default=0.5,
                             help="probability that a training caption says each attribute")
            sub.add_argument("--max-shift", type=int, default=2,
                             help="shift each training image by up to this many pixels (augmentation; 0: none)")
            sub.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (smoke tests)")
        if name in ("dcgan", "wgan-gp"):
            sub.add_argument("--latent-dim", type=int, default=64)
            sub.add_argument("--channels", type=int, default=64, help="width of G's last and D's first layer")
            sub.add_argument("--lr-d", type=float, default=None, help="discriminator learning rate (default: --lr)")
            sub.add_argument("--critic-steps", type=int, default=None,
                             help="D updates per G update (default: 1 for dcgan, 5 for wgan-gp)")
            sub.add_argument("--conditional", action="store_true", help="class-conditional G and D")
            sub.add_argument("--gp-weight", type=float, default=10.0, help="gradient-penalty weight (wgan-gp)")
            sub.add_argument("--r1-weight", type=float, default=0.0,
                             help="gamma of the R1 penalty on D's gradient at real images (dcgan; default: none)")
            sub.add_argument("--extra-layers", type=int, default=0,
                             help="3x3 convolutions added to G and D at each of their two smaller resolutions")
            sub.add_argument("--minibatch-std", action="store_true",
                             help="D sees the batch's standard deviation as one more channel (dcgan)")
            sub.add_argument("--loss", choices=["non-saturating", "minimax"], default="non-saturating",
                             help="generator loss of a dcgan")
            sub.add_argument("--augment", nargs="*", default=[], choices=["translation", "cutout"],
                             help="DiffAugment: shift / cut out every image D sees, real and fake (default: none)")
            sub.add_argument("--ema-decay", type=float, default=0.0,
                             help="> 0: keep a moving average of G's weights and ship it as the generator")
            sub.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke tests)")
            sub.add_argument("--eval-samples", type=int, default=1000)
            sub.add_argument("--grid", default=None, help="also write the last fixed-noise grid to this PNG")
        if name == "autoencoder":
            sub.add_argument("--noise-std", type=float, default=0.0, help="> 0 trains a denoising autoencoder")
            sub.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (smoke tests)")
            sub.add_argument("--eval-samples", type=int, default=1000,
                             help="samples from random codes scored by FID/KID beside the floor (0: skip)")
        if name == "latent-autoencoder":
            sub.add_argument("--block-out-channels", type=int, nargs="+", default=[16, 32, 64],
                             help="one width per block; all but the last halve the resolution (3 blocks: 32 -> 8)")
            sub.add_argument("--layers-per-block", type=int, default=1)
            sub.add_argument("--latent-channels", type=int, default=4)
            sub.add_argument("--norm-num-groups", type=int, default=8)
            sub.add_argument("--kl-weight", type=float, default=1e-6, help="weight of the KL term (LDM's KL-f8: 1e-6)")
            sub.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (smoke tests)")
            sub.add_argument("--eval-samples", type=int, default=1000,
                             help="held-out reconstructions scored by FID/KID beside the floor (0: skip)")
        if name == "latent-diffusion":
            sub.add_argument("--vae", required=True, help="a folder written by coursekit train latent-autoencoder")
            sub.add_argument("--clip", required=True, help="a clip checkpoint: its frozen text tower is the text encoder")
            sub.add_argument("--block-out-channels", type=int, nargs="+", default=[32, 64])
            sub.add_argument("--layers-per-block", type=int, default=2)
            sub.add_argument("--cross-attention-levels", type=int, nargs="*", default=[0, 1],
                             help="levels with a spatial transformer besides the middle (0 = the full latent resolution)")
            sub.add_argument("--attention-heads", type=int, default=4)
            sub.add_argument("--norm-num-groups", type=int, default=8)
            sub.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], default="epsilon",
                             help="what the U-Net predicts (Stable Diffusion 1.x: epsilon)")
            sub.add_argument("--cond-drop", type=float, default=0.1,
                             help="probability of replacing a prompt by the empty prompt (classifier-free guidance)")
            sub.add_argument("--keep-prob", type=float, default=0.5,
                             help="probability that a training caption says each attribute")
            sub.add_argument("--ema-decay", type=float, default=0.999)
            sub.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (smoke tests)")
            sub.add_argument("--eval-samples", type=int, default=1000)
            sub.add_argument("--eval-guidance-scales", type=float, nargs="*", default=[1, 3, 5, 7.5],
                             help="guidance scales w at which to record prompt accuracy and FID/KID (none: skip)")
            sub.add_argument("--eval-steps", type=int, default=50, help="DDIM steps of the evaluation samples")
        if name == "vae":
            sub.add_argument("--beta", type=float, default=1.0, help="weight of the KL term")
            sub.add_argument("--decoder", choices=["bernoulli", "gaussian"], default="bernoulli")
            sub.add_argument("--iw-samples", type=int, default=100, help="k of the importance-weighted log p(x) estimate")

    sampler = commands.add_parser("sample", help="draw samples from a checkpoint into a PNG grid or .pt file")
    sampler.add_argument("checkpoint", help="checkpoint folder or shipped name")
    sampler.add_argument("--num-samples", type=int, default=64)
    sampler.add_argument("--seed", type=int, default=0)
    sampler.add_argument("--out", default="samples.png")
    pipeline_options = sampler.add_argument_group("text-to-image pipelines (a folder with model_index.json)")
    pipeline_options.add_argument("--prompt", nargs="+", default=None,
                                  help="one or more prompts; --num-samples images of each (a grid row per prompt)")
    pipeline_options.add_argument("--negative-prompt", default=None,
                                  help="takes the empty prompt's place in classifier-free guidance")
    pipeline_options.add_argument("--guidance-scale", type=float, default=5.0)
    pipeline_options.add_argument("--steps", type=int, default=50, help="number of inference steps")
    pipeline_options.add_argument("--scheduler", choices=sorted(PIPELINE_SCHEDULERS), default="ddim")
    pipeline_options.add_argument("--device", default=None)

    evaluator = commands.add_parser("evaluate", help="re-measure a checkpoint's samples (a diffusion model: per sampler "
                                    "and x0 treatment) on the validated metric: FID/KID/precision/recall at N beside "
                                    "the floor at N, and nearest-training-digit distances")
    evaluator.add_argument("checkpoint", help="checkpoint folder or shipped name")
    evaluator.add_argument("--samplers", nargs="+", default=["ddpm-1000", "ddim-50", "dpmsolver-20"],
                           help="specs: ddpm-N, ddim-N, ddim-N-etaE (e.g. ddim-20-eta1), dpmsolver-N; add -trailing "
                                "for the trailing timesteps (e.g. ddim-50-trailing; default: leading)")
    evaluator.add_argument("--x0", nargs="+", choices=["clip", "none"], default=["clip"],
                           help="x0 treatments: clip (DPM-Solver: thresholding at 1) or none")
    evaluator.add_argument("--num-samples", type=int, default=1000)
    evaluator.add_argument("--seed", type=int, default=None,
                           help="sampling seed (default: 1 for diffusion; the training command's for other models)")
    evaluator.add_argument("--device", default=None)
    evaluator.add_argument("--raw-noise", action="store_true",
                           help="DDIM keeps the raw predicted noise next to the clipped x0 (diffusers' default, "
                                "use_clipped_model_output=False) instead of the course's consistent step")
    evaluator.add_argument("--guidance-scales", type=float, nargs="+", default=None,
                           help="a class- or text-conditional model: measure classifier-free guidance at these scales w "
                                "with one sampler (--samplers, default ddim-50)")
    evaluator.add_argument("--write", action="store_true", help="store the results in the checkpoint's training.json")
    evaluator.add_argument("--key", default="evaluation", help="metrics entry that --write stores the results under")
    evaluator.add_argument("--why", default="", help="reason recorded with --write")

    grader = commands.add_parser(
        "grade", help="autograde a folder or zip of submissions with nbgrader: repair, run sandboxed, feedback, CSV",
        description="Collect each student's notebook from SUBMISSIONS, repair what Colab and editing broke, run the "
                    "notebooks (several at once, each sandboxed), score them into the course's nbgrader gradebook, "
                    "write feedback HTML and a CSV. Exit status 0: all graded; 3: the batch finished but some "
                    "submissions failed or need review (see the summary); 2: nothing was graded (the course or "
                    "assignment is not ready, or the student mapping is ambiguous).")
    grader.add_argument("assignment", help="the nbgrader assignment, e.g. ps1 (released with nbgrader generate_assignment)")
    grader.add_argument("submissions", help="a folder or a .zip of submissions (an LMS download, Colab files)")
    grader.add_argument("--course", default=".", help="the course root, holding nbgrader_config.py (default: here)")
    grader.add_argument("--jobs", type=int, default=None, help="students run at once (default: the number of CPUs)")
    grader.add_argument("--student-pattern", default=None,
                        help="regular expression with a group (?P<student>...) that finds the student id in each "
                             "file's path inside SUBMISSIONS (default: the first folder, or the file name up to the first _)")
    grader.add_argument("--cell-timeout", type=float, default=None,
                        help="CPU seconds one cell may use (default: Execute.timeout of nbgrader_config.py); a busy "
                             "machine does not make a cell use more CPU time")
    grader.add_argument("--wall-factor", type=float, default=5.0,
                        help="a cell may also run this many times --cell-timeout by the clock, for cells that wait "
                             "rather than compute (default 5); a run that hits either limit is run again alone")
    grader.add_argument("--submission-timeout", type=float, default=1800, help="seconds one whole submission may run")
    grader.add_argument("--memory-mb", type=int, default=4096, help="memory limit of a student's kernel (0: none)")
    grader.add_argument("--output-limit", type=int, default=100_000, help="characters one cell may print")
    grader.add_argument("--no-feedback", action="store_true", help="do not write feedback HTML")
    grader.add_argument("--csv", default=None, help="where to write the grades (default: grading/ASSIGNMENT/grades.csv)")
    grader.add_argument("--db-url", default=None,
                        help="nbgrader gradebook URL (default: the course's, SQLite), e.g. "
                             "postgresql+psycopg2://grader@dbhost/course for a gradebook that several graders share")
    grader.add_argument("--cluster", default=None, metavar="ADDRESS",
                        help="run the notebooks as tasks on a dask.distributed cluster: a scheduler address "
                             "(tcp://host:8786) or 'local' for a LocalCluster of --jobs workers; the scoring stays "
                             "here (default: local processes, --jobs at a time)")
    grader.add_argument("--no-landlock", action="store_true",
                        help="do not restrict the students' file access with Linux Landlock")

    informer = commands.add_parser("info", help="show a checkpoint's config and training record (or list shipped ones)")
    informer.add_argument("checkpoint", nargs="?", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.command == "train":
        from coursekit.training import is_main_process

        _refuse_several_processes(args)
        start = time.perf_counter()
        metrics = {"classifier": train_classifier, "robust-classifier": train_robust_classifier,
                   "autoencoder": train_autoencoder, "vae": train_vae,
                   "ddpm": train_ddpm, "noisy-classifier": train_noisy_classifier, "clip": train_clip, "dcgan": train_gan_command, "wgan-gp": train_gan_command,
                   "latent-autoencoder": train_latent_autoencoder, "latent-diffusion": train_latent_diffusion}[args.model](args)
        if is_main_process():
            print(json.dumps(metrics, indent=2))
            print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s")
    elif args.command == "sample":
        sample(args)
    elif args.command == "evaluate":
        evaluate(args)
    elif args.command == "grade":
        return grade(args)
    else:
        info(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
