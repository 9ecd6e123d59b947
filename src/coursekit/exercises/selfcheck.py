"""The self-check that ends every exercise set: which parts pass their visible checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Part:
    label: str
    title: str
    points: int
    names: tuple[str, ...]  # what the student defines in the notebook
    check: Callable[..., None]


def run_checks(parts: tuple[Part, ...], namespace: dict[str, Any]) -> list[tuple[Part, str, str]]:
    """``(part, status, reason)`` for every part, status one of "pass", "FAIL", "not attempted"."""
    results = []
    for part in parts:
        missing = [name for name in part.names if name not in namespace]
        if missing:
            results.append((part, "not attempted", f"{', '.join(missing)} not defined (run its cell)"))
            continue
        try:
            part.check(*(namespace[name] for name in part.names))
        except NotImplementedError:
            results.append((part, "not attempted", "still raises NotImplementedError"))
        except AssertionError as error:
            results.append((part, "FAIL", str(error) or "an assertion failed"))
        except Exception as error:  # a crash in the student's code is a failure, not a crash here
            results.append((part, "FAIL", f"{type(error).__name__}: {error}"))
        else:
            results.append((part, "pass", ""))
    return results


def self_check(parts: tuple[Part, ...], namespace: dict[str, Any]) -> list[tuple[Part, str, str]]:
    """Print which parts pass their visible checks; call it as ``self_check(globals())``."""
    results = run_checks(parts, namespace)
    print(f"{'part':<34}{'points':>6}  result")
    for part, status, reason in results:
        line = f"({part.label}) {part.title:<30}{part.points:>6}  {status}"
        print(line + (f": {reason}" if reason else ""))
    passed = sum(part.points for part, status, _ in results if status == "pass")
    total = sum(part.points for part in parts)
    print(f"\nvisible checks pass for {passed} of {total} autograded points; "
          "hidden tests and the written question are graded after you hand in.")
    return results
