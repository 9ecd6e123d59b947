"""Exercise set ps2 (variational autoencoders): the notebook's structure, its checks, and autograding.

The fast tests read ``solutions/ps2/ps2.ipynb`` (the nbgrader source), run its answers through the
visible checks of ``coursekit.exercises.ps2``, and run the hidden tests of each part against the
answer with plausible mistakes patched in: every mistake must cost that part its points, and some
get past the visible test cells so that only the hidden tests see them. The slow tests build a
throwaway course directory, regenerate the student release there (it must equal the committed
``exercises/ps2/ps2.ipynb``) and autograde the solution, the untouched release, and seven submissions
with one mistake each. They need the shipped checkpoint ``vae``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch

import grading
from grading import ROOT, make_course, nbgrader_meta, read

from coursekit.exercises import ps2 as checks
from coursekit.exercises.originality import UsesCourseImplementation

SOURCE = ROOT / "solutions" / "ps2" / "ps2.ipynb"
RELEASE = ROOT / "exercises" / "ps2" / "ps2.ipynb"

# grade_id of each autograded tests cell -> points
TEST_POINTS = {
    "test_reparameterize": 2,
    "test_gaussian_kl": 2,
    "test_elbo_loss": 3,
    "test_sample_prior": 2,
    "test_interpolate": 3,
    "test_train": 3,
}
WRITTEN_POINTS = {"answer_posterior_collapse": 3}
ANSWER_OF = {test: test.removeprefix("test_") for test in TEST_POINTS}  # test cell -> answer cell

# Plausible mistakes, as (correct text, wrong text) in the answer cell with that grade_id. Every one
# must fail the hidden tests of its part (fast test below); six are also autograded. Four kinds of
# "nearly right" answers keep every shape right and need checks of their own: batch mixing (an
# example's output depends on the others in its batch), dtype leaks, graph leaks or extra network
# calls, and ignored arguments.
MISTAKES = {
    "reparameterize": {
        "std": ("torch.exp(0.5 * logvar)", "torch.exp(logvar)"),  # exp(logvar) is the variance
        "logvar_as_std": ("sigma = torch.exp(0.5 * logvar)", "sigma = logvar"),
        "torch_normal": ("return mu + sigma * eps", "return torch.normal(mu, sigma, generator=generator)"),
        "distribution_sample": ("return mu + sigma * eps", "return torch.distributions.Normal(mu, sigma).sample()"),
        "ignores_generator": ("generator=generator, device", "device"),
        "wrong_shape": ("return mu + sigma * eps", "return (mu + sigma * eps).flatten()"),
        # dtype leak: eps always float32, so a bfloat16 mu gives a float32 z and a float64 z is a float32 draw
        "ignores_dtype": ("device=mu.device, dtype=mu.dtype)", "device=mu.device)"),
        # ignored argument: eps always on the CPU, so a mu on the GPU fails
        "ignores_device": ("device=mu.device, dtype=mu.dtype", "dtype=mu.dtype"),
        # batch mixing: one eps shared by every example of the batch
        "shared_eps": ("torch.randn(mu.shape, generator", "torch.randn(mu.shape[1:], generator"),
    },
    "gaussian_kl": {
        "kl_mean": (".sum(dim=1)  # (B,)", ".mean(dim=1)  # (B,)"),
        "sign": ("0.5 * (mu", "-0.5 * (mu"),
        "missing_half": ("0.5 * (mu", "(mu"),
        "batch_mean": ("per_dimension.sum(dim=1)", "per_dimension.sum(dim=1).mean()"),
        "logvar_as_log_std": ("logvar.exp() - 1.0 - logvar", "logvar.exp() ** 2 - 1.0 - 2 * logvar"),
        # batch mixing: the batch's mean KL, broadcast back to one number per example
        "batch_mean_broadcast": ("per_dimension.sum(dim=1)  # (B,)", "per_dimension.sum(dim=1).mean().expand(len(mu))  # (B,)"),
        # dtype leak: a float64 KL for float32 inputs
        "float64": ("per_dimension.sum(dim=1)", "per_dimension.double().sum(dim=1)"),
    },
    "elbo_loss": {
        "batch_sum": ("(reconstruction + beta * kl).mean()", "(reconstruction + beta * kl).sum()"),
        "pixel_mean": (".flatten(1).sum(dim=1)  # (B,)", ".flatten(1).mean(dim=1)  # (B,)"),
        "beta_on_reconstruction": ("(reconstruction + beta * kl)", "(beta * reconstruction + kl)"),
        "kl_sign": ("(reconstruction + beta * kl)", "(reconstruction - beta * kl)"),
        "elbo_not_negated": ("(reconstruction + beta * kl)", "(-reconstruction - beta * kl)"),
        "sigmoid_then_bce": ("F.binary_cross_entropy_with_logits(recon_logits, x,",
                             "F.binary_cross_entropy(torch.sigmoid(recon_logits), x,"),
        # batch mixing: the KL summed over the whole batch, then added to every example
        "kl_over_batch": ("- 1.0 - logvar).sum(dim=1)", "- 1.0 - logvar).sum()"),
        # dtype leak: a float64 loss for float32 inputs
        "float64": ("(reconstruction + beta * kl).mean()", "(reconstruction + beta * kl).double().mean()"),
        # ignored argument: beta
        "ignores_beta": ("(reconstruction + beta * kl)", "(reconstruction + kl)"),
    },
    "sample_prior": {
        "uniform": ("z = torch.randn(", "z = torch.rand("),
        "no_sigmoid": ("return torch.sigmoid(decoder(z))", "return decoder(z)"),
        "ignores_generator": ("generator=generator)  # (num_samples", ")  # (num_samples"),
        "flat_images": ("return torch.sigmoid(decoder(z))", "return torch.sigmoid(decoder(z)).flatten(1)"),
        # graph leak: the decoder runs with gradients on, and the samples are detached afterwards
        "detach_not_no_grad": ("with torch.no_grad():\n        return torch.sigmoid(decoder(z))",
                               "return torch.sigmoid(decoder(z)).detach()"),
        # more network calls than the text says: one decoder call per sample
        "one_at_a_time": ("torch.sigmoid(decoder(z))",
                          "torch.sigmoid(torch.cat([decoder(z[i:i + 1]) for i in range(num_samples)]))"),
        # dtype leak: float64 codes
        "float64_codes": ("torch.randn(num_samples, latent_dim, generator=generator)",
                          "torch.randn(num_samples, latent_dim, generator=generator, dtype=torch.float64)"),
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
        # graph leak: the networks run with gradients on, and the images are detached afterwards
        "detach_not_no_grad": ("    with torch.no_grad():\n"
                               "        mu_start, mu_end = encoder_mu(x_start), encoder_mu(x_end)  # (1, latent_dim) each\n"
                               "        weights = torch.linspace(0, 1, steps)[:, None]  # (steps, 1): 0, ..., 1\n"
                               "        z = (1 - weights) * mu_start + weights * mu_end  # (steps, latent_dim)\n"
                               "        return torch.sigmoid(decoder(z))  # (steps, 1, 28, 28)",
                               "    mu_start, mu_end = encoder_mu(x_start), encoder_mu(x_end)  # (1, latent_dim) each\n"
                               "    weights = torch.linspace(0, 1, steps)[:, None]  # (steps, 1): 0, ..., 1\n"
                               "    z = (1 - weights) * mu_start + weights * mu_end  # (steps, latent_dim)\n"
                               "    return torch.sigmoid(decoder(z)).detach()  # (steps, 1, 28, 28)"),
        # more network calls than the text says: both endpoints encoded again for every step
        "encodes_per_step": ("        mu_start, mu_end = encoder_mu(x_start), encoder_mu(x_end)  # (1, latent_dim) each\n"
                             "        weights = torch.linspace(0, 1, steps)[:, None]  # (steps, 1): 0, ..., 1\n"
                             "        z = (1 - weights) * mu_start + weights * mu_end  # (steps, latent_dim)\n",
                             "        weights = torch.linspace(0, 1, steps)  # (steps,): 0, ..., 1\n"
                             "        z = torch.cat([(1 - t) * encoder_mu(x_start) + t * encoder_mu(x_end) for t in weights])\n"),
        # dtype leak: float64 weights, so float64 codes
        "float64_weights": ("torch.linspace(0, 1, steps)", "torch.linspace(0, 1, steps, dtype=torch.float64)"),
        # ignored argument: always 8 steps
        "ignores_steps": ("torch.linspace(0, 1, steps)", "torch.linspace(0, 1, 8)"),
    },
}

MISTAKES["train"] = {
    # gradients add up over the steps: each step follows the sum of every gradient so far
    "no_zero_grad": ("        optimizer.zero_grad()  # .grad holds the sum of every backward pass since the last zero_grad\n", ""),
    # a new optimizer at every step: Adam's running averages start again from zero each time
    "optimizer_per_step": ("    optimizer = torch.optim.Adam(model.parameters(), lr=lr)\n"
                           "    losses = []\n"
                           "    for step in range(steps):\n",
                           "    losses = []\n"
                           "    for step in range(steps):\n"
                           "        optimizer = torch.optim.Adam(model.parameters(), lr=lr)\n"),
    # trained in evaluation mode
    "eval_mode": ("    model.train()\n", "    model.eval()\n"),
    # left in training mode afterwards
    "no_eval_after": ("    model.eval()\n    return losses", "    return losses"),
    # graph leak: the history keeps every step's loss tensor, and with it the step's graph
    "loss_tensors": ("losses.append(loss.item())", "losses.append(loss)"),
    # ignored arguments: always batches of 64, always the default learning rate
    "ignores_batch_size": ("(batch_size,), generator=generator)", "(64,), generator=generator)"),
    "ignores_lr": ("lr=lr)", "lr=1e-3)"),
}


def solution_body(grade_id: str) -> str:
    """The lines of a reference answer between its `### BEGIN SOLUTION` and `### END SOLUTION` markers."""
    (cell,) = [cell for cell in read(SOURCE).cells if nbgrader_meta(cell).get("grade_id") == grade_id]
    body = cell.source.split("### BEGIN SOLUTION\n", 1)[1].split("### END SOLUTION", 1)[0]
    return body[:body.rfind("\n") + 1]


# Answers that hand their part to the implementation of it in coursekit.models.vae, the VAE class or
# coursekit.training. Every number they give is right; the hidden tests fail them with
# UsesCourseImplementation.
CALLS_PACKAGE = {
    "reparameterize": ("    from coursekit.models.vae import reparameterize as package_reparameterize\n"
                       "    return package_reparameterize(mu, logvar, generator)\n"),
    "gaussian_kl": ("    from coursekit.models.vae import gaussian_kl as package_gaussian_kl\n"
                    "    return package_gaussian_kl(mu, logvar)\n"),
    "elbo_loss": ("    from types import SimpleNamespace\n"
                  "    from coursekit.models.vae import gaussian_kl as package_gaussian_kl, log_likelihood\n"
                  "    bernoulli = SimpleNamespace(config=SimpleNamespace(decoder=\"bernoulli\"))  # all log_likelihood reads\n"
                  "    return -(log_likelihood(bernoulli, x, recon_logits) - beta * package_gaussian_kl(mu, logvar)).mean()\n"),
    # decoder is the bound method vae.decode_logits: its __self__ is the VAE
    "sample_prior": "    return decoder.__self__.sample(num_samples, generator)\n",
    "interpolate": "    return decoder.__self__.interpolate(x_start, x_end, steps)\n",
    "train": ("    from torch.utils.data import DataLoader\n"
              "    from coursekit.training import train as course_train\n\n"
              "    def batch_loss(model, batch, noise):\n"
              "        return loss_fn(model, batch)\n\n"
              "    loader = DataLoader(images, batch_size=batch_size, shuffle=True, generator=generator)\n"
              "    history = course_train(model, loader, batch_loss, epochs=steps, lr=lr, device=\"cpu\", max_steps=steps,\n"
              "                           progress=False)\n"
              "    return history.step_losses\n"),
}
for _part, _answer in CALLS_PACKAGE.items():
    MISTAKES[_part]["calls_package"] = (solution_body(_part), _answer)
# each part -> the part as the hidden tests name it in the feedback
GUARDED_PARTS = {part: f"({label}) {part}" for label, part in zip("abcdef", ANSWER_OF.values())}

# The mistakes that pass the visible test cell and its check: only the hidden tests see them.
HIDDEN_ONLY = [
    ("reparameterize", "ignores_dtype"),
    ("reparameterize", "ignores_device"),
    ("elbo_loss", "sigmoid_then_bce"),  # right wherever sigmoid does not round to exactly 0 or 1
    ("sample_prior", "detach_not_no_grad"),
    ("sample_prior", "one_at_a_time"),
    ("interpolate", "detach_not_no_grad"),
    ("interpolate", "encodes_per_step"),
    ("train", "ignores_lr"),
    *((part, "calls_package") for part in ("reparameterize", "gaussian_kl", "elbo_loss", "train")),
]

# The autograded submissions with one mistake each, and the score each should get. The last two got
# full marks from the hidden tests before they checked dtypes and how the decoder is called.
BUGGY_SUBMISSIONS = {
    "buggy_std": ("reparameterize", "std"),
    "buggy_kl_mean": ("gaussian_kl", "kl_mean"),
    "buggy_batch_sum": ("elbo_loss", "batch_sum"),
    "buggy_endpoints": ("interpolate", "endpoints"),
    "buggy_ignores_dtype": ("reparameterize", "ignores_dtype"),
    "buggy_detach_not_no_grad": ("sample_prior", "detach_not_no_grad"),
    "buggy_no_zero_grad": ("train", "no_zero_grad"),
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


@pytest.fixture(scope="module")
def notebook_globals(images) -> dict:
    """The globals that the visible test cells use besides the answers: the digits, the shipped VAE and
    the notebook's `posterior_mean` (its own cell, run here as the notebook runs it)."""
    from coursekit.checkpoint import load_checkpoint

    namespace = {"torch": torch, "images": images, "vae": load_checkpoint("vae", device="cpu")}
    (cell,) = [cell for cell in read(SOURCE).cells if cell.source.startswith("def posterior_mean(")]
    grading.run_cell_part(cell.source, namespace, "<ps2 posterior_mean>")
    return namespace


def part_tests(part: str, tests: dict[str, str]) -> str:
    (text,) = [text for grade_id, text in tests.items() if ANSWER_OF[grade_id] == part]
    return text


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
    ("reparameterize", "shared_eps", "expected z = mu \\+ exp\\(logvar / 2\\) \\* eps"),
    ("gaussian_kl", "batch_mean_broadcast", "expected 0.5 \\* sum"),
    ("elbo_loss", "kl_over_batch", "with beta=1.0 expected"),
    ("elbo_loss", "ignores_beta", "with beta=4.0 expected"),
    ("interpolate", "ignores_steps", "with steps=5 expected 5 images"),
    ("train", "eval_mode", "call model.train\\(\\) before the first step"),
    ("train", "no_eval_after", "back in evaluation mode"),
    ("train", "loss_tensors", "a list of 20 Python floats"),
    ("train", "ignores_batch_size", "every batch should hold 5 images"),
])
def test_visible_checks_explain_mistakes(part, name, message):
    namespace = answers_namespace(bug(part, name))
    (check,) = [p.check for p in checks.PARTS if p.names == (part,)]
    with pytest.raises(AssertionError, match=message):
        check(namespace[part])


@pytest.mark.parametrize(("part", "name"), HIDDEN_ONLY)
def test_some_mistakes_pass_the_visible_checks(part, name, notebook_globals):
    """These mistakes get past everything the student sees; only the hidden tests catch them."""
    namespace = grading.answers_namespace(SOURCE, bug(part, name), dict(notebook_globals))
    grading.run_cell_part(part_tests(part, grading.visible_tests(SOURCE)), namespace, f"<ps2 {part} visible>")
    (check,) = [p.check for p in checks.PARTS if p.names == (part,)]
    check(namespace[part])


@pytest.mark.parametrize(("part", "name"), [(part, name) for part, bugs in MISTAKES.items() for name in bugs
                                            if (part, name) not in HIDDEN_ONLY])
def test_visible_test_cells_catch_the_other_mistakes(part, name, notebook_globals):
    namespace = grading.answers_namespace(SOURCE, bug(part, name), dict(notebook_globals))
    with pytest.raises(Exception):  # noqa: B017 (an assertion or a crash)
        grading.run_cell_part(part_tests(part, grading.visible_tests(SOURCE)), namespace, f"<ps2 {part} visible>")


@pytest.mark.parametrize(("part", "name", "message"), [
    ("reparameterize", "ignores_dtype", "for torch.float64 mu and logvar, z differs from the reference draw"),
    ("reparameterize", "ignores_device", "draw eps on mu's device, with device=mu.device"),
    ("reparameterize", "shared_eps", "z differs from the reference draw"),
    ("gaussian_kl", "batch_mean_broadcast", "an example's KL depends on the other examples in its batch"),
    ("gaussian_kl", "float64", "for torch.float32 mu and logvar the KL should be torch.float32 too"),
    ("elbo_loss", "kl_over_batch", "the loss of 5 examples should be the mean of their losses one at a time"),
    ("elbo_loss", "float64", "for torch.float32 inputs the loss should be torch.float32 too"),
    ("elbo_loss", "ignores_beta", "raising beta from 0 to 2 should add twice the mean KL"),
    ("sample_prior", "detach_not_no_grad", "the decoder ran with gradients enabled"),
    ("sample_prior", "one_at_a_time", "sample_prior should decode all 6 codes in one call"),
    ("sample_prior", "float64_codes", "the codes should be float32"),
    ("interpolate", "detach_not_no_grad", "encoder_mu or the decoder ran with gradients enabled"),
    ("interpolate", "encodes_per_step", "interpolate should encode x_start and x_end once each"),
    ("interpolate", "float64_weights", "the codes should be float32"),
    ("train", "no_zero_grad", "a small VAE: the losses of the 5 steps should be"),
    ("train", "optimizer_per_step", "a small VAE: the losses of the 5 steps should be"),
    ("train", "ignores_lr", "a small VAE: the losses of the 5 steps should be"),
])
def test_hidden_tests_explain_mistakes(part, name, message, images):
    """The new hidden checks name the mistake in the grader's feedback."""
    namespace = answers_namespace(bug(part, name))
    namespace["images"] = images
    with pytest.raises(AssertionError, match=message):
        grading.run_cell_part(part_tests(part, grading.hidden_tests(SOURCE)), namespace, f"<ps2 {part} tests>")


@pytest.mark.parametrize("part", list(GUARDED_PARTS))
def test_hidden_tests_give_no_points_for_calling_the_package(part, images):
    """An answer that hands its part to the package's implementation passes every numerical check; the
    hidden tests fail it with UsesCourseImplementation (an AssertionError, so nbgrader scores the cell 0),
    whose message names the part and says why."""
    assert set(GUARDED_PARTS) == set(CALLS_PACKAGE)
    namespace = answers_namespace(bug(part, "calls_package"))
    namespace["images"] = images
    with pytest.raises(UsesCourseImplementation) as caught:
        grading.run_cell_part(part_tests(part, grading.hidden_tests(SOURCE)), namespace, f"<ps2 {part} tests>")
    message = str(caught.value)
    assert f"Part {GUARDED_PARTS[part]} calls `" in message, message
    assert "no points" in message and "yourself" in message, message


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
    assert status == {"a": "pass", "b": "FAIL", "c": "FAIL", "d": "not attempted", "e": "not attempted", "f": "pass"}
    capsys.readouterr()
    checks.self_check(namespace)
    table = capsys.readouterr().out
    for expected in ("RuntimeError: boom", "interpolate not defined", "NotImplementedError", "5 of 15", "do not average"):
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
