"""Exercise set ps3 (generative adversarial networks): the notebook's structure, its checks, and autograding.

The fast tests read ``solutions/ps3/ps3.ipynb`` (the nbgrader source), run its answers through the
visible checks of ``coursekit.exercises.ps3``, and run the hidden tests of each part against the
answer with plausible mistakes patched in: every mistake must cost that part its points, and in
each part one mistake gets past the visible checks so that only the hidden tests see it. The table
of mistakes includes the four kinds of nearly right answers that an independent review found hidden
tests most likely to miss: batch mixing with every shape right, dtype leaks, graph leaks (or a
network run more often than the text says), and ignored arguments. The slow tests build a throwaway
course directory, regenerate the student release there (it must equal the committed
``exercises/ps3/ps3.ipynb``) and autograde the solution, the untouched release, and seven
submissions with mistakes. The notebook needs the bundled MNIST digits and no checkpoint; the test
cells need neither.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat
import pytest
import torch

import grading
from grading import ROOT, make_course, nbgrader_meta, read

from coursekit.exercises import ps3 as checks
from coursekit.exercises.originality import UsesCourseImplementation

SOURCE = ROOT / "solutions" / "ps3" / "ps3.ipynb"
RELEASE = ROOT / "exercises" / "ps3" / "ps3.ipynb"

# grade_id of each autograded tests cell -> points
TEST_POINTS = {
    "test_discriminator_loss": 2,
    "test_generator_loss": 2,
    "test_train_step": 4,
    "test_gradient_penalty": 4,
}
WRITTEN_POINTS = {"answer_saturation": 3}
ANSWER_OF = {test: test.removeprefix("test_") for test in TEST_POINTS}  # test cell -> answer cell

# The two lines of the answer to (a), and D's step in (c), which some mistakes rewrite as a whole.
D_LOSS_LINES = (
    "real_loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))  # -mean log D(x)\n"
    "    fake_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))"
)
D_STEP_LINES = (
    "fake_logits = discriminator(fake.detach())  # (B,)\n"
    "    d_loss = package_discriminator_loss(real_logits, fake_logits)\n"
    "    optimizer_d.zero_grad()\n"
    "    d_loss.backward()\n"
)

# Plausible mistakes, as (correct text, wrong text) in the answer cell with that grade_id. Every one
# must fail the hidden tests of its part (fast test below); seven submissions are also autograded.
MISTAKES = {
    "discriminator_loss": {
        "swapped_labels": (D_LOSS_LINES,
                           "real_loss = F.binary_cross_entropy_with_logits(real_logits, torch.zeros_like(real_logits))\n"
                           "    fake_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))"),
        # right for moderate logits; log(1 - sigmoid(l)) is log(0) = -inf once sigmoid(l) rounds to 1
        "unstable": (D_LOSS_LINES, "real_loss = -torch.log(torch.sigmoid(real_logits)).mean()\n"
                                   "    fake_loss = -torch.log(1 - torch.sigmoid(fake_logits)).mean()"),
        "sum": (D_LOSS_LINES,
                'real_loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits), reduction="sum")\n'
                '    fake_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits), reduction="sum")'),
        "averaged": ("return real_loss + fake_loss", "return (real_loss + fake_loss) / 2"),
        "double_sigmoid": (D_LOSS_LINES,
                           "real_loss = F.binary_cross_entropy_with_logits(torch.sigmoid(real_logits), torch.ones_like(real_logits))\n"
                           "    fake_loss = F.binary_cross_entropy_with_logits(torch.sigmoid(fake_logits), torch.zeros_like(fake_logits))"),
        # the four kinds of nearly right answers: a batch statistic, a dtype leak (right values, float64 for float32 logits)
        "mean_logit": (D_LOSS_LINES,
                       "real_loss = F.binary_cross_entropy_with_logits(real_logits.mean(), torch.ones_like(real_logits.mean()))\n"
                       "    fake_loss = F.binary_cross_entropy_with_logits(fake_logits.mean(), torch.zeros_like(fake_logits.mean()))"),
        "float64": (D_LOSS_LINES,
                    "real_loss = F.binary_cross_entropy_with_logits(real_logits.double(), torch.ones_like(real_logits.double()))\n"
                    "    fake_loss = F.binary_cross_entropy_with_logits(fake_logits.double(), torch.zeros_like(fake_logits.double()))"),
    },
    "generator_loss": {
        "minimax": ("return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))",
                    "return torch.log(1 - torch.sigmoid(fake_logits)).mean()"),
        "swapped_labels": ("torch.ones_like(fake_logits)", "torch.zeros_like(fake_logits)"),
        "sum": ("torch.ones_like(fake_logits))", 'torch.ones_like(fake_logits), reduction="sum")'),
        # right for moderate logits; sigmoid(-200) rounds to 0 and its log is -inf
        "unstable": ("return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))",
                     "return -torch.log(torch.sigmoid(fake_logits)).mean()"),
        "mean_logit": ("F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))",
                       "F.binary_cross_entropy_with_logits(fake_logits.mean(), torch.ones_like(fake_logits.mean()))"),
        "float64": ("F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))",
                    "F.binary_cross_entropy_with_logits(fake_logits.double(), torch.ones_like(fake_logits.double()))"),
    },
    "train_step": {
        # without detach, D's backward frees G's graph; retain_graph=True makes the error go away, not the mistake
        "no_detach": (D_STEP_LINES, D_STEP_LINES.replace("fake.detach()", "fake").replace(
            "d_loss.backward()", "d_loss.backward(retain_graph=True)")),
        "no_detach_crash": ("discriminator(fake.detach())", "discriminator(fake)"),
        "no_zero_grad_d": ("    optimizer_d.zero_grad()\n", ""),
        "no_zero_grad_g": ("    optimizer_g.zero_grad()  # G's gradients, and D's from here on, start from zero\n", ""),
        "swapped_optimizers": ("    optimizer_d.step()\n", "    optimizer_g.step()\n"),
        "d_steps_twice": ("    optimizer_g.step()\n", "    optimizer_g.step()\n    optimizer_d.step()\n"),
        "returns_tensors": ("return d_loss.item(), g_loss.item()", "return d_loss, g_loss"),
        "concatenated": ("real_logits = discriminator(real)  # (B,)\n    fake_logits = discriminator(fake.detach())  # (B,)",
                         "real_logits, fake_logits = discriminator(torch.cat([real, fake.detach()])).chunk(2)"),
        # the same losses and weights, but G runs twice: its batch norm's running statistics move twice per step
        "generator_twice": ("g_loss = package_generator_loss(discriminator(fake))",
                            "g_loss = package_generator_loss(discriminator(generator(z)))"),
        "own_optimizer_d": ("    optimizer_d.zero_grad()\n",
                            "    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))\n"
                            "    optimizer_d.zero_grad()\n"),
        "fresh_z": ("fake = generator(z)", "fake = generator(torch.randn_like(z))"),
    },
    "gradient_penalty": {
        # the same as the answer for a linear critic, whose gradient is the same everywhere
        "real_points": ("x_hat = (epsilon * real + (1 - epsilon) * fake).detach()", "x_hat = real.detach()"),
        "squared_norm": ("norms = gradients.flatten(1).norm(2, dim=1)", "norms = gradients.flatten(1).pow(2).sum(dim=1)"),
        "whole_batch_norm": ("norms = gradients.flatten(1).norm(2, dim=1)", "norms = gradients.norm(2)"),
        "no_create_graph": (", create_graph=True", ""),
        "no_requires_grad": (".detach().requires_grad_(True)", ""),
        "sum": ("return ((norms - 1) ** 2).mean()", "return ((norms - 1) ** 2).sum()"),
        # the same as the answer wherever the fakes carry no graph: then the penalty backpropagates into the generator
        "no_detach": (".detach().requires_grad_(True)", ".requires_grad_(True)"),
        "mean_norm_first": ("return ((norms - 1) ** 2).mean()", "return (norms.mean() - 1) ** 2"),
        "one_epsilon": ("x_hat = (epsilon * real + (1 - epsilon) * fake)", "x_hat = (epsilon[0] * real + (1 - epsilon[0]) * fake)"),
        "float64_norms": ("norms = gradients.flatten(1).norm(2, dim=1)", "norms = gradients.flatten(1).double().norm(2, dim=1)"),
        "own_epsilon": ("    x_hat = (epsilon * real", "    epsilon = torch.rand(real.shape[0], 1, 1, 1)\n    x_hat = (epsilon * real"),
    },
}
def solution_body(grade_id: str) -> str:
    """The lines of a reference answer between its `### BEGIN SOLUTION` and `### END SOLUTION` markers."""
    (cell,) = [cell for cell in read(SOURCE).cells if nbgrader_meta(cell).get("grade_id") == grade_id]
    body = cell.source.split("### BEGIN SOLUTION\n", 1)[1].split("### END SOLUTION", 1)[0]
    return body[:body.rfind("\n") + 1]


# Answers that hand their part to the implementation of it in coursekit.models.gan or in the references
# of coursekit.exercises.ps3. Every number they give is right; the hidden tests fail them with
# UsesCourseImplementation.
CALLS_PACKAGE = {
    "discriminator_loss": ("    from coursekit.models.gan import discriminator_loss as package_discriminator_loss\n"
                           "    return package_discriminator_loss(real_logits, fake_logits)\n"),
    "generator_loss": ("    from coursekit.models.gan import generator_loss_nonsaturating\n"
                       "    return generator_loss_nonsaturating(fake_logits)\n"),
    "train_step": ("    from coursekit.exercises.ps3 import reference_train_step\n"
                   "    return reference_train_step(generator, discriminator, optimizer_g, optimizer_d, real, z)\n"),
    "gradient_penalty": ("    from coursekit.exercises.ps3 import reference_gradient_penalty\n"
                         "    return reference_gradient_penalty(critic, real, fake, epsilon)\n"),
}
for _part, _answer in CALLS_PACKAGE.items():
    MISTAKES[_part]["calls_package"] = (solution_body(_part), _answer)
# each part -> the part as the hidden tests name it in the feedback
GUARDED_PARTS = {"discriminator_loss": "(a) discriminator_loss", "generator_loss": "(b) generator_loss",
                 "train_step": "(c) train_step", "gradient_penalty": "(d) gradient_penalty"}

# The mistakes that pass the visible test cell and are caught only by the hidden tests.
HIDDEN_ONLY = {
    "discriminator_loss": "unstable",
    "generator_loss": "unstable",
    "train_step": "generator_twice",
    "gradient_penalty": "real_points",
}

# The autograded submissions with mistakes (answer cell -> mistake), and the score each should get.
BUGGY_SUBMISSIONS = {
    "buggy_swapped_labels": {"discriminator_loss": "swapped_labels"},
    "buggy_minimax": {"generator_loss": "minimax"},
    "buggy_no_detach": {"train_step": "no_detach"},
    "buggy_penalty_on_real": {"gradient_penalty": "real_points"},
    "buggy_two_parts": {"discriminator_loss": "unstable", "train_step": "no_zero_grad_g"},
    # two that the hidden tests before the four kinds of checks gave full marks
    "buggy_generator_twice": {"train_step": "generator_twice"},
    "buggy_penalty_keeps_graph": {"gradient_penalty": "no_detach"},
}
BUGGY_SCORES = grading.buggy_scores(BUGGY_SUBMISSIONS, TEST_POINTS, ANSWER_OF)
WRITTEN_ANSWER = "d/dl log(1 - sigmoid(l)) = -sigmoid(l) = -0.001 vanishes where D rejects the fakes; same fixed point."


def bugs(mistakes: dict[str, str]) -> dict[str, tuple[str, str]]:
    return grading.pick_bugs(MISTAKES, mistakes)


def answers_namespace(mistakes: dict[str, str] | None = None) -> dict:
    return grading.answers_namespace(SOURCE, bugs(mistakes or {}))


run_cell_part = grading.run_cell_part


# --- the notebook's structure -------------------------------------------------------------------

def test_source_notebook_structure():
    notebook = grading.check_source_structure(SOURCE, TEST_POINTS, WRITTEN_POINTS, checks.PARTS)
    tests = [nbgrader_meta(c)["grade_id"] for c in notebook.cells if c.cell_type == "code" and nbgrader_meta(c).get("grade")]
    assert tests == list(TEST_POINTS), "the parts should come in the order of the points table"
    assert list(grading.answer_sources(SOURCE)) == list(ANSWER_OF.values())
    for part, points in zip(checks.PARTS, TEST_POINTS.values()):
        assert f"| ({part.label}) | `{part.title}` | {points} |" in notebook.cells[0].source
    # the conventions the tests rely on are stated to the students
    text = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    for promise in ("the **sum** of the two means", "finite and correct for logits of $\\pm 100$", "label **real (1)**",
                    "**two separate calls**", "`fake.detach()`", "right before each `backward()`",
                    "`(B, 1, 1, 1)`", "one **norm** per image", "`create_graph=True`",
                    "in the dtype of the tensors it is given", "with **one** call of the generator",
                    "Use the two optimizers passed in", "each step steps only its own, once",
                    "the penalty trains the critic only"):
        assert promise in text, f"the notebook no longer says {promise!r}"
    # no cell imports a package function under a name the student defines (self_check reads globals())
    for cell in notebook.cells:
        for line in cell.source.splitlines() if cell.cell_type == "code" else ():
            if line.startswith(("from ", "import ")):
                imported = re.sub(r"\b\w+ as ", "", line.split(" import ", 1)[-1])  # the names the line binds
                assert not any(re.search(rf"\b{part.title}\b", imported) for part in checks.PARTS), line


def test_release_has_no_solutions_or_hidden_tests():
    stubs = grading.check_release(RELEASE, len(ANSWER_OF), len(WRITTEN_POINTS))
    assert [c.source for c in stubs if c.cell_type == "markdown"] == ["YOUR ANSWER HERE"]
    release_text = "\n".join(cell.source for cell in read(RELEASE).cells)
    # what the solution knows does not leak: no answer line appears in the release
    for source in grading.answer_sources(SOURCE).values():
        for line in source.splitlines():
            if line.strip().startswith(("real_loss =", "fake_loss =", "fake =", "real_logits =", "fake_logits =",
                                        "d_loss", "g_loss", "optimizer_", "x_hat =", "scores =", "(gradients,) =",
                                        "norms =", "return")):
                assert line not in release_text, line


# --- the visible checks and hidden tests (fast) -----------------------------------------------------

def test_visible_checks_pass_for_reference_answers():
    namespace = answers_namespace()
    for part in checks.PARTS:
        part.check(*(namespace[name] for name in part.names))
    for grade_id, visible in grading.visible_tests(SOURCE).items():
        run_cell_part(visible, namespace, f"<ps3 {grade_id} visible>")


def test_hidden_tests_pass_for_reference_answers():
    namespace = answers_namespace()
    for grade_id, hidden in grading.hidden_tests(SOURCE).items():
        run_cell_part(hidden, namespace, f"<ps3 {grade_id}>")


@pytest.mark.parametrize(("part", "name"), [(part, name) for part, mistakes in MISTAKES.items() for name in mistakes])
def test_hidden_tests_catch_each_mistake(part, name):
    """Every mistake fails the hidden tests of its part. (They call only that part's answer, so the
    other parts keep their points: the autograde test below shows it for five submissions.)"""
    namespace = answers_namespace({part: name})
    (hidden,) = [hidden for grade_id, hidden in grading.hidden_tests(SOURCE).items() if ANSWER_OF[grade_id] == part]
    with pytest.raises(Exception):  # noqa: B017 (an assertion or a crash: either costs the points)
        run_cell_part(hidden, namespace, f"<ps3 {part} tests>")


@pytest.mark.parametrize(("part", "name"), list(HIDDEN_ONLY.items()))
def test_some_mistakes_pass_the_visible_checks(part, name):
    """As in ps4: in each part one mistake gets past everything the student sees."""
    namespace = answers_namespace({part: name})
    (visible,) = [text for grade_id, text in grading.visible_tests(SOURCE).items() if ANSWER_OF[grade_id] == part]
    run_cell_part(visible, namespace, f"<ps3 {part} visible>")
    (check,) = [p.check for p in checks.PARTS if p.names == (part,)]
    check(namespace[part])


@pytest.mark.parametrize(("part", "name", "message"), [
    ("discriminator_loss", "swapped_labels", "labels swapped: real images should be labelled 1"),
    ("discriminator_loss", "sum", "summed over the batch"),
    ("discriminator_loss", "averaged", "the two terms are averaged"),
    ("discriminator_loss", "double_sigmoid", "do not apply torch.sigmoid first"),
    ("generator_loss", "minimax", "this is the minimax loss"),
    ("generator_loss", "swapped_labels", "labels swapped: the generator wants its fakes called real"),
    ("generator_loss", "sum", "summed over the batch"),
    ("train_step", "no_detach", "score fake.detach\\(\\) in D's step"),
    ("train_step", "no_detach_crash", "score fake.detach\\(\\) in D's step"),
    ("train_step", "no_zero_grad_d", "D's gradients accumulate across calls"),
    ("train_step", "no_zero_grad_g", "G's gradients accumulate across calls"),
    ("train_step", "swapped_optimizers", "D's parameters did not change"),
    ("train_step", "d_steps_twice", "G's step must not step optimizer_d"),
    ("train_step", "returns_tensors", "as Python floats"),
    ("train_step", "concatenated", "two separate calls of D"),
    ("gradient_penalty", "squared_norm", "uses the squared norm"),
    ("gradient_penalty", "whole_batch_norm", "one norm over the whole batch"),
    ("gradient_penalty", "no_create_graph", "create_graph=True"),
    ("gradient_penalty", "no_requires_grad", "x_hat must require gradients"),
    ("gradient_penalty", "sum", "summed over the batch"),
])
def test_visible_checks_explain_mistakes(part, name, message):
    namespace = answers_namespace({part: name})
    (check,) = [p.check for p in checks.PARTS if p.names == (part,)]
    with pytest.raises(AssertionError, match=message):
        check(namespace[part])


@pytest.mark.parametrize("part", list(GUARDED_PARTS))
def test_hidden_tests_give_no_points_for_calling_the_package(part):
    """An answer that hands its part to the package's implementation passes every numerical check; the
    hidden tests fail it with UsesCourseImplementation (an AssertionError, so nbgrader scores the cell 0),
    whose message names the part and says why. The answer to (c) still uses the package's losses freely."""
    assert set(GUARDED_PARTS) == set(CALLS_PACKAGE) == set(ANSWER_OF.values())
    namespace = answers_namespace({part: "calls_package"})
    (hidden,) = [hidden for grade_id, hidden in grading.hidden_tests(SOURCE).items() if ANSWER_OF[grade_id] == part]
    with pytest.raises(UsesCourseImplementation) as caught:
        run_cell_part(hidden, namespace, f"<ps3 {part} tests>")
    message = str(caught.value)
    assert f"Part {GUARDED_PARTS[part]} calls `" in message, message
    assert "no points" in message and "yourself" in message, message


def test_references_equal_the_package():
    """The checks' references are coursekit.models.gan's train_step and gradient_penalty."""
    from coursekit.models.gan import GANConfig, gradient_penalty, optimizers, train_step

    gan = checks.tiny_gan(seed=3)
    reference = copy.deepcopy(gan)
    optimizer_g, optimizer_d = optimizers(gan)
    reference_g, reference_d = optimizers(reference)
    for call in range(2):
        real = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(call)) * 2 - 1
        z = torch.randn(5, checks.TINY.latent_dim, generator=torch.Generator().manual_seed(10 + call))
        losses = checks.reference_train_step(gan.generator, gan.discriminator, optimizer_g, optimizer_d, real, z)
        expected = train_step(reference, real, reference_g, reference_d, generator=torch.Generator().manual_seed(10 + call))
        assert losses == pytest.approx((expected["d_loss"], expected["g_loss"]), rel=1e-6)
        for p, q in zip(gan.parameters(), reference.parameters()):
            assert torch.allclose(p, q, rtol=1e-5, atol=1e-7)
    # tiny_gan leaves the global random state alone and is reproducible
    state = torch.random.get_rng_state()
    assert all(torch.equal(p, q) for p, q in zip(checks.tiny_gan(seed=3).parameters(), checks.tiny_gan(seed=3).parameters()))
    assert torch.equal(torch.random.get_rng_state(), state)

    critic = checks.tiny_gan(seed=4, config=GANConfig(latent_dim=8, discriminator_channels=8, loss="wgan-gp")).discriminator
    real, fake = torch.rand(4, 1, 28, 28) * 2 - 1, torch.rand(4, 1, 28, 28) * 2 - 1
    epsilon = torch.rand(4, 1, 1, 1, generator=torch.Generator().manual_seed(5))
    expected = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(checks.reference_gradient_penalty(critic, real, fake, epsilon), expected, rtol=1e-4)
    # the linear critic's penalty is (||w|| - 1)^2 wherever it is taken
    weight = torch.randn(1, 1, 4, 4)
    penalty = gradient_penalty(checks.LinearCritic(weight), torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4))
    assert penalty.item() == pytest.approx(((weight.norm() - 1) ** 2).item(), rel=1e-5)


def test_backward_passes_counts_what_reaches_a_module():
    gan = checks.tiny_gan(seed=6)
    fake = gan.generator(torch.randn(3, checks.TINY.latent_dim))
    with checks.BackwardPasses(gan.generator) as passes:
        gan.discriminator(fake.detach()).sum().backward()
    assert passes.count == 0
    with checks.BackwardPasses(gan.generator) as passes:
        gan.discriminator(fake).sum().backward(retain_graph=True)
        gan.discriminator(fake).sum().backward()
    assert passes.count == 2
    assert all(not p._backward_hooks for p in gan.generator.parameters()), "the hooks are removed on exit"


def test_call_counts_counts_forward_calls_and_optimizer_steps():
    gan = checks.tiny_gan(seed=7)
    optimizer_g, optimizer_d = (torch.optim.SGD(gan.generator.parameters(), lr=0.1),
                                torch.optim.SGD(gan.discriminator.parameters(), lr=0.1))
    z = torch.randn(3, checks.TINY.latent_dim)
    with checks.CallCounts(generator=gan.generator, discriminator=gan.discriminator, optimizer_d=optimizer_d,
                           optimizer_g=optimizer_g) as calls:
        fake = gan.generator(z)
        gan.discriminator(fake).sum().backward()
        gan.discriminator(fake.detach())
        optimizer_d.step()
    assert (calls["generator"], calls["discriminator"], calls["optimizer_d"], calls["optimizer_g"]) == (1, 2, 1, 0)
    gan.generator(z)
    optimizer_d.step()
    assert calls["generator"] == 1 and calls["optimizer_d"] == 1, "nothing is counted after the block"
    assert not gan.generator._forward_hooks and not optimizer_d._optimizer_step_post_hooks, "the hooks are removed on exit"
    with pytest.raises(TypeError, match="a module or an optimizer"):
        checks.CallCounts(real=torch.zeros(1))


def test_self_check_table(capsys):
    results = checks.self_check({})
    assert [status for _, status, _ in results] == ["not attempted"] * len(checks.PARTS)

    def not_done(*args, **kwargs):
        raise NotImplementedError()

    def crashes(*args, **kwargs):
        raise RuntimeError("boom")

    namespace = answers_namespace({"generator_loss": "minimax"})
    del namespace["gradient_penalty"]  # its cell was never run
    namespace["discriminator_loss"] = crashes
    namespace["train_step"] = not_done
    status = {part.label: status for part, status, _ in checks.run_checks(namespace)}
    assert status == {"a": "FAIL", "b": "FAIL", "c": "not attempted", "d": "not attempted"}
    capsys.readouterr()
    checks.self_check(answers_namespace({"train_step": "no_detach"}))
    table = capsys.readouterr().out
    for expected in ("(a) discriminator_loss", "pass", "fake.detach()", "8 of 12"):
        assert expected in table, f"{expected!r} missing from the table:\n{table}"
    checks.self_check(namespace)
    table = capsys.readouterr().out
    for expected in ("RuntimeError: boom", "gradient_penalty not defined", "NotImplementedError", "0 of 12", "minimax"):
        assert expected in table, f"{expected!r} missing from the table:\n{table}"


# --- autograding (slow) ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A throwaway course directory with ps3's source and the regenerated release."""
    return make_course(tmp_path_factory.mktemp("course"), "ps3")


def filled_in_release(mistakes: dict[str, str]) -> nbformat.NotebookNode:
    return grading.filled_in_release(SOURCE, RELEASE, bugs(mistakes), WRITTEN_ANSWER)


@pytest.mark.slow
def test_release_is_regenerated_identically(course):
    grading.assert_release_regenerated(course, "ps3", RELEASE)


@pytest.mark.slow
def test_autograde_correct_blank_and_buggy(course):
    buggy = {student: filled_in_release(mistakes) for student, mistakes in BUGGY_SUBMISSIONS.items()}
    grading.assert_grading_round_trip(course, "ps3", SOURCE, RELEASE, buggy, TEST_POINTS, BUGGY_SCORES, "answer_saturation")
