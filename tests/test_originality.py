"""The hidden tests' guard against answers that call the package's own implementation."""

from __future__ import annotations

import functools
import sys
import types

import pytest
import torch

from coursekit.exercises.originality import UsesCourseImplementation, implementation_codes, own_work
from coursekit.models.autoencoder import Autoencoder, AutoencoderConfig, reconstruction_error


def _own_mse(model, images):
    with torch.no_grad():
        return ((model(images) - images) ** 2).flatten(1).mean(dim=1)


def _model():
    torch.manual_seed(0)
    return Autoencoder(AutoencoderConfig(latent_dim=2)).eval()


def test_an_answer_written_from_tensor_operations_passes():
    model, images = _model(), torch.rand(3, 1, 28, 28)
    with own_work("(c) anomaly scores", reconstruction_error):
        scores = _own_mse(model, images)
    assert torch.allclose(scores, reconstruction_error(model, images), atol=1e-6)


@pytest.mark.parametrize("route", ["direct", "renamed", "partial", "wrapped", "reloaded"])
def test_every_route_to_the_implementation_is_caught_and_the_feedback_says_why(route):
    model, images = _model(), torch.rand(3, 1, 28, 28)
    if route == "direct":
        answer = reconstruction_error
    elif route == "renamed":
        namespace: dict = {}
        exec("from coursekit.models.autoencoder import reconstruction_error as my_scores", namespace)
        answer = namespace["my_scores"]
    elif route == "partial":
        answer = functools.partial(reconstruction_error, batch_size=2)
    elif route == "wrapped":
        def answer(model, images):  # a student's own function that delegates
            return reconstruction_error(model, images) + 0.0
    else:  # what importlib.reload makes: a new function object and a new code object, same source
        code = reconstruction_error.__code__.replace()
        answer = types.FunctionType(code, reconstruction_error.__globals__, "reconstruction_error",
                                    reconstruction_error.__defaults__, reconstruction_error.__closure__)
        assert answer is not reconstruction_error
    with pytest.raises(UsesCourseImplementation) as caught:
        with own_work("(c) anomaly scores", reconstruction_error):
            scores = answer(model, images)
    message = str(caught.value)
    assert "(c) anomaly scores" in message and "reconstruction_error" in message
    assert "no points" in message and "yourself" in message
    # the answer still ran to the end: the guard judges after the call, it never changes the result
    assert scores.shape == (3,)
    assert isinstance(caught.value, AssertionError)  # nbgrader scores the cell 0, like any failed check


def test_a_class_counts_through_its_methods_and_subclasses_but_not_torch_machinery():
    codes = implementation_codes(Autoencoder)
    names = set(codes.values())
    assert any(name.endswith("Autoencoder.forward") for name in names)
    assert not any("torch" in filename for filename, _, _ in codes)

    class StudentsEncoder(Autoencoder):  # a subclass that reuses the course model's forward
        pass

    with pytest.raises(UsesCourseImplementation, match="Autoencoder"):
        with own_work("(a) encoder and decoder", Autoencoder):
            StudentsEncoder(AutoencoderConfig(latent_dim=2))(torch.rand(1, 1, 28, 28))

    # a model of the student's own, made of torch layers, runs freely inside the guard
    with own_work("(a) encoder and decoder", Autoencoder):
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 2))(torch.rand(1, 1, 28, 28))


def test_the_guard_restores_and_chains_an_earlier_profile_function():
    seen = []

    def earlier(frame, event, arg):
        if event == "call":
            seen.append(frame.f_code.co_name)

    before = sys.getprofile()
    sys.setprofile(earlier)
    try:
        with own_work("(b) loss", reconstruction_error):
            _own_mse(_model(), torch.rand(1, 1, 28, 28))
        assert sys.getprofile() is earlier
    finally:
        sys.setprofile(before)
    assert "_own_mse" in seen


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(TypeError, match="Python functions, methods or classes"):
        with own_work("(x)", 3):
            pass
    with pytest.raises(ValueError, match="at least one implementation"):
        with own_work("(x)"):
            pass


def test_a_dataclass_is_watched_through_its_own_generated_methods_only():
    import dataclasses

    @dataclasses.dataclass
    class Package:  # stands for a course dataclass such as a schedule
        beta: float

    @dataclasses.dataclass
    class Students:  # any other dataclass, built by the answer
        beta: float

    with own_work("(a) the schedule", Package):
        Students(0.1)  # runs a generated __init__ too, at the same '<string>' position
    with pytest.raises(UsesCourseImplementation, match="Package"):
        with own_work("(a) the schedule", Package):
            Package(0.1)
