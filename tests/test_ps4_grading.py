"""Exercise set ps4 (diffusion models: DDPM and DDIM): the notebook's structure, its checks, and autograding.

The fast tests read ``solutions/ps4/ps4.ipynb`` (the nbgrader source), run its answers through the
visible checks of ``coursekit.exercises.ps4``, and run the hidden tests of each part against the
answer with plausible mistakes patched in: every mistake must cost that part its points, and one
mistake per part gets past the visible checks so that only the hidden tests see it. The table of
mistakes includes the four kinds of nearly right answers that an independent review found hidden
tests most likely to miss: batch mixing with every shape right, dtype leaks, a network run more
often than the text says, and ignored arguments. The slow tests build a throwaway course directory,
regenerate the student release there (it must equal the committed ``exercises/ps4/ps4.ipynb``) and
autograde the solution, the untouched release, and eleven submissions with mistakes. Every part also has
the mistake ``calls_package``: the answer hands the work to the package's (or a library's) own
implementation, and the hidden tests give it no points and say why (:mod:`coursekit.exercises.originality`).
The notebook's sampling demos need the shipped checkpoints ``ddpm-eps``, ``ddpm`` and
``mnist-robust-classifier``; the test cells need no checkpoint and no data.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nbformat
import pytest

import grading
from grading import ROOT, make_course, nbgrader_meta, read

from coursekit.exercises import ps4 as checks

SOURCE = ROOT / "solutions" / "ps4" / "ps4.ipynb"
RELEASE = ROOT / "exercises" / "ps4" / "ps4.ipynb"

# grade_id of each autograded tests cell -> points
TEST_POINTS = {
    "test_linear_schedule": 2,
    "test_q_sample": 3,
    "test_noise_prediction_loss": 2,
    "test_ddpm_step": 4,
    "test_ddim_step": 4,
    "test_frechet_distance": 3,
}
WRITTEN_POINTS = {"answer_ddim": 3}
ANSWER_OF = {test: test.removeprefix("test_") for test in TEST_POINTS}  # test cell -> answer cell

# Plausible mistakes, as (correct text, wrong text) in the answer cell with that grade_id. Every one
# must fail the hidden tests of its part (fast test below); nine submissions are also autograded.
MISTAKES = {
    "linear_schedule": {
        "calls_package": ("    betas = torch.linspace(",
                          "    from coursekit.schedulers import make_schedule\n"
                          "    schedule = make_schedule(\"linear\", num_timesteps, beta_start, beta_end)\n"
                          "    return schedule.betas, schedule.alphas, schedule.alphas_cumprod\n"
                          "    betas = torch.linspace("),
        "cumsum": ("torch.cumprod(alphas, dim=0)", "torch.cumsum(alphas, dim=0)"),
        "shifted": ("alpha_bars = torch.cumprod(alphas, dim=0)",
                    "alpha_bars = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(alphas, dim=0)[:-1]])"),
        "endpoint": ("torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)",
                     "torch.linspace(beta_start, beta_end, num_timesteps + 1, dtype=torch.float64)[:-1]"),
        "float64_returned": ("return betas.float(), alphas.float(), alpha_bars.float()", "return betas, alphas, alpha_bars"),
        # float32 throughout: alpha_bars[999] is off by 4e-7 (relative), within every tolerance but the hidden float64 one
        "float32_compute": ("torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)",
                            "torch.linspace(beta_start, beta_end, num_timesteps)"),
        "default_beta_end": ("torch.linspace(beta_start, beta_end,", "torch.linspace(beta_start, 0.02,"),
    },
    "q_sample": {
        "calls_package": ("    alpha_bar = alpha_bars[t].to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))  # (B, 1, ..., 1): one",
                          "    from coursekit.schedulers import DDPMScheduler\n"
                          "    return DDPMScheduler(num_train_timesteps=len(alpha_bars), clip_sample=False).add_noise(x0, noise, t)\n"
                          "    alpha_bar = alpha_bars[t].to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))  # (B, 1, ..., 1): one"),
        "no_sqrt": ("return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise",
                    "return alpha_bar * x0 + (1 - alpha_bar) * noise"),
        "off_by_one": ("alpha_bars[t]", "alpha_bars[t - 1]"),  # the papers count t from 1
        "off_by_one_up": ("alpha_bars[t]", "alpha_bars[t + 1]"),
        "not_per_example": (".reshape(-1, *([1] * (x0.dim() - 1)))", ""),
        "first_t_only": ("alpha_bars[t]", "alpha_bars[t[0]]"),
        "four_d_only": (".reshape(-1, *([1] * (x0.dim() - 1)))", "[:, None, None, None]"),
        # the four kinds of nearly right answers: batch mixing, dtype leak, an argument ignored
        "repeat_mixes": (".reshape(-1, *([1] * (x0.dim() - 1)))", ".repeat(x0[0].numel()).reshape(x0.shape)"),
        "schedule_dtype_leaks": (".to(x0.dtype)", ""),  # a float64 schedule makes x_t float64
        "own_schedule": ("alpha_bars[t]", "linear_schedule(1000)[2][t]"),  # part (a)'s schedule, not the one passed in
    },
    "noise_prediction_loss": {
        "calls_package": ("    alpha_bar = alpha_bars[t]",
                          "    from coursekit.diffusion import q_sample as package_q_sample\n"
                          "    from coursekit.schedulers import make_schedule\n"
                          "    x_t = package_q_sample(x0, t, noise, make_schedule(\"linear\", len(alpha_bars)))\n"
                          "    return F.mse_loss(model(x_t, t), noise)\n"
                          "    alpha_bar = alpha_bars[t]"),
        "x0_target": ("F.mse_loss(eps_hat, noise)", "F.mse_loss(eps_hat, x0)"),
        "sum": ("F.mse_loss(eps_hat, noise)", 'F.mse_loss(eps_hat, noise, reduction="sum")'),
        "model_sees_x0": ("eps_hat = model(x_t, t)", "eps_hat = model(x0, t)"),
        "no_grad": ("eps_hat = model(x_t, t)", "with torch.no_grad():\n        eps_hat = model(x_t, t)"),
        "no_sqrt": ("x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise",
                    "x_t = alpha_bar * x0 + (1 - alpha_bar) * noise"),
        "one_t_for_batch": ("alpha_bars[t].to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))", "alpha_bars[t[0]].to(x0.dtype)"),
        "schedule_dtype_leaks": (".to(x0.dtype)", ""),
        # the same loss, but the network runs twice
        "model_twice": ("return F.mse_loss(eps_hat, noise)", "return F.mse_loss(model(x_t, t), noise)"),
        # right for the 1000-step linear schedule, the only one the visible checks use
        "own_schedule": ("alpha_bars[t]", "linear_schedule(1000)[2][t]"),
    },
    "ddpm_step": {
        "calls_package": ("    alpha_bar_t = alpha_bars[t]\n    # 1. the mean",
                          "    from coursekit.schedulers import DDPMScheduler\n"
                          "    return DDPMScheduler(clip_sample=False).step(eps_hat, t, x_t, variance_noise=z).prev_sample\n"
                          "    alpha_bar_t = alpha_bars[t]\n    # 1. the mean"),
        "fixed_large": ("variance = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * betas[t]", "variance = betas[t]"),
        "noise_at_last_step": ("    if t == 0:\n        return mean\n", ""),  # then alpha_bars[t - 1] wraps to alpha_bars[-1]
        "prev_off_by_one": ("alpha_bar_prev = alpha_bars[t - 1]", "alpha_bar_prev = alpha_bars[t + 1]"),
        "t_off_by_one": ("alpha_bar_t = alpha_bars[t]", "alpha_bar_t = alpha_bars[t - 1]"),
        "mean_no_sqrt": ("/ alphas[t].sqrt()", "/ alphas[t]"),
        "variance_as_std": ("variance.sqrt() * z", "variance * z"),
        "shared_noise": ("variance.sqrt() * z", "variance.sqrt() * torch.randn(x_t.shape[1:])"),  # one noise image for the batch
        "float64_result": ("mean = (x_t - betas[t]", "mean = (x_t.double() - betas[t]"),
        "own_schedule": ("    alpha_bar_t = alpha_bars[t]\n",
                         "    betas, alphas, alpha_bars = linear_schedule(1000)\n    alpha_bar_t = alpha_bars[t]\n"),
    },
    "ddim_step": {
        "calls_package": ("    alpha_bar_t = alpha_bars[t]\n    alpha_bar_prev",
                          "    from coursekit.schedulers import DDIMScheduler\n"
                          "    scheduler = DDIMScheduler(clip_sample=False)\n"
                          "    scheduler.set_timesteps(1000 // (t - t_prev))\n"
                          "    return scheduler.step(eps_hat, t, x_t, eta=eta, variance_noise=z).prev_sample\n"
                          "    alpha_bar_t = alpha_bars[t]\n    alpha_bar_prev"),
        "sigma_without_eta": ("sigma = eta * (", "sigma = ("),
        # the same as the answer for eta = 0 and eta = 1, the two values the visible checks try
        "eta_on_variance": ("sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t)",
                            "sigma = (eta * (1 - alpha_bar_prev) / (1 - alpha_bar_t)"),
        "direction_ignores_sigma": ("(1 - alpha_bar_prev - sigma**2).sqrt()", "(1 - alpha_bar_prev).sqrt()"),
        "final_alpha_bar_wraps": ("alpha_bars[t_prev] if t_prev >= 0 else torch.ones_like(alpha_bar_t)", "alpha_bars[t_prev]"),
        "x0_coefficient_no_sqrt": ("alpha_bar_prev.sqrt() * x0_hat", "alpha_bar_prev * x0_hat"),
        "shared_noise": ("sigma * z", "sigma * torch.randn(x_t.shape[1:])"),
        "float64_result": ("x0_hat = (x_t - ", "x0_hat = (x_t.double() - "),
        # right for the 1000-step linear schedule, the only one the visible checks and the other hidden tests use
        "own_schedule": ("    alpha_bar_t = alpha_bars[t]\n", "    alpha_bars = linear_schedule(1000)[2]\n    alpha_bar_t = alpha_bars[t]\n"),
        "t_minus_one": ("alpha_bars[t_prev] if", "alpha_bars[t - 1] if"),
    },
    "frechet_distance": {
        "calls_package": ("    mu1, sigma1, mu2, sigma2 = (",
                          "    from torchmetrics.image.fid import _compute_fid\n"
                          "    return float(_compute_fid(mu1.double(), sigma1.double(), mu2.double(), sigma2.double()))\n"
                          "    mu1, sigma1, mu2, sigma2 = ("),
        "no_factor_2": ("- 2 * np.trace(covmean)", "- np.trace(covmean)"),
        "no_matrix_sqrt": ("scipy.linalg.sqrtm(sigma1 @ sigma2)", "sigma1 @ sigma2"),
        # the same as the answer when the covariances commute, as the diagonal ones of the visible checks do
        "sqrt_of_each": ("scipy.linalg.sqrtm(sigma1 @ sigma2)", "scipy.linalg.sqrtm(sigma1) @ scipy.linalg.sqrtm(sigma2)"),
        "sqrt_of_entries": ("scipy.linalg.sqrtm(sigma1 @ sigma2)", "np.sqrt(sigma1 * sigma2)"),
        "mean_not_squared": ("diff @ diff", "np.sqrt(diff @ diff)"),
        # a float for the visible checks' covariances; a complex number where the covariances are singular
        "keeps_complex": ("return float(distance.real)", "return distance"),
        "float32": ("value.double().numpy()", "value.float().numpy()"),
    },
}
# The one mistake per part that passes the visible test cell and is caught only by the hidden tests.
HIDDEN_ONLY = {
    "linear_schedule": "endpoint",
    "q_sample": "four_d_only",
    "noise_prediction_loss": "no_grad",
    "ddpm_step": "noise_at_last_step",
    "ddim_step": "eta_on_variance",
    "frechet_distance": "sqrt_of_each",
}

# The autograded submissions with mistakes (answer cell -> mistake), and the score each should get.
BUGGY_SUBMISSIONS = {
    "buggy_cumsum": {"linear_schedule": "cumsum"},
    "buggy_no_sqrt": {"q_sample": "no_sqrt"},
    "buggy_off_by_one": {"q_sample": "off_by_one"},
    "buggy_x0_target": {"noise_prediction_loss": "x0_target"},
    "buggy_last_step_noise": {"ddpm_step": "noise_at_last_step"},
    "buggy_eta_on_variance": {"ddim_step": "eta_on_variance"},
    "buggy_two_parts": {"linear_schedule": "endpoint", "ddpm_step": "prev_off_by_one"},
    # two that the hidden tests before the four kinds of checks gave full marks
    "buggy_float32_schedule": {"linear_schedule": "float32_compute"},
    "buggy_ddim_own_schedule": {"ddim_step": "own_schedule"},
    # the new part, and an answer that hands a part to the package
    "buggy_fid_no_factor_2": {"frechet_distance": "no_factor_2"},
    "buggy_ddim_calls_package": {"ddim_step": "calls_package"},
}
BUGGY_SCORES = grading.buggy_scores(BUGGY_SUBMISSIONS, TEST_POINTS, ANSWER_OF)
WRITTEN_ANSWER = "DDIM's processes share DDPM's marginals q(x_t | x_0), so the same network serves; eta = 1 is DDPM."


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
    for promise in ("indexed `0 .. T-1`", "do **not** clip", "**This set uses $\\tilde\\beta_t$**",
                    "both endpoints included", "`t_prev = -1`", "standard deviation",
                    "the batch it is given (`x0` or `x_t`)", "Convert it with `.to(x0.dtype)`",
                    "the network is called **once**"):
        assert promise in text, f"the notebook no longer says {promise!r}"


def test_release_has_no_solutions_or_hidden_tests():
    stubs = grading.check_release(RELEASE, len(ANSWER_OF), len(WRITTEN_POINTS))
    assert [c.source for c in stubs if c.cell_type == "markdown"] == ["YOUR ANSWER HERE"]
    release_text = "\n".join(cell.source for cell in read(RELEASE).cells)
    # what the solution knows does not leak: no answer line appears in the release
    for source in grading.answer_sources(SOURCE).values():
        for line in source.splitlines():
            if line.strip().startswith(("betas =", "alpha_bars =", "alpha_bar =", "x_t =", "eps_hat =", "mean =",
                                        "variance =", "x0_hat =", "sigma =", "direction =", "alpha_bar_prev =", "return",
                                        "covmean =", "diff =", "distance =", "mu1, sigma1")):
                assert line not in release_text, line


# --- the visible checks and hidden tests (fast) -----------------------------------------------------

def test_visible_checks_pass_for_reference_answers():
    namespace = answers_namespace()
    for part in checks.PARTS:
        part.check(*(namespace[name] for name in part.names))
    for grade_id, visible in grading.visible_tests(SOURCE).items():
        run_cell_part(visible, namespace, f"<ps4 {grade_id} visible>")


def test_hidden_tests_pass_for_reference_answers():
    """And quietly: nbgrader scores a test cell 0 when it writes anything to stderr, a warning included
    (scipy's sqrtm warns about the singular covariances of part (f)'s hidden tests, which silence it)."""
    namespace = answers_namespace()
    for grade_id, hidden in grading.hidden_tests(SOURCE).items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_cell_part(hidden, namespace, f"<ps4 {grade_id}>")
        shown = [f"{w.category.__name__}: {w.message}" for w in caught
                 if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
        assert not shown, f"{grade_id}: the hidden tests of the reference answer warn, which would cost its points: {shown}"


@pytest.mark.parametrize(("part", "name"), [(part, name) for part, mistakes in MISTAKES.items() for name in mistakes])
def test_hidden_tests_catch_each_mistake(part, name):
    """Every mistake fails the hidden tests of its part. (They call only that part's answer, so the
    other parts keep their points: the autograde test below shows it for nine of these.)"""
    namespace = answers_namespace({part: name})
    (hidden,) = [hidden for grade_id, hidden in grading.hidden_tests(SOURCE).items() if ANSWER_OF[grade_id] == part]
    with pytest.raises(Exception):  # noqa: B017 (an assertion or a crash: either costs the points)
        run_cell_part(hidden, namespace, f"<ps4 {part} tests>")


@pytest.mark.parametrize("part", list(MISTAKES))
def test_an_answer_that_calls_the_package_scores_no_points_and_is_told_why(part):
    """The hidden tests of every part fail an answer that hands the part to the package's (or a library's)
    own implementation, with the guard's message: it names the part and says that it scores no points."""
    from coursekit.exercises.originality import UsesCourseImplementation

    namespace = answers_namespace({part: "calls_package"})
    (grade_id, hidden), = [(grade_id, hidden) for grade_id, hidden in grading.hidden_tests(SOURCE).items()
                           if ANSWER_OF[grade_id] == part]
    with pytest.raises(UsesCourseImplementation) as caught:
        run_cell_part(hidden, namespace, f"<ps4 {part} tests>")
    label = next(p.label for p in checks.PARTS if p.names == (part,))
    message = str(caught.value)
    assert f"Part ({label}) " in message and "no points" in message and "yourself" in message, message


@pytest.mark.parametrize(("part", "name"), list(HIDDEN_ONLY.items()))
def test_some_mistakes_pass_the_visible_checks(part, name):
    """Like ps1's tied scores: one mistake per part gets past everything the student sees."""
    namespace = answers_namespace({part: name})
    (visible,) = [text for grade_id, text in grading.visible_tests(SOURCE).items() if ANSWER_OF[grade_id] == part]
    run_cell_part(visible, namespace, f"<ps4 {part} visible>")
    (check,) = [p.check for p in checks.PARTS if p.names == (part,)]
    check(namespace[part])


@pytest.mark.parametrize(("part", "name", "message"), [
    ("linear_schedule", "cumsum", "cumulative product"),
    ("linear_schedule", "shifted", "shifted by one"),
    ("linear_schedule", "float64_returned", "should be float32"),
    ("q_sample", "no_sqrt", "needs sqrt\\(alpha_bar\\)"),
    ("q_sample", "off_by_one", "alpha_bars\\[t - 1\\]: timesteps are indexed from 0"),
    ("q_sample", "off_by_one_up", "alpha_bars\\[t \\+ 1\\]"),
    ("q_sample", "not_per_example", "reshape it to \\(4, 1, 1, 1\\)"),
    ("q_sample", "first_t_only", "every example got t = 0"),
    ("noise_prediction_loss", "x0_target", "the target is the noise, not x0"),
    ("noise_prediction_loss", "sum", "average the squared error"),
    ("noise_prediction_loss", "model_sees_x0", "sees the noisy x_t"),
    ("noise_prediction_loss", "no_sqrt", "expected mean\\(\\(model\\(x_t, t\\) - noise\\)\\*\\*2\\)"),
    ("ddpm_step", "fixed_large", "posterior variance"),
    ("ddpm_step", "prev_off_by_one", "alpha_bar_prev = alpha_bars\\[t - 1\\]"),
    ("ddpm_step", "t_off_by_one", "not alpha_bars\\[t - 1\\]"),
    ("ddpm_step", "mean_no_sqrt", "divide by sqrt\\(alpha_t\\)"),
    ("ddpm_step", "variance_as_std", "scale it by the standard deviation"),
    ("ddim_step", "sigma_without_eta", "with eta = 0 the step is deterministic"),
    ("ddim_step", "direction_ignores_sigma", "sqrt\\(1 - alpha_bar_prev - sigma_t\\*\\*2\\)"),
    ("ddim_step", "final_alpha_bar_wraps", "t_prev = -1 means the clean x_0"),
    ("ddim_step", "x0_coefficient_no_sqrt", "expected sqrt\\(alpha_bar_prev\\) x0_hat"),
    ("frechet_distance", "no_factor_2", "the factor 2 is missing"),
    ("frechet_distance", "no_matrix_sqrt", "not Tr\\(Sigma1 Sigma2\\)"),
    ("frechet_distance", "mean_not_squared", "the squared distance"),
])
def test_visible_checks_explain_mistakes(part, name, message):
    namespace = answers_namespace({part: name})
    (check,) = [p.check for p in checks.PARTS if p.names == (part,)]
    with pytest.raises(AssertionError, match=message):
        check(namespace[part])


def test_exact_noise_predictor():
    """The demo's and hidden tests' best predictor: for one point, eq. 4 solved for the noise."""
    import torch

    from coursekit.schedulers import make_schedule

    alpha_bars = make_schedule("linear", 1000).alphas_cumprod
    point, noise = torch.randn(1, 3, 4, 4), torch.randn(5, 3, 4, 4)
    t = torch.tensor([0, 1, 300, 700, 999])
    x_t = checks.reference_q_sample(point.expand(5, -1, -1, -1), t, noise, alpha_bars).float()
    assert torch.allclose(checks.ExactNoisePredictor(point, alpha_bars)(x_t, t), noise, atol=1e-3)
    # with two points far apart, x_t near one of them at a small t is explained by that one alone
    data = torch.stack([torch.full((2,), -3.0), torch.full((2,), 3.0)])  # (2, 2)
    exact = checks.ExactNoisePredictor(data, alpha_bars)
    assert torch.allclose(exact.posterior_mean(torch.tensor([[2.9, 3.1]]), torch.tensor([10])), data[1:].double(), atol=1e-6)
    # at t = T - 1 the posterior is nearly the prior: the mean of the two points
    assert exact.posterior_mean(torch.zeros(1, 2), torch.tensor([999])).abs().max() < 1e-6


def test_recording_model_records_each_call_and_keeps_gradients():
    import torch

    inner = checks.ToyNoisePredictor(seed=1)
    model = checks.RecordingModel(inner)
    x_t, t = torch.randn(3, 2), torch.tensor([1, 500, 999])
    output = model(x_t, t)
    assert torch.equal(output, inner(x_t, t)) and len(model.calls) == 1
    seen_x_t, seen_t = model.calls[0]
    assert torch.equal(seen_x_t, x_t) and torch.equal(seen_t, t) and not seen_x_t.requires_grad
    output.sum().backward()
    assert inner.weight.grad is not None, "gradients reach the wrapped network"
    x_t.add_(1.0)
    assert not torch.equal(seen_x_t, x_t), "the record is a copy"
    model(x_t, t)
    assert len(model.calls) == 2


def test_self_check_table(capsys):
    results = checks.self_check({})
    assert [status for _, status, _ in results] == ["not attempted"] * len(checks.PARTS)

    def not_done(*args, **kwargs):
        raise NotImplementedError()

    def crashes(*args, **kwargs):
        raise RuntimeError("boom")

    namespace = answers_namespace({"q_sample": "no_sqrt"})
    del namespace["ddim_step"]  # its cell was never run
    namespace["noise_prediction_loss"] = crashes
    namespace["ddpm_step"] = not_done
    status = {part.label: status for part, status, _ in checks.run_checks(namespace)}
    assert status == {"a": "pass", "b": "FAIL", "c": "FAIL", "d": "not attempted", "e": "not attempted", "f": "pass"}
    capsys.readouterr()
    checks.self_check(namespace)
    table = capsys.readouterr().out
    for expected in ("RuntimeError: boom", "ddim_step not defined", "NotImplementedError", "5 of 18", "sqrt(alpha_bar)"):
        assert expected in table, f"{expected!r} missing from the table:\n{table}"


# --- autograding (slow) ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A throwaway course directory with ps4's source and the regenerated release."""
    return make_course(tmp_path_factory.mktemp("course"), "ps4")


def filled_in_release(mistakes: dict[str, str]) -> nbformat.NotebookNode:
    return grading.filled_in_release(SOURCE, RELEASE, bugs(mistakes), WRITTEN_ANSWER)


@pytest.mark.slow
def test_release_is_regenerated_identically(course):
    grading.assert_release_regenerated(course, "ps4", RELEASE)


@pytest.mark.slow
def test_autograde_correct_blank_and_buggy(course):
    from coursekit.checkpoint import shipped_checkpoints

    assert "ddpm-eps" in shipped_checkpoints(), "ps4's sampling demo samples the shipped checkpoint `ddpm-eps`"
    assert {"ddpm", "mnist-robust-classifier"} <= set(shipped_checkpoints()), (
        "ps4's last demo judges samples of the shipped checkpoint `ddpm` with the robust classifier's features")
    buggy = {student: filled_in_release(mistakes) for student, mistakes in BUGGY_SUBMISSIONS.items()}
    grading.assert_grading_round_trip(course, "ps4", SOURCE, RELEASE, buggy, TEST_POINTS, BUGGY_SCORES, "answer_ddim")
