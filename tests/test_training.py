import json

import pytest
import torch
from torch import nn

from coursekit import get_device, seed_everything
from coursekit.checkpoint import load_checkpoint, resolve, save_checkpoint, shipped_checkpoints
from coursekit.models.autoencoder import Autoencoder, AutoencoderConfig, reconstruction_loss
from coursekit.training import train


def _batches(count=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.rand(4, 1, 28, 28, generator=generator),) for _ in range(count)]


def _run(seed):
    seed_everything(seed)
    model = Autoencoder(AutoencoderConfig(latent_dim=2, channels=(4, 8)))
    history = train(model, _batches(), reconstruction_loss, epochs=2, device="cpu", progress=False,
                    generator=torch.Generator().manual_seed(seed))
    return model, history


def test_history_and_determinism():
    model, history = _run(0)
    assert len(history.step_losses) == 12 and len(history.epoch_losses) == 2
    assert history.seconds > 0 and history.device == "cpu"
    assert not model.training
    _, again = _run(0)
    assert again.step_losses == history.step_losses
    _, other = _run(1)
    assert other.step_losses != history.step_losses


def test_max_steps_eval_fn_and_schedule():
    model = Autoencoder(AutoencoderConfig(latent_dim=2, channels=(4, 8)))
    seen = []
    history = train(model, _batches(), reconstruction_loss, epochs=5, max_steps=8, device="cpu", progress=False,
                    eval_fn=lambda m: seen.append(m.training) or 1.0,
                    lr_schedule=lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5))
    assert len(history.step_losses) == 8 and history.eval_losses == [1.0, 1.0] and seen == [False, False]


def test_bad_training_input():
    model = Autoencoder(AutoencoderConfig(latent_dim=2, channels=(4,)))
    with pytest.raises(ValueError, match="epochs"):
        train(model, _batches(), reconstruction_loss, epochs=0, progress=False)
    with pytest.raises(FloatingPointError, match="loss became nan"):
        train(model, _batches(), lambda m, b, g: m(b[0]).sum() * float("nan"), device="cpu", progress=False)


def test_seed_and_device_helpers(monkeypatch):
    assert torch.equal(torch.rand(3, generator=seed_everything(5)), torch.rand(3, generator=seed_everything(5)))
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)
    monkeypatch.setenv("COURSEKIT_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            get_device("cuda")


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="shipped names"):
        resolve(tmp_path / "nothing-here")
    with pytest.raises(TypeError, match="registered coursekit model"):
        save_checkpoint(nn.Linear(2, 2), tmp_path / "linear")
    save_checkpoint(Autoencoder(AutoencoderConfig(latent_dim=2, channels=(4,))), tmp_path / "ae")
    config = json.loads((tmp_path / "ae" / "config.json").read_text())
    config["model_type"] = "no-such-model"
    (tmp_path / "ae" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type 'no-such-model'"):
        load_checkpoint(tmp_path / "ae")


def test_shipped_checkpoints_are_complete_and_small():
    names = shipped_checkpoints()
    assert {"mnist-classifier", "ae-latent2", "ae-latent16", "ae-denoising", "ae-anomaly"} <= set(names)
    for name in names:
        folder = resolve(name)
        record = json.loads((folder / "training.json").read_text())
        assert {"command", "data", "device", "train_seconds", "metrics"} <= set(record), name
        assert record["command"].startswith("coursekit train ")
        assert (folder / "model.safetensors").stat().st_size < 5 * 2**20
        assert not list(folder.glob("*.pt")) and not list(folder.glob("*.pkl"))


def test_amp_on_the_cpu_uses_bfloat16_only_where_the_cpu_computes_it(monkeypatch):
    from coursekit import training

    cpu = torch.device("cpu")
    assert training.amp_dtype_for(cpu, amp=False) is None
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: False)
    assert training.amp_dtype_for(cpu, amp=True) is None  # emulated bfloat16 would be slower than float32
    history = train(Autoencoder(AutoencoderConfig(latent_dim=2, channels=(4, 8))), _batches(), reconstruction_loss,
                    device="cpu", amp=True, progress=False)
    assert history.precision == "float32"
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: True)
    assert training.amp_dtype_for(cpu, amp=True) == torch.bfloat16
    seen = []

    def loss_fn(model, batch, generator):
        seen.append(model.encoder(batch[0]).dtype)  # what autocast made of the forward pass
        return reconstruction_loss(model, batch, generator)

    model = Autoencoder(AutoencoderConfig(latent_dim=2, channels=(4, 8)))
    history = train(model, _batches(), loss_fn, epochs=3, lr=3e-3, device="cpu", amp=True, progress=False)
    assert history.precision == "bfloat16" and set(seen) == {torch.bfloat16}
    # the weights stay float32 and the loss still goes down
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert sum(history.step_losses[-6:]) < sum(history.step_losses[:6])


@pytest.mark.gpu
def test_training_on_gpu_with_mixed_precision():
    model = Autoencoder(AutoencoderConfig(latent_dim=2, channels=(4, 8)))
    history = train(model, _batches(), reconstruction_loss, epochs=2, device="cuda", amp=True, progress=False,
                    generator=torch.Generator(device="cuda").manual_seed(0))
    assert history.device.startswith("cuda") and history.step_losses[-1] < history.step_losses[0]


def test_distributed_helpers(monkeypatch):
    from coursekit.training import (batch_length, launched_by_accelerate, mixed_precision_for, rank_generator, shard,
                                    world_size)

    for key in ("WORLD_SIZE", "ACCELERATE_MIXED_PRECISION"):
        monkeypatch.delenv(key, raising=False)
    assert not launched_by_accelerate() and world_size() == 1
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert launched_by_accelerate() and mixed_precision_for(torch.device("cpu"), amp=True) == "no"
    images, labels = torch.arange(7.0), torch.arange(7)
    halves = [shard((images, labels), rank, 2) for rank in range(2)]
    assert [batch_length(half) for half in halves] == [4, 3]
    assert torch.equal(torch.cat([half[1] for half in halves]), labels)
    generator = torch.Generator().manual_seed(5)
    assert rank_generator(generator, 0, torch.device("cpu")) is generator
    other = rank_generator(generator, 1, torch.device("cpu"))
    assert other.initial_seed() != 5 and not torch.equal(torch.rand(3, generator=other),
                                                         torch.rand(3, generator=torch.Generator().manual_seed(5)))
