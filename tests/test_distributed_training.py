"""``coursekit train`` under ``accelerate launch`` with two CPU processes (gloo) against one process.

Both runs see the same global batches (each process takes half of every batch of 8). The autoencoder's
loss has no randomness, so the two-process run must follow the one-process run step by step. A
diffusion model draws noise: process r draws from the seed + r * RANK_SEED_STRIDE, so its one-process
reference is the plain command with each batch's loss taken as the mean of the two halves' losses,
each half with its process's generator: the same gradient, computed in one process.

Why 1e-5 (relative, per step): the runs can differ only in float32 rounding. For the autoencoder a
convolution over 8 images against two over 4, and a mean of 8 squared errors against the mean of two
means of 4, round differently, about 1e-7 relative per step (float32's epsilon is 1.2e-7); ten Adam
steps carried that to 1.6e-7 in the losses and 1.3e-7 in the weights (measured on one CPU core). For the
diffusion model the two sides compute the same halves, and (g0 + g1) / 2 equals 0.5 g0 + 0.5 g1
exactly, so the runs agreed bit for bit. 1e-5 leaves room for other CPUs and BLAS builds, and is far
below a real fault: a wrong shard or seed changes even the first step's loss (other images, other
noise), by a few percent for these batches of 8.

Run with ``pytest -s`` to see both trajectories.
"""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import coursekit.training
from coursekit.checkpoint import load_checkpoint
from coursekit.cli import main
from coursekit.training import batch_length, rank_generator, shard

pytest.importorskip("accelerate")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with the gloo backend is needed", allow_module_level=True)

WORLD = 2
TOLERANCE = 1e-5  # relative, per step; see the module docstring


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(args: list[str], tmp_path) -> float:
    """Run ``accelerate launch --multi_gpu --num_processes 2 -m coursekit.cli ARGS`` on the CPU (``--device cpu``:
    accelerate's ``--cpu`` starts one process only) and return its wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf"), "COURSEKIT_DEVICE": "cpu"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(WORLD),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--num_cpu_threads_per_process", "1", "--main_process_port", str(_free_port()),
               "-m", "coursekit.cli", *args]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1, result.stdout  # only the first process reports
    return time.perf_counter() - start


def _capture_train(monkeypatch, two_halves: bool) -> list:
    """Wrap coursekit.training.train to keep each run's History; with ``two_halves``, the loss of a
    batch is the mean of its two halves' losses, each half drawing from its process's generator."""
    histories, real_train = [], coursekit.training.train

    def wrapped(model, loader, loss_fn, **kwargs):
        if two_halves:
            generators = [rank_generator(kwargs["generator"], rank, torch.device("cpu")) for rank in range(WORLD)]

            def mean_of_halves(model, batch, generator):
                halves = [shard(batch, rank, WORLD) for rank in range(WORLD)]
                return sum(loss_fn(model, half, generators[rank]) * batch_length(half) / batch_length(batch)
                           for rank, half in enumerate(halves))

            history = real_train(model, loader, mean_of_halves, **kwargs)
        else:
            history = real_train(model, loader, loss_fn, **kwargs)
        histories.append(history)
        return history

    monkeypatch.setattr(coursekit.training, "train", wrapped)
    return histories


def _compare(one, two_folder, name: str):
    record = json.loads((two_folder / "training.json").read_text())
    distributed = record["distributed"]
    losses = distributed["step_losses"]
    assert len(losses) == len(one) == record["steps"] == 10
    worst = max(abs(a - b) / abs(a) for a, b in zip(one, losses))
    print(f"\n{name}: 1 process {[round(v, 6) for v in one]}\n{name}: 2 processes {[round(v, 6) for v in losses]}\n"
          f"{name}: max relative difference {worst:.2e}")
    assert worst < TOLERANCE, f"{name}: losses differ by {worst:.2e} relative"
    expected = {"world_size": 2, "backend": "gloo", "mixed_precision": "no", "global_batch_size": 8,
                "per_process_batch_size": 4}
    assert {key: distributed[key] for key in expected} == expected
    assert record["device"] == "cpu" and record["command"].startswith(f"coursekit train {name} ")
    return record


def _same_checkpoint_format(one_folder, two_folder):
    one_config = json.loads((one_folder / "config.json").read_text())
    assert json.loads((two_folder / "config.json").read_text()) == one_config
    one_weights, two_weights = load_file(one_folder / "model.safetensors"), load_file(two_folder / "model.safetensors")
    assert one_weights.keys() == two_weights.keys()
    return max(float((one_weights[key] - two_weights[key]).abs().max()) for key in one_weights)


def test_ddpm_on_two_processes_matches_one_process(tmp_path, monkeypatch):
    args = ["train", "ddpm", "--base-channels", "8", "--channel-mults", "1", "2", "--batch-size", "8", "--epochs", "1",
            "--max-steps", "10", "--eval-samplers", "--quiet", "--device", "cpu"]
    seconds = _launch(args + ["--out", str(tmp_path / "two")], tmp_path)
    histories = _capture_train(monkeypatch, two_halves=True)
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    record = _compare(histories[0].step_losses, tmp_path / "two", "ddpm")
    assert "distributed" not in json.loads((tmp_path / "one" / "training.json").read_text())
    weights = _same_checkpoint_format(tmp_path / "one", tmp_path / "two")  # the EMA weights
    print(f"ddpm: EMA weights differ by at most {weights:.2e}; two processes took {seconds:.1f} s")
    assert weights < 1e-5
    model = load_checkpoint(tmp_path / "two")
    assert model.model_type == "ddpm" and model.config.base_channels == 8 and record["metrics"]["ema_decay"] == 0.999


def test_autoencoder_on_two_processes_matches_one_process(tmp_path, monkeypatch):
    args = ["train", "autoencoder", "--latent-dim", "2", "--batch-size", "8", "--max-steps", "10",
            "--eval-samples", "0", "--quiet", "--device", "cpu"]
    seconds = _launch(args + ["--out", str(tmp_path / "two")], tmp_path)
    histories = _capture_train(monkeypatch, two_halves=False)
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    _compare(histories[0].step_losses, tmp_path / "two", "autoencoder")
    weights = _same_checkpoint_format(tmp_path / "one", tmp_path / "two")
    print(f"autoencoder: weights differ by at most {weights:.2e}; two processes took {seconds:.1f} s")
    assert weights < 1e-5
    assert load_checkpoint(tmp_path / "two").config.latent_dim == 2


def test_refusals_under_several_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match="train one of: ddpm, autoencoder"):
        main(["train", "dcgan", "--out", str(tmp_path / "gan"), "--quiet"])
    with pytest.raises(SystemExit, match="--batch-size 9 is the global batch and must divide among the 2 processes"):
        main(["train", "ddpm", "--batch-size", "9", "--out", str(tmp_path / "ddpm"), "--quiet"])
