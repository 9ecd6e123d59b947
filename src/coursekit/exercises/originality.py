"""Hidden tests' guard against answers that call the package's own implementation of the part.

Every coding part of the exercise sets asks for something that ``coursekit`` (or a library the
course builds on) already implements: an ELBO, a DDIM step, a guided loop. An answer that just calls
that implementation passes every numerical check while the student wrote nothing, so the hidden
tests run the student's code inside :func:`own_work`, which fails the part, with a message that
says why, when any of the listed implementations runs during the call::

    from coursekit.exercises.originality import own_work
    from coursekit.vae import elbo_loss as _elbo_loss

    with own_work("(c) the ELBO", _elbo_loss):
        loss = elbo_loss(x, x_hat, mu, logvar)   # the student's function

How it knows: while the block runs, a profile hook (``sys.setprofile``) sees every Python function
call, and the call fails the part when its code is one of the listed implementations' code. Code is
matched by file, first line and name, not by object identity, so it is caught however the answer
reached it: imported under another name, through a subclass, a ``functools.partial`` or after
``importlib.reload``. Code generated at run time (the ``__init__`` of a dataclass) has no file of
its own and is matched by identity. Copying the package's source into the answer is not caught and not meant to
be: reading good code is allowed, calling it instead of writing the part is not.

The hook watches the calling thread only, and chains to any profile function that was set before
(a profiler or coverage tool keeps working). The check happens when the block ends, after the
student's code has returned, so a forbidden call never changes what the code computes.
"""

from __future__ import annotations

import inspect
import sys
import types
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["UsesCourseImplementation", "own_work", "implementation_codes"]

CodeKey = tuple[str, int, str]


class UsesCourseImplementation(AssertionError):
    """An answer called the implementation that its part asks the student to write.

    A subclass of ``AssertionError`` so that nbgrader scores the test cell 0 like any failed check,
    and shows this message in the feedback."""


def _key(code: types.CodeType) -> CodeKey:
    if code.co_filename.startswith("<"):
        # code made at run time (a dataclass's __init__ and __eq__ come from exec, all '<string>' line 2): the same
        # position would match every such method of every class, so only this very code object counts
        return ("<generated>", id(code), code.co_name)
    return (code.co_filename, code.co_firstlineno, code.co_name)


def _function_codes(function: Any) -> list[types.CodeType]:
    """The code objects of a Python function, method, staticmethod, classmethod or property."""
    if isinstance(function, (staticmethod, classmethod)):
        function = function.__func__
    if isinstance(function, property):
        return [c for f in (function.fget, function.fset, function.fdel) if f is not None for c in _function_codes(f)]
    if isinstance(function, types.MethodType):
        function = function.__func__
    function = inspect.unwrap(function)
    code = getattr(function, "__code__", None)
    return [code] if isinstance(code, types.CodeType) else []


def implementation_codes(*implementations: Any) -> dict[CodeKey, str]:
    """Map the code of each listed implementation to the name shown in the feedback.

    A function (or method) contributes its own code; a class contributes every function defined in
    its body and in its bases' bodies up to, not including, the first base from outside its own
    top-level package (so ``nn.Module``'s machinery never counts, a course model's ``forward`` does).
    """
    codes: dict[CodeKey, str] = {}
    for implementation in implementations:
        if isinstance(implementation, type):
            package = implementation.__module__.split(".")[0]
            for klass in implementation.__mro__:
                if klass.__module__.split(".")[0] != package:
                    continue
                for attribute, value in vars(klass).items():
                    for code in _function_codes(value):
                        codes[_key(code)] = f"{implementation.__module__}.{implementation.__qualname__}.{attribute}"
            continue
        found = _function_codes(implementation)
        if not found:
            raise TypeError(
                f"own_work() needs Python functions, methods or classes to watch for, got {implementation!r}"
            )
        name = f"{getattr(implementation, '__module__', '?')}.{getattr(implementation, '__qualname__', implementation)}"
        for code in found:
            codes[_key(code)] = name
    return codes


@contextmanager
def own_work(part: str, *implementations: Any) -> Iterator[None]:
    """Fail the part if any of ``implementations`` runs inside the block (see the module's docs).

    ``part`` names the part in the message, e.g. ``"(c) the ELBO"``.
    """
    codes = implementation_codes(*implementations)
    if not codes:
        raise ValueError("own_work() needs at least one implementation to watch for")
    called: list[str] = []
    previous = sys.getprofile()

    def hook(frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "call":
            name = codes.get(_key(frame.f_code))
            if name is not None and name not in called:
                called.append(name)
        if previous is not None:
            previous(frame, event, arg)

    sys.setprofile(hook)
    try:
        yield
    finally:
        sys.setprofile(previous)
    if called:
        listed = ", ".join(f"`{name}`" for name in called)
        raise UsesCourseImplementation(
            f"Part {part} calls {listed}, which is the implementation of the very thing this part asks "
            f"you to write. An answer that hands the work to it scores no points for the part, however "
            f"right its numbers are. Write it yourself from tensor operations, as the part describes."
        )
