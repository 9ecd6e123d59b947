"""Chapter 6's small Stable Diffusion: the parts, the loss functions, the pipeline folder in diffusers' three
pipelines with swapped schedulers, and the hand-written loop against the pipeline. Tiny random-weight models."""

import json

import pytest
import torch

from coursekit.clip import CLIPConfig, DigitCLIP, caption, tokenize
from coursekit.stable_diffusion import (EMPTY_PROMPT, LatentAutoencoderConfig, LatentUNetConfig, build_pipeline,
                                        clip_tokenizer, crop_digits, encode_latents, encode_text, generate,
                                        latent_autoencoder, latent_autoencoder_loss, latent_diffusion_loss, latent_moments,
                                        latent_statistics, latent_unet, load_latent_autoencoder, load_pipeline,
                                        noise_scheduler, pad_digits, save_pipeline, scaling_factor_from_latents,
                                        text_encoder_from_clip)

TINY_VAE = LatentAutoencoderConfig(block_out_channels=(8, 16, 16), norm_num_groups=4, scaling_factor=0.7)
TEXT_WIDTH = 32
TINY_UNET = LatentUNetConfig(block_out_channels=(16, 32), layers_per_block=1, attention_heads=2,
                             cross_attention_dim=TEXT_WIDTH, norm_num_groups=8)
PROMPTS = ["a seven", "a thick, left-slanted two"]


def tiny_clip(seed: int = 0) -> DigitCLIP:
    torch.manual_seed(seed)
    return DigitCLIP(CLIPConfig(embed_dim=16, image_channels=(8, 8, 8), text_width=TEXT_WIDTH, text_layers=2,
                                text_heads=2)).eval()


@pytest.fixture(scope="module")
def parts():
    """vae, text_encoder, tokenizer, unet, scheduler: tiny and random, in eval mode."""
    torch.manual_seed(0)
    vae = latent_autoencoder(TINY_VAE).eval()
    unet = latent_unet(TINY_UNET).eval()
    return vae, text_encoder_from_clip(tiny_clip()), clip_tokenizer(), unet, noise_scheduler()


@pytest.fixture(scope="module")
def pipeline_folder(parts, tmp_path_factory):
    path = tmp_path_factory.mktemp("small-sd") / "pipeline"
    save_pipeline(build_pipeline(*parts), path, record={"command": "coursekit train latent-diffusion (test)"})
    return path


@pytest.fixture(scope="module")
def digits():
    from coursekit.data import load_mnist

    train = load_mnist("train", source="bundled")
    return train.images[:16], train.labels[:16]


# ----------------------------------------------------------------------------------------------
# Images and the latent autoencoder
# ----------------------------------------------------------------------------------------------

def test_pad_and_crop_digits(digits):
    images = digits[0]
    padded = pad_digits(images)
    assert padded.shape == (16, 1, 32, 32) and padded.min() >= -1 and padded.max() <= 1
    assert torch.all(padded[:, :, :2] == -1) and torch.all(padded[:, :, :, -2:] == -1)   # background all around
    assert torch.allclose((crop_digits(padded) + 1) / 2, images, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        pad_digits(torch.zeros(2, 28, 28))
    with pytest.raises(ValueError, match=r"\(N, C, 32, 32\)"):
        crop_digits(torch.zeros(2, 1, 28, 28))


def test_latent_autoencoder_shapes_and_save_load(tmp_path, parts):
    vae = parts[0]
    x0 = torch.rand(3, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        posterior = vae.encode(x0).latent_dist
        reconstruction = vae.decode(posterior.mode()).sample
    assert posterior.mean.shape == (3, 4, 8, 8) and reconstruction.shape == (3, 1, 32, 32)   # f = 4: 32 -> 8
    vae.save_pretrained(str(tmp_path / "vae"))
    loaded = load_latent_autoencoder(tmp_path)   # the folder holding vae/, as coursekit train latent-autoencoder writes it
    assert load_latent_autoencoder(tmp_path / "vae").config.scaling_factor == 0.7
    with torch.no_grad():
        assert torch.equal(loaded.decode(loaded.encode(x0).latent_dist.mode()).sample, reconstruction)
    assert loaded.config.in_channels == 1 and loaded.config.scaling_factor == 0.7
    with pytest.raises(FileNotFoundError, match="latent autoencoder"):
        load_latent_autoencoder(tmp_path / "nothing-here")
    with pytest.raises(ValueError, match="divisible by norm_num_groups"):
        latent_autoencoder(LatentAutoencoderConfig(block_out_channels=(6, 16), norm_num_groups=4))


def test_latent_autoencoder_loss_is_l1_plus_weighted_kl(parts):
    vae = parts[0]
    x0 = torch.rand(4, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        loss = latent_autoencoder_loss(vae, (x0,), torch.Generator().manual_seed(3), kl_weight=0.5)
        posterior = vae.encode(x0).latent_dist
        z = posterior.sample(generator=torch.Generator().manual_seed(3))
        l1 = (vae.decode(z).sample - x0).abs().sum(dim=(1, 2, 3))
        mu, logvar = posterior.mean, posterior.logvar
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))
    assert loss.item() == pytest.approx((l1 + 0.5 * kl).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="divisible by 8"):
        latent_autoencoder_loss(vae, (torch.zeros(2, 1, 28, 28),))


def test_latent_autoencoder_loss_goes_down(digits):
    torch.manual_seed(0)
    vae = latent_autoencoder(TINY_VAE)
    batch = (pad_digits(digits[0]),)
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        loss = latent_autoencoder_loss(vae, batch, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


def test_scaling_factor_is_one_over_the_latent_std(parts):
    generator = torch.Generator().manual_seed(0)
    latents = 5.49 * torch.randn(64, 4, 8, 8, generator=generator) + 0.3
    factor = scaling_factor_from_latents(latents)
    assert factor == pytest.approx(1 / latents.double().std().item())
    assert factor == pytest.approx(0.18215, rel=0.02)          # Stable Diffusion's factor for latents of std 5.49
    assert (latents * factor).std().item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="standard deviation"):
        scaling_factor_from_latents(torch.ones(4, 4, 8, 8))
    with pytest.raises(ValueError, match="at least two"):
        scaling_factor_from_latents(torch.ones(1))
    statistics = latent_statistics(latents)
    assert len(statistics["channel_mean"]) == 4 and statistics["shape"] == [4, 8, 8]
    assert statistics["channel_mean"][0] == pytest.approx(latents[:, 0].double().mean().item(), abs=1e-5)
    # encode_latents: posterior means (deterministic) or samples (seeded)
    vae = parts[0]
    images = torch.rand(5, 1, 32, 32) * 2 - 1
    means = encode_latents(vae, images, sample=False, batch_size=2)
    with torch.no_grad():
        assert torch.allclose(means, vae.encode(images).latent_dist.mean, atol=1e-6)
    assert torch.equal(encode_latents(vae, images, torch.Generator().manual_seed(1)),
                       encode_latents(vae, images, torch.Generator().manual_seed(1)))


# ----------------------------------------------------------------------------------------------
# The text encoder and tokenizer
# ----------------------------------------------------------------------------------------------

def test_text_encoder_equals_the_clip_text_features():
    clip = tiny_clip(seed=1)
    text_encoder, tokenizer = text_encoder_from_clip(clip), clip_tokenizer()
    prompts = ["a seven", EMPTY_PROMPT, caption(8, [2, 2, 1]), "an upright, thick, large, eight"]
    tokens = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    assert torch.equal(tokens.input_ids, tokenize(prompts)["input_ids"])          # the vocabulary coursekit.clip writes
    assert tokenizer.model_max_length == 12
    with torch.no_grad():
        expected, _ = clip.text_features(prompts)
        hidden = text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
    assert type(text_encoder).__name__ == "CLIPTextModel" and text_encoder.config.use_attention_mask
    assert hidden.shape == (4, 12, TEXT_WIDTH)
    assert torch.allclose(hidden, expected, atol=1e-6)
    assert torch.allclose(encode_text(text_encoder, tokenizer, prompts), expected, atol=1e-6)
    with pytest.raises(TypeError, match="DigitCLIP"):
        text_encoder_from_clip(text_encoder)


# ----------------------------------------------------------------------------------------------
# The U-Net, the scheduler and the latent diffusion loss
# ----------------------------------------------------------------------------------------------

def test_latent_unet_shapes_and_config_errors(parts):
    unet = parts[3]
    z_t = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        out = unet(z_t, torch.tensor([10, 900]), encoder_hidden_states=torch.randn(2, 12, TEXT_WIDTH)).sample
    assert out.shape == z_t.shape and unet.config.cross_attention_dim == TEXT_WIDTH
    assert unet.config.down_block_types == ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    plain = latent_unet(LatentUNetConfig(block_out_channels=(16, 32), layers_per_block=1, cross_attention_levels=(1,),
                                         attention_heads=2, cross_attention_dim=TEXT_WIDTH, norm_num_groups=8))
    assert plain.config.down_block_types == ("DownBlock2D", "CrossAttnDownBlock2D")
    assert plain.config.up_block_types == ("CrossAttnUpBlock2D", "UpBlock2D")
    with pytest.raises(ValueError, match="cross_attention_levels"):
        latent_unet(LatentUNetConfig(cross_attention_levels=(2,)))
    with pytest.raises(ValueError, match="divisible by 8"):
        latent_unet(LatentUNetConfig(sample_size=6, block_out_channels=(32, 32, 64, 64)))


def test_noise_scheduler_is_stable_diffusions_schedule():
    scheduler = noise_scheduler()
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
    assert torch.allclose(scheduler.betas, betas)
    assert scheduler.alphas_cumprod[0].item() == pytest.approx(1 - 0.00085)
    assert scheduler.alphas_cumprod[-1].item() == pytest.approx(0.0047, abs=2e-4)
    assert scheduler.config.prediction_type == "epsilon" and not scheduler.config.clip_sample
    z, eps, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([0, 999])
    alpha_bar = scheduler.alphas_cumprod[t].view(2, 1, 1, 1)
    assert torch.allclose(scheduler.add_noise(z, eps, t), alpha_bar.sqrt() * z + (1 - alpha_bar).sqrt() * eps, atol=1e-6)
    assert noise_scheduler("v_prediction").config.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="prediction_type"):
        noise_scheduler("sample")


def _diffusion_batch(digits):
    from coursekit.clip import attribute_levels

    images, labels = digits
    return pad_digits(images[:8]), labels[:8], attribute_levels(images[:8], labels[:8])


# For Gaussian latents the best eps-prediction from z_t alone, sqrt(1 - alpha_bar_t) z_t, already leaves MSE alpha_bar_t
# < 1, while v is uncorrelated with z_t (MSE floor 1): v-prediction has to learn the digits themselves to go below 1,
# so it falls more slowly at first.
@pytest.mark.parametrize("prediction_type, ratio", [("epsilon", 0.8), ("v_prediction", 0.92)])
def test_latent_diffusion_loss_goes_down(parts, digits, prediction_type, ratio):
    vae, text_encoder, tokenizer, _, _ = parts
    torch.manual_seed(0)
    unet = latent_unet(TINY_UNET)
    scheduler = noise_scheduler(prediction_type)
    batch = _diffusion_batch(digits)
    scaling_factor = scaling_factor_from_latents(encode_latents(vae, batch[0], torch.Generator().manual_seed(0)))

    def loss_at(seed):
        return latent_diffusion_loss(unet, batch, torch.Generator().manual_seed(seed), vae=vae, text_encoder=text_encoder,
                                     tokenizer=tokenizer, scheduler=scheduler, cond_drop_prob=0.2,
                                     scaling_factor=scaling_factor)

    with torch.no_grad():
        before = sum(loss_at(1000 + k).item() for k in range(4))
    optimizer = torch.optim.Adam(unet.parameters(), lr=2e-3)
    for step in range(30):
        loss = loss_at(step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = sum(loss_at(1000 + k).item() for k in range(4))   # the same noise, timesteps and captions as before
    assert after < ratio * before, (before, after)
    assert all(p.grad is None for p in vae.parameters()) and all(p.grad is None for p in text_encoder.parameters())


def test_condition_dropout_replaces_the_prompt_by_the_empty_prompt(parts, digits):
    vae, text_encoder, tokenizer, unet, scheduler = parts
    images, labels, levels = _diffusion_batch(digits)
    other_labels = (labels + 1) % 10

    def loss(batch_labels, drop):
        with torch.no_grad():
            return latent_diffusion_loss(unet, (images, batch_labels, levels), torch.Generator().manual_seed(0), vae=vae,
                                         text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                                         cond_drop_prob=drop).item()

    assert loss(labels, 1.0) == loss(other_labels, 1.0)      # every prompt dropped: the labels cannot matter
    assert loss(labels, 0.0) != loss(other_labels, 0.0)
    # the scaling factor multiplies the latents: another factor, another loss
    with torch.no_grad():
        scaled = latent_diffusion_loss(unet, (images, labels, levels), torch.Generator().manual_seed(0), vae=vae,
                                       text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                                       cond_drop_prob=0.0, scaling_factor=0.1).item()
    assert scaled != loss(labels, 0.0)


def test_precomputed_moments_and_the_text_cache_give_the_same_loss(parts, digits):
    """Training samples z from q(z|x) moments computed once and reuses each prompt's features: the same objective,
    the same numbers, as encoding every batch afresh."""
    vae, text_encoder, tokenizer, unet, scheduler = parts
    images, labels, levels = _diffusion_batch(digits)
    moments = latent_moments(vae, images, batch_size=3)                   # batched differently on purpose
    assert moments.shape == (len(images), 2 * vae.config.latent_channels, 8, 8)
    torch.testing.assert_close(moments[:, :4], vae.encode(images).latent_dist.mean, rtol=0, atol=1e-5)
    cache = {}

    def loss(batch, seed, **kwargs):
        with torch.no_grad():
            return latent_diffusion_loss(unet, batch, torch.Generator().manual_seed(seed), vae=vae,
                                         text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                                         cond_drop_prob=0.3, **kwargs).item()

    for seed in range(3):
        fresh = loss((images, labels, levels), seed)
        assert loss((moments, labels, levels), seed, text_cache=cache) == pytest.approx(fresh, rel=1e-5)
    assert cache and all(features.shape == (12, TEXT_WIDTH) for features in cache.values())


# ----------------------------------------------------------------------------------------------
# The pipeline folder in diffusers' three pipelines, with swapped schedulers
# ----------------------------------------------------------------------------------------------

def test_build_pipeline_checks_that_the_parts_fit(parts):
    vae, text_encoder, tokenizer, unet, scheduler = parts
    wide = latent_unet(LatentUNetConfig(block_out_channels=(16, 32), layers_per_block=1, attention_heads=2,
                                        cross_attention_dim=48, norm_num_groups=8))
    with pytest.raises(ValueError, match="48-wide"):
        build_pipeline(vae, text_encoder, tokenizer, wide, scheduler)
    small = latent_unet(LatentUNetConfig(sample_size=4, block_out_channels=(16, 32), layers_per_block=1,
                                         attention_heads=2, cross_attention_dim=TEXT_WIDTH, norm_num_groups=8))
    with pytest.raises(ValueError, match="decode to 16 pixels"):
        build_pipeline(vae, text_encoder, tokenizer, small, scheduler)
    eight = latent_autoencoder(LatentAutoencoderConfig(block_out_channels=(8, 16, 16), norm_num_groups=4, latent_channels=8))
    with pytest.raises(ValueError, match="4-channel"):
        build_pipeline(eight, text_encoder, tokenizer, unet, scheduler)


def test_saved_folder_loads_offline_and_generates(pipeline_folder, parts, monkeypatch):
    from diffusers import StableDiffusionPipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    names = sorted(p.name for p in pipeline_folder.iterdir())
    assert names == ["model_index.json", "scheduler", "text_encoder", "tokenizer", "training.json", "unet", "vae"]
    pipe = StableDiffusionPipeline.from_pretrained(str(pipeline_folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae_scale_factor == 4 and pipe.vae.config.scaling_factor == 0.7 and pipe.safety_checker is None
    images = pipe(PROMPTS, num_inference_steps=3, guidance_scale=3.0, generator=torch.Generator().manual_seed(0),
                  output_type="pt").images
    assert images.shape == (2, 1, 32, 32) and 0 <= images.min() and images.max() <= 1
    # save -> load is the identity: the same numbers as the pipeline built in memory
    in_memory = build_pipeline(*parts)(PROMPTS, num_inference_steps=3, guidance_scale=3.0,
                                       generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert torch.allclose(images, in_memory, atol=1e-6)
    assert json.loads((pipeline_folder / "training.json").read_text())["command"].startswith("coursekit train")
    # PIL output: one-channel ("L") 32 x 32 pictures
    picture = pipe("a one", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert picture.size == (32, 32) and picture.mode == "L"


@pytest.mark.parametrize("scheduler_name", ["DDIMScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler"])
def test_swapped_schedulers_run_in_the_loaded_pipeline(pipeline_folder, scheduler_name, monkeypatch):
    import diffusers

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = load_pipeline(pipeline_folder)
    pipe.scheduler = getattr(diffusers, scheduler_name).from_config(pipe.scheduler.config)
    assert pipe.scheduler.config.prediction_type == "epsilon"
    images = pipe(PROMPTS, num_inference_steps=3, guidance_scale=4.0, generator=torch.Generator().manual_seed(1),
                  output_type="np").images
    assert images.shape == (2, 32, 32, 1) and images.min() >= 0 and images.max() <= 1


def test_img2img_and_inpainting_pipelines_load_the_same_folder(pipeline_folder, digits, monkeypatch):
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = (pad_digits(digits[0][:2]) + 1) / 2                         # (2, 1, 32, 32) in [0, 1]: one channel
    img2img = load_pipeline(pipeline_folder, StableDiffusionImg2ImgPipeline)
    images = img2img(PROMPTS, image=start, strength=0.6, num_inference_steps=5, guidance_scale=3.0,
                     generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert images.shape == (2, 1, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 16:] = 1                                                 # white: repaint the lower half
    inpaint = load_pipeline(pipeline_folder, StableDiffusionInpaintPipeline)
    images = inpaint(PROMPTS, image=start, mask_image=mask, num_inference_steps=3, guidance_scale=3.0,
                     generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert images.shape == (2, 1, 32, 32)


def test_load_pipeline_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_pipeline(tmp_path / "missing")


# ----------------------------------------------------------------------------------------------
# The loop by hand equals the pipeline
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheduler_name", ["DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler",
                                            "EulerDiscreteScheduler"])
def test_generate_equals_the_pipeline(parts, scheduler_name):
    import diffusers

    vae, text_encoder, tokenizer, unet, scheduler = parts
    sampler = getattr(diffusers, scheduler_name).from_config(scheduler.config)
    pipe = build_pipeline(vae, text_encoder, tokenizer, unet, sampler)
    for w, negative in ((3.0, None), (5.0, ["a one", "a thin two"]), (1.0, None)):
        expected = pipe(PROMPTS, num_inference_steps=4, guidance_scale=w, negative_prompt=negative,
                        generator=torch.Generator().manual_seed(7), output_type="pt").images
        ours = generate(PROMPTS, vae, text_encoder, tokenizer, unet, sampler, guidance_scale=w, num_inference_steps=4,
                        generator=torch.Generator().manual_seed(7), negative_prompt=negative)
        assert ours.shape == (2, 1, 32, 32)
        assert torch.allclose(ours, expected, atol=1e-4), (scheduler_name, w, (ours - expected).abs().max())


def test_generate_with_given_latents_and_bad_input(parts):
    from diffusers import DDIMScheduler

    vae, text_encoder, tokenizer, unet, scheduler = parts
    parts = (vae, text_encoder, tokenizer, unet, DDIMScheduler.from_config(scheduler.config))   # no noise within steps
    pipe = build_pipeline(*parts)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    expected = pipe(PROMPTS, num_inference_steps=3, guidance_scale=2.0, latents=latents, negative_prompt=["a one"] * 2,
                    output_type="pt").images
    ours = generate(PROMPTS, *parts, guidance_scale=2.0, num_inference_steps=3, latents=latents, negative_prompt="a one")
    assert torch.allclose(ours, expected, atol=1e-4)
    # the negative prompt matters: it replaces the unconditional prediction
    assert not torch.allclose(ours, generate(PROMPTS, *parts, guidance_scale=2.0, num_inference_steps=3, latents=latents))
    with pytest.raises(ValueError, match=r"latents must have shape \(2, 4, 8, 8\)"):
        generate(PROMPTS, *parts, latents=torch.randn(2, 4, 7, 7))
    with pytest.raises(ValueError, match="3 negative prompts for 2 prompts"):
        generate(PROMPTS, *parts, negative_prompt=["a", "b", "c"])
    with pytest.raises(ValueError, match="at least one prompt"):
        generate([], *parts)


# ----------------------------------------------------------------------------------------------
# The command line: coursekit train latent-autoencoder / latent-diffusion
# ----------------------------------------------------------------------------------------------

def test_cli_trains_the_autoencoder_then_the_pipeline(tmp_path, monkeypatch):
    from diffusers import StableDiffusionPipeline

    from coursekit.checkpoint import save_checkpoint
    from coursekit.cli import main

    vae_dir, clip_dir, sd_dir = tmp_path / "latent-ae", tmp_path / "clip", tmp_path / "small-sd"
    assert main(["train", "latent-autoencoder", "--block-out-channels", "8", "16", "16", "--norm-num-groups", "4",
                 "--max-steps", "2", "--epochs", "1", "--eval-samples", "50", "--out", str(vae_dir), "--quiet",
                 "--device", "cpu"]) == 0
    record = json.loads((vae_dir / "training.json").read_text())
    metrics = record["metrics"]
    assert record["command"].startswith("coursekit train latent-autoencoder") and record["steps"] == 2
    assert record["config"]["block_out_channels"] == [8, 16, 16]
    assert record["config"]["scaling_factor"] == metrics["scaling_factor"] != 1.0
    assert 0 < metrics["test_mse"] < 1 and metrics["reconstruction_quality"]["num_samples"] == 50
    statistics = metrics["latent_statistics"]["train"]
    assert len(statistics["channel_std"]) == 4 and statistics["latents"] == 4000
    assert metrics["scaling_factor"] == pytest.approx(1 / statistics["std"], rel=1e-3)
    vae = load_latent_autoencoder(vae_dir)
    assert vae.config.scaling_factor == metrics["scaling_factor"]   # stored where the pipelines read it

    save_checkpoint(tiny_clip(), clip_dir)
    assert main(["train", "latent-diffusion", "--vae", str(vae_dir), "--clip", str(clip_dir), "--block-out-channels",
                 "16", "32", "--layers-per-block", "1", "--attention-heads", "2", "--max-steps", "2", "--epochs", "1",
                 "--eval-samples", "20", "--eval-guidance-scales", "1", "3", "--eval-steps", "2", "--out", str(sd_dir),
                 "--quiet", "--device", "cpu"]) == 0
    record = json.loads((sd_dir / "training.json").read_text())
    metrics = record["metrics"]
    assert record["steps"] == 2 and record["parts"]["vae"] == str(vae_dir) and metrics["cond_drop"] == 0.1
    assert list(metrics["prompt_guidance"]["scales"]) == ["1", "3"]
    for row in metrics["prompt_guidance"]["scales"].values():
        assert 0 <= row["digit_accuracy"] <= 1 and sum(row["class_histogram"]) == 20 and row["images_per_second"] > 0
        assert 0 <= row["clip_digit_accuracy"] <= 1 and 0 <= row["clip_slant_accuracy"] <= 1
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = StableDiffusionPipeline.from_pretrained(str(sd_dir), local_files_only=True)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler" and pipe.vae.config.scaling_factor == vae.config.scaling_factor
    pipe.set_progress_bar_config(disable=True)
    assert pipe("a three", num_inference_steps=2, output_type="pt").images.shape == (1, 1, 32, 32)
    with pytest.raises(SystemExit, match="not a clip"):
        main(["train", "latent-diffusion", "--vae", str(vae_dir), "--clip", "mnist-classifier", "--out",
              str(tmp_path / "x"), "--quiet", "--device", "cpu"])

    # coursekit sample drives the folder through the pipeline: prompts, negative prompt, swapped scheduler, seed
    from diffusers import EulerDiscreteScheduler

    out = tmp_path / "samples.pt"
    main(["sample", str(sd_dir), "--prompt", "a three", "a seven", "--num-samples", "2", "--steps", "3",
          "--scheduler", "euler", "--negative-prompt", "a one", "--guidance-scale", "4", "--seed", "5",
          "--device", "cpu", "--out", str(out)])
    images = torch.load(out)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    expected = pipe(["a three"] * 2 + ["a seven"] * 2, negative_prompt=["a one"] * 4, guidance_scale=4.0,
                    num_inference_steps=3, generator=torch.Generator().manual_seed(5), output_type="pt").images
    assert images.shape == (4, 1, 32, 32) and 0 <= images.min() and images.max() <= 1
    torch.testing.assert_close(images, expected)
    main(["sample", str(sd_dir), "--prompt", "a three", "--num-samples", "3", "--steps", "2", "--out",
          str(tmp_path / "grid.png"), "--device", "cpu"])
    assert (tmp_path / "grid.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="give at least one --prompt"):
        main(["sample", str(sd_dir), "--out", str(tmp_path / "none.png")])
    with pytest.raises(SystemExit, match="needs a text-to-image pipeline"):
        main(["sample", "ddpm", "--prompt", "a three", "--out", str(tmp_path / "none.png")])


# ----------------------------------------------------------------------------------------------
# The shipped parts: what chapter 6 reads from their records
# ----------------------------------------------------------------------------------------------

def test_shipped_latent_autoencoder_reproduces_its_record():
    from coursekit.data import load_mnist
    from coursekit.stable_diffusion import read_pipeline_record

    record = read_pipeline_record("latent-vae")
    with pytest.raises(FileNotFoundError, match="no training record at 'no-such-pipeline'"):
        read_pipeline_record("no-such-pipeline")
    vae = load_latent_autoencoder("latent-vae")
    assert vae.config.scaling_factor == record["metrics"]["scaling_factor"] == record["config"]["scaling_factor"]
    train, test = load_mnist("train", source="bundled"), load_mnist("test", source="bundled")
    latents = encode_latents(vae, pad_digits(train.images), generator=torch.Generator().manual_seed(record["seed"]))
    assert latents.shape == (4000, 4, 8, 8)
    assert scaling_factor_from_latents(latents) == pytest.approx(record["metrics"]["scaling_factor"], rel=1e-4)
    with torch.no_grad():
        decoded = vae.decode(vae.encode(pad_digits(test.images)).latent_dist.mode()).sample        # [-1, 1]
    reconstructions = crop_digits((decoded.clamp(-1, 1) + 1) / 2)                                   # [0, 1], 28 x 28
    assert float(((reconstructions - test.images) ** 2).mean()) == pytest.approx(record["metrics"]["test_mse"], rel=1e-3)


def test_real_stable_diffusion_loader_uses_the_one_hub_id_and_explains_a_missing_hub(parts, monkeypatch):
    """Chapter 6's Colab-only cells load Stable Diffusion 1.5 with this function; here the hub is mocked with the
    tiny parts, and the hand-written loop runs on what it returns, as it does on the real weights in Colab."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    from coursekit import pretrained

    calls = []

    def fake(cls):
        def from_pretrained(repo_id, **kwargs):
            calls.append((cls.__name__, repo_id, kwargs))
            return cls(**build_pipeline(*parts).components)
        return from_pretrained

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", fake(StableDiffusionPipeline))
    pipe = pretrained.load_stable_diffusion(device="cpu", progress=False)
    repo_id = pretrained.PRETRAINED_STABLE_DIFFUSION["repo_id"]
    assert calls == [("StableDiffusionPipeline", repo_id, {"torch_dtype": torch.float32, "variant": None})]
    img2img = StableDiffusionImg2ImgPipeline.from_pipe(pipe)          # what the chapter does: no second download
    assert img2img.unet is pipe.unet and len(calls) == 1
    generator = torch.Generator().manual_seed(3)
    mine = generate("a seven", pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.unet, pipe.scheduler,
                    guidance_scale=3.0, num_inference_steps=3, generator=generator)
    theirs = pipe("a seven", guidance_scale=3.0, num_inference_steps=3, generator=torch.Generator().manual_seed(3),
                  output_type="pt").images
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load this model")

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", offline)
    with pytest.raises(pretrained.HubUnavailable, match="run it in Colab with a T4") as error:
        pretrained.load_stable_diffusion(device="cpu")
    assert repo_id in str(error.value)


def test_shipped_pipeline_loads_in_the_three_pipelines_and_holds_its_record():
    """tiny-sd, as chapter 6 uses it: diffusers' three pipelines load the shipped folder offline, each draws with it,
    and the record holds what the chapter reads (training time, the guidance sweep judged twice, FID beside the floor)."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionPipeline

    from coursekit.stable_diffusion import read_pipeline_record

    text = load_pipeline("tiny-sd")
    assert type(text) is StableDiffusionPipeline
    assert text.vae.config.scaling_factor == read_pipeline_record("latent-vae")["metrics"]["scaling_factor"]
    images = text(["a seven", "a two"], num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                  output_type="pt").images
    assert images.shape == (2, 1, 32, 32)
    digits = (pad_digits(torch.zeros(2, 1, 28, 28)) + 1) / 2
    img2img = load_pipeline("tiny-sd", StableDiffusionImg2ImgPipeline)
    edited = img2img(["a seven", "a two"], image=digits, strength=0.5, num_inference_steps=4,
                     generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert edited.shape == (2, 1, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 16:] = 1
    inpaint = load_pipeline("tiny-sd", StableDiffusionInpaintPipeline)
    painted = inpaint(["a seven", "a two"], image=digits, mask_image=mask, num_inference_steps=3,
                      generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert painted.shape == (2, 1, 32, 32)

    record = read_pipeline_record("tiny-sd")
    assert record["command"].startswith("coursekit train latent-diffusion") and record["train_seconds"] > 0
    assert record["parts"]["vae"] == "latent-vae" and record["parts"]["clip"] == "clip"
    sweep = record["metrics"]["prompt_guidance"]
    assert sweep["num_samples"] == 500 and list(sweep["scales"]) == ["0", "1", "3", "7.5"]
    for row in sweep["scales"].values():
        for key in ("digit_accuracy", "clip_digit_accuracy", "thickness_accuracy", "size_accuracy", "slant_accuracy",
                    "fid_over_floor", "precision", "recall", "images_per_second"):
            assert key in row, key
    # guidance does what chapter 6 says of it: the requested digit far more often than without it
    assert sweep["scales"]["3"]["digit_accuracy"] > sweep["scales"]["0"]["digit_accuracy"] + 0.5
