"""The small CLIP (coursekit.clip) and text-conditional diffusion (coursekit.text_diffusion): captions
measured from pixels, the written tokenizer, the symmetric contrastive loss, save/load, the training
command, and a U-Net that cross-attends to the text encoder with classifier-free guidance."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from coursekit.checkpoint import load_checkpoint, save_checkpoint
from coursekit.cli import main
from coursekit.clip import (ATTRIBUTES, CONTEXT_LENGTH, DIGIT_NAMES as DIGIT_WORDS, CLIPConfig, DigitCLIP, attribute_levels, build_vocabulary,
                            caption, caption_words, clip_loss, load_tokenizer, measure_attributes, random_captions,
                            random_shift, retrieval_recall, tokenize, write_tokenizer, zero_shot_digits)
from coursekit.diffusion import DiffusionConfig, DiffusionModel
from coursekit.text_diffusion import (EMPTY_PROMPT, TextToImage, drop_prompts, encode_prompts, evaluation_prompts,
                                      clip_prompt_accuracy, prompt_accuracy, text_diffusion_loss)

SMALL = CLIPConfig(embed_dim=16, image_channels=(8, 8, 16), text_width=16, text_layers=1, text_heads=2)


def stroke(width: int, shear: float = 0.0, height: int = 16) -> torch.Tensor:
    """A vertical bar ``width`` pixels wide and ``height`` tall, sheared by ``shear`` pixels of x per row upwards."""
    image = torch.zeros(1, 28, 28)
    for row in range(6, 6 + height):
        up = (6 + height - 1) - row  # rows counted upwards from the bottom of the bar
        left = round(12 + shear * up - shear * height / 2)
        image[0, row, left:left + width] = 1.0
    return image


def test_attributes_measure_thickness_size_and_slant():
    thin, thick = measure_attributes(torch.stack([stroke(1), stroke(5)]))["thickness"]
    assert thin == 2.0 and thick > 3.0  # a 1-pixel stroke: every ink pixel touches the background
    short, tall = measure_attributes(torch.stack([stroke(3, height=8), stroke(3, height=18)]))["size"]
    assert short == pytest.approx(math.sqrt(3 * 8)) and tall == pytest.approx(math.sqrt(3 * 18))
    left, upright, right = measure_attributes(torch.stack([stroke(2, -0.4), stroke(2), stroke(2, 0.4)]))["slant"]
    assert left < -0.3 and abs(upright) < 1e-9 and right > 0.3


def test_attribute_levels_cut_each_class_into_thirds(mnist_test):
    from coursekit.data import load_mnist

    train = load_mnist("train", source="bundled")
    levels = attribute_levels(train.images, train.labels)
    assert levels.shape == (len(train), 3) and set(levels.unique().tolist()) == {0, 1, 2}
    for column in range(3):
        for digit in (1, 7):
            share = torch.bincount(levels[train.labels == digit, column], minlength=3).double() / (train.labels == digit).sum()
            if ATTRIBUTES[column] == "slant":  # continuous: exact thirds
                assert torch.allclose(share, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.01)
            else:  # thickness and size take few distinct values: ties at a cut go to the lower third
                assert share.min() > 0.2 and share.max() < 0.45


def test_captions_read_as_english():
    assert caption(8) == "an eight" and caption(1) == "a one"
    assert caption(1, [2, 1, 0]) == "a thick, left-slanted one"
    assert caption(7, [1, 1, 1]) == "an upright seven"
    assert caption(3, [0, 2, 2]) == "a thin, large, right-slanted three"
    assert caption(3, [0, 2, 2], keep=(False, True, False)) == "a large three"
    with pytest.raises(ValueError, match="digit must be 0..9"):
        caption(10)
    labels, levels = torch.tensor([4, 4]), torch.tensor([[0, 0, 0], [2, 2, 2]])
    assert random_captions(labels, levels, keep_prob=0.0) == ["a four", "a four"]
    assert random_captions(labels, levels, keep_prob=1.0) == ["a thin, small, left-slanted four",
                                                              "a thick, large, right-slanted four"]


def test_every_caption_word_is_one_token_of_a_real_clip_tokenizer(tmp_path):
    from transformers import CLIPTokenizer

    vocab, merges = build_vocabulary()
    write_tokenizer(tmp_path)
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path)
    assert len(tokenizer) == len(vocab)
    for word in caption_words():
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, (word, ids)
    longest = caption(8, [0, 0, 0])
    tokens = tokenize([longest, EMPTY_PROMPT])
    assert tokens["input_ids"].shape == (2, CONTEXT_LENGTH)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert tokens["input_ids"][1, :2].tolist() == [bos, eos] and tokens["attention_mask"][1].sum() == 2
    # CLIP's pre-tokenizer splits at punctuation: a | thin | , | small | , | left | - | slanted | eight, with start and end
    assert longest == "a thin, small, left-slanted eight" and tokens["attention_mask"][0].sum() == 2 + 9
    assert load_tokenizer().get_vocab() == tokenizer.get_vocab()


def test_random_shift_moves_images_without_changing_them():
    images = torch.stack([stroke(3), stroke(2, 0.3)])
    assert torch.equal(random_shift(images, 0), images)
    shifted = random_shift(images, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape and torch.allclose(shifted.sum((1, 2, 3)), images.sum((1, 2, 3)))
    assert not torch.equal(shifted, images)
    for before, after in zip(images, shifted):  # a pure translation: one of the 25 shifts reproduces it
        assert any(torch.equal(torch.roll(before, (dy, dx), (1, 2)), after) for dy in range(-2, 3) for dx in range(-2, 3))
    assert torch.allclose(measure_attributes(shifted)["thickness"], measure_attributes(images)["thickness"])


def test_clip_loss_is_the_symmetric_cross_entropy_with_repeated_captions_as_shared_targets():
    torch.manual_seed(0)
    model = DigitCLIP(SMALL)
    images = torch.rand(4, 1, 28, 28)
    labels, levels = torch.tensor([0, 1, 2, 2]), torch.zeros(4, 3, dtype=torch.long)
    loss = clip_loss(model, (images, labels, levels), keep_prob=0.0)  # captions: a zero, a one, a two, a two
    logits = model(images, **tokenize([caption(int(d)) for d in labels]))
    targets = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]])
    # by hand: -sum(target * log softmax) for each row, both ways
    by_hand = 0.5 * (-(targets * logits.log_softmax(1)).sum(1).mean() - (targets * logits.T.log_softmax(1)).sum(1).mean())
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    distinct = clip_loss(model, (images[:3], labels[:3], levels[:3]), keep_prob=0.0)
    logits = logits[:3, :3]
    assert distinct.item() == pytest.approx(0.5 * (F.cross_entropy(logits, torch.arange(3))
                                                   + F.cross_entropy(logits.T, torch.arange(3))).item(), rel=1e-6)
    # the temperature multiplies the similarities, starting at 1 / 0.07
    assert model.logit_scale.exp().item() == pytest.approx(1 / 0.07)


def test_clip_learns_and_survives_save_and_load(tmp_path, mnist_test):
    torch.manual_seed(0)
    model = DigitCLIP(SMALL)
    levels = attribute_levels(mnist_test.images, mnist_test.labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)  # 3e-3 collapses every image to one embedding
    generator = torch.Generator().manual_seed(0)
    batch = (mnist_test.images[:128], mnist_test.labels[:128], levels[:128])
    losses = []
    for _ in range(60):
        loss = clip_loss(model, batch, generator, keep_prob=0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    predicted = zero_shot_digits(model, mnist_test.images[:128])
    assert predicted.shape == (128,) and (predicted == mnist_test.labels[:128]).double().mean() > 0.3
    save_checkpoint(model, tmp_path / "clip")
    loaded = load_checkpoint(tmp_path / "clip")
    assert loaded.model_type == "clip" and loaded.config == model.config
    assert torch.equal(loaded.encode_prompts(["a thick seven", "a one"]), model.encode_prompts(["a thick seven", "a one"]))
    assert torch.equal(loaded.encode_image(mnist_test.images[:8]), model.encode_image(mnist_test.images[:8]))
    recall = retrieval_recall(model, mnist_test.images[:200], mnist_test.labels[:200])
    assert all(0 <= recall[k] <= 1 for k in recall if "recall" in k)
    assert recall["image_to_text_recall@5"] >= recall["image_to_text_recall@1"]
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 1, 28, 28\)"):
        model.encode_image(torch.rand(2, 28, 28))


def text_models():
    torch.manual_seed(0)
    clip = DigitCLIP(SMALL).eval()
    diffusion = DiffusionModel(DiffusionConfig(base_channels=8, channel_mults=(1, 2), context_dim=SMALL.text_width,
                                               cross_attention_levels=(1,), prediction_type="v_prediction"))
    with torch.no_grad():  # zero-initialised output layers (proj_out, the last conv) would hide the context at first
        for parameter in diffusion.parameters():
            if parameter.ndim > 1 and not parameter.any():
                parameter.normal_(0, 0.1)
    return clip, diffusion


def test_text_diffusion_loss_trains_the_unet_not_the_frozen_text_encoder():
    clip, diffusion = text_models()
    clip.requires_grad_(False)
    images = torch.rand(8, 1, 28, 28) * 2 - 1
    batch = (images, torch.arange(8), torch.randint(0, 3, (8, 3)))
    optimizer = torch.optim.SGD(diffusion.parameters(), lr=0.1)
    for _ in range(2):  # proj_out starts at zero (as in diffusers), so attention weights get gradients from step 2
        optimizer.zero_grad()
        loss = text_diffusion_loss(diffusion, batch, torch.Generator().manual_seed(0), clip=clip, cond_drop_prob=0.5)
        loss.backward()
        optimizer.step()
    assert loss.ndim == 0 and math.isfinite(loss.item())
    grads = [p.grad for n, p in diffusion.named_parameters() if "attn2.to_k" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)  # the context reaches the U-Net
    assert all(p.grad is None for p in clip.parameters())
    with pytest.raises(ValueError, match="cross-attends to a context"):
        text_diffusion_loss(DiffusionModel(DiffusionConfig(base_channels=8, channel_mults=(1, 2))), batch, clip=clip)


def test_drop_prompts_replaces_with_the_empty_prompt_at_the_rate():
    prompts = ["a seven"] * 4000
    dropped = drop_prompts(prompts, 0.1, torch.Generator().manual_seed(0))
    assert set(dropped) == {"a seven", EMPTY_PROMPT}
    assert dropped.count(EMPTY_PROMPT) / 4000 == pytest.approx(0.1, abs=0.015)
    assert drop_prompts(prompts, 0.0) == prompts and set(drop_prompts(prompts, 1.0)) == {EMPTY_PROMPT}
    with pytest.raises(ValueError, match=r"drop_prob must lie in \[0, 1\]"):
        drop_prompts(prompts, 1.5)


def test_text_to_image_guidance_is_the_extrapolation_of_two_predictions():
    clip, diffusion = text_models()
    t2i = TextToImage(diffusion, clip)
    prompts = ["a thick seven", "an upright one", "a zero"]
    sample = lambda w, p=prompts: t2i.sample(p, guidance_scale=w, generator=torch.Generator().manual_seed(3),  # noqa: E731
                                             num_inference_steps=3)
    images = sample(3.0)
    assert images.shape == (3, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
    assert torch.allclose(sample(1.0), sample(None), atol=1e-6)            # w = 1: the conditional model
    assert torch.allclose(sample(0.0), sample(None, [EMPTY_PROMPT] * 3), atol=1e-6)  # w = 0: the empty prompt
    assert not torch.allclose(sample(3.0), sample(1.0), atol=1e-4)
    # the guided prediction itself, at one step, against the formula
    from coursekit.guidance import ClassifierFreeGuidance

    context, mask = encode_prompts(clip, prompts)
    empty, empty_mask = encode_prompts(clip, [EMPTY_PROMPT] * 3)
    x, t = torch.randn(3, 1, 28, 28), torch.tensor([900, 500, 10])
    guided = ClassifierFreeGuidance(diffusion, {"context": context, "context_mask": mask},
                                    {"context": empty, "context_mask": empty_mask}, 2.5)(x, t)
    cond, uncond = diffusion(x, t, context=context, context_mask=mask), diffusion(x, t, context=empty, context_mask=empty_mask)
    assert torch.allclose(guided, uncond + 2.5 * (cond - uncond), atol=1e-5)
    with pytest.raises(ValueError, match="cross-attends to a context"):
        diffusion.sample(2, num_inference_steps=2)
    with pytest.raises(ValueError, match="needs uncond_context"):
        diffusion.sample(3, num_inference_steps=2, context=context, context_mask=mask, guidance_scale=2.0)
    with pytest.raises(ValueError, match="16-wide features|features are"):
        TextToImage(diffusion, DigitCLIP(CLIPConfig(text_width=32, text_heads=2, text_layers=1)))


def test_prompt_accuracy_scores_real_digits_by_their_own_attributes(mnist_test):
    images, labels = mnist_test.images[:300], mnist_test.labels[:300]
    levels = attribute_levels(images, labels)
    right = prompt_accuracy(images, labels, levels)
    assert right["digit_accuracy"] > 0.95 and all(right[f"{a}_accuracy"] == 1.0 for a in ATTRIBUTES)
    wrong = prompt_accuracy(images, (labels + 1) % 10, (levels + 1) % 3)
    assert wrong["digit_accuracy"] < 0.05 and right["slant_prompts"] == 300
    assert right["thickness_prompts"] == int((levels[:, 0] != 1).sum())
    # the second judge, the shipped clip, agrees on real digits and rejects the wrong requests
    clip = load_checkpoint("clip")
    right = clip_prompt_accuracy(clip, images, labels, levels)
    assert right["clip_digit_accuracy"] > 0.95 and all(right[f"clip_{a}_accuracy"] > 0.9 for a in ATTRIBUTES), right
    swapped = clip_prompt_accuracy(clip, images, labels, 2 - levels)        # each extreme third asked the other way
    for name in ATTRIBUTES:
        assert swapped[f"clip_{name}_accuracy"] == pytest.approx(1 - right[f"clip_{name}_accuracy"])
    assert clip_prompt_accuracy(clip, images, (labels + 1) % 10, levels)["clip_digit_accuracy"] < 0.05
    digits, asked, prompts = evaluation_prompts(20, seed=0)
    assert digits.tolist() == list(range(10)) * 2 and len(prompts) == 20
    assert prompts[0] == caption(0, asked[0].tolist())


def test_train_clip_command_records_zero_shot_attributes_and_recall(tmp_path):
    out = tmp_path / "clip"
    assert main(["train", "clip", "--embed-dim", "16", "--text-width", "16", "--text-layers", "1", "--text-heads", "2",
                 "--max-steps", "3", "--epochs", "1", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    record = json.loads((out / "training.json").read_text())
    metrics = record["metrics"]
    assert record["steps"] == 3 and metrics["test_images"] == 1000
    assert 0 <= metrics["zero_shot_accuracy"] <= 1 and metrics["temperature"] > 0
    assert set(metrics["attribute_accuracy"]) == set(ATTRIBUTES)
    assert {"image_to_text_recall@1", "text_to_image_recall@5"} <= set(metrics["retrieval"])
    model = load_checkpoint(out)
    assert model.model_type == "clip" and model.config.text_width == 16

    text = tmp_path / "tddpm"
    assert main(["train", "ddpm", "--base-channels", "8", "--channel-mults", "1", "2", "--text-clip", str(out),
                 "--cond-drop", "0.1", "--max-steps", "2", "--epochs", "1", "--eval-samplers", "--eval-samples", "20",
                 "--eval-guidance-scales", "0", "3", "--eval-guidance-sampler", "ddim-2", "--out", str(text),
                 "--quiet", "--device", "cpu"]) == 0
    metrics = json.loads((text / "training.json").read_text())["metrics"]
    assert metrics["text_encoder"] == str(out) and metrics["cond_drop"] == 0.1
    sweep = metrics["prompt_guidance"]
    assert list(sweep["scales"]) == ["0", "3"] and sweep["num_samples"] == 20
    for row in sweep["scales"].values():
        assert 0 <= row["digit_accuracy"] <= 1 and 0 <= row["slant_accuracy"] <= 1 and row["seconds"] >= 0
    assert load_checkpoint(text).config.context_dim == 16
    assert main(["evaluate", str(text), "--guidance-scales", "5", "--samplers", "ddim-2", "--num-samples", "20",
                 "--seed", "2", "--write", "--key", "other"]) == 0
    record = json.loads((text / "training.json").read_text())
    assert list(record["metrics"]["other"]["scales"]) == ["5"]
    assert record["evaluations"][-1]["stored_in"] == "metrics.other"
    with pytest.raises(SystemExit, match="not both"):
        main(["train", "ddpm", "--num-classes", "10", "--text-clip", str(out), "--out", str(tmp_path / "x"), "--quiet"])


def test_pretrained_clip_helpers_on_a_tiny_local_clip(monkeypatch, tmp_path):
    """The Colab-only cells of chapter 5 use these helpers with OpenAI's CLIP; here they run on a tiny
    CLIPModel built from a config (nothing downloaded), and a missing hub gives a clear error."""
    from transformers import (CLIPConfig as HFCLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor,
                              CLIPTextConfig, CLIPTokenizer, CLIPVisionConfig)

    from coursekit import pretrained

    write_tokenizer(tmp_path)
    vocab, _ = build_vocabulary()
    text = CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=32, projection_dim=8,
                          bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"])
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=8)
    config = HFCLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=8)
    torch.manual_seed(0)
    model = CLIPModel._from_config(config, attn_implementation="eager").eval()
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=CLIPTokenizer.from_pretrained(tmp_path))
    calls = []

    def fake(cls_name, result):
        def from_pretrained(repo_id, **kwargs):
            calls.append((cls_name, repo_id))
            return result
        return from_pretrained

    monkeypatch.setattr(CLIPModel, "from_pretrained", fake("model", model))
    monkeypatch.setattr(CLIPProcessor, "from_pretrained", fake("processor", processor))
    loaded, loaded_processor = pretrained.load_pretrained_clip(device="cpu")
    assert calls == [("model", pretrained.PRETRAINED_CLIP["repo_id"]), ("processor", pretrained.PRETRAINED_CLIP["repo_id"])]
    digits = torch.rand(3, 1, 28, 28)
    probs = pretrained.clip_zero_shot(loaded, loaded_processor, digits, list(DIGIT_WORDS))
    assert probs.shape == (3, 10) and torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)
    attention = pretrained.clip_attention_map(loaded, loaded_processor, digits[0])
    assert attention.shape == (4, 4) and 0 < attention.sum() <= 1 + 1e-5

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load this model")

    monkeypatch.setattr(CLIPModel, "from_pretrained", offline)
    with pytest.raises(pretrained.HubUnavailable, match="needs the internet: run it in Colab") as error:
        pretrained.load_pretrained_clip(device="cpu")
    assert pretrained.PRETRAINED_CLIP["repo_id"] in str(error.value)


def test_clip_guidance_moves_the_estimate_of_x0_towards_the_prompt():
    from coursekit.guidance import CLIPGuidance, prediction_to_eps

    clip, _ = text_models()
    torch.manual_seed(1)
    diffusion = DiffusionModel(DiffusionConfig(base_channels=8, channel_mults=(1, 2), prediction_type="v_prediction"))
    with torch.no_grad():
        for parameter in diffusion.parameters():
            if parameter.ndim > 1 and not parameter.any():
                parameter.normal_(0, 0.1)
    text = clip.encode_prompts(["a thick seven", "a one"]).detach()
    x, t = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.tensor([300, 300])
    with torch.no_grad():
        plain = diffusion(x, t)
    assert torch.equal(CLIPGuidance(diffusion, clip, text, 0.0)(x, t), plain)
    alpha_bar = diffusion.schedule.alphas_cumprod[300]

    def similarity(output):
        eps = prediction_to_eps(output, x, t, diffusion.schedule, "v_prediction")
        x0 = (x - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
        return (clip.encode_image((x0.clamp(-1, 1) + 1) / 2) * text).sum(1)

    guided = CLIPGuidance(diffusion, clip, text, 0.5)(x, t)
    assert guided.shape == plain.shape and not torch.allclose(guided, plain)
    with torch.no_grad():  # the guided prediction's x0 (at fixed x_t) agrees more with each prompt
        assert (similarity(guided) > similarity(plain)).all()
    with pytest.raises(ValueError, match="one per image"):
        CLIPGuidance(diffusion, clip, text[:1], 1.0)(x, t)


# --- the shipped checkpoints of chapter 5 ------------------------------------------------------


def test_shipped_clip_reaches_its_recorded_zero_shot_accuracy(mnist_test):
    model = load_checkpoint("clip")
    from coursekit.checkpoint import read_record

    record = read_record("clip")
    metrics = record["metrics"]
    assert record["command"].startswith("coursekit train clip")
    accuracy = (zero_shot_digits(model, mnist_test.images) == mnist_test.labels).double().mean().item()
    assert accuracy == pytest.approx(metrics["zero_shot_accuracy"], abs=0.002) and accuracy >= 0.9
    assert all(metrics["attribute_accuracy"][a]["accuracy"] > 0.9 for a in ATTRIBUTES)
    assert metrics["retrieval"]["text_to_image_recall@5"] >= metrics["retrieval"]["text_to_image_recall@1"]


def test_shipped_noisy_classifier_and_class_conditional_ddpm_records():
    from coursekit.checkpoint import read_record

    noisy = read_record("noisy-classifier")["metrics"]["test_accuracy_at_t"]
    assert noisy["0"] > 0.95 and noisy["999"] < 0.2  # recognises clean digits, is near chance on pure noise
    model = load_checkpoint("ddpm-class")
    assert model.config.num_classes == 10 and model.config.prediction_type == "v_prediction"
    sweep = read_record("ddpm-class")["metrics"]["guidance"]
    assert sweep["num_samples"] == 1000 and sweep["sampler"] == "ddim-50"
    assert set(sweep["scales"]) == {"0", "1", "2", "3", "5", "7.5"}
    for row in sweep["scales"].values():
        assert row["fid_over_floor"] == pytest.approx(row["fid"] / sweep["floor"]["fid"])
        assert sum(row["class_histogram"]) == 1000 and 0 <= row["class_accuracy"] <= 1
    # guidance towards the label: the unconditional model (w = 0) is at chance, the guided ones far above
    assert sweep["scales"]["0"]["class_accuracy"] < 0.2 < 0.9 < sweep["scales"]["3"]["class_accuracy"]


def test_shipped_text_conditional_ddpm_follows_its_prompts():
    from coursekit.checkpoint import read_record

    model = load_checkpoint("ddpm-text")
    record = read_record("ddpm-text")
    assert model.config.context_dim == load_checkpoint("clip").config.text_width
    assert record["metrics"]["text_encoder"] == "clip" and "--text-clip clip" in record["command"]
    sweep = record["metrics"]["prompt_guidance"]
    assert sweep["num_samples"] == 500 and set(sweep["scales"]) == {"0", "1", "3", "7.5"}
    unguided, guided = sweep["scales"]["0"], sweep["scales"]["3"]
    assert unguided["digit_accuracy"] < 0.2 and guided["digit_accuracy"] > 0.9  # the empty prompt vs the prompt
    for attribute in ATTRIBUTES:  # chance is 1/3 for an attribute's third
        assert unguided[f"{attribute}_accuracy"] < 0.45 < guided[f"{attribute}_accuracy"]
    for row in sweep["scales"].values():
        assert row["fid_over_floor"] == pytest.approx(row["fid"] / sweep["floor"]["fid"])
    t2i = TextToImage(model, load_checkpoint("clip"))
    images = t2i.sample(["a thick seven", "a thin one"], guidance_scale=3.0, generator=torch.Generator().manual_seed(0),
                        num_inference_steps=5)
    assert images.shape == (2, 1, 28, 28)
