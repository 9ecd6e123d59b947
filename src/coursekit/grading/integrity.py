"""What a graded run says about a submission, beyond its points.

- :func:`static_rebinding` reads a submission's code and finds the places that rebind a library
  function the tests rely on (``torch.allclose = ...``, ``setattr(np, "isclose", ...)``,
  ``builtins.abs = ...``); the sandboxed kernel watches for the same at run time
  (:func:`coursekit.grading.sandbox.watch_rebinding`). Either makes the test results untrustworthy:
  the submission is then marked for review, not scored.
- :func:`inspect_run` reads the notebook nbgrader executed: the cells stopped at a time limit (CPU or
  wall clock), the cells whose printing was cut, the rebinding notices (and the watch's own failures,
  :data:`~coursekit.grading.sandbox.WATCH_FAILED_NOTICE`), and the error each failing cell
  raised (so that a renamed function or a missing package is named in the report, not only in the
  autograded notebook).
- :func:`cap_images` keeps the images a run stored within a budget, so that a notebook that draws
  30 MB of figures does not come back as a 58 MB feedback page.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass, field

import nbformat

from coursekit.grading.sandbox import REBIND_NOTICE, TRUNCATION_NOTICE, WATCH_FAILED_NOTICE

# Top-level packages whose attributes the static check resolves (importing them in the grader is safe).
RESOLVABLE = {"torch", "numpy", "scipy", "sklearn", "math", "builtins", "operator", "functools", "coursekit", "random",
              "statistics"}
CPU_LIMIT_ERROR = "CellCPUTimeExceeded"
WALL_LIMIT_ERRORS = {"CellTimeoutError", "TimeoutError", "KeyboardInterrupt"}
IMAGE_BUDGET = 5 * 2**20  # bytes of images kept in one executed notebook
IMAGE_NOTICE = "[coursekit grader: {count} image(s), {size}, removed from this output: the run's images were over {limit}]"


def _cell_label(k: int, cell) -> str:
    grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
    return f"cell {k + 1}" + (f" ({grade_id})" if grade_id else "")


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def _dotted(node) -> list[str] | None:
    """``torch.nn.functional.mse_loss`` -> ['torch', 'nn', 'functional', 'mse_loss']; None if not a plain chain."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _resolves_to_callable(module: str, attributes: list[str]) -> bool:
    """Whether ``module.attr1.attr2...`` exists in the grader's environment and is a function, class or module."""
    if module.split(".")[0] not in RESOLVABLE:
        return False
    try:
        value = importlib.import_module(module)
        for attribute in attributes:
            value = getattr(value, attribute)
    except Exception:  # noqa: BLE001 (an attribute the library does not have: a new name, not a rebinding)
        return False
    return callable(value) or type(value).__name__ == "module"


def static_rebinding(notebook) -> list[str]:
    """Places in the notebook's code cells that rebind a function, class or submodule of a library
    (resolved in this environment), e.g. ``cell 9: torch.allclose`` (in the form the kernel's watch
    reports)."""
    found = []
    aliases = {"builtins": "builtins"}  # name in the notebook -> the module it is bound to, by the cells so far
    for k, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        try:  # IPython's magics and shell lines are not Python
            tree = ast.parse("\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))))
        except SyntaxError:
            continue
        for node in ast.walk(tree):  # this cell's imports count for its own assignments too
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        targets = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
                for target in (node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]):
                    for element in (target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]):
                        if isinstance(element, ast.Attribute):
                            targets.append((node.lineno, _dotted(element)))
                        elif (isinstance(element, ast.Subscript) and isinstance(element.slice, ast.Constant)
                              and isinstance(element.slice.value, str)):
                            # vars(torch)["allclose"] = ..., torch.__dict__["allclose"] = ..., __builtins__["abs"] = ...
                            base = element.value
                            if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "vars" and base.args:
                                chain = _dotted(base.args[0])
                            elif isinstance(base, ast.Attribute) and base.attr == "__dict__":
                                chain = _dotted(base.value)
                            elif isinstance(base, ast.Name) and base.id == "__builtins__":
                                chain = ["builtins"]
                            else:
                                chain = None
                            if chain:
                                targets.append((node.lineno, [*chain, element.slice.value]))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr")
                  and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
                chain = _dotted(node.args[0])
                if chain:
                    targets.append((node.lineno, [*chain, node.args[1].value]))
        for _, chain in sorted(targets, key=lambda target: target[0]):
            if not chain or len(chain) < 2:
                continue
            if chain[0] == "__builtins__":
                chain = ["builtins", *chain[1:]]
            module = aliases.get(chain[0])
            if module is None:
                continue
            # `from torch import nn` binds nn to torch.nn: resolve it as an attribute path from the top package
            top, *rest = module.split(".")
            if _resolves_to_callable(top, [*rest, *chain[1:]]):
                found.append(f"{_cell_label(k, cell)}: {'.'.join([module, *chain[1:]])}")
    return list(dict.fromkeys(found))


@dataclass
class RunReport:
    """What one executed notebook says."""

    cpu_timeouts: list[str] = field(default_factory=list)  # cell labels
    wall_timeouts: list[str] = field(default_factory=list)
    rebinding: list[str] = field(default_factory=list)  # "cell 9 (answer): torch.allclose"
    watch_failures: list[str] = field(default_factory=list)  # "cell 9 (answer): RuntimeError: ..."
    errors: list[str] = field(default_factory=list)  # "cell 12 (test_x) failed: NameError: ..."
    truncated: list[str] = field(default_factory=list)

    @property
    def timed_out(self) -> bool:
        return bool(self.cpu_timeouts or self.wall_timeouts)


def _first_line(text: str, limit: int = 160) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def inspect_run(notebook) -> RunReport:
    """Read an executed notebook: time limits hit, output cut, rebinding notices, and errors."""
    report = RunReport()
    notice = TRUNCATION_NOTICE.split("{")[0]
    rebind = REBIND_NOTICE.split("{")[0]
    watch_failed = WATCH_FAILED_NOTICE.split("{")[0]
    for k, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        where = _cell_label(k, cell)
        meta = cell.metadata.get("nbgrader", {})
        is_test = bool(meta.get("grade") and not meta.get("solution"))
        if is_test and not any(o.output_type == "error" for o in cell.outputs):
            stderr = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.get("name") == "stderr")
            if stderr.strip():  # nbgrader scores a test cell that wrote to stderr as failed
                report.errors.append(f"{where} failed: it wrote to stderr, which nbgrader scores as an error: "
                                     f"{_first_line(stderr)}")
        for output in cell.outputs:
            if output.output_type == "stream":
                text = output.get("text", "")
                if notice in text or "... Output truncated ..." in text:
                    report.truncated.append(where)
                for line in text.splitlines():
                    if line.startswith(rebind):
                        report.rebinding.append(f"{where}: {line[len(rebind):].rstrip(']')}")
                    elif line.startswith(watch_failed):
                        report.watch_failures.append(f"{where}: {line[len(watch_failed):].removesuffix(']')}")
            elif output.output_type == "error":
                if output.ename == CPU_LIMIT_ERROR:
                    report.cpu_timeouts.append(where)
                elif output.ename in WALL_LIMIT_ERRORS:
                    report.wall_timeouts.append(where)
                else:
                    verb = "failed" if is_test else "raised"
                    report.errors.append(f"{where} {verb}: {output.ename}: {_first_line(output.get('evalue', ''))}".rstrip(": "))
    report.truncated = list(dict.fromkeys(report.truncated))
    report.watch_failures = list(dict.fromkeys(report.watch_failures))
    report.cpu_timeouts = list(dict.fromkeys(report.cpu_timeouts))
    report.wall_timeouts = [w for w in dict.fromkeys(report.wall_timeouts) if w not in report.cpu_timeouts]
    return report


def cap_images(notebook, budget: int = IMAGE_BUDGET) -> int:
    """Remove stored images past ``budget`` bytes (in cell order) from the notebook's outputs, leaving a
    notice in their place; returns the bytes removed."""
    used, removed = 0, 0
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        kept_outputs, count, size = [], 0, 0
        for output in cell.outputs:
            data = output.get("data", {}) if output.output_type in ("display_data", "execute_result") else {}
            images = {key: value for key, value in data.items() if key.startswith("image/")}
            bytes_here = sum(len(value) if isinstance(value, str) else len("".join(value)) for value in images.values())
            if images and used + bytes_here > budget:
                for key in images:
                    del data[key]
                count, size, removed = count + 1, size + bytes_here, removed + bytes_here
                if not data:
                    continue
            else:
                used += bytes_here
            kept_outputs.append(output)
        if count:
            kept_outputs.append(nbformat.v4.new_output(
                "stream", name="stdout",
                text=IMAGE_NOTICE.format(count=count, size=_megabytes(size), limit=_megabytes(budget)) + "\n"))
            cell.outputs = kept_outputs
    return removed


def image_bytes(notebook) -> int:
    """Bytes of images stored in the notebook's outputs (base64 text, as saved)."""
    total = 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            for key, value in output.get("data", {}).items():
                if key.startswith("image/"):
                    total += len(value) if isinstance(value, str) else len("".join(value))
    return total


