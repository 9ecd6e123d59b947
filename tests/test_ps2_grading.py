"""Exercise set ps2 (variational autoencoders): the notebook's structure, its checks, and autograding.

The fast tests read ``solutions/ps2/ps2.ipynb`` (the nbgrader source), run its answers through the
visible checks of ``coursekit.exercises.ps2``, and run the hidden tests of each part against the
answer with plausible mistakes patched in: every mistake must cost that part its points. The slow
tests build a throwaway course directory, regenerate the student release there (it must equal the
committed ``exercises/ps2/ps2.ipynb``) and autograde the solution, the untouched release, and four
submissions with one mistake each. They need the shipped checkpoint ``vae``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch

import grading
from grading import ROOT, make_course, nbgrader_meta, read

from coursekit.exercises import ps2 as checks

SOURCE = ROOT / "solutions" / "ps2" / "ps2.ipynb"
RELEASE = ROOT / "exercises" / "ps2" / "ps2.ipynb"

# grade_id of each autograded tests cell -> points
TEST_POINTS = {
    "test_reparameterize": 2,
    "test_gaussian_kl": 2,
    "test_elbo_loss": 3,
    "test_sample_prior": 2,
    "test_interpolate": 3,
}
WRITTEN_POINTS = {"answer_posterior_collapse": 3}
ANSWER_OF = {test: test.removeprefix("test_") for test in TEST_POINTS}  # test cell -> answer cell

# Plausible mistakes, as (correct text, wrong text) in the answer cell with that grade_id. Every one
# must fail the hidden tests of its part (fast test below); the first four are also autograded.
MISTAKES = {
    "reparameterize": {
        "std": ("torch.exp(0.5 * logvar)", "torch.exp(logvar)"),  # exp(logvar) is the variance
        "logvar_as_std": ("sigma = torch.exp(0.5 * logvar)", "sigma = logvar"),
        "torch_normal": ("return mu + sigma * eps", "return torch.normal(mu, sigma, generator=generator)"),
        "distribution_sample": ("return mu + sigma * eps", "return torch.distributions.Normal(mu, sigma).sample()"),
        "ignores_generator": ("generator=generator, device", "device"),
        "wrong_shape": ("return mu + sigma * eps", "return (mu + sigma * eps).flatten()"),
    },
    "gaussian_kl": {
        "kl_mean": (".sum(dim=1)  # (B,)", ".mean(dim=1)  # (B,)"),
        "sign": ("0.5 * (mu", "-0.5 * (mu"),
        "missing_half": ("0.5 * (mu", "(mu"),
        "batch_mean": ("per_dimension.sum(dim=1)", "per_dimension.sum(dim=1).mean()"),
        "logvar_as_log_std": ("logvar.exp() - 1.0 - logvar", "logvar.exp() ** 2 - 1.0 - 2 * logvar"),
    },
    "elbo_loss": {
        "batch_sum": ("(reconstruction + beta * kl).mean()", "(reconstruction + beta * kl).sum()"),
        "pixel_mean": (".flatten(1).sum(dim=1)  # (B,)", ".flatten(1).mean(dim=1)  # (B,)"),
        "beta_on_reconstruction": ("(reconstruction + beta * kl)", "(beta * reconstruction + kl)"),
        "kl_sign": ("(reconstruction + beta * kl)", "(reconstruction - beta * kl)"),
        "elbo_not_negated": ("(reconstruction + beta * kl)", "(-reconstruction - beta * kl)"),
        "sigmoid_then_bce": ("F.binary_cross_entropy_with_logits(recon_logits, x,",
                             "F.binary_cross_entropy(torch.sigmoid(recon_logits), x,"),
    },
    "sample_prior": {
        "uniform": ("z = torch.randn(", "z = torch.rand("),
        "no_sigmoid": ("return torch.sigmoid(decoder(z))", "return decoder(z)"),
        "ignores_generator": ("generator=generator)  # (num_samples", ")  # (num_samples"),
        "flat_images": ("return torch.sigmoid(decoder(z))", "return torch.sigmoid(decoder(z)).flatten(1)"),
    },
    "interpolate": {
        "endpoints": ("torch.linspace(0, 1, steps)[:, None]", "torch.linspace(0, 1, steps + 1)[:-1, None]"),
        "inner_points_only": ("torch.linspace(0, 1, steps)[:, None]", "torch.linspace(0, 1, steps + 2)[1:-1, None]"),
        "pixels": ("z = (1 - weights) * mu_start + weights * mu_end  # (steps, latent_dim)\n"
                   "        return torch.sigmoid(decoder(z))",
                   "pictures = torch.sigmoid(decoder(torch.cat([mu_start, mu_end])))  # (2, 1, 28, 28)\n"
                   "        return (1 - weights[:, :, None, None]) * pictures[:1] + weights[:, :, None, None] * pictures[1:]"),
        "random_code": ("mu_start, mu_end = encoder_mu(x_start), encoder_mu(x_end)",
                        "mu_start, mu_end = encoder_mu(x_start), encoder_mu(x_end)\n"
                        "        mu_start, mu_end = mu_start + torch.randn_like(mu_start), mu_end + torch.randn_like(mu_end)"),
    },
}

# The autograded submissions with one mistake each, and the score each should get.
BUGGY_SUBMISSIONS = {
    "buggy_std": ("reparameterize", "std"),
    "buggy_kl_mean": ("gaussian_kl", "kl_mean"),
    "buggy_batch_sum": ("elbo_loss", "batch_sum"),
    "buggy_endpoints": ("interpolate", "endpoints"),
}
BUGGY_SCORES = {
    student: {test: 0 if ANSWER_OF[test] == part else points for test, points in TEST_POINTS.items()}
    for student, (part, _) in BUGGY_SUBMISSIONS.items()
}
WRITTEN_ANSWER = "Posterior collapse: q(z|x) equals the prior for every x, and its KL term is about 0."


def bug(part: str, name: str) -> dict[str, tuple[str, str]]:
    return {part: MISTAKES[part][name]}


def answers_namespace(bugs: dict[str, tuple[str, str]] | None = None) -> dict:
    return grading.answers_namespace(SOURCE, bugs)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """The globals that the hidden tests use besides the answers: the bundled test digits."""
    from coursekit.data import load_mnist

    return load_mnist("test", scale="unit", source="bundled").images


# --- the notebook's structure -------------------------------------------------------------------

def test_source_notebook_structure():
    notebook = grading.check_source_structure(SOURCE, TEST_POINTS, WRITTEN_POINTS, checks.PARTS)
    tests = [nbgrader_meta(c)["grade_id"] for c in notebook.cells if c.cell_type == "code" and nbgrader_meta(c).get("grade")]
    assert tests == list(TEST_POINTS), "the parts should come in the order of the points table"
    assert list(grading.answer_sources(SOURCE)) == list(ANSWER_OF.values())
    for part, points in zip(checks.PARTS, TEST_POINTS.values()):
        assert f"| ({part.label}) | `{part.title}` | {points} |" in notebook.cells[0].source


def test_release_has_no_solutions_or_hidden_tests():
    stubs = grading.check_release(RELEASE, len(ANSWER_OF), len(WRITTEN_POINTS))
    assert [c.source for c in stubs if c.cell_type == "markdown"] == ["YOUR ANSWER HERE"]
    release = read(RELEASE)
    # what the solution knows does not leak: no answer line appears in the release
    release_text = "\n".join(cell.source for cell in release.cells)
    for source in grading.answer_sources(SOURCE).values():
        for line in source.splitlines():
            if line.strip().startswith(("sigma =", "eps =", "per_dimension", "reconstruction =", "z =", "weights =")):
                assert line not in release_text


# --- the visible checks and hidden tests (fast) -----------------------------------------------------

def test_visible_checks_pass_for_reference_answers():
    namespace = answers_namespace()
    for part in checks.PARTS:
        part.check(*(namespace[name] for name in part.names))


def test_hidden_tests_pass_for_reference_answers(images):
    namespace = answers_namespace()
    namespace["images"] = images
    for grade_id, hidden in grading.hidden_tests(SOURCE).items():
        exec(compile(hidden, f"<ps2 {grade_id}>", "exec"), namespace)  # noqa: S102 (our own notebook)


@pytest.mark.parametrize(("part", "name"), [(part, name) for part, bugs in MISTAKES.items() for name in bugs])
def test_hidden_tests_catch_each_mistake(part, name, images):
    """Every mistake fails the hidden tests of its part. (They call only that part's answer, so the
    other parts keep their points: the autograde test below shows it for four of these.)"""
    namespace = answers_namespace(bug(part, name))
    namespace["images"] = images
    (hidden,) = [hidden for grade_id, hidden in grading.hidden_tests(SOURCE).items() if ANSWER_OF[grade_id] == part]
    with pytest.raises(Exception):  # noqa: B017 (an assertion or a crash: either costs the points)
        exec(compile(hidden, f"<ps2 {part} tests>", "exec"), namespace)  # noqa: S102 (our own notebook)


@pytest.mark.parametrize(("part", "name", "message"), [
    ("reparameterize", "std", "exp\\(logvar\\) is the variance"),
    ("reparameterize", "logvar_as_std", "used logvar as the standard deviation"),
    ("reparameterize", "torch_normal", "dz/dmu should be 1"),
    ("reparameterize", "distribution_sample", "two generators seeded alike"),
    ("reparameterize", "ignores_generator", "two generators seeded alike"),
    ("reparameterize", "wrong_shape", "shape of mu"),
    ("gaussian_kl", "kl_mean", "do not average"),
    ("gaussian_kl", "sign", "wrong sign"),
    ("gaussian_kl", "missing_half", "factor 0.5"),
    ("gaussian_kl", "batch_mean", "one KL per example"),
    ("gaussian_kl", "logvar_as_log_std", "expected 0.5 \\* sum"),
    ("elbo_loss", "batch_sum", "average over the batch, not the sum"),
    ("elbo_loss", "pixel_mean", "sum the cross-entropy over the pixels"),
    ("elbo_loss", "beta_on_reconstruction", "it belongs on the KL"),
    ("elbo_loss", "kl_sign", "with beta=1.0 expected"),
    ("elbo_loss", "elbo_not_negated", "wrong sign"),
    ("sample_prior", "uniform", "not from a uniform"),
    ("sample_prior", "no_sigmoid", "apply torch.sigmoid"),
    ("sample_prior", "ignores_generator", "expected sigmoid\\(decoder\\(z\\)\\)"),
    ("sample_prior", "flat_images", "shape \\(5, 1, 28, 28\\)"),
    ("interpolate", "endpoints", "both endpoints belong to the path"),
    ("interpolate", "inner_points_only", "both endpoints belong to the path"),
    ("interpolate", "pixels", "not the pixels"),
    ("interpolate", "random_code", "both endpoints belong to the path"),
])
def test_visible_checks_explain_mistakes(part, name, message):
    namespace = answers_namespace(bug(part, name))
    (check,) = [p.check for p in checks.PARTS if p.names == (part,)]
    with pytest.raises(AssertionError, match=message):
        check(namespace[part])


def test_self_check_table(capsys):
    results = checks.self_check({})
    assert [status for _, status, _ in results] == ["not attempted"] * len(checks.PARTS)

    def not_done(*args, **kwargs):
        raise NotImplementedError()

    def crashes(*args, **kwargs):
        raise RuntimeError("boom")

    namespace = answers_namespace(bug("gaussian_kl", "kl_mean"))
    del namespace["interpolate"]  # its cell was never run
    namespace["elbo_loss"] = crashes
    namespace["sample_prior"] = not_done
    status = {part.label: status for part, status, _ in checks.run_checks(namespace)}
    assert status == {"a": "pass", "b": "FAIL", "c": "FAIL", "d": "not attempted", "e": "not attempted"}
    capsys.readouterr()
    checks.self_check(namespace)
    table = capsys.readouterr().out
    for expected in ("RuntimeError: boom", "interpolate not defined", "NotImplementedError", "2 of 12", "do not average"):
        assert expected in table, f"{expected!r} missing from the table:\n{table}"


# --- autograding (slow) ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A throwaway course directory with ps2's source and the regenerated release."""
    return make_course(tmp_path_factory.mktemp("course"), "ps2")


def filled_in_release(bugs: dict[str, tuple[str, str]]) -> nbformat.NotebookNode:
    return grading.filled_in_release(SOURCE, RELEASE, bugs, WRITTEN_ANSWER)


@pytest.mark.slow
def test_release_is_regenerated_identically(course):
    grading.assert_release_regenerated(course, "ps2", RELEASE)


@pytest.mark.slow
def test_autograde_correct_blank_and_buggy(course):
    from coursekit.checkpoint import shipped_checkpoints

    assert "vae" in shipped_checkpoints(), "ps2 needs the shipped checkpoint `vae`"
    buggy = {student: filled_in_release(bug(part, name)) for student, (part, name) in BUGGY_SUBMISSIONS.items()}
    grading.assert_grading_round_trip(course, "ps2", SOURCE, RELEASE, buggy, TEST_POINTS, BUGGY_SCORES,
                                      "answer_posterior_collapse")
