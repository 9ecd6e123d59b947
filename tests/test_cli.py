import json

import pytest
import torch

from coursekit.checkpoint import load_checkpoint
from coursekit.cli import main


def test_train_sample_info_round_trip(tmp_path, capsys):
    out = tmp_path / "ae"
    assert main(["train", "autoencoder", "--latent-dim", "2", "--epochs", "1", "--out", str(out), "--quiet",
                 "--device", "cpu"]) == 0
    record = json.loads((out / "training.json").read_text())
    assert record["command"] == f"coursekit train autoencoder --latent-dim 2 --epochs 1 --out {out} --quiet --device cpu"
    assert record["data"] == {"name": "mnist", "source": "bundled", "train_images": 4000}
    assert record["device"] == "cpu" and record["epochs"] == 1 and record["train_seconds"] > 0
    assert 0 < record["metrics"]["test_mse"] < 0.2 and record["metrics"]["evaluation"]["samples"]["fid_over_floor"] > 1
    model = load_checkpoint(out)
    assert model.config.latent_dim == 2

    assert main(["sample", str(out), "--num-samples", "16", "--out", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert main(["sample", str(out), "--num-samples", "4", "--out", str(tmp_path / "samples.pt")]) == 0

    capsys.readouterr()
    assert main(["info"]) == 0
    listing = capsys.readouterr().out
    assert "mnist-classifier" in listing and "test_accuracy" in listing


def test_train_vae_records_likelihoods(tmp_path):
    out = tmp_path / "vae"
    assert main(["train", "vae", "--latent-dim", "4", "--epochs", "1", "--iw-samples", "5", "--beta", "0.5",
                 "--exclude-digit", "2", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    record = json.loads((out / "training.json").read_text())
    metrics = record["metrics"]
    assert record["data"]["train_images"] == 3600  # 400 twos left out
    assert metrics["iw_samples"] == 5 and metrics["held_out_digit"] == 2 and 0 <= metrics["anomaly_auc_elbo"] <= 1
    assert metrics["test_elbo"] < 0 and metrics["test_kl"] > 0
    assert metrics["test_elbo"] == pytest.approx(metrics["test_reconstruction"] - metrics["test_kl"])
    assert sum(metrics["evaluation"]["samples"]["class_histogram"]) == 1000
    model = load_checkpoint(out)
    assert model.config.beta == 0.5 and model.config.latent_dim == 4


@pytest.mark.parametrize("model", ["dcgan", "wgan-gp"])
def test_train_gan_records_fid_and_class_coverage(tmp_path, model):
    out = tmp_path / model
    assert main(["train", model, "--channels", "8", "--latent-dim", "8", "--max-steps", "4", "--critic-steps", "2",
                 "--eval-samples", "100", "--conditional", "--out", str(out), "--grid", str(tmp_path / "grid.png"),
                 "--quiet", "--device", "cpu"]) == 0
    record = json.loads((out / "training.json").read_text())
    metrics = record["metrics"]
    assert record["steps"] == 4 and record["data"]["train_images"] == 4000
    row = metrics["evaluation"]["samples"]
    assert sum(row["class_histogram"]) == 100 and row["fid_over_floor"] > 0 and metrics["evaluation"]["num_samples"] == 100
    assert metrics["rarest_digit_count"] == min(row["class_histogram"][:10]) and "g_loss" in metrics["last_50_steps"]
    assert record["curves"]["every"] == 10 and len(record["curves"]["d_loss"]) == 1
    gan = load_checkpoint(out)
    assert gan.config.loss == ("wgan-gp" if model == "wgan-gp" else "non-saturating") and gan.config.num_classes == 10
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_train_dcgan_ships_the_moving_average_and_scores_the_last_iterate_too(tmp_path):
    common = ["--channels", "8", "--latent-dim", "8", "--max-steps", "6", "--eval-samples", "100",
              "--augment", "translation", "cutout", "--quiet", "--device", "cpu"]
    assert main(["train", "dcgan", *common, "--out", str(tmp_path / "plain")]) == 0
    assert main(["train", "dcgan", *common, "--ema-decay", "0.99", "--out", str(tmp_path / "ema")]) == 0
    plain, averaged = load_checkpoint(tmp_path / "plain"), load_checkpoint(tmp_path / "ema")
    # the average does not change the training: the same seed gives the same discriminator ...
    for (name, p), (_, q) in zip(plain.discriminator.state_dict().items(), averaged.discriminator.state_dict().items()):
        assert torch.equal(p, q), name
    # ... but the shipped generator is the average, not the last iterate
    assert not torch.equal(plain.generator.project[0].weight, averaged.generator.project[0].weight)
    record = json.loads((tmp_path / "ema" / "training.json").read_text())["metrics"]
    plain_record = json.loads((tmp_path / "plain" / "training.json").read_text())["metrics"]
    assert record["ema_decay"] == 0.99 and record["ema_decay_reached"] == pytest.approx(6 / 15)
    assert "translation, cutout" in record["augment"] and "moving average" in record["generator_weights"]
    # the last iterate's score is the plain run's score (same weights, same samples)
    assert record["evaluation_last_iterate"]["samples"]["fid"] == pytest.approx(plain_record["evaluation"]["samples"]["fid"])
    assert record["evaluation"]["samples"]["fid"] != pytest.approx(plain_record["evaluation"]["samples"]["fid"])
    assert "ema_decay" not in plain_record


def test_train_class_conditional_ddpm_records_guidance_sweep(tmp_path):
    out = tmp_path / "cddpm"
    assert main(["train", "ddpm", "--base-channels", "8", "--channel-mults", "1", "2", "--num-classes", "10",
                 "--cond-drop", "0.2", "--max-steps", "2", "--epochs", "1", "--eval-samplers", "--eval-samples", "20",
                 "--eval-guidance-scales", "0", "1", "3", "--eval-guidance-sampler", "ddim-2", "--out", str(out),
                 "--quiet", "--device", "cpu"]) == 0
    metrics = json.loads((out / "training.json").read_text())["metrics"]
    guidance = metrics["guidance"]
    assert metrics["cond_drop"] == 0.2 and "evaluation" not in metrics
    assert list(guidance["scales"]) == ["0", "1", "3"] and guidance["num_samples"] == 20
    for row in guidance["scales"].values():
        assert 0 <= row["class_accuracy"] <= 1 and sum(row["class_histogram"]) == 20 and row["seconds"] >= 0
    assert load_checkpoint(out).config.num_classes == 10
    with pytest.raises(SystemExit, match="--cond-drop needs --num-classes"):
        main(["train", "ddpm", "--cond-drop", "0.1", "--out", str(tmp_path / "x"), "--quiet"])


def test_train_noisy_classifier_records_accuracy_by_noise_level(tmp_path):
    out = tmp_path / "noisy"
    assert main(["train", "noisy-classifier", "--base-channels", "8", "--max-steps", "3", "--epochs", "1",
                 "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    metrics = json.loads((out / "training.json").read_text())["metrics"]
    assert set(metrics["test_accuracy_at_t"]) == {"0", "100", "250", "500", "750", "900", "999"}
    assert metrics["test_images"] == 1000
    assert load_checkpoint(out).model_type == "noisy-classifier"
