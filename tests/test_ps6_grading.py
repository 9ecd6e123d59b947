"""Exercise set ps6 (latent diffusion and Stable Diffusion): the notebook's structure, its checks, and autograding.

The fast tests read ``solutions/ps6/ps6.ipynb`` (the nbgrader source), run its answers through the
visible checks of ``coursekit.exercises.ps6``, and run the hidden tests of each part against the
answer with plausible mistakes patched in: every mistake must cost that part its points, and one
mistake per part gets past the visible checks so that only the hidden tests see it. The table of
mistakes has the ones the set is about (the latents divided by the scaling factor or not scaled,
multiplied on decoding or not unscaled, Stable Diffusion's 0.18215 hard-coded, a sample of q(z|x)
instead of its mean, padding and cropping; guidance on the wrong half of the batch, the negative
prompt ignored, the sampler's starting sigma and input scaling left out; img2img's start one step off
either way, the strength inverted, rounded rather than truncated, the scheduler's order ignored, the
latents noised to the wrong timestep; inpainting's mask inverted, the known region blended clean or at
the level before the step). The references are checked here against diffusers' three pipelines. The
slow tests build a throwaway course directory, regenerate the student release there (it must equal the
committed ``exercises/ps6/ps6.ipynb``) and autograde the solution, the untouched release, and nine
submissions with mistakes. The notebook needs the shipped ``clip`` checkpoint and the bundled digits,
and no internet.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch

import grading
from grading import ROOT, make_course, nbgrader_meta, read

from coursekit.exercises import ps6 as checks

SOURCE = ROOT / "solutions" / "ps6" / "ps6.ipynb"
RELEASE = ROOT / "exercises" / "ps6" / "ps6.ipynb"

# grade_id of each autograded tests cell -> points
TEST_POINTS = {
    "test_encode_digits": 2,
    "test_decode_latents": 2,
    "test_guided_latents": 4,
    "test_img2img_start": 3,
    "test_inpaint_blend": 3,
}
WRITTEN_POINTS = {"answer_latent_space": 3}
ANSWER_OF = {test: test.removeprefix("test_") for test in TEST_POINTS}  # test cell -> answer cell
PART_OF = dict(zip(ANSWER_OF.values(), checks.PARTS))  # answer cell -> its part (names and visible check)

CONTEXT = ("torch.cat([encode_text(text_encoder, tokenizer, negative_prompts), "
           "encode_text(text_encoder, tokenizer, prompts)])")
RENOISE = "        known = scheduler.add_noise(image_latents, noise, timesteps[i + 1:i + 2])"

# Plausible mistakes, as (correct text, wrong text) in the answer cell with that grade_id; the wrong text
# replaces every occurrence of the correct one. Every mistake must fail the hidden tests of its part (fast
# test below); nine submissions are also autograded.
MISTAKES = {
    "encode_digits": {
        "calls_package": ("    images = pad_digits(digits)",
                          "    from coursekit.stable_diffusion import encode_latents\n    return encode_latents(vae, pad_digits(digits), sample=False) * vae.config.scaling_factor\n"
                          "    images = pad_digits(digits)"),
        "sample": ("posterior.mean * vae", "posterior.sample() * vae"),
        "divides": ("posterior.mean * vae.config.scaling_factor", "posterior.mean / vae.config.scaling_factor"),
        "unscaled": ("return posterior.mean * vae.config.scaling_factor", "return posterior.mean"),
        "not_padded": ("images = pad_digits(digits)", "images = digits * 2 - 1"),
        "not_mapped": ("images = pad_digits(digits)", "images = torch.nn.functional.pad(digits, (2, 2, 2, 2))"),
        "gray_padding": ("images = pad_digits(digits)", "images = torch.nn.functional.pad(digits * 2 - 1, (2, 2, 2, 2))"),
        # right for Stable Diffusion's autoencoder, the one of the visible checks, and for no other
        "stable_diffusion_factor": ("vae.config.scaling_factor", "0.18215"),
    },
    "decode_latents": {
        "calls_package": ("    images = vae.decode(z / vae.config.scaling_factor).sample",
                          "    from diffusers.image_processor import VaeImageProcessor\n    images = vae.decode(z / vae.config.scaling_factor).sample\n    return crop_digits(VaeImageProcessor().postprocess(images, output_type=\"pt\"))\n"
                          "    images = vae.decode(z / vae.config.scaling_factor).sample"),
        "multiplies": ("z / vae.config.scaling_factor", "z * vae.config.scaling_factor"),
        "not_unscaled": ("vae.decode(z / vae.config.scaling_factor)", "vae.decode(z)"),
        "no_crop": ("return crop_digits(images)", "return images"),
        "corner_crop": ("return crop_digits(images)", "return images[:, :, :28, :28]"),
        "not_mapped": ("(images / 2 + 0.5).clamp(0, 1)", "images.clamp(-1, 1)"),
        "no_clamp": ("(images / 2 + 0.5).clamp(0, 1)", "images / 2 + 0.5"),
        "unscales_in_place": ("    images = vae.decode(z / vae.config.scaling_factor).sample",
                              "    z /= vae.config.scaling_factor\n    images = vae.decode(z).sample"),
        # the famous tutorial line `latents = 1 / 0.18215 * latents`: right for the visible checks' autoencoder only
        "stable_diffusion_factor": ("z / vae.config.scaling_factor", "z / 0.18215"),
    },
    "guided_latents": {
        "calls_package": ("    negative_prompts = [\"\"] * len(prompts)",
                          "    from coursekit.exercises.ps6 import tiny_autoencoder\n    from coursekit.stable_diffusion import build_pipeline\n    pipe = build_pipeline(tiny_autoencoder(), text_encoder, tokenizer, unet, scheduler)  # no decoding: any vae\n    return pipe(list(prompts), num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,\n                negative_prompt=negative_prompts, latents=latents.clone(), output_type=\"latent\").images\n"
                          "    negative_prompts = [\"\"] * len(prompts)"),
        "halves_swapped": ("eps_neg, eps_cond = eps.chunk(2)", "eps_cond, eps_neg = eps.chunk(2)"),
        "context_order_swapped": (CONTEXT, "torch.cat([encode_text(text_encoder, tokenizer, prompts), "
                                           "encode_text(text_encoder, tokenizer, negative_prompts)])"),
        "negative_ignored": ('[""] * len(prompts) if negative_prompts is None else list(negative_prompts)',
                             '[""] * len(prompts)'),
        "sign_swapped": ("guidance_scale * (eps_cond - eps_neg)", "guidance_scale * (eps_neg - eps_cond)"),
        "guidance_ignored": ("eps = eps_neg + guidance_scale * (eps_cond - eps_neg)", "eps = eps_cond"),
        "paper_one_plus_w": ("eps = eps_neg + guidance_scale * (eps_cond - eps_neg)",
                             "eps = (1 + guidance_scale) * eps_cond - guidance_scale * eps_neg"),
        # the same numbers from two U-Net calls per step
        "two_unet_calls": ("eps = unet(model_input, t, encoder_hidden_states=context).sample",
                           "eps = torch.cat([unet(half, t, encoder_hidden_states=features).sample\n"
                           "                         for half, features in zip(model_input.chunk(2), context.chunk(2))])"),
        # right for DDIM (init_noise_sigma 1, scale_model_input the identity), the visible checks' sampler
        "no_init_noise_sigma": ("latents * scheduler.init_noise_sigma", "latents"),
        "no_scale_model_input": ("scheduler.scale_model_input(torch.cat([latents, latents]), t)", "torch.cat([latents, latents])"),
    },
    "img2img_start": {
        "calls_package": ("    scheduler.set_timesteps(num_inference_steps)\n    init_timestep",
                          "    from types import SimpleNamespace\n    from diffusers import StableDiffusionImg2ImgPipeline\n    scheduler.set_timesteps(num_inference_steps)\n    timesteps, _ = StableDiffusionImg2ImgPipeline.get_timesteps(SimpleNamespace(scheduler=scheduler),\n                                                                num_inference_steps, strength, \"cpu\")\n    return timesteps, scheduler.add_noise(z0, noise, timesteps[:1])\n"
                          "    scheduler.set_timesteps(num_inference_steps)\n    init_timestep"),
        "one_step_less": ("t_start = num_inference_steps - init_timestep", "t_start = num_inference_steps - init_timestep + 1"),
        "one_step_more": ("timesteps = scheduler.timesteps[t_start * scheduler.order:]",
                          "timesteps = scheduler.timesteps[max(t_start * scheduler.order - 1, 0):]"),
        "strength_inverted": ("int(num_inference_steps * strength)", "int(num_inference_steps * (1 - strength))"),
        "all_steps": ("scheduler.timesteps[t_start * scheduler.order:]", "scheduler.timesteps"),
        "noised_to_last": ("add_noise(z0, noise, timesteps[:1])", "add_noise(z0, noise, timesteps[-1:])"),
        "not_noised": ("z_t = scheduler.add_noise(z0, noise, timesteps[:1])", "z_t = z0"),
        "noise_level_from_strength": ("add_noise(z0, noise, timesteps[:1])",
                                      "add_noise(z0, noise, torch.tensor([int(strength * 999)]))"),
        "no_set_timesteps": ("    scheduler.set_timesteps(num_inference_steps)\n", ""),
        # right whenever num_inference_steps * strength is a whole number, as in the visible checks
        "rounds": ("int(num_inference_steps * strength)", "round(num_inference_steps * strength)"),
        # right for schedulers of order 1, as in the visible checks
        "order_ignored": ("scheduler.timesteps[t_start * scheduler.order:]", "scheduler.timesteps[t_start:]"),
    },
    "inpaint_blend": {
        "calls_package": ("    known = image_latents",
                          "    from coursekit.exercises.ps6 import reference_inpaint_blend\n    return reference_inpaint_blend(latents, image_latents, mask, noise, scheduler, timesteps, i)\n"
                          "    known = image_latents"),
        "mask_inverted": ("return (1 - mask) * known + mask * latents", "return mask * known + (1 - mask) * latents"),
        "clean_known": (RENOISE, "        known = image_latents"),
        "current_level": ("timesteps[i + 1:i + 2]", "timesteps[i:i + 1]"),
        "renoised_at_last": ("    if i < len(timesteps) - 1:\n" + RENOISE,
                             "    known = scheduler.add_noise(image_latents, noise, timesteps[min(i + 1, len(timesteps) - 1):][:1])"),
        "fresh_noise": ("add_noise(image_latents, noise,", "add_noise(image_latents, torch.randn_like(noise),"),
        "in_place": ("    return (1 - mask) * known + mask * latents",
                     "    keep = mask.expand_as(latents) == 0\n    latents[keep] = known[keep]\n    return latents"),
        # right when the timesteps passed in are all of the scheduler's, as in the visible checks; wrong for img2img's
        "scheduler_timesteps": ("timesteps[i + 1:i + 2]", "scheduler.timesteps[i + 1:i + 2]"),
    },
}
# The one mistake per part that passes the visible test cell and is caught only by the hidden tests.
HIDDEN_ONLY = {
    "encode_digits": "stable_diffusion_factor",
    "decode_latents": "stable_diffusion_factor",
    "guided_latents": "no_init_noise_sigma",
    "img2img_start": "rounds",
    "inpaint_blend": "scheduler_timesteps",
}
# More that the visible checks let through (each fails its hidden tests, like all of MISTAKES).
ALSO_PAST_THE_VISIBLE_CHECKS = {
    "guided_latents": ["no_scale_model_input"],
    "img2img_start": ["order_ignored"],
}

# The autograded submissions with mistakes (answer cell -> mistake), and the score each should get.
BUGGY_SUBMISSIONS = {
    "buggy_divides": {"encode_digits": "divides"},
    "buggy_decode_sd_factor": {"decode_latents": "stable_diffusion_factor"},
    "buggy_halves_swapped": {"guided_latents": "halves_swapped"},
    "buggy_negative_ignored": {"guided_latents": "negative_ignored"},
    "buggy_one_step_less": {"img2img_start": "one_step_less"},
    "buggy_strength_inverted": {"img2img_start": "strength_inverted"},
    "buggy_mask_inverted": {"inpaint_blend": "mask_inverted"},
    "buggy_current_level": {"inpaint_blend": "current_level"},
    "buggy_two_parts": {"encode_digits": "sample", "inpaint_blend": "scheduler_timesteps"},
}
BUGGY_SCORES = grading.buggy_scores(BUGGY_SUBMISSIONS, TEST_POINTS, ANSWER_OF)
WRITTEN_ANSWER = "48 times fewer numbers, so much cheaper steps; the autoencoder bounds the detail; unit variance for the schedule."


def bugs(mistakes: dict[str, str]) -> dict[str, tuple[str, str]]:
    return grading.pick_bugs(MISTAKES, mistakes)


def answers_namespace(mistakes: dict[str, str] | None = None) -> dict:
    return grading.answers_namespace(SOURCE, bugs(mistakes or {}))


run_cell_part = grading.run_cell_part


@pytest.fixture(scope="module")
def notebook_globals() -> dict:
    """What the notebook's set-up cell defines before the first visible test cell (vae, text_encoder, ...)."""
    (setup,) = [cell.source for cell in read(SOURCE).cells
                if cell.cell_type == "code" and "tiny_autoencoder(scaling_factor=1.0" in cell.source]
    namespace = {"torch": torch}
    exec(compile(setup, "<ps6 set-up>", "exec"), namespace)  # noqa: S102 (our own notebook)
    return namespace


def with_answers(notebook_globals: dict, mistakes: dict[str, str] | None = None) -> dict:
    return grading.answers_namespace(SOURCE, bugs(mistakes or {}), dict(notebook_globals))


def visible_check(part: str, namespace: dict) -> None:
    """Run the visible check of the part whose answer cell is ``part`` on the answers in ``namespace``."""
    check = PART_OF[part]
    check.check(*(namespace[name] for name in check.names))


# --- the notebook's structure -------------------------------------------------------------------

def test_source_notebook_structure():
    notebook = grading.check_source_structure(SOURCE, TEST_POINTS, WRITTEN_POINTS, checks.PARTS)
    tests = [nbgrader_meta(c)["grade_id"] for c in notebook.cells if c.cell_type == "code" and nbgrader_meta(c).get("grade")]
    assert tests == list(TEST_POINTS), "the parts should come in the order of the points table"
    assert list(grading.answer_sources(SOURCE)) == list(ANSWER_OF.values())
    for part, points in zip(checks.PARTS, TEST_POINTS.values()):
        names = ", ".join(f"`{name}`" for name in part.names)
        assert f"| ({part.label}) | {names} | {points} |" in notebook.cells[0].source
    # the conventions the tests rely on are stated to the students
    text = " ".join(" ".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown").split())
    for promise in ("take the **mean** of $q(z \\mid x)$, not a sample", "**multiply** by `vae.config.scaling_factor`",
                    "whatever its value", "`z / vae.config.scaling_factor`", "and **clamp** it to [0, 1]",
                    "the empty prompt `\"\"`", "Concatenate the features **negatives first**", "`scheduler.init_noise_sigma`",
                    "`scheduler.scale_model_input(..., t)`", "call the U-Net **once per step**", "the **first half**",
                    "`int` truncates: 50 steps at strength 0.75 run 37, not 38", "`scheduler.order`",
                    "noised to the **first** timestep run", "1 = repaint", "after the **last** step",
                    "timesteps[i + 1:i + 2])`", "Leave the tensors passed in as they were"):
        assert promise in text, f"the notebook no longer says {promise!r}"
    # no download: the shipped clip checkpoint and the bundled digits, nothing from the hub
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert "from_pretrained" not in code and code.count('load_checkpoint("clip")') == 1
    assert code.count("load_mnist(") == code.count('source="bundled")') == 1


def test_release_has_no_solutions_or_hidden_tests():
    stubs = grading.check_release(RELEASE, len(ANSWER_OF), len(WRITTEN_POINTS))
    assert [c.source for c in stubs if c.cell_type == "markdown"] == ["YOUR ANSWER HERE"]
    release_code = "\n".join(cell.source for cell in read(RELEASE).cells if cell.cell_type == "code")
    # what the solution knows does not leak into the release's code: no answer line appears in it (a bare
    # `return latents` also ends the demos' loops)
    for source in grading.answer_sources(SOURCE).values():
        for line in source.splitlines():
            if line.strip() != "return latents" and line.strip().startswith(("images =", "posterior =", "return", "negative_prompts =", "context =", "latents =",
                                        "model_input =", "eps", "init_timestep =", "t_start =", "timesteps =", "z_t =",
                                        "known =")):
                assert line not in release_code, line


# --- the references against diffusers' pipelines -----------------------------------------------------

def test_reference_inpaint_blend_is_the_inpainting_pipeline_s_loop():
    """A loop with the reference blend gives StableDiffusionInpaintPipeline's latents (4-channel U-Net)."""
    import torch.nn.functional as F
    from diffusers import StableDiffusionInpaintPipeline

    vae, text_encoder, tokenizer, unet, _ = checks.tiny_parts(seed=2, scaling_factor=0.7)
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    mask_image = torch.zeros(2, 1, 32, 32)
    mask_image[0, :, 16:] = 1.0
    mask_image[1, :, :, :12] = 1.0
    prompts = ["a three", "a nine"]
    pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                          scheduler=checks.make_scheduler("DDIMScheduler"), safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(prompts, image=images, mask_image=mask_image, num_inference_steps=5, guidance_scale=3.0,
                    generator=torch.Generator().manual_seed(4), output_type="latent").images
    generator = torch.Generator().manual_seed(4)
    scheduler = checks.make_scheduler("DDIMScheduler")
    with torch.no_grad():
        image_latents = vae.encode(images * 2 - 1).latent_dist.sample(generator=generator) * vae.config.scaling_factor
        noise = torch.randn(image_latents.shape, generator=generator)
        mask = F.interpolate(mask_image, size=(8, 8))
        scheduler.set_timesteps(5)
        latents = noise * scheduler.init_noise_sigma
        context = torch.cat([encode(text_encoder, tokenizer, [""] * 2), encode(text_encoder, tokenizer, prompts)])
        for i, t in enumerate(scheduler.timesteps):
            eps_neg, eps_cond = unet(torch.cat([latents, latents]), t, encoder_hidden_states=context).sample.chunk(2)
            latents = scheduler.step(eps_neg + 3.0 * (eps_cond - eps_neg), t, latents).prev_sample
            latents = checks.reference_inpaint_blend(latents, image_latents, mask, noise, scheduler, scheduler.timesteps, i)
    assert torch.allclose(latents, expected, atol=1e-4), (latents - expected).abs().max()
    # the mistakes give other latents
    for wrong in ({"invert": True}, {"level": "current"}, {"level": "clean"}):
        assert not torch.allclose(checks.reference_inpaint_blend(latents, image_latents, mask, noise, scheduler,
                                                                 scheduler.timesteps, 2, **wrong),
                                  checks.reference_inpaint_blend(latents, image_latents, mask, noise, scheduler,
                                                                 scheduler.timesteps, 2), atol=1e-3)


def encode(text_encoder, tokenizer, prompts):
    from coursekit.stable_diffusion import encode_text

    return encode_text(text_encoder, tokenizer, prompts)


def test_reference_img2img_start_is_the_img2img_pipeline_s():
    """get_timesteps' semantics by hand, and the reference's z_t in the pipeline's own prepare_latents."""
    from diffusers import StableDiffusionImg2ImgPipeline

    for steps, strength, expected_count in ((50, 0.75, 37), (10, 1.0, 10), (10, 0.3, 3), (7, 0.6, 4), (4, 0.2, 0)):
        scheduler = checks.make_scheduler("DDIMScheduler")
        scheduler.set_timesteps(steps)
        timesteps = checks.reference_img2img_timesteps(scheduler, steps, strength)
        assert timesteps.tolist() == scheduler.timesteps[steps - expected_count:].tolist()
    vae, text_encoder, tokenizer, unet, scheduler = checks.tiny_parts(seed=3, scaling_factor=0.7)
    pipe = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    pipe.scheduler.set_timesteps(20)
    timesteps, count = pipe.get_timesteps(20, 0.45, "cpu")
    assert count == 9 and len(timesteps) == 9
    prepared = pipe.prepare_latents(z0, timesteps[:1].repeat(2), 2, 1, torch.float32, "cpu",
                                    torch.Generator().manual_seed(6))   # 4-channel "images" are taken as latents
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    _, z_t = checks.reference_img2img_start("DDIMScheduler", z0, noise, 0.45, 20)
    assert torch.allclose(prepared, z_t, atol=1e-6)


def test_reference_encode_and_decode_are_the_pipelines():
    from diffusers.image_processor import VaeImageProcessor

    from coursekit.stable_diffusion import pad_digits

    vae = checks.tiny_autoencoder(0.3, seed=4)
    digits = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        z = checks.reference_encode(vae, digits)
        assert torch.allclose(z, vae.encode(pad_digits(digits)).latent_dist.mode() * 0.3)
        decoded = checks.reference_decode(vae, z)
        processed = VaeImageProcessor(vae_scale_factor=4).postprocess(vae.decode(z / 0.3).sample, output_type="pt")
    assert decoded.shape == (3, 1, 28, 28) and torch.allclose(decoded, processed[:, :, 2:30, 2:30])
    # the random decoder leaves [-1, 1] at the visible checks' latents: the clamp matters there
    check_vae = checks.tiny_autoencoder(seed=3)
    with torch.no_grad():
        raw = check_vae.decode(torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4)) / check_vae.config.scaling_factor).sample
    assert raw.abs().max() > 1


# --- the visible checks and hidden tests (fast) -----------------------------------------------------

def test_visible_checks_pass_for_reference_answers(notebook_globals):
    namespace = with_answers(notebook_globals)
    for part in checks.PARTS:
        part.check(*(namespace[name] for name in part.names))
    for grade_id, visible in grading.visible_tests(SOURCE).items():
        run_cell_part(visible, namespace, f"<ps6 {grade_id} visible>")


def test_hidden_tests_pass_for_reference_answers():
    namespace = answers_namespace()
    for grade_id, hidden in grading.hidden_tests(SOURCE).items():
        run_cell_part(hidden, namespace, f"<ps6 {grade_id}>")


@pytest.mark.parametrize(("part", "name"), [(part, name) for part, mistakes in MISTAKES.items() for name in mistakes])
def test_hidden_tests_catch_each_mistake(part, name):
    """Every mistake fails the hidden tests of its part. (They call only that part's answer, so the
    other parts keep their points: the autograde test below shows it for nine of these.)"""
    namespace = answers_namespace({part: name})
    (hidden,) = [hidden for grade_id, hidden in grading.hidden_tests(SOURCE).items() if ANSWER_OF[grade_id] == part]
    with pytest.raises(Exception):  # noqa: B017 (an assertion or a crash: either costs the points)
        run_cell_part(hidden, namespace, f"<ps6 {part} tests>")


@pytest.mark.parametrize("part", list(MISTAKES))
def test_an_answer_that_calls_the_package_scores_no_points_and_is_told_why(part):
    """The hidden tests of every part fail an answer that hands the part to the package's (or a library's)
    own implementation, with the guard's message: it names the part and says that it scores no points."""
    from coursekit.exercises.originality import UsesCourseImplementation

    namespace = answers_namespace({part: "calls_package"})
    (hidden,) = [hidden for grade_id, hidden in grading.hidden_tests(SOURCE).items() if ANSWER_OF[grade_id] == part]
    with pytest.raises(UsesCourseImplementation) as caught:
        run_cell_part(hidden, namespace, f"<ps6 {part} tests>")
    label = dict(zip(ANSWER_OF.values(), checks.PARTS))[part].label
    message = str(caught.value)
    assert f"Part ({label}) " in message and "no points" in message and "yourself" in message, message


@pytest.mark.parametrize(("part", "name"), [*HIDDEN_ONLY.items(),
                                            *[(part, name) for part, names in ALSO_PAST_THE_VISIBLE_CHECKS.items()
                                              for name in names]])
def test_some_mistakes_pass_the_visible_checks(part, name, notebook_globals):
    """Like ps5's: one mistake per part (and a few more) gets past everything the student sees."""
    namespace = with_answers(notebook_globals, {part: name})
    (visible,) = [text for grade_id, text in grading.visible_tests(SOURCE).items() if ANSWER_OF[grade_id] == part]
    run_cell_part(visible, namespace, f"<ps6 {part} visible>")
    visible_check(part, namespace)


@pytest.mark.parametrize(("part", "name", "message"), [
    ("encode_digits", "sample", "a sample of q\\(z\\|x\\); take its mean"),
    ("encode_digits", "divides", "divided by the scaling factor"),
    ("encode_digits", "unscaled", "the latents are not scaled"),
    ("encode_digits", "not_padded", "4 x 7 x 7"),
    ("encode_digits", "not_mapped", "in \\[0, 1\\]: it takes images in \\[-1, 1\\]"),
    ("encode_digits", "gray_padding", "the padding is 0, which is gray"),
    ("decode_latents", "multiplies", "multiplied by the scaling factor"),
    ("decode_latents", "not_unscaled", "the scaling is not undone"),
    ("decode_latents", "no_crop", "the digits are 32 x 32"),
    ("decode_latents", "corner_crop", "the crop is off-centre"),
    ("decode_latents", "not_mapped", "map it to \\[0, 1\\]"),
    ("decode_latents", "no_clamp", "not clamped"),
    ("decode_latents", "unscales_in_place", "changed the latents passed in"),
    ("guided_latents", "halves_swapped", "the wrong half of the batch"),
    ("guided_latents", "context_order_swapped", "the wrong half of the batch"),
    ("guided_latents", "negative_ignored", "the negative prompts are ignored"),
    ("guided_latents", "guidance_ignored", "the guidance scale is not used"),
    ("guided_latents", "two_unet_calls", "expected once per step on the doubled batch"),
    ("img2img_start", "one_step_less", "one step off"),
    ("img2img_start", "one_step_more", "one step off"),
    ("img2img_start", "strength_inverted", "the strength is inverted"),
    ("img2img_start", "all_steps", "every step is run"),
    ("img2img_start", "noised_to_last", "noised to the last timestep run"),
    ("img2img_start", "not_noised", "z_t is z0 itself"),
    ("inpaint_blend", "mask_inverted", "the mask is inverted"),
    ("inpaint_blend", "clean_known", "blended in clean"),
    ("inpaint_blend", "current_level", "noised to timesteps\\[i\\], the level before the step"),
    ("inpaint_blend", "in_place", "changed the tensors passed in"),
])
def test_visible_checks_explain_mistakes(part, name, message):
    namespace = answers_namespace({part: name})
    with pytest.raises(AssertionError, match=message):
        visible_check(part, namespace)


def test_tiny_models_leave_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    checks.tiny_parts(seed=9)
    assert torch.equal(state, torch.random.get_rng_state())


def test_self_check_table(capsys):
    results = checks.self_check({})
    assert [status for _, status, _ in results] == ["not attempted"] * len(checks.PARTS)

    def not_done(*args, **kwargs):
        raise NotImplementedError()

    def crashes(*args, **kwargs):
        raise RuntimeError("boom")

    namespace = answers_namespace({"encode_digits": "divides"})
    del namespace["decode_latents"]
    namespace["guided_latents"] = crashes
    namespace["img2img_start"] = not_done
    status = {part.label: status for part, status, _ in checks.run_checks(namespace)}
    assert status == {"a": "FAIL", "b": "not attempted", "c": "FAIL", "d": "not attempted", "e": "pass"}
    capsys.readouterr()
    checks.self_check(namespace)
    table = capsys.readouterr().out
    for expected in ("RuntimeError: boom", "decode_latents not defined", "NotImplementedError", "3 of 14", "divided by"):
        assert expected in table, f"{expected!r} missing from the table:\n{table}"


# --- autograding (slow) ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A throwaway course directory with ps6's source and the regenerated release."""
    return make_course(tmp_path_factory.mktemp("course"), "ps6")


def filled_in_release(mistakes: dict[str, str]) -> nbformat.NotebookNode:
    return grading.filled_in_release(SOURCE, RELEASE, bugs(mistakes), WRITTEN_ANSWER)


@pytest.mark.slow
def test_release_is_regenerated_identically(course):
    grading.assert_release_regenerated(course, "ps6", RELEASE)


@pytest.mark.slow
def test_autograde_correct_blank_and_buggy(course):
    buggy = {student: filled_in_release(mistakes) for student, mistakes in BUGGY_SUBMISSIONS.items()}
    grading.assert_grading_round_trip(course, "ps6", SOURCE, RELEASE, buggy, TEST_POINTS, BUGGY_SCORES, "answer_latent_space")
