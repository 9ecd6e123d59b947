"""Exercise set ps1 (autoencoders): the notebook's structure, its visible checks, and autograding.

The fast tests read ``solutions/ps1/ps1.ipynb`` (the nbgrader source) and run its answers through
``coursekit.exercises.ps1``. The slow tests build a throwaway course directory, regenerate the
student release there (it must equal the committed ``exercises/ps1/ps1.ipynb``) and autograde
three submissions with nbgrader: the solution, the untouched release, and a release filled in with
some plausible mistakes. They need the shipped checkpoints ``ae-latent16`` and ``ae-anomaly``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch

import grading
from grading import ROOT, make_course

from coursekit.exercises import ps1 as checks

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

# Plausible mistakes, as (correct line, wrong line) in the answer cell with that grade_id.
BUGS = {
    # sums the squared error over the pixels: 784 times too large (caught by the visible check)
    "reconstruction_loss": ("return squared_error.flatten(1).mean(dim=1)",
                            "return squared_error.flatten(1).sum(dim=1)"),
    # the threshold in the wrong tail: flags 95% of normal images (caught by the visible check)
    "choose_threshold": ("1.0 - false_positive_rate", "false_positive_rate"),
    # ordinal ranks instead of average ranks: right without ties, wrong with them (hidden tests only)
    "roc_auc": ("ranks = torch.from_numpy(rankdata(scores.numpy()))",
                "ranks = torch.argsort(torch.argsort(scores)).double() + 1"),
}
BUGGY_SCORES = {
    "test_encoder_decoder": 3,
    "test_reconstruction_loss": 0,
    "test_anomaly_scores": 2,
    "test_choose_threshold": 0,
    "test_roc_auc": 0,
}
def answer_sources(bugs: dict[str, tuple[str, str]] | None = None) -> dict[str, str]:
    """grade_id -> source of each autograded answer cell of the solution, markers removed, bugs applied."""
    return grading.answer_sources(SOURCE, bugs)


def answers_namespace(bugs: dict[str, tuple[str, str]] | None = None) -> dict:
    """Run the answer cells (only those) in a fresh namespace, as a notebook would."""
    return grading.answers_namespace(SOURCE, bugs)


def tiny_autoencoder():
    from coursekit.models.autoencoder import Autoencoder, AutoencoderConfig

    torch.manual_seed(0)
    return Autoencoder(AutoencoderConfig(latent_dim=4)).eval()


# --- the notebook's structure -------------------------------------------------------------------

def test_source_notebook_structure():
    grading.check_source_structure(SOURCE, TEST_POINTS, WRITTEN_POINTS, checks.PARTS)


def test_release_has_no_solutions_or_hidden_tests():
    grading.check_release(RELEASE, len(answer_sources()), len(WRITTEN_POINTS))


# --- the visible checks (fast) -------------------------------------------------------------------

def test_visible_checks_pass_for_reference_answers():
    namespace = answers_namespace()
    checks.check_autoencoder_shapes(namespace["Encoder"], namespace["Decoder"])
    checks.check_reconstruction_loss(namespace["reconstruction_loss"])
    checks.check_anomaly_scores(namespace["anomaly_scores"], tiny_autoencoder(), torch.rand(9, 1, 28, 28))
    checks.check_choose_threshold(namespace["choose_threshold"])
    checks.check_roc_auc(namespace["roc_auc"])


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
    return grading.filled_in_release(SOURCE, RELEASE, bugs,
                                     "Codes of real digits sit in a small region; random points land elsewhere.")


@pytest.mark.slow
def test_release_is_regenerated_identically(course):
    grading.assert_release_regenerated(course, "ps1", RELEASE)


@pytest.mark.slow
def test_autograde_correct_blank_and_buggy(course):
    from coursekit.checkpoint import shipped_checkpoints

    missing = {"ae-latent16", "ae-anomaly"} - set(shipped_checkpoints())
    assert not missing, f"ps1 needs the shipped checkpoints {sorted(missing)}"
    grading.assert_grading_round_trip(course, "ps1", SOURCE, RELEASE, {"buggy": filled_in_release(BUGS)}, TEST_POINTS,
                                      {"buggy": BUGGY_SCORES}, "answer_random_codes")
