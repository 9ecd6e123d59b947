"""Helpers shared by the autograding tests of the exercise sets (``test_ps*_grading.py``).

An exercise set is an nbgrader source notebook in ``solutions/<name>/`` and its generated student
release in ``exercises/<name>/``. These helpers read the answer cells of a source notebook (with
plausible mistakes patched in), build a throwaway course directory, submit notebooks to it and run
nbgrader there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import torch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NBGRADER = BIN / "nbgrader"
SOLUTION_MARKERS = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*\n", flags=re.MULTILINE)
HIDDEN_TESTS = re.compile(r"^### BEGIN HIDDEN TESTS\n(.*?)^### END HIDDEN TESTS", flags=re.MULTILINE | re.DOTALL)

# A bug is (correct text, wrong text) in the answer cell with a given grade_id.
Bugs = dict[str, tuple[str, str]]


def pick_bugs(mistakes: dict[str, dict[str, tuple[str, str]]], chosen: dict[str, str]) -> Bugs:
    """The bugs named by ``chosen`` (answer cell -> mistake name) from a set's table of ``mistakes``."""
    return {part: mistakes[part][name] for part, name in chosen.items()}


def buggy_scores(submissions: dict[str, dict[str, str]], test_points: dict[str, float],
                 answer_of: dict[str, str]) -> dict[str, dict[str, float]]:
    """Each buggy submission's expected score: 0 for every test whose answer cell has a mistake, full otherwise."""
    return {student: {test: 0 if answer_of[test] in parts else points for test, points in test_points.items()}
            for student, parts in submissions.items()}


def run_cell_part(text: str, namespace: dict, label: str) -> None:
    """Run part of a notebook cell (e.g. its hidden tests) in ``namespace``."""
    exec(compile(text, label, "exec"), namespace)  # noqa: S102 (our own notebook)


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def nbgrader_meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def answer_sources(source: Path, bugs: Bugs | None = None) -> dict[str, str]:
    """grade_id -> source of each autograded answer cell of ``source``, markers removed, bugs applied."""
    sources = {}
    for cell in read(source).cells:
        meta = nbgrader_meta(cell)
        if cell.cell_type == "code" and meta.get("solution"):
            text = SOLUTION_MARKERS.sub("", cell.source)
            if bugs and meta["grade_id"] in bugs:
                correct, wrong = bugs[meta["grade_id"]]
                assert correct in text, f"the bug for {meta['grade_id']} no longer matches the solution"
                text = text.replace(correct, wrong)
            sources[meta["grade_id"]] = text
    return sources


def answers_namespace(source: Path, bugs: Bugs | None = None, namespace: dict | None = None) -> dict:
    """Run the answer cells (only those) in a fresh namespace, as a notebook would."""
    namespace = {"torch": torch, **(namespace or {})}
    for text in answer_sources(source, bugs).values():
        exec(compile(text, f"<{source.stem} answer>", "exec"), namespace)  # noqa: S102 (our own notebook)
    return namespace


def hidden_tests(source: Path) -> dict[str, str]:
    """grade_id -> the hidden part of each autograded test cell of ``source``."""
    tests = {}
    for cell in read(source).cells:
        meta = nbgrader_meta(cell)
        if cell.cell_type == "code" and meta.get("grade"):
            match = HIDDEN_TESTS.search(cell.source)
            assert match, f"{meta['grade_id']} has no hidden tests"
            tests[meta["grade_id"]] = match.group(1)
    return tests


def visible_tests(source: Path) -> dict[str, str]:
    """grade_id -> the visible part of each autograded test cell of ``source`` (what students see)."""
    return {nbgrader_meta(cell)["grade_id"]: cell.source.split("### BEGIN HIDDEN TESTS")[0]
            for cell in read(source).cells if cell.cell_type == "code" and nbgrader_meta(cell).get("grade")}


def run_nbgrader(course: Path, *args: str) -> float:
    """Run ``nbgrader`` in ``course``; return the seconds it took. Fails the test with its log."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # nbgrader calls `alembic` from the PATH
    env["OMP_NUM_THREADS"] = "1"  # the graded kernels share a few cores; threads only fight over them
    start = time.perf_counter()
    result = subprocess.run([str(NBGRADER), *args], cwd=course, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return seconds


def make_course(course: Path, assignment: str) -> Path:
    """Fill the empty folder ``course`` with the config and ``assignment``'s source, and generate its release."""
    # The config sets the course root to its own folder, so a copy points at the copy.
    shutil.copy(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
    shutil.copytree(ROOT / "solutions" / assignment, course / "solutions" / assignment,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    run_nbgrader(course, "generate_assignment", assignment, "--force")
    return course


def submit(course: Path, assignment: str, student: str, notebook: nbformat.NotebookNode) -> None:
    folder = course / "submitted" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, str(folder / f"{assignment}.ipynb"))


def filled_in_release(source: Path, release: Path, bugs: Bugs, written_answer: str) -> nbformat.NotebookNode:
    """The release with every answer cell filled in from the solution, some with ``bugs``."""
    notebook = read(release)
    sources = answer_sources(source, bugs)
    for cell in notebook.cells:
        meta = nbgrader_meta(cell)
        if meta.get("solution") and cell.cell_type == "code":
            cell.source = sources[meta["grade_id"]]
        elif meta.get("solution"):
            cell.source = written_answer
    return notebook


def autograde(course: Path, assignment: str, students: list[str]) -> dict[str, float]:
    """Autograde each submitted student; return the seconds each took, and print them."""
    seconds = {student: run_nbgrader(course, "autograde", assignment, "--student", student, "--force")
               for student in students}
    print(f"\n{assignment} autograde seconds per submission: " + ", ".join(f"{s} {t:.1f}" for s, t in seconds.items()))
    return seconds


def auto_scores(course: Path, assignment: str, student: str, grade_ids) -> dict[str, float]:
    """The autograded score of each test cell ``grade_ids`` for one student."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        return {grade_id: gradebook.find_grade(grade_id, assignment, assignment, student).auto_score
                for grade_id in grade_ids}


# The first code cell of every notebook (tests/test_project.py checks its URL against _config.yml).
FIRST_CODE_CELL = '''# Colab: install the course package (on your own machine this cell only picks the device).
import sys
if "google.colab" in sys.modules:
    %pip install -q "coursekit @ git+https://github.com/gen-image-course/generative-image-models"

import torch
from coursekit import get_device, seed_everything

device = get_device()
generator = seed_everything(0)
print(f"torch {torch.__version__}, device: {device}")'''


def check_source_structure(source, test_points: dict, written_points: dict, parts) -> object:
    """Assertions every exercise source notebook must pass; returns the notebook for set-specific checks."""
    notebook = read(source)
    assert notebook.metadata["kernelspec"] == {"name": "python3", "display_name": "Python 3", "language": "python"}
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert notebook.cells[0].cell_type == "markdown" and "run the last cell" in notebook.cells[0].source.lower()
    assert code_cells[0].source == FIRST_CODE_CELL and not nbgrader_meta(code_cells[0])
    assert all(not cell.outputs and cell.execution_count is None for cell in code_cells), "store the source without outputs"
    assert "self_check(globals())" in code_cells[-1].source and not nbgrader_meta(code_cells[-1])

    tests = {nbgrader_meta(c)["grade_id"]: c for c in code_cells if nbgrader_meta(c).get("grade")}
    assert {grade_id: nbgrader_meta(c)["points"] for grade_id, c in tests.items()} == test_points
    for grade_id, cell in tests.items():
        assert nbgrader_meta(cell)["locked"] and not nbgrader_meta(cell)["solution"]
        assert "assert" in cell.source.split("### BEGIN HIDDEN TESTS")[0], f"{grade_id} has no visible asserts"
        assert "### BEGIN HIDDEN TESTS" in cell.source and "### END HIDDEN TESTS" in cell.source
    written = {nbgrader_meta(c)["grade_id"]: nbgrader_meta(c)["points"] for c in notebook.cells
               if c.cell_type == "markdown" and nbgrader_meta(c).get("grade")}
    assert written == written_points
    total = sum(test_points.values()) + sum(written_points.values())
    assert f"**{total}**" in notebook.cells[0].source, f"the instructions should state the total, {total} points"
    # the module's self-check table agrees with the notebook's points
    assert [part.points for part in parts] == list(test_points.values())
    return notebook


def check_release(release_path, answers: int, written: int) -> list:
    """The generated release has no solutions, hidden tests or outputs; returns its answer stubs."""
    release = read(release_path)
    for cell in release.cells:
        assert "BEGIN SOLUTION" not in cell.source and "HIDDEN TESTS" not in cell.source
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None
    stubs = [cell for cell in release.cells if nbgrader_meta(cell).get("solution")]
    assert len(stubs) == answers + written
    assert all("raise NotImplementedError()" in c.source for c in stubs if c.cell_type == "code")
    return stubs



def assert_release_regenerated(course: Path, assignment: str, release: Path) -> None:
    """The release nbgrader generated in ``course`` equals the committed ``exercises/`` notebook."""
    import json

    regenerated = json.loads((course / "exercises" / assignment / f"{assignment}.ipynb").read_text())
    committed = json.loads(Path(release).read_text())
    assert regenerated == committed, (
        f"exercises/{assignment}/{assignment}.ipynb is out of date: "
        f"run `nbgrader generate_assignment {assignment} --force` in the repository root"
    )


def assert_grading_round_trip(course: Path, assignment: str, source: Path, release: Path,
                              buggy: dict[str, nbformat.NotebookNode], test_points: dict[str, float],
                              buggy_scores: dict[str, dict[str, float]], written_grade_id: str) -> None:
    """Submit the solution, the untouched release and ``buggy`` notebooks, autograde them all, and
    check: full marks for the solution, 0 for the blank, exactly ``buggy_scores`` for each buggy one
    (some points, not all), and the written answer waiting for a person."""
    from nbgrader.api import Gradebook

    submit(course, assignment, "correct", read(source))
    submit(course, assignment, "blank", read(release))
    for student, notebook in buggy.items():
        submit(course, assignment, student, notebook)
    autograde(course, assignment, ["correct", "blank", *buggy])

    full = sum(test_points.values())
    correct = auto_scores(course, assignment, "correct", test_points)
    blank = auto_scores(course, assignment, "blank", test_points)
    assert correct == test_points, f"the solution should get every autograded point, got {correct}"
    assert sum(blank.values()) == 0, f"the untouched release should get 0, got {blank}"
    for student in buggy:
        scores = auto_scores(course, assignment, student, test_points)
        print(f"{student}: {scores}")
        assert scores == buggy_scores[student], f"{student}: expected {buggy_scores[student]}, got {scores}"
        assert 0 < sum(scores.values()) < full
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        # The written answer waits for a person, except where it was left blank (nbgrader gives 0).
        for student in ("correct", *buggy):
            assert gradebook.find_grade(written_grade_id, assignment, assignment, student).needs_manual_grade
        assert gradebook.find_submission_notebook(assignment, assignment, "correct").code_score == full
