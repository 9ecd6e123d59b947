"""The U-Net noise predictor, the forward process, the training loss and the sampling loop."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coursekit.checkpoint import load_checkpoint, read_record, resolve, save_checkpoint
from coursekit.diffusion import (DiffusionConfig, DiffusionModel, diffusion_loss, q_sample, sample_loop,
                                 training_target)
from coursekit.models.unet import UNet, UNetConfig, timestep_embedding
from coursekit.schedulers import DDIMScheduler, DDPMScheduler, make_schedule

# --- U-Net -------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [
    UNetConfig(base_channels=8, channel_mults=(1, 2), attention_levels=()),
    UNetConfig(base_channels=8, channel_mults=(1, 2, 2), attention_levels=(2,)),
    UNetConfig(image_channels=3, image_size=32, base_channels=8, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
               attention_levels=(1, 3)),
    UNetConfig(base_channels=8, channel_mults=(1, 2, 2), num_classes=10, dropout=0.1),
])
def test_unet_output_has_the_input_shape(config):
    model = UNet(config).eval()
    x = torch.randn(3, config.image_channels, config.image_size, config.image_size)
    out = model(x, torch.tensor([0, 10, 999]))
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))  # the head starts at zero: "predict no noise"
    nn.init.normal_(model.head[-1].weight)
    labels = torch.tensor([1, 2, 3]) if config.num_classes else None
    assert model(x, 5, labels).shape == x.shape  # an int timestep is broadcast over the batch


def test_unet_uses_timestep_and_labels():
    model = UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), num_classes=10)).eval()
    nn.init.normal_(model.head[-1].weight, std=0.1)
    x = torch.randn(2, 1, 28, 28)
    t = torch.tensor([3, 3])
    assert not torch.allclose(model(x, t), model(x, t + 500))
    assert not torch.allclose(model(x, t, torch.tensor([0, 0])), model(x, t, torch.tensor([7, 7])))
    # no label means the extra "unconditional" class, number num_classes
    assert torch.allclose(model(x, t), model(x, t, torch.tensor([10, 10])))


def test_unet_rejects_bad_input():
    model = UNet(UNetConfig(base_channels=8, channel_mults=(1, 2)))
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, 1, 28, 28\)"):
        model(torch.randn(2, 1, 32, 32), 0)
    with pytest.raises(ValueError, match="takes no labels"):
        model(torch.randn(2, 1, 28, 28), 0, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig(image_size=28, channel_mults=(1, 2, 2, 2))
    with pytest.raises(ValueError, match="attention_levels"):
        UNetConfig(channel_mults=(1, 2), attention_levels=(2,))


def test_timestep_embedding_closed_form():
    emb = timestep_embedding(torch.tensor([0, 7]), 8)
    assert emb.shape == (2, 8)
    assert torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = [10000 ** (-k / 4) for k in range(4)]
    expected = [math.cos(7 * f) for f in freqs] + [math.sin(7 * f) for f in freqs]
    assert torch.allclose(emb[1], torch.tensor(expected), atol=1e-6)


def test_save_load_identity(tmp_path):
    torch.manual_seed(0)
    model = DiffusionModel(DiffusionConfig(base_channels=8, channel_mults=(1, 2), attention_levels=(1,), schedule="cosine",
                                           num_train_timesteps=200))
    for p in model.parameters():
        nn.init.normal_(p, std=0.05)
    save_checkpoint(model, tmp_path / "ckpt", {"note": "test"})
    stored = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert stored["model_type"] == "ddpm" and stored["config"]["schedule"] == "cosine"
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == model.config
    assert torch.equal(loaded.schedule.alphas_cumprod, model.schedule.alphas_cumprod)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([1, 150])
    assert torch.equal(loaded(x, t), model.eval()(x, t))
    scheduler = loaded.scheduler("ddim")
    assert isinstance(scheduler, DDIMScheduler) and scheduler.num_train_timesteps == 200
    assert torch.equal(scheduler.alphas_cumprod, make_schedule("cosine", 200).alphas_cumprod)


def test_unet_overfits_a_tiny_batch():
    """With x_t, t and the noise held fixed, the U-Net must be able to learn the noise exactly."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(image_size=16, base_channels=8, channel_mults=(1, 2), attention_levels=(1,)))
    schedule = make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 16, 16, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([10, 200, 500, 900])
    x_t = q_sample(x0, t, noise, schedule)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        loss = nn.functional.mse_loss(model(x_t, t), noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(1.0, abs=0.1)  # zero prediction of unit-variance noise
    assert losses[-1] < 0.1 * losses[0]


# --- forward process and loss -----------------------------------------------------------------


def test_q_sample_equals_add_noise_and_closed_form():
    schedule = make_schedule("linear")
    x0, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([0, 499, 999])
    assert torch.allclose(q_sample(x0, t, noise, schedule), DDPMScheduler().add_noise(x0, noise, t), atol=1e-6)
    ab = schedule.alphas_cumprod[499]
    assert torch.allclose(q_sample(x0, t, noise, schedule)[1], ab.sqrt() * x0[1] + (1 - ab).sqrt() * noise[1])
    with pytest.raises(ValueError, match=r"0 \.\. 999"):
        q_sample(x0, torch.tensor([0, 1, 1000]), noise, schedule)


def test_iterated_steps_match_the_one_jump_distribution():
    """t single Markov steps x_s = sqrt(1 - beta_s) x_{s-1} + sqrt(beta_s) eps give q(x_t | x_0)."""
    schedule = make_schedule("cosine", 1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([0.8, -0.3])
    x = x0.repeat(200_000, 1)
    t = 300
    for s in range(t + 1):
        x = (1 - schedule.betas[s]).sqrt() * x + schedule.betas[s].sqrt() * torch.randn(x.shape, generator=g)
    ab = schedule.alphas_cumprod[t]
    assert torch.allclose(x.mean(0), ab.sqrt() * x0, atol=0.01)
    assert torch.allclose(x.var(0), (1 - ab).expand(2), atol=0.01)


def test_diffusion_loss_is_the_noise_regression_error():
    model = DiffusionModel(DiffusionConfig(base_channels=8, channel_mults=(1, 2)))
    nn.init.normal_(model.unet.head[-1].weight, std=0.1)
    x0 = torch.rand(4, 1, 28, 28) * 2 - 1
    loss = diffusion_loss(model, (x0, torch.zeros(4)), torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, 1000, (4,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    expected = ((model(q_sample(x0, t, noise, model.schedule), t) - noise) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


# --- the sampling loop with analytic "models" -------------------------------------------------


class OnePointOracle(nn.Module):
    """The exact noise predictor when the data set is a single image x0*:
    eps(x_t, t) = (x_t - sqrt(alpha_bar_t) x0*) / sqrt(1 - alpha_bar_t)."""

    def __init__(self, target: torch.Tensor, schedule):
        super().__init__()
        self.register_buffer("target", target)
        self.alpha_bar = schedule.alphas_cumprod.double()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        ab = self.alpha_bar[t].reshape(-1, *[1] * (x.ndim - 1))
        return ((x.double() - ab.sqrt() * self.target) / (1 - ab).sqrt()).float()


class GaussianOracle(nn.Module):
    """The exact noise predictor for data x0 ~ N(0, s^2 I): E[eps | x_t] = sqrt(1 - ab) x_t / (ab s^2 + 1 - ab)."""

    def __init__(self, std: float, schedule):
        super().__init__()
        self.var = std**2
        self.alpha_bar = schedule.alphas_cumprod.double()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        ab = self.alpha_bar[t].reshape(-1, *[1] * (x.ndim - 1))
        return (x.double() * (1 - ab).sqrt() / (ab * self.var + 1 - ab)).float()


@pytest.mark.parametrize("sampler,steps,eta", [("ddpm", 1000, 0.0), ("ddpm", 100, 0.0), ("ddim", 50, 0.0),
                                               ("ddim", 10, 1.0), ("ddim", 5, 0.0)])
def test_sampling_a_one_point_data_set_returns_that_point(sampler, steps, eta):
    schedule = make_schedule("linear")
    target = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    scheduler = DDPMScheduler() if sampler == "ddpm" else DDIMScheduler()
    out = sample_loop(OnePointOracle(target, schedule), scheduler, (5, 1, 4, 4), generator=torch.Generator().manual_seed(1),
                      num_inference_steps=steps, eta=eta)
    assert torch.allclose(out, target.expand(5, -1, -1, -1), atol=1e-5)


def _exact_output_std(schedule, std: float, sampler: str, steps: int) -> float:
    """For N(0, std^2) data and the exact predictor every step is linear in x_t plus fresh noise,
    x_prev = A_t x_t + sigma_t z, so the variance of the samples follows Var <- A_t^2 Var + sigma_t^2
    from Var(x_T) = 1. This is the exact answer for a finite number of steps (not std itself)."""
    ab = torch.cumprod(1 - schedule.betas.double(), 0)
    ratio = len(ab) // steps
    var = torch.tensor(1.0, dtype=torch.float64)
    for t in range(0, len(ab), ratio)[::-1]:
        a = ab[t]
        a_prev = ab[t - ratio] if t - ratio >= 0 else torch.tensor(1.0, dtype=torch.float64)
        c = (1 - a).sqrt() / (a * std**2 + 1 - a)           # eps_hat = c x_t
        k = (1 - (1 - a).sqrt() * c) / a.sqrt()            # x0_hat = k x_t
        if sampler == "ddpm":
            beta = 1 - a / a_prev
            gain = a_prev.sqrt() * beta / (1 - a) * k + (a / a_prev).sqrt() * (1 - a_prev) / (1 - a)
            noise_var = (1 - a_prev) / (1 - a) * beta if t > 0 else 0.0
        else:  # DDIM, eta = 0
            gain, noise_var = a_prev.sqrt() * k + (1 - a_prev).sqrt() * c, 0.0
        var = gain**2 * var + noise_var
    return var.sqrt().item()


@pytest.mark.parametrize("sampler,steps", [("ddpm", 1000), ("ddpm", 50), ("ddim", 50), ("ddim", 10)])
def test_sampling_gaussian_data_matches_the_exact_variance_recursion(sampler, steps):
    """N(0, 0.5^2) data with the exact noise predictor: the sample spread must equal the analytic one."""
    schedule = make_schedule("linear")
    scheduler = DDPMScheduler(clip_sample=False) if sampler == "ddpm" else DDIMScheduler(clip_sample=False)
    out = sample_loop(GaussianOracle(0.5, schedule), scheduler, (20_000, 1), generator=torch.Generator().manual_seed(2),
                      num_inference_steps=steps)
    expected = _exact_output_std(schedule, 0.5, sampler, steps)
    assert out.mean().abs() < 0.02
    assert out.std().item() == pytest.approx(expected, rel=0.015)
    if (sampler, steps) == ("ddpm", 1000):
        assert expected == pytest.approx(0.5, rel=0.01)  # many small steps: close to the data's spread
    if (sampler, steps) == ("ddim", 10):
        assert expected < 0.47  # few deterministic steps shrink the spread, and the loop reproduces that


def test_sample_loop_runs_diffusers_dpm_solver():
    diffusers = pytest.importorskip("diffusers")
    schedule = make_schedule("linear")
    scheduler = diffusers.DPMSolverMultistepScheduler(beta_schedule="linear")
    out = sample_loop(GaussianOracle(0.5, schedule), scheduler, (20_000, 1), generator=torch.Generator().manual_seed(2),
                      num_inference_steps=20)
    assert len(scheduler.timesteps) == 20
    assert out.mean().abs() < 0.02 and out.std().item() == pytest.approx(0.5, rel=0.06)


def test_sample_loop_gives_the_same_images_with_diffusers_schedulers():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = DiffusionModel(DiffusionConfig(base_channels=8, channel_mults=(1, 2)))
    nn.init.normal_(model.unet.head[-1].weight, std=0.05)
    # Near t = 0 a step divides by 1 - alpha_bar_t ~ 1e-4, where diffusers' float32 alpha_bar is off in the
    # third digit (tests/test_schedulers.py, step by step); over a whole loop through a network that leaves
    # differences up to ~1e-3 on images in [-1, 1]
    for ours, theirs, steps, tolerance, flag in [
            (model.scheduler("ddim"), diffusers.DDIMScheduler(**model.diffusers_config()), 20, 2e-3, True),
            (model.scheduler("ddim"), diffusers.DDIMScheduler(**model.diffusers_config()), 20, 2e-3, False),
            (model.scheduler("ddpm"), diffusers.DDPMScheduler(**model.diffusers_config()), 25, 2e-3, None)]:
        kwargs = {} if flag is None else {"step_kwargs": {"use_clipped_model_output": flag}}
        a = sample_loop(model, ours, (2, 1, 28, 28), generator=torch.Generator().manual_seed(5), num_inference_steps=steps,
                        **kwargs)
        b = sample_loop(model, theirs, (2, 1, 28, 28), generator=torch.Generator().manual_seed(5), num_inference_steps=steps,
                        **kwargs)
        assert torch.allclose(a, b, atol=tolerance), (a - b).abs().max()
    with pytest.raises(ValueError, match="takes no eta"):
        sample_loop(model, diffusers.DPMSolverMultistepScheduler(), (1, 1, 28, 28), num_inference_steps=2, eta=0.5)


def test_sample_loop_callback_sees_every_step():
    schedule = make_schedule("linear")
    target = torch.zeros(1, 1, 2, 2)
    seen = []
    sample_loop(OnePointOracle(target, schedule), DDIMScheduler(), (1, 1, 2, 2), num_inference_steps=8,
                callback=lambda i, t, x0: seen.append((i, int(t), x0.shape)))
    assert [s[0] for s in seen] == list(range(8)) and seen[0][1] == 875 and seen[-1][1] == 0


def test_model_sample_is_in_unit_range():
    model = DiffusionModel(DiffusionConfig(base_channels=8, channel_mults=(1, 2)))
    nn.init.normal_(model.unet.head[-1].weight, std=0.5)
    images = model.sample(3, torch.Generator().manual_seed(0), num_inference_steps=3, batch_size=2)
    assert images.shape == (3, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    raw = model.sample(3, torch.Generator().manual_seed(0), num_inference_steps=3, use_clipped_model_output=False)
    assert raw.shape == images.shape and not torch.allclose(raw, images)
    unclipped = model.sample(3, torch.Generator().manual_seed(0), num_inference_steps=3, clip=False)
    assert not torch.allclose(unclipped, images) and unclipped.min() >= 0 and unclipped.max() <= 1
    with pytest.raises(ValueError, match="DDIM sampler only"):
        model.sample(1, sampler="ddpm", use_clipped_model_output=True)
    with pytest.raises(ValueError, match="kind must be one of"):
        model.scheduler("euler")
    with pytest.raises(ValueError, match="sampler must be one of"):
        model.sample(1, sampler="euler")


def test_training_target_per_parameterisation():
    schedule = make_schedule("linear")
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(6, 1, 4, 4, generator=g) * 2 - 1, torch.randn(6, 1, 4, 4, generator=g)
    t = torch.tensor([0, 1, 200, 500, 900, 999])
    ab = schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    x_t = q_sample(x0, t, noise, schedule)
    assert torch.equal(training_target(x0, noise, t, schedule, "epsilon"), noise)
    assert torch.equal(training_target(x0, noise, t, schedule, "sample"), x0)
    v = training_target(x0, noise, t, schedule, "v_prediction")
    assert torch.allclose(v, ab.sqrt() * noise - (1 - ab).sqrt() * x0)
    assert torch.allclose(ab.sqrt() * x_t - (1 - ab).sqrt() * v, x0, atol=1e-5)  # x0 back from v, exactly
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        training_target(x0, noise, t, schedule, "noise")
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        DiffusionConfig(prediction_type="v")


def test_v_prediction_loss_regresses_v():
    torch.manual_seed(0)
    model = DiffusionModel(DiffusionConfig(base_channels=8, channel_mults=(1, 2), prediction_type="v_prediction"))
    x0 = torch.rand(4, 1, 28, 28) * 2 - 1
    loss = diffusion_loss(model, x0, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, 1000, (4,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    expected = F.mse_loss(model(q_sample(x0, t, noise, model.schedule), t), training_target(x0, noise, t, model.schedule,
                                                                                          "v_prediction"))
    assert torch.allclose(loss, expected)


class VOnePointOracle(nn.Module):
    """The exact v-predictor for a data set of one point: v = (sqrt(ab) x_t - x0) / sqrt(1 - ab)."""

    def __init__(self, target: torch.Tensor, schedule):
        super().__init__()
        self.target = target.double()
        self.alpha_bar = schedule.alphas_cumprod64
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        ab = self.alpha_bar[t].reshape(-1, *[1] * (x.ndim - 1))
        return ((ab.sqrt() * x.double() - self.target) / (1 - ab).sqrt()).float()


@pytest.mark.parametrize("kind,steps,clip,spacing", [
    ("ddpm", 100, True, "leading"), ("ddim", 20, False, "leading"), ("ddim", 50, True, "leading"),
    ("dpmsolver", 20, True, "leading"), ("dpmsolver", 10, False, "leading"), ("ddpm", 100, False, "trailing"),
    ("ddim", 50, True, "trailing"), ("dpmsolver", 20, False, "trailing")])
def test_v_prediction_samplers_return_the_one_data_point(kind, steps, clip, spacing):
    pytest.importorskip("diffusers")
    model = DiffusionModel(DiffusionConfig(base_channels=8, channel_mults=(1, 2), prediction_type="v_prediction"))
    target = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    scheduler = model.scheduler(kind, clip_sample=clip, timestep_spacing=spacing)
    config = scheduler.config if kind == "dpmsolver" else scheduler
    assert config.prediction_type == "v_prediction" and config.timestep_spacing == spacing
    out = sample_loop(VOnePointOracle(target, model.schedule), scheduler, (5, 1, 4, 4),
                      generator=torch.Generator().manual_seed(1), num_inference_steps=steps)
    assert torch.allclose(out, target.expand(5, -1, -1, -1), atol=1e-4)


def test_dpm_solver_thresholding_is_the_same_clipping_as_ddim():
    """The x0 treatment of DPM-Solver with thresholding at sample_max_value=1 is DDIM's clip to [-1, 1]."""
    pytest.importorskip("diffusers")
    scheduler = DiffusionModel(DiffusionConfig(base_channels=8, channel_mults=(1, 2))).scheduler("dpmsolver")
    x0 = 3 * torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert scheduler.config.thresholding and scheduler.config.timestep_spacing == "leading"
    assert torch.equal(scheduler._threshold_sample(x0), x0.clamp(-1, 1))
    assert not DiffusionModel(DiffusionConfig(base_channels=8, channel_mults=(1, 2))).scheduler(
        "dpmsolver", clip_sample=False).config.thresholding


# --- the shipped checkpoint and the training command ------------------------------------------


@pytest.mark.parametrize("name,prediction_type", [("ddpm", "v_prediction"), ("ddpm-v-100ep", "v_prediction"),
                                                    ("ddpm-eps", "epsilon")])
def test_shipped_ddpm_checkpoints_and_records(name, prediction_type):
    model = load_checkpoint(name)
    assert isinstance(model, DiffusionModel) and model.config.prediction_type == prediction_type
    record = read_record(name)
    assert record["command"].startswith("coursekit train ddpm")
    assert ("--prediction-type v_prediction" in record["command"]) == (prediction_type == "v_prediction")
    evaluation = record["metrics"]["evaluation"]
    assert evaluation["num_samples"] == 1000 and evaluation["prediction_type"] == prediction_type
    samplers = evaluation["samplers"]
    for spec, treatments in {"ddim-50": ("clip", "none"), "dpmsolver-20": ("clip", "none"), "ddpm-100": ("clip", "none")}.items():
        assert set(samplers[spec]) >= set(treatments), spec
    if name == "ddpm":
        assert "clip" in samplers["ddpm-1000"]
    for rows in samplers.values():
        for row in rows.values():
            assert row["fid_over_floor"] == pytest.approx(row["fid"] / evaluation["floor"]["fid"])
            assert sum(row["class_histogram"]) == 1000 and row["seconds"] > 0 and 0 <= row["near_copies"] <= 1
    images = model.sample(4, torch.Generator().manual_seed(0), num_inference_steps=5)
    assert images.shape == (4, 1, 28, 28)


def test_ddpm_learning_curve_is_copied_from_the_training_records(load_benchmark):
    """Chapter 4's learning curve (shipped in the ddpm folder) is what benchmarks/ddpm_learning_curve.py
    gathers from the records, and it lines up with them: same floor and N, steps growing along the v runs."""
    module = load_benchmark("ddpm_learning_curve")
    assert module.main(["--check"]) == 0, "run python benchmarks/ddpm_learning_curve.py"
    curve = json.loads((resolve("ddpm") / "learning_curve.json").read_text())
    runs = {run["name"]: run for run in curve["runs"]}
    assert list(runs)[0] == "ddpm-eps" and list(runs)[-1] == "ddpm"
    shipped = read_record("ddpm")
    assert runs["ddpm"]["steps"] == shipped["steps"] and runs["ddpm"]["command"] == shipped["command"]
    assert runs["ddpm"]["fid_over_floor"]["ddim-50"]["clip"] == \
        shipped["metrics"]["evaluation"]["samplers"]["ddim-50"]["clip"]["fid_over_floor"]
    v_steps = [run["steps"] for run in curve["runs"] if run["prediction_type"] == "v_prediction"]
    assert v_steps == sorted(v_steps) and len(set(v_steps)) == len(v_steps) >= 4
    assert {run["num_samples"] for run in curve["runs"]} == {1000}


@pytest.mark.gpu
def test_diffusion_on_the_gpu_matches_the_cpu():
    torch.manual_seed(0)
    model = DiffusionModel(DiffusionConfig(base_channels=8, channel_mults=(1, 2), attention_levels=(1,)))
    nn.init.normal_(model.unet.head[-1].weight, std=0.05)
    cpu = sample_loop(model, model.scheduler("ddim"), (2, 1, 28, 28), generator=torch.Generator().manual_seed(1),
                      num_inference_steps=10)
    gpu = sample_loop(model.cuda(), model.scheduler("ddim"), (2, 1, 28, 28), generator=torch.Generator().manual_seed(1),
                      num_inference_steps=10, device="cuda")
    assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, atol=1e-3)
    loss = diffusion_loss(model, torch.rand(4, 1, 28, 28, device="cuda"), torch.Generator(device="cuda").manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)


def test_train_ddpm_command(tmp_path):
    from coursekit.cli import main

    out = tmp_path / "ddpm"
    assert main(["train", "ddpm", "--epochs", "1", "--max-steps", "3", "--base-channels", "8", "--channel-mults", "1", "2",
                 "--eval-samples", "12", "--eval-samplers", "ddim-4", "ddpm-10", "--eval-x0", "clip", "--out", str(out),
                 "--quiet", "--device", "cpu", "--schedule", "cosine", "--prediction-type", "v_prediction"]) == 0
    record = json.loads((out / "training.json").read_text())
    assert record["epochs"] == 1 and record["data"]["train_images"] == 4000 and record["steps"] == 3
    evaluation = record["metrics"]["evaluation"]
    assert set(evaluation["samplers"]) == {"ddim-4", "ddpm-10"} and evaluation["num_samples"] == 12
    row = evaluation["samplers"]["ddim-4"]["clip"]
    assert row["fid_over_floor"] == pytest.approx(row["fid"] / evaluation["floor"]["fid"])
    assert sum(row["class_histogram"]) == 12 and len(row["class_histogram"]) == 11 and 0 <= row["near_copies"] <= 1
    # the decay the EMA really reached after 3 warm-up steps (step s uses (1 + s) / (10 + s)), not the nominal 0.999
    assert record["metrics"]["ema_decay_reached"] == pytest.approx(3 / 12)
    model = load_checkpoint(out)
    assert model.config.schedule == "cosine" and model.config.channel_mults == (1, 2)
    assert model.config.prediction_type == "v_prediction"


def test_train_ddpm_with_fewer_steps_than_the_warm_up_divisor(tmp_path):
    """One epoch of one batch: the learning-rate warm-up has at least one step (it divided by zero)."""
    from coursekit.cli import main

    assert main(["train", "ddpm", "--epochs", "1", "--batch-size", "4000", "--base-channels", "8", "--channel-mults", "1",
                 "2", "--eval-samplers", "--out", str(tmp_path / "d"), "--quiet", "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "d" / "training.json").read_text())["steps"] == 1


def test_sampler_specs_are_parsed_or_refused():
    from coursekit.cli import parse_sampler_spec

    leading = {"eta": 0.0, "timestep_spacing": "leading"}
    assert parse_sampler_spec("ddpm-1000") == {"sampler": "ddpm", "steps": 1000, **leading}
    assert parse_sampler_spec("ddim-20-eta1") == {"sampler": "ddim", "steps": 20, **leading, "eta": 1.0}
    assert parse_sampler_spec("dpmsolver-20")["sampler"] == "dpmsolver"
    assert parse_sampler_spec("ddim-50-trailing") == {"sampler": "ddim", "steps": 50, "eta": 0.0,
                                                      "timestep_spacing": "trailing"}
    assert parse_sampler_spec("ddim-20-eta1-trailing")["eta"] == 1.0
    for bad in ["ddim", "ddim-x", "euler-10", "ddpm-10-eta1", "ddim-10-etax", "ddim-10-foo", "ddim-trailing",
                "ddim-10-leading", "ddim-10-trailing-eta1", "ddpm-10-eta1-trailing"]:
        with pytest.raises(SystemExit, match="expected"):
            parse_sampler_spec(bad)
