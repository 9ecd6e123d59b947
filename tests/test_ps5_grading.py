"""Exercise set ps5 (attention, conditioning, guidance, CLIP): the notebook's structure, its checks, and autograding.

The fast tests read ``solutions/ps5/ps5.ipynb`` (the nbgrader source), run its answers through the
visible checks of ``coursekit.exercises.ps5``, and run the hidden tests of each part against the
answer with plausible mistakes patched in: every mistake must cost that part its points, and one
mistake per part gets past the visible checks so that only the hidden tests see it. The table of
mistakes has the ones the set is about (the missing 1/sqrt(d_k), the softmax over the queries, the
mask after the softmax or filled with 0, heads mixed with tokens or with the batch, keys and values
from the image, the mask ignored or on the wrong axis, the guidance sign and the paper's (1 + w),
swapped halves, the dropout rate inverted or applied when sampling or to the whole batch, one
direction of CLIP's loss, the temperature inverted, unnormalised embeddings) and the nearly right
answers of ps3 and ps4 (dtypes, batch mixing, inputs changed in place, calls counted, gradients and
arguments ignored). The slow tests build a throwaway course directory, regenerate the student
release there (it must equal the committed ``exercises/ps5/ps5.ipynb``) and autograde the
solution, the untouched release, and nine submissions with mistakes. The notebook needs no
checkpoint, no data beyond the bundled digits, and no internet.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

import grading
from grading import ROOT, make_course, nbgrader_meta, read

from coursekit.exercises import ps5 as checks

SOURCE = ROOT / "solutions" / "ps5" / "ps5.ipynb"
RELEASE = ROOT / "exercises" / "ps5" / "ps5.ipynb"

# grade_id of each autograded tests cell -> points
TEST_POINTS = {
    "test_attention": 3,
    "test_split_merge_heads": 2,
    "test_cross_attention": 3,
    "test_guided_eps": 3,
    "test_drop_labels": 2,
    "test_clip_loss": 3,
}
WRITTEN_POINTS = {"answer_guidance": 3}
ANSWER_OF = {test: test.removeprefix("test_") for test in TEST_POINTS}  # test cell -> answer cell
PART_OF = dict(zip(ANSWER_OF.values(), checks.PARTS))  # answer cell -> its part (names and visible check)

# Plausible mistakes, as (correct text, wrong text) in the answer cell with that grade_id; the wrong text
# replaces every occurrence of the correct one. Every mistake must fail the hidden tests of its part (fast
# test below); nine submissions are also autograded.
MISTAKES = {
    "attention": {
        "calls_package": ("    scores = q @ k.transpose(-2, -1)",
                          "    from coursekit.attention import scaled_dot_product_attention\n    return scaled_dot_product_attention(q, k, v, mask)\n"
                          "    scores = q @ k.transpose(-2, -1)"),
        "no_scale": (" / math.sqrt(q.shape[-1])", ""),
        "scale_by_d_k": ("math.sqrt(q.shape[-1])", "q.shape[-1]"),
        "scale_by_tokens": ("math.sqrt(q.shape[-1])", "math.sqrt(k.shape[-2])"),
        "softmax_over_queries": ("scores.softmax(dim=-1)", "scores.softmax(dim=-2)"),
        "mask_after_softmax": (
            '    if mask is not None:\n        scores = scores.masked_fill(~mask, float("-inf"))  # before the softmax: weight exactly 0\n'
            "    weights = scores.softmax(dim=-1)  # over the keys: each row sums to 1\n",
            "    weights = scores.softmax(dim=-1)\n    if mask is not None:\n        weights = weights.masked_fill(~mask, 0.0)\n"),
        "mask_with_zero": ('float("-inf")', "0.0"),
        "mask_inverted": ("masked_fill(~mask", "masked_fill(mask"),
        "mask_ignored": ('scores = scores.masked_fill(~mask, float("-inf"))', "scores = scores"),
        # right for (B, L, d), the only shape the visible checks use; wrong for heads, (B, H, L, d)
        "transpose_1_2": ("k.transpose(-2, -1)", "k.transpose(1, 2)"),
        # the softmax by hand: right for the scores of the visible checks, inf / inf = nan for large ones
        "softmax_by_hand": ("weights = scores.softmax(dim=-1)",
                            "weights = scores.exp() / scores.exp().sum(dim=-1, keepdim=True)"),
        "scales_q_in_place": ("scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])",
                              "q /= math.sqrt(q.shape[-1])\n    scores = q @ k.transpose(-2, -1)"),
    },
    "split_merge_heads": {
        "calls_package": ("    batch, length, width = x.shape\n",
                          "    from coursekit.attention import split_heads as package_split_heads\n    return package_split_heads(x, heads)\n"
                          "    batch, length, width = x.shape\n"),
        # a view without the transpose: heads mixed with tokens, every shape right
        "split_without_transpose": (
            "    x = x.reshape(batch, length, heads, width // heads)  # (B, L, H, D): each token's features cut into heads\n"
            "    return x.transpose(1, 2)  # (B, H, L, D)",
            "    return x.reshape(batch, heads, length, width // heads)"),
        "merge_without_transpose": ("x.transpose(1, 2).reshape(batch, length, heads * head_dim)",
                                    "x.reshape(batch, length, heads * head_dim)"),
        "heads_first": ("return x.transpose(1, 2)  # (B, H, L, D)", "return x.permute(2, 0, 1, 3)"),  # (H, B, L, D)
        "merge_mixes_batch": ("x.transpose(1, 2).reshape", "x.transpose(0, 1).reshape"),
        "strided_heads": (
            "    x = x.reshape(batch, length, heads, width // heads)  # (B, L, H, D): each token's features cut into heads\n"
            "    return x.transpose(1, 2)  # (B, H, L, D)",
            "    x = x.reshape(batch, length, width // heads, heads)\n    return x.permute(0, 3, 1, 2)"),
        # the right numbers, copied into a float32 buffer: a float64 or int64 x comes back float32
        "zeros_loop": (
            "    x = x.reshape(batch, length, heads, width // heads)  # (B, L, H, D): each token's features cut into heads\n"
            "    return x.transpose(1, 2)  # (B, H, L, D)",
            "    head_dim = width // heads\n    split = torch.zeros(batch, heads, length, head_dim)\n"
            "    for h in range(heads):\n        split[:, h] = x[:, :, h * head_dim:(h + 1) * head_dim]\n    return split"),
    },
    "cross_attention": {
        "calls_package": ("    q = package_split_heads(to_q(x), heads)",
                          "    from coursekit.attention import Attention\n    layer = Attention(x.shape[-1], context.shape[-1], heads=heads, dim_head=to_q.out_features // heads)\n    layer.to_q, layer.to_k, layer.to_v = to_q, to_k, to_v\n    layer.to_out[0] = torch.nn.Identity()  # the part leaves the output projection out\n    return layer(x, context, mask)\n"
                          "    q = package_split_heads(to_q(x), heads)"),
        "keys_from_image": ("to_k(context), heads)  # (B, heads, M, D): the context tokens answer\n    v = package_split_heads(to_v(context)",
                            "to_k(x), heads)  # (B, heads, M, D): the context tokens answer\n    v = package_split_heads(to_v(x)"),
        "mask_ignored": ("out, _ = package_attention(q, k, v, mask)", "out, _ = package_attention(q, k, v)"),
        "mask_not_reshaped": ("    if mask is not None:\n        mask = mask[:, None, None, :]  # (B, 1, 1, M): the same context tokens for every head and image token\n",
                              ""),
        "mask_on_image_tokens": ("mask[:, None, None, :]", "mask[:, None, :, None]"),
        "mask_inverted": ("mask = mask[:, None, None, :]", "mask = ~mask[:, None, None, :]"),
        "one_head": ("), heads)", "), 1)"),
        # right whenever a mask is given, as in the visible checks; mask=None crashes
        "mask_none_crashes": ("    if mask is not None:\n        mask = mask[:, None, None, :]", "    mask = mask[:, None, None, :]"),
        # right for layers without a bias, as in the visible checks
        "query_bias_dropped": ("to_q(x)", "x @ to_q.weight.T"),
    },
    "guided_eps": {
        "calls_package": ("    null_labels = torch.full_like(labels, num_classes)",
                          "    from coursekit.guidance import ClassifierFreeGuidance\n    guided = ClassifierFreeGuidance(model, {\"labels\": labels},\n                                    {\"labels\": torch.full_like(labels, num_classes)}, guidance_scale)\n    return guided(x_t, t)\n"
                          "    null_labels = torch.full_like(labels, num_classes)"),
        "sign_swapped": ("guidance_scale * (eps_cond - eps_uncond)", "guidance_scale * (eps_uncond - eps_cond)"),
        "paper_one_plus_w": ("return eps_uncond + guidance_scale * (eps_cond - eps_uncond)",
                             "return (1 + guidance_scale) * eps_cond - guidance_scale * eps_uncond"),
        "halves_swapped": ("eps_cond, eps_uncond = eps.chunk(2)", "eps_uncond, eps_cond = eps.chunk(2)"),
        "null_is_zero": ("torch.full_like(labels, num_classes)", "torch.zeros_like(labels)"),
        "null_is_last_class": ("torch.full_like(labels, num_classes)", "torch.full_like(labels, num_classes - 1)"),
        "t_not_doubled": ("torch.cat([t, t])", "t"),
        # the same numbers from two forward passes
        "two_forward_passes": (
            "    eps = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, null_labels]))\n"
            "    eps_cond, eps_uncond = eps.chunk(2)",
            "    eps_cond = model(x_t, t, labels)\n    eps_uncond = model(x_t, t, null_labels)"),
    },
    "drop_labels": {
        "calls_package": ("    if not training:\n",
                          "    from coursekit.guidance import drop_labels as package_drop_labels\n    return package_drop_labels(labels, drop_prob if training else 0.0, num_classes, generator).clone()\n"
                          "    if not training:\n"),
        "rate_inverted": ("< drop_prob", "> drop_prob"),
        "keeps_with_p": ("torch.where(drop, torch.full_like(labels, num_classes), labels)",
                         "torch.where(drop, labels, torch.full_like(labels, num_classes))"),
        "drops_when_sampling": ("    if not training:\n        return labels.clone()\n", ""),
        "whole_batch": ("torch.rand(labels.shape, generator=generator) < drop_prob",
                        "(torch.rand((), generator=generator) < drop_prob).expand(labels.shape)"),
        "global_generator": ("torch.rand(labels.shape, generator=generator)", "torch.rand(labels.shape)"),
        "null_is_zero": ("torch.full_like(labels, num_classes)", "torch.zeros_like(labels)"),
        # the right labels, written into the tensor passed in (a view of the training set's labels)
        "in_place": ("    return torch.where(drop, torch.full_like(labels, num_classes), labels)  # a new tensor; labels stays as it was",
                     "    labels[drop] = num_classes\n    return labels"),
    },
    "clip_loss": {
        "calls_package": ("    image_embeds = F.normalize(image_embeds, dim=-1)",
                          "    from transformers.models.clip.modeling_clip import image_text_contrastive_loss\n    similarity = logit_scale * F.normalize(text_embeds, dim=-1) @ F.normalize(image_embeds, dim=-1).T\n    return image_text_contrastive_loss(similarity)\n"
                          "    image_embeds = F.normalize(image_embeds, dim=-1)"),
        "image_to_text_only": ("return (loss_images + loss_texts) / 2", "return loss_images"),
        # the targets of the second direction read along the rows again: the first direction twice
        "same_direction_twice": ("loss_texts = F.cross_entropy(logits.T, targets)", "loss_texts = F.cross_entropy(logits, targets)"),
        "divides_by_scale": ("logits = logit_scale * image_embeds @ text_embeds.T", "logits = image_embeds @ text_embeds.T / logit_scale"),
        "exp_of_scale": ("logits = logit_scale *", "logits = math.exp(logit_scale) *"),
        "unnormalised": ("    image_embeds = F.normalize(image_embeds, dim=-1)  # unit vectors: dot products are cosine similarities\n"
                         "    text_embeds = F.normalize(text_embeds, dim=-1)\n", ""),
        "normalised_over_batch": ("dim=-1)", "dim=0)"),
        "summed": ("targets)", 'targets, reduction="sum")'),
        "added_not_averaged": ("(loss_images + loss_texts) / 2", "loss_images + loss_texts"),
        # the right loss, but the learnt logit scale gets no gradient
        "scale_as_float": ("logits = logit_scale *", "logits = float(logit_scale) *"),
        "softmax_by_hand": (
            "    loss_images = F.cross_entropy(logits, targets)  # each image picks its text among the B\n"
            "    loss_texts = F.cross_entropy(logits.T, targets)  # each text picks its image among the B",
            "    loss_images = -(logits.exp() / logits.exp().sum(dim=1, keepdim=True)).diagonal().log().mean()\n"
            "    loss_texts = -(logits.exp() / logits.exp().sum(dim=0, keepdim=True)).diagonal().log().mean()"),
        "normalises_in_place": ("image_embeds = F.normalize(image_embeds, dim=-1)",
                                "image_embeds /= image_embeds.norm(dim=-1, keepdim=True)"),
    },
}
# The one mistake per part that passes the visible test cell and is caught only by the hidden tests.
HIDDEN_ONLY = {
    "attention": "transpose_1_2",
    "split_merge_heads": "zeros_loop",
    "cross_attention": "mask_none_crashes",
    "guided_eps": "two_forward_passes",
    "drop_labels": "in_place",
    "clip_loss": "scale_as_float",
}
# More that the visible checks let through (each fails its hidden tests, like all of MISTAKES).
ALSO_PAST_THE_VISIBLE_CHECKS = {
    "attention": ["softmax_by_hand"],
    "cross_attention": ["query_bias_dropped"],
    "clip_loss": ["softmax_by_hand", "normalises_in_place"],
}

# The autograded submissions with mistakes (answer cell -> mistake), and the score each should get.
BUGGY_SUBMISSIONS = {
    "buggy_no_scale": {"attention": "no_scale"},
    "buggy_heads_no_transpose": {"split_merge_heads": "split_without_transpose"},
    "buggy_keys_from_image": {"cross_attention": "keys_from_image"},
    "buggy_mask_none": {"cross_attention": "mask_none_crashes"},
    "buggy_halves_swapped": {"guided_eps": "halves_swapped"},
    "buggy_drop_when_sampling": {"drop_labels": "drops_when_sampling"},
    "buggy_one_direction": {"clip_loss": "image_to_text_only"},
    "buggy_in_place": {"drop_labels": "in_place"},
    "buggy_two_parts": {"attention": "transpose_1_2", "clip_loss": "scale_as_float"},
}
BUGGY_SCORES = grading.buggy_scores(BUGGY_SUBMISSIONS, TEST_POINTS, ANSWER_OF)
WRITTEN_ANSWER = "Guidance samples p(x | c) p(c | x)^(w - 1): surer of the class, less varied."


def bugs(mistakes: dict[str, str]) -> dict[str, tuple[str, str]]:
    return grading.pick_bugs(MISTAKES, mistakes)


def answers_namespace(mistakes: dict[str, str] | None = None) -> dict:
    return grading.answers_namespace(SOURCE, bugs(mistakes or {}))


run_cell_part = grading.run_cell_part


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
    for promise in ('**True means "attend"**', "the **last two** dimensions", "**not** the number of tokens",
                    "the **last** dimension", "**before** the softmax", "Leave the tensors passed in as they were",
                    "$B = H = L$", "the dtype of `x`, whatever it is", "or `None`, in which case",
                    "`w = 1` the plain conditional model", "its $w'$ is our $w - 1$", "call the model **once**",
                    "the null label is `num_classes`", "**one uniform number per label**", "leave `labels` as it was",
                    "return the labels unchanged", "must pass gradients to it", "stays finite at $s = 100$",
                    "nothing is divided by the values", "does not retrieve the training image"):
        assert promise in text, f"the notebook no longer says {promise!r}"
    # no checkpoint, no download: the only data are the bundled digits
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert "load_checkpoint" not in code and "from_pretrained" not in code
    assert code.count("load_mnist(") == code.count('source="bundled")') == 2


def test_release_has_no_solutions_or_hidden_tests():
    stubs = grading.check_release(RELEASE, len(ANSWER_OF), len(WRITTEN_POINTS))
    assert [c.source for c in stubs if c.cell_type == "markdown"] == ["YOUR ANSWER HERE"]
    # the cell of part (b) holds two functions, each with its own stub
    (heads_cell,) = [c for c in stubs if nbgrader_meta(c).get("grade_id") == "split_merge_heads"]
    assert heads_cell.source.count("raise NotImplementedError()") == 2
    release_text = "\n".join(cell.source for cell in read(RELEASE).cells)
    # what the solution knows does not leak: no answer line appears in the release
    for source in grading.answer_sources(SOURCE).values():
        for line in source.splitlines():
            if line.strip().startswith(("scores =", "weights =", "batch,", "x =", "q =", "k =", "v =", "mask =", "out, _ =",
                                        "null_labels =", "eps", "drop =", "image_embeds =", "text_embeds =", "logits =",
                                        "targets =", "loss_", "return")):
                assert line not in release_text, line


# --- the visible checks and hidden tests (fast) -----------------------------------------------------

def test_visible_checks_pass_for_reference_answers():
    namespace = answers_namespace()
    for part in checks.PARTS:
        part.check(*(namespace[name] for name in part.names))
    for grade_id, visible in grading.visible_tests(SOURCE).items():
        run_cell_part(visible, namespace, f"<ps5 {grade_id} visible>")


def test_hidden_tests_pass_for_reference_answers():
    namespace = answers_namespace()
    for grade_id, hidden in grading.hidden_tests(SOURCE).items():
        run_cell_part(hidden, namespace, f"<ps5 {grade_id}>")


@pytest.mark.parametrize(("part", "name"), [(part, name) for part, mistakes in MISTAKES.items() for name in mistakes])
def test_hidden_tests_catch_each_mistake(part, name):
    """Every mistake fails the hidden tests of its part. (They call only that part's answer, so the
    other parts keep their points: the autograde test below shows it for nine of these.)"""
    namespace = answers_namespace({part: name})
    (hidden,) = [hidden for grade_id, hidden in grading.hidden_tests(SOURCE).items() if ANSWER_OF[grade_id] == part]
    with pytest.raises(Exception):  # noqa: B017 (an assertion or a crash: either costs the points)
        run_cell_part(hidden, namespace, f"<ps5 {part} tests>")


@pytest.mark.parametrize("part", list(MISTAKES))
def test_an_answer_that_calls_the_package_scores_no_points_and_is_told_why(part):
    """The hidden tests of every part fail an answer that hands the part to the package's (or a library's)
    own implementation, with the guard's message: it names the part and says that it scores no points."""
    from coursekit.exercises.originality import UsesCourseImplementation

    namespace = answers_namespace({part: "calls_package"})
    (hidden,) = [hidden for grade_id, hidden in grading.hidden_tests(SOURCE).items() if ANSWER_OF[grade_id] == part]
    with pytest.raises(UsesCourseImplementation) as caught:
        run_cell_part(hidden, namespace, f"<ps5 {part} tests>")
    label = dict(zip(ANSWER_OF.values(), checks.PARTS))[part].label
    message = str(caught.value)
    assert f"Part ({label}) " in message and "no points" in message and "yourself" in message, message


@pytest.mark.parametrize(("part", "name"), [*HIDDEN_ONLY.items(),
                                            *[(part, name) for part, names in ALSO_PAST_THE_VISIBLE_CHECKS.items()
                                              for name in names]])
def test_some_mistakes_pass_the_visible_checks(part, name):
    """Like ps1's tied scores: one mistake per part (and a few more) gets past everything the student sees."""
    namespace = answers_namespace({part: name})
    (visible,) = [text for grade_id, text in grading.visible_tests(SOURCE).items() if ANSWER_OF[grade_id] == part]
    run_cell_part(visible, namespace, f"<ps5 {part} visible>")
    visible_check(part, answers_namespace({part: name}))


@pytest.mark.parametrize(("part", "name", "message"), [
    ("attention", "no_scale", "not scaled: divide q k\\^T by sqrt\\(d_k\\)"),
    ("attention", "scale_by_d_k", "divided by d_k; divide them by sqrt\\(d_k\\)"),
    ("attention", "scale_by_tokens", "sqrt\\(L_k\\), the number of keys"),
    ("attention", "softmax_over_queries", "softmax runs over the queries"),
    ("attention", "mask_after_softmax", "do not sum to 1 over the keys: mask the scores before the softmax"),
    ("attention", "mask_with_zero", "set to 0, which still gets a weight"),
    ("attention", "mask_inverted", "the mask is inverted"),
    ("attention", "mask_ignored", "the mask is ignored"),
    ("split_merge_heads", "split_without_transpose", "mixes heads with tokens"),
    ("split_merge_heads", "merge_without_transpose", "merge_heads reshapes without moving the heads back"),
    ("split_merge_heads", "heads_first", "put the heads first"),
    ("split_merge_heads", "strided_heads", "contiguous features"),
    ("split_merge_heads", "merge_mixes_batch", "merge_heads should put head h's features"),
    ("cross_attention", "keys_from_image", "keys and values from the context"),
    ("cross_attention", "mask_ignored", "the padding mask is ignored"),
    ("cross_attention", "mask_not_reshaped", "reshape it to \\(B, 1, 1, M\\)"),
    ("cross_attention", "mask_on_image_tokens", "reshape it to \\(B, 1, 1, M\\)"),
    ("cross_attention", "mask_inverted", "the mask is inverted"),
    ("cross_attention", "one_head", "runs as one head"),
    ("guided_eps", "sign_swapped", "points the wrong way"),
    ("guided_eps", "paper_one_plus_w", "Ho & Salimans' \\(1 \\+ w\\)"),
    ("guided_eps", "halves_swapped", "halves of the batched output are swapped"),
    ("guided_eps", "null_is_zero", "uses label 0, which is the digit zero"),
    ("guided_eps", "null_is_last_class", "num_classes - 1 = 9"),
    ("drop_labels", "rate_inverted", "probability of dropping a label"),
    ("drop_labels", "keeps_with_p", "probability of dropping a label"),
    ("drop_labels", "drops_when_sampling", "condition dropout happens only in training"),
    ("drop_labels", "whole_batch", "label was dropped, with drop_prob = 0.2: draw one uniform number per label"),
    ("drop_labels", "global_generator", "with the generator passed in"),
    ("drop_labels", "null_is_zero", "the null label is num_classes"),
    ("clip_loss", "image_to_text_only", "only the image -> text direction"),
    ("clip_loss", "same_direction_twice", "only the image -> text direction"),
    ("clip_loss", "divides_by_scale", "divided by logit_scale"),
    ("clip_loss", "exp_of_scale", "multiplied by exp\\(logit_scale\\)"),
    ("clip_loss", "unnormalised", "not normalised"),
    ("clip_loss", "normalised_over_batch", "normalised over the batch"),
    ("clip_loss", "summed", "summed over the batch"),
    ("clip_loss", "added_not_averaged", "added, not averaged"),
])
def test_visible_checks_explain_mistakes(part, name, message):
    namespace = answers_namespace({part: name})
    with pytest.raises(AssertionError, match=message):
        visible_check(part, namespace)


def test_gaussian_mixture_predictor_is_exact():
    """The demo's and hidden tests' predictor: the noise that the score of the noised mixture implies."""
    import math

    import torch

    from coursekit.schedulers import make_schedule

    alpha_bars = make_schedule("linear", 1000).alphas_cumprod
    means = torch.tensor([[2.0, 0.0], [-1.0, 1.5], [0.0, -2.0]])
    mixture = checks.GaussianMixturePredictor(means, 0.6, alpha_bars)
    x_t = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 10, 200, 500, 800, 999])
    alpha_bar = alpha_bars.double()[t][:, None]
    variance = alpha_bar * 0.36 + 1 - alpha_bar
    log_densities = -((x_t[:, None, :] - alpha_bar.sqrt()[:, :, None] * means.double()[None]) ** 2).sum(2) / (2 * variance)
    for label in range(4):  # the three classes, then the null label: the mixture with equal weights
        chosen = log_densities[:, label] if label < 3 else log_densities.logsumexp(dim=1) - math.log(3)
        (score,) = torch.autograd.grad(chosen.sum(), x_t, retain_graph=True)
        eps = mixture(x_t.detach(), t, torch.full((6,), label))
        assert eps.dtype == torch.float64
        assert torch.allclose(eps, -(1 - alpha_bar).sqrt() * score, atol=1e-10)
    probabilities = mixture.class_probabilities(means + 0.01)
    assert torch.allclose(probabilities.sum(1), torch.ones(3, dtype=torch.float64))
    assert (probabilities.argmax(1) == torch.arange(3)).all()
    # float32 in, float32 out; one t for the whole batch works too
    assert mixture(torch.randn(4, 2), torch.tensor(500), torch.tensor([0, 1, 2, 3])).dtype == torch.float32


def test_toy_conditional_predictor_and_recording_model():
    import torch

    toy = checks.ToyConditionalPredictor(num_classes=10, seed=1)
    x_t, t = torch.randn(3, 1, 2, 2), torch.tensor([0, 500, 999])
    cond, null = toy(x_t, t, torch.tensor([1, 2, 3])), toy(x_t, t, torch.full((3,), 10))
    assert cond.shape == x_t.shape and not torch.allclose(cond, null), "each label gives its own prediction"
    with pytest.raises(ValueError, match="labels must be int64 in 0 .. 10"):
        toy(x_t, t, torch.tensor([0, 1, 11]))
    with pytest.raises(ValueError, match="one row per example"):
        toy(torch.cat([x_t, x_t]), t, torch.tensor([1, 2, 3]))
    model = checks.RecordingModel(toy)
    labels = torch.tensor([4, 5, 6])
    output = model(x_t, t, labels=labels)
    assert torch.equal(output, toy(x_t, t, labels)) and len(model.calls) == 1
    seen_x_t, seen_t, seen_labels = model.calls[0]
    assert torch.equal(seen_labels, labels) and torch.equal(seen_t, t)
    x_t.add_(1.0)
    assert not torch.equal(seen_x_t, x_t), "the record is a copy"


def test_references_agree_with_torch_and_the_package():
    import torch
    import torch.nn.functional as F

    from coursekit.attention import Attention

    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)
    mask = torch.rand(2, 1, 5, 7) < 0.5
    mask[..., 0] = True
    out, weights = checks.reference_attention(q, k, v, mask)
    assert out.dtype == torch.float64 and torch.allclose(out.float(), F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5)
    layer = Attention(query_dim=6, context_dim=5, heads=3, dim_head=2)
    with torch.no_grad():
        layer.to_out[0].weight.copy_(torch.eye(6))
        layer.to_out[0].bias.zero_()
        x, context = torch.randn(2, 4, 6), torch.randn(2, 3, 5)
        padding = torch.tensor([[True, True, False], [True, False, False]])
        expected = layer(x, context, padding)
        assert torch.allclose(checks.reference_cross_attention(x, context, layer.to_q, layer.to_k, layer.to_v, 3, padding).float(),
                              expected, atol=1e-6)
    images, texts = torch.randn(5, 3), torch.randn(5, 3)
    logits = 7.0 * F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T
    symmetric = (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.T, torch.arange(5))) / 2
    assert torch.isclose(checks.reference_clip_loss(images, texts, 7.0).float(), symmetric)
    labels = torch.arange(10)
    assert torch.equal(checks.reference_drop_labels(labels, 1.0, 10, torch.Generator(), training=False), labels)
    assert (checks.reference_drop_labels(labels, 1.0, 10, torch.Generator(), training=True) == 10).all()


def test_self_check_table(capsys):
    results = checks.self_check({})
    assert [status for _, status, _ in results] == ["not attempted"] * len(checks.PARTS)

    def not_done(*args, **kwargs):
        raise NotImplementedError()

    def crashes(*args, **kwargs):
        raise RuntimeError("boom")

    namespace = answers_namespace({"attention": "no_scale"})
    del namespace["merge_heads"]  # half of part (b) was never run
    namespace["cross_attention"] = crashes
    namespace["guided_eps"] = not_done
    status = {part.label: status for part, status, _ in checks.run_checks(namespace)}
    assert status == {"a": "FAIL", "b": "not attempted", "c": "FAIL", "d": "not attempted", "e": "pass", "f": "pass"}
    capsys.readouterr()
    checks.self_check(namespace)
    table = capsys.readouterr().out
    for expected in ("RuntimeError: boom", "merge_heads not defined", "NotImplementedError", "5 of 16", "sqrt(d_k)"):
        assert expected in table, f"{expected!r} missing from the table:\n{table}"


# --- autograding (slow) ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A throwaway course directory with ps5's source and the regenerated release."""
    return make_course(tmp_path_factory.mktemp("course"), "ps5")


def filled_in_release(mistakes: dict[str, str]) -> nbformat.NotebookNode:
    return grading.filled_in_release(SOURCE, RELEASE, bugs(mistakes), WRITTEN_ANSWER)


@pytest.mark.slow
def test_release_is_regenerated_identically(course):
    grading.assert_release_regenerated(course, "ps5", RELEASE)


@pytest.mark.slow
def test_autograde_correct_blank_and_buggy(course):
    buggy = {student: filled_in_release(mistakes) for student, mistakes in BUGGY_SUBMISSIONS.items()}
    grading.assert_grading_round_trip(course, "ps5", SOURCE, RELEASE, buggy, TEST_POINTS, BUGGY_SCORES, "answer_guidance")
