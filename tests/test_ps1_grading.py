"""Exercise set ps1 (autoencoders): the notebook's structure, its checks, and autograding.

The fast tests read ``solutions/ps1/ps1.ipynb`` (the nbgrader source), run its answers through the
visible checks of ``coursekit.exercises.ps1``, and run the hidden tests of each part against the
answer with plausible mistakes patched in: every mistake must cost that part its points, and some
get past the visible test cells so that only the hidden tests see them. The slow tests build a
throwaway course directory, regenerate the student release there (it must equal the committed
``exercises/ps1/ps1.ipynb``) and autograde the solution, the untouched release, and three
submissions with mistakes. They need the shipped checkpoints ``ae-latent16`` and ``ae-anomaly``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch

import grading
from grading import ROOT, make_course, nbgrader_meta

from coursekit.exercises import ps1 as checks
from coursekit.exercises.originality import UsesCourseImplementation

SOURCE = ROOT / "solutions" / "ps1" / "ps1.ipynb"
RELEASE = ROOT / "exercises" / "ps1" / "ps1.ipynb"


# grade_id of each autograded tests cell -> points
TEST_POINTS = {
    "test_encoder_decoder": 3,
    "test_reconstruction_loss": 2,
    "test_anomaly_scores": 2,
    "test_choose_threshold": 3,
    "test_roc_auc": 2,
}
WRITTEN_POINTS = {"answer_random_codes": 3}
ANSWER_OF = {  # test cell -> answer cell
    "test_encoder_decoder": "encoder_decoder",
    "test_reconstruction_loss": "reconstruction_loss",
    "test_anomaly_scores": "anomaly_scores",
    "test_choose_threshold": "choose_threshold",
    "test_roc_auc": "roc_auc",
}

def solution_body(grade_id: str) -> str:
    """The lines of a reference answer between its first `### BEGIN SOLUTION` and `### END SOLUTION` markers."""
    (cell,) = [cell for cell in grading.read(SOURCE).cells if nbgrader_meta(cell).get("grade_id") == grade_id]
    body = cell.source.split("### BEGIN SOLUTION\n", 1)[1].split("### END SOLUTION", 1)[0]
    return body[:body.rfind("\n") + 1]


# Answers that hand their part to an implementation of it that the course (or, for (e), scikit-learn)
# already has. Every number they give is right; the hidden tests fail them with UsesCourseImplementation.
# (d) has none: coursekit has no threshold function, and torch.quantile is what the reference answer uses.
PACKAGE_ENCODER_DECODER = '''from torch import nn

from coursekit.models.autoencoder import Autoencoder, AutoencoderConfig


class Encoder(nn.Module):
    def __init__(self, latent_dim: int):
        super().__init__()
        self.autoencoder = Autoencoder(AutoencoderConfig(latent_dim=latent_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode(x)


class Decoder(nn.Module):
    def __init__(self, latent_dim: int):
        super().__init__()
        self.autoencoder = Autoencoder(AutoencoderConfig(latent_dim=latent_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(z)
'''
CALLS_PACKAGE = {
    "encoder_decoder": (grading.answer_sources(SOURCE)["encoder_decoder"], PACKAGE_ENCODER_DECODER),
    "reconstruction_loss": (solution_body("reconstruction_loss"),
                            "    from coursekit.exercises.ps1 import _per_image_mse\n"
                            "    return _per_image_mse(x, x_hat)\n"),
    "anomaly_scores": (solution_body("anomaly_scores"),
                       "    from coursekit.models.autoencoder import reconstruction_error\n"
                       "    return reconstruction_error(model, images, batch_size)\n"),
    "roc_auc": (solution_body("roc_auc"),
                "    from sklearn.metrics import roc_auc_score\n"
                "    return float(roc_auc_score(torch.as_tensor(is_anomaly).numpy(), torch.as_tensor(scores).numpy()))\n"),
}
# each part with such an answer -> the part as the hidden tests name it in the feedback
GUARDED_PARTS = {"encoder_decoder": "(a) Encoder and Decoder", "reconstruction_loss": "(b) reconstruction_loss",
                 "anomaly_scores": "(c) anomaly_scores", "roc_auc": "(e) roc_auc"}


# Plausible mistakes, as (correct text, wrong text) in the answer cell with that grade_id. Every one
# must fail the hidden tests of its part (fast test below); some are also autograded. Four kinds of
# "nearly right" answers keep every shape right and need checks of their own: batch mixing (an
# example's output depends on the others in its batch), dtype leaks, graph leaks or extra network
# calls, and ignored arguments.
MISTAKES = {
    "encoder_decoder": {
        # batch mixing: pixels mapped to [0, 1] with the batch's minimum and maximum instead of a sigmoid
        "minmax_over_batch": ("return torch.sigmoid(self.deconvs(h))",
                              "logits = self.deconvs(h)  # (B, 1, 28, 28)\n"
                              "        return (logits - logits.min()) / (logits.max() - logits.min())"),
        # batch mixing: features x batch, then transposed (each row gathers strided numbers of every image)
        "flatten_transposed": ("self.to_latent(h.flatten(1))", "self.to_latent(h.reshape(-1, len(h)).T)"),
        # batch mixing: a channels-last view, then permuted back (each image takes numbers of the others)
        "view_channels_last": ("h = h.view(-1, 64, 7, 7)", "h = h.view(64, 7, 7, -1).permute(3, 0, 1, 2)"),
    },
    "reconstruction_loss": {
        # sums the squared error over the pixels: 784 times too large
        "sum": ("return squared_error.flatten(1).mean(dim=1)", "return squared_error.flatten(1).sum(dim=1)"),
        # batch mixing: a (pixels, batch) reshape averages strided numbers of every image
        "batch_transposed": ("squared_error.flatten(1).mean(dim=1)", "squared_error.reshape(-1, len(x)).mean(dim=0)"),
        # dtype leak: float64 losses for float32 images
        "float64": ("squared_error.flatten(1).mean(dim=1)", "squared_error.flatten(1).double().mean(dim=1)"),
    },
    "anomaly_scores": {
        # batch mixing, as in (b)
        "batch_transposed": ("((x_hat - x) ** 2).flatten(1).mean(dim=1)", "((x_hat - x) ** 2).reshape(-1, len(x)).mean(dim=0)"),
        # dtype leak: float64 scores
        "float64": (".flatten(1).mean(dim=1).cpu()", ".flatten(1).double().mean(dim=1).cpu()"),
        # graph leak: the model runs with gradients on, and the scores are detached afterwards
        "detach_not_no_grad": ("    with torch.no_grad():\n"
                               "        for start in range(0, len(images), batch_size):\n"
                               "            x = images[start:start + batch_size].to(model_device)  # (b, 1, 28, 28)\n"
                               "            x_hat = model(x)\n"
                               "            scores.append(((x_hat - x) ** 2).flatten(1).mean(dim=1).cpu())  # (b,)\n",
                               "    for start in range(0, len(images), batch_size):\n"
                               "        x = images[start:start + batch_size].to(model_device)  # (b, 1, 28, 28)\n"
                               "        x_hat = model(x)\n"
                               "        scores.append(((x_hat - x) ** 2).flatten(1).mean(dim=1).detach().cpu())  # (b,)\n"),
        # one network call too many: the model runs twice on every batch
        "model_twice": ("((x_hat - x) ** 2)", "((model(x) - x) ** 2)"),
        # ignored argument: always batches of 500
        "ignores_batch_size": ("for start in range(0, len(images), batch_size):\n"
                               "            x = images[start:start + batch_size]",
                               "for start in range(0, len(images), 500):\n"
                               "            x = images[start:start + 500]"),
    },
    "choose_threshold": {
        # the threshold in the wrong tail: flags 95% of normal images
        "wrong_tail": ("1.0 - false_positive_rate", "false_positive_rate"),
    },
    "roc_auc": {
        # ordinal ranks instead of average ranks: right without ties, wrong with them
        "ordinal_ranks": ("ranks = torch.from_numpy(rankdata(scores.numpy()))",
                          "ranks = torch.argsort(torch.argsort(scores)).double() + 1"),
    },
}
for _part, _mistake in CALLS_PACKAGE.items():
    MISTAKES[_part]["calls_package"] = _mistake

# The mistakes that pass the visible test cell and its check: only the hidden tests see them.
HIDDEN_ONLY = [
    ("encoder_decoder", "minmax_over_batch"),
    ("encoder_decoder", "flatten_transposed"),
    ("encoder_decoder", "view_channels_last"),
    ("anomaly_scores", "detach_not_no_grad"),
    ("anomaly_scores", "model_twice"),
    ("anomaly_scores", "ignores_batch_size"),
    ("roc_auc", "ordinal_ranks"),
    *((part, "calls_package") for part in CALLS_PACKAGE),
]

# The mistakes of the first autograded submission (also used by tests/test_grade_workflow.py), caught
# by the visible checks (the first two) and by the hidden tests only (the tied scores of roc_auc).
BUGS = grading.pick_bugs(MISTAKES, {"reconstruction_loss": "sum", "choose_threshold": "wrong_tail", "roc_auc": "ordinal_ranks"})
# The autograded submissions with mistakes (answer cell -> mistake), and the score each should get.
# The last two got full marks from the hidden tests before they checked batch mixing and batch_size.
BUGGY_SUBMISSIONS = {
    "buggy": {"reconstruction_loss": "sum", "choose_threshold": "wrong_tail", "roc_auc": "ordinal_ranks"},
    "buggy_minmax_over_batch": {"encoder_decoder": "minmax_over_batch"},
    "buggy_ignores_batch_size": {"anomaly_scores": "ignores_batch_size"},
}
BUGGY_SCORES = grading.buggy_scores(BUGGY_SUBMISSIONS, TEST_POINTS, ANSWER_OF)
WRITTEN_ANSWER = "Codes of real digits sit in a small region; random points land elsewhere."


def bugs(mistakes: dict[str, str]) -> dict[str, tuple[str, str]]:
    return grading.pick_bugs(MISTAKES, mistakes)


def answer_sources(bugs: dict[str, tuple[str, str]] | None = None) -> dict[str, str]:
    """grade_id -> source of each autograded answer cell of the solution, markers removed, bugs applied."""
    return grading.answer_sources(SOURCE, bugs)


def answers_namespace(bugs: dict[str, tuple[str, str]] | None = None, namespace: dict | None = None) -> dict:
    """Run the answer cells (only those) in a fresh namespace, as a notebook would."""
    return grading.answers_namespace(SOURCE, bugs, namespace)


run_cell_part = grading.run_cell_part


def tiny_autoencoder():
    from coursekit.models.autoencoder import Autoencoder, AutoencoderConfig

    torch.manual_seed(0)
    return Autoencoder(AutoencoderConfig(latent_dim=4)).eval()


@pytest.fixture(scope="module")
def notebook_globals() -> dict:
    """The globals that the test cells use besides the answers: the test digits and the shipped anomaly model."""
    from coursekit.checkpoint import load_checkpoint, read_record
    from coursekit.data import load_mnist

    test_set = load_mnist("test", scale="unit", source="bundled")
    held_out_digit = read_record("ae-anomaly")["metrics"]["held_out_digit"]
    return {"images": test_set.images, "labels": test_set.labels, "anomaly_model": load_checkpoint("ae-anomaly", device="cpu"),
            "is_anomaly": test_set.labels == held_out_digit}


def part_tests(part: str, tests: dict[str, str]) -> str:
    (text,) = [text for grade_id, text in tests.items() if ANSWER_OF[grade_id] == part]
    return text


# --- the notebook's structure -------------------------------------------------------------------

def test_source_notebook_structure():
    notebook = grading.check_source_structure(SOURCE, TEST_POINTS, WRITTEN_POINTS, checks.PARTS)
    tests = [nbgrader_meta(c)["grade_id"] for c in notebook.cells if c.cell_type == "code" and nbgrader_meta(c).get("grade")]
    assert tests == list(TEST_POINTS), "the parts should come in the order of the points table"
    assert list(answer_sources()) == list(ANSWER_OF.values())
    # the promises the hidden tests rely on are stated to the students
    text = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    for promise in ("depend on that image alone", "in the dtype of the inputs", "a float32 tensor of shape `(N,)`",
                    "running the model\n  once on each batch", "with torch.no_grad():"):
        assert promise in text, f"the notebook no longer says {promise!r}"


def test_release_has_no_solutions_or_hidden_tests():
    grading.check_release(RELEASE, len(answer_sources()), len(WRITTEN_POINTS))


# --- the visible checks and hidden tests (fast) -----------------------------------------------------

def test_visible_checks_pass_for_reference_answers(notebook_globals):
    namespace = answers_namespace(namespace=dict(notebook_globals))
    checks.check_autoencoder_shapes(namespace["Encoder"], namespace["Decoder"])
    checks.check_reconstruction_loss(namespace["reconstruction_loss"])
    checks.check_anomaly_scores(namespace["anomaly_scores"], tiny_autoencoder(), torch.rand(9, 1, 28, 28))
    checks.check_choose_threshold(namespace["choose_threshold"])
    checks.check_roc_auc(namespace["roc_auc"])
    for grade_id, visible in grading.visible_tests(SOURCE).items():
        run_cell_part(visible, namespace, f"<ps1 {grade_id} visible>")


def test_hidden_tests_pass_for_reference_answers(notebook_globals):
    namespace = answers_namespace(namespace=dict(notebook_globals))
    for grade_id, hidden in grading.hidden_tests(SOURCE).items():
        run_cell_part(hidden, namespace, f"<ps1 {grade_id}>")
    assert not namespace["anomaly_model"].training and not namespace["anomaly_model"]._forward_pre_hooks


@pytest.mark.parametrize(("part", "name"), [(part, name) for part, mistakes in MISTAKES.items() for name in mistakes])
def test_hidden_tests_catch_each_mistake(part, name, notebook_globals):
    """Every mistake fails the hidden tests of its part. (They call only that part's answer, so the
    other parts keep their points: the autograde test below shows it for some of these.)"""
    namespace = answers_namespace(bugs({part: name}), dict(notebook_globals))
    with pytest.raises(Exception):  # noqa: B017 (an assertion or a crash: either costs the points)
        run_cell_part(part_tests(part, grading.hidden_tests(SOURCE)), namespace, f"<ps1 {part} tests>")


@pytest.mark.parametrize(("part", "name"), HIDDEN_ONLY)
def test_some_mistakes_pass_the_visible_checks(part, name, notebook_globals):
    """These mistakes get past everything the student sees; only the hidden tests catch them."""
    namespace = answers_namespace(bugs({part: name}), dict(notebook_globals))
    run_cell_part(part_tests(part, grading.visible_tests(SOURCE)), namespace, f"<ps1 {part} visible>")
    check = checks.PARTS[list(ANSWER_OF.values()).index(part)]
    check.check(*(namespace[name] for name in check.names))


@pytest.mark.parametrize(("part", "name"), [(part, name) for part, mistakes in MISTAKES.items() for name in mistakes
                                            if (part, name) not in HIDDEN_ONLY])
def test_visible_test_cells_catch_the_other_mistakes(part, name, notebook_globals):
    namespace = answers_namespace(bugs({part: name}), dict(notebook_globals))
    with pytest.raises(Exception):  # noqa: B017 (an assertion or a crash)
        run_cell_part(part_tests(part, grading.visible_tests(SOURCE)), namespace, f"<ps1 {part} visible>")


@pytest.mark.parametrize(("part", "name", "message"), [
    ("encoder_decoder", "minmax_over_batch", "a code's image depends on the other codes in its batch"),
    ("encoder_decoder", "flatten_transposed", "an image's code depends on the other images in its batch"),
    ("encoder_decoder", "view_channels_last", "a code's image depends on the other codes in its batch"),
    ("reconstruction_loss", "batch_transposed", "an image's loss depends on the other images in its batch"),
    ("reconstruction_loss", "float64", "for torch.float32 images the loss should be torch.float32 too"),
    ("anomaly_scores", "batch_transposed", "an image's score depends on the other images in its batch"),
    ("anomaly_scores", "float64", "the scores should be float32"),
    ("anomaly_scores", "detach_not_no_grad", "the model ran with gradients enabled"),
    ("anomaly_scores", "model_twice", "the model should see each of the 130 images once, but it saw 260"),
    ("anomaly_scores", "ignores_batch_size", "with batch_size=64 it should go through the 130 images in 3 batches"),
])
def test_hidden_tests_explain_mistakes(part, name, message, notebook_globals):
    """The new hidden checks come first in their cells, so the grader's feedback names the mistake."""
    namespace = answers_namespace(bugs({part: name}), dict(notebook_globals))
    with pytest.raises(AssertionError, match=message):
        run_cell_part(part_tests(part, grading.hidden_tests(SOURCE)), namespace, f"<ps1 {part} tests>")


def test_every_guarded_part_has_an_answer_that_calls_the_package():
    assert set(GUARDED_PARTS) == set(CALLS_PACKAGE) == set(ANSWER_OF.values()) - {"choose_threshold"}


@pytest.mark.parametrize("part", list(GUARDED_PARTS))
def test_hidden_tests_give_no_points_for_calling_the_package(part, notebook_globals):
    """An answer that hands its part to the package's implementation passes every numerical check; the
    hidden tests fail it with UsesCourseImplementation (an AssertionError, so nbgrader scores the cell 0),
    whose message names the part and says why."""
    namespace = answers_namespace(bugs({part: "calls_package"}), dict(notebook_globals))
    with pytest.raises(UsesCourseImplementation) as caught:
        run_cell_part(part_tests(part, grading.hidden_tests(SOURCE)), namespace, f"<ps1 {part} tests>")
    message = str(caught.value)
    assert f"Part {GUARDED_PARTS[part]} calls `" in message, message
    assert "no points" in message and "yourself" in message, message


def test_visible_checks_fail_for_buggy_answers():
    buggy = answers_namespace(BUGS)
    with pytest.raises(AssertionError, match="784 times too large"):
        checks.check_reconstruction_loss(buggy["reconstruction_loss"])
    with pytest.raises(AssertionError, match="wrong tail"):
        checks.check_choose_threshold(buggy["choose_threshold"])
    # Ordinal ranks agree with average ranks when no scores tie: only the hidden tests see this bug.
    checks.check_roc_auc(buggy["roc_auc"])

    def batch_mean(x, x_hat):
        return ((x_hat - x) ** 2).mean()

    with pytest.raises(AssertionError, match="one number per image"):
        checks.check_reconstruction_loss(batch_mean)

    def tracks_gradients(model, images):
        return ((model(images) - images) ** 2).flatten(1).mean(dim=1)

    with pytest.raises(AssertionError, match="no_grad"):
        checks.check_anomaly_scores(tracks_gradients, tiny_autoencoder(), torch.rand(5, 1, 28, 28))

    from torch import nn

    class NoSigmoidDecoder(nn.Module):
        def __init__(self, latent_dim):
            super().__init__()
            self.linear = nn.Linear(latent_dim, 784)

        def forward(self, z):
            return 10 * self.linear(z).view(-1, 1, 28, 28)

    with pytest.raises(AssertionError, match="sigmoid"):
        checks.check_autoencoder_shapes(buggy["Encoder"], NoSigmoidDecoder)


def test_self_check_table(capsys):
    results = checks.self_check({})
    assert [status for _, status, _ in results] == ["not attempted"] * len(checks.PARTS)

    def not_done(*args, **kwargs):
        raise NotImplementedError()

    def crashes(*args, **kwargs):
        raise RuntimeError("boom")

    namespace = answers_namespace(BUGS)
    del namespace["anomaly_scores"]  # its cell was never run
    namespace["reconstruction_loss"] = crashes
    namespace["choose_threshold"] = not_done
    status = {part.label: status for part, status, _ in checks.run_checks(namespace)}
    assert status == {"a": "pass", "b": "FAIL", "c": "not attempted", "d": "not attempted", "e": "pass"}
    capsys.readouterr()
    checks.self_check(namespace)
    table = capsys.readouterr().out
    for expected in ("RuntimeError: boom", "anomaly_scores not defined", "NotImplementedError", "5 of 12"):
        assert expected in table, f"{expected!r} missing from the table:\n{table}"


# --- autograding (slow) ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A throwaway course directory with ps1's source and the regenerated release."""
    return make_course(tmp_path_factory.mktemp("course"), "ps1")


def filled_in_release(bugs: dict[str, tuple[str, str]]) -> nbformat.NotebookNode:
    """The release with every answer cell filled in from the solution, some with ``bugs``."""
    return grading.filled_in_release(SOURCE, RELEASE, bugs, WRITTEN_ANSWER)


@pytest.mark.slow
def test_release_is_regenerated_identically(course):
    grading.assert_release_regenerated(course, "ps1", RELEASE)


@pytest.mark.slow
def test_autograde_correct_blank_and_buggy(course):
    from coursekit.checkpoint import shipped_checkpoints

    missing = {"ae-latent16", "ae-anomaly"} - set(shipped_checkpoints())
    assert not missing, f"ps1 needs the shipped checkpoints {sorted(missing)}"
    # the submission made from BUGS keeps its score (tests/test_grade_workflow.py counts on it)
    assert BUGGY_SCORES["buggy"] == {"test_encoder_decoder": 3, "test_reconstruction_loss": 0, "test_anomaly_scores": 2,
                                     "test_choose_threshold": 0, "test_roc_auc": 0}
    buggy = {student: filled_in_release(bugs(mistakes)) for student, mistakes in BUGGY_SUBMISSIONS.items()}
    grading.assert_grading_round_trip(course, "ps1", SOURCE, RELEASE, buggy, TEST_POINTS, BUGGY_SCORES,
                                      "answer_random_codes")
