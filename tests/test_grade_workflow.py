"""``coursekit grade``: collecting, sanitising, the sandbox, and a whole batch of awkward ps1 submissions.

The fast tests check the pieces on notebooks built here from ``exercises/ps1`` and ``solutions/ps1``.
The slow tests build a throwaway nbgrader course for ps1 and a zip of 17 submissions made by
:func:`fixture_submissions` (every way a real submission goes wrong that the grader must survive),
grade it with two students at a time and again one at a time, and check every outcome.
"""

from __future__ import annotations

import copy
import csv
import datetime
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import nbformat
import pytest

import grading
from grading import ROOT, nbgrader_meta, read
from test_ps1_grading import BUGS, SOURCE, TEST_POINTS

from coursekit.grading.collect import SubmittedFile, collect, notebook_name
from coursekit.grading.sandbox import (TRUNCATION_NOTICE, allowed_folders, landlock_abi, limit_output)
from coursekit.grading.sanitize import Unrecoverable, read_notebook, sanitize

RELEASE = ROOT / "exercises" / "ps1" / "ps1.ipynb"
WRITTEN = "Codes of real digits fill a small region of the latent space; random points land where the decoder never learned."
FULL = sum(TEST_POINTS.values())
CELL_TIMEOUT = 10


def correct() -> nbformat.NotebookNode:
    """The release filled in with the reference answers, as a good student hands it in."""
    return grading.filled_in_release(SOURCE, RELEASE, {}, WRITTEN)


def buggy(bugs) -> nbformat.NotebookNode:
    return grading.filled_in_release(SOURCE, RELEASE, bugs, WRITTEN)


def index_of(notebook, grade_id: str) -> int:
    return next(k for k, cell in enumerate(notebook.cells) if nbgrader_meta(cell).get("grade_id") == grade_id)


def colab_format(notebook) -> bytes:
    """What Colab's File > Download .ipynb writes: nbformat 4.0, no cell ids, colab keys, lines as lists."""
    data = json.loads(nbformat.writes(notebook))
    data["nbformat_minor"] = 0
    data["metadata"] = {"colab": {"provenance": [], "name": "ps1.ipynb"}, "accelerator": "GPU",
                        "kernelspec": {"name": "python3", "display_name": "Python 3"}, "language_info": {"name": "python"}}
    for k, cell in enumerate(data["cells"]):
        del cell["id"]
        cell["metadata"]["id"] = f"c0lab{k:04d}"
        if cell["cell_type"] == "code":
            cell["metadata"]["colab"] = {"base_uri": "https://localhost:8080/"}
            cell["metadata"]["outputId"] = f"out{k}"
        assert isinstance(cell["source"], list)  # nbformat writes lines as lists, as Colab does
    return json.dumps(data, indent=2).encode()


def strip_nbgrader(notebook):
    notebook = copy.deepcopy(notebook)
    for cell in notebook.cells:
        cell.metadata.pop("nbgrader", None)
        cell.metadata.pop("deletable", None)
        cell.metadata.pop("editable", None)
    return notebook


def with_cell(notebook, after_grade_id: str, source: str, cell_type: str = "code"):
    notebook = copy.deepcopy(notebook)
    new = nbformat.v4.new_code_cell(source) if cell_type == "code" else nbformat.v4.new_markdown_cell(source)
    notebook.cells.insert(index_of(notebook, after_grade_id) + 1, new)
    return notebook


def replace_answer(notebook, grade_id: str, old: str, new: str):
    notebook = copy.deepcopy(notebook)
    cell = notebook.cells[index_of(notebook, grade_id)]
    assert old in cell.source, f"{old!r} not in {grade_id}"
    cell.source = cell.source.replace(old, new)
    return notebook


def sneaky(course: Path):
    """Correct answers plus a cell that tries to read the course's gradebook and solutions by absolute path."""
    probe = textwrap.dedent(f"""\
        for path in [{str(course / 'gradebook.db')!r}, {str(course / 'solutions' / 'ps1' / 'ps1.ipynb')!r}]:
            try:
                open(path, 'rb').read(16)
                print('READ', path)
            except OSError as error:
                print('DENIED', path, type(error).__name__)
        """)
    return with_cell(correct(), "encoder_decoder", probe)


# expected outcome per student: autograded points of each test cell, or the start of the failure reason
EXPECTED = {
    "correct": {**TEST_POINTS},
    "blank": {g: 0 for g in TEST_POINTS},
    "buggy": {"test_encoder_decoder": 3, "test_reconstruction_loss": 0, "test_anomaly_scores": 2,
              "test_choose_threshold": 0, "test_roc_auc": 0},
    "colab": {**TEST_POINTS},
    "copyof": {**TEST_POINTS},
    "suffix": {**TEST_POINTS},
    "duplicated": {**TEST_POINTS},
    "testdeleted": {**TEST_POINTS},
    "testmarkdown": {**TEST_POINTS},
    "testedited": {**TEST_POINTS, "test_reconstruction_loss": 0},
    "stripped": {**TEST_POINTS},
    "scratch": {**TEST_POINTS},
    "infiniteloop": {**TEST_POINTS, "test_choose_threshold": 0},
    "crash": "the kernel died",
    "hugeoutput": {**TEST_POINTS},
    "notanotebook": "notanotebook_ps1.ipynb is not a notebook",
    "sneaky": {**TEST_POINTS},
}
# what the summary must say about each (a substring of one of its repairs or notes)
EXPECTED_REPAIRS = {
    "colab": "upgraded nbformat 4.0 to 4.5 and gave",
    "duplicated": "'reconstruction_loss' appeared 2 times",
    "testdeleted": "the test cell 'test_roc_auc' was missing: restored it",
    "testmarkdown": "'test_choose_threshold' had been changed to markdown",
    "testedited": "'test_reconstruction_loss' had been edited",
    "stripped": "the notebook had no nbgrader metadata: recovered it for 12 cells",
}
EXPECTED_NOTES = {
    "blank": "6 of 6 answers unchanged",
    "copyof": "copyof/Copy of ps1.ipynb taken as ps1.ipynb",
    "suffix": "2 files for ps1.ipynb: graded suffix_ps1 (1).ipynb (the newest)",
    "scratch": "2 cells of the student's own kept",
    "infiniteloop": "(test_choose_threshold) was stopped at the per-cell time limit of 10 s",
    "hugeoutput": "(encoder_decoder) printed too much",
}


def fixture_submissions(course: Path, path: Path) -> Path:
    """A zip as an LMS hands it out: one entry (or folder) per student, every case of EXPECTED."""
    good = correct()
    duplicated = copy.deepcopy(good)
    k = index_of(duplicated, "reconstruction_loss")
    first = copy.deepcopy(duplicated.cells[k])
    first.source = first.source.replace(*BUGS["reconstruction_loss"])
    first.id = "copiedcell"
    duplicated.cells.insert(k, first)  # the wrong version first, the right one run last before the test
    deleted = copy.deepcopy(good)
    del deleted.cells[index_of(deleted, "test_roc_auc")]
    markdown = copy.deepcopy(good)
    k = index_of(markdown, "test_choose_threshold")
    markdown.cells[k] = nbformat.v4.new_markdown_cell(markdown.cells[k].source, metadata=markdown.cells[k].metadata)
    edited = buggy({"reconstruction_loss": BUGS["reconstruction_loss"]})
    k = index_of(edited, "test_reconstruction_loss")
    edited.cells[k].source = "# my answer is right, the check was too strict\nassert True"
    scratch = with_cell(with_cell(good, "roc_auc", "print(roc_auc(torch.tensor([0.2, 0.9]), torch.tensor([False, True])))"),
                        "anomaly_scores", "Note to self: the scores are per image.", "markdown")
    loop = replace_answer(good, "choose_threshold", '"""The score exceeded', 'while True:\n        pass\n    """The score exceeded')
    crash = with_cell(good, "anomaly_scores", "import os\nos._exit(1)")
    huge = replace_answer(good, "encoder_decoder", "from torch import nn", "from torch import nn\nfor i in range(300_000):\n    print(i)")

    old = datetime.datetime(2026, 11, 20, 10, 0, 0).timetuple()[:6]
    new = datetime.datetime(2026, 11, 21, 9, 30, 0).timetuple()[:6]
    entries = [
        ("correct/ps1.ipynb", nbformat.writes(good).encode(), new),
        ("blank/ps1.ipynb", RELEASE.read_bytes(), new),
        ("buggy_ps1.ipynb", nbformat.writes(buggy(BUGS)).encode(), new),
        ("colab/ps1.ipynb", colab_format(good), new),
        ("copyof/Copy of ps1.ipynb", nbformat.writes(good).encode(), new),
        ("suffix_ps1.ipynb", RELEASE.read_bytes(), old),
        ("suffix_ps1 (1).ipynb", nbformat.writes(good).encode(), new),
        ("duplicated/ps1.ipynb", nbformat.writes(duplicated).encode(), new),
        ("testdeleted/ps1.ipynb", nbformat.writes(deleted).encode(), new),
        ("testmarkdown/ps1.ipynb", nbformat.writes(markdown).encode(), new),
        ("testedited/ps1.ipynb", nbformat.writes(edited).encode(), new),
        ("stripped/ps1.ipynb", nbformat.writes(strip_nbgrader(good)).encode(), new),
        ("scratch/ps1.ipynb", nbformat.writes(scratch).encode(), new),
        ("infiniteloop/ps1.ipynb", nbformat.writes(loop).encode(), new),
        ("crash/ps1.ipynb", nbformat.writes(crash).encode(), new),
        ("hugeoutput/ps1.ipynb", nbformat.writes(huge).encode(), new),
        ("notanotebook_ps1.ipynb", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3 a PDF saved with the notebook's name\n", new),
        ("sneaky/ps1.ipynb", nbformat.writes(sneaky(course)).encode(), new),
        ("README.txt", b"Downloaded from the LMS", new),
        ("__MACOSX/correct/._ps1.ipynb", b"\x00\x05\x16\x07", new),
    ]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data, when in entries:
            archive.writestr(zipfile.ZipInfo(name, date_time=when), data)
    return path


# --- collecting ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("ps1.ipynb", "ps1"), ("Copy of ps1.ipynb", "ps1"), ("Copy of Copy of ps1.ipynb", "ps1"),
    ("ps1 (1).ipynb", "ps1"), ("Copy of ps1 (12).ipynb", "ps1"), ("ps1-1.ipynb", "ps1"),
    ("12345_67890_ps1-2.ipynb", "ps1"), ("LATE_12345_67890_ps1.ipynb", "ps1"), ("PS1.IPYNB", "PS1"),
])
def test_notebook_name_drops_colab_and_lms_decorations(name, expected):
    assert notebook_name(name) == expected


def test_collect_maps_files_to_students_and_keeps_the_newest():
    def file(path, mtime=0.0, data=b"{}"):
        return SubmittedFile(path, data, mtime)

    students, unassigned = collect([
        file("alice/Copy of ps1.ipynb"), file("bob_ps1.ipynb", 1.0), file("bob_ps1 (1).ipynb", 2.0),
        file("bob_ps1 (2).ipynb", 1.5), file("carol_12345_678_ps1-1.ipynb"), file("carol_notes.pdf"),
        file("README.txt"), file("Copy of ps1.ipynb"), file("dave/other.ipynb"), file("erin/ps1.ipynb", data=b""),
    ], ["ps1"])
    assert sorted(students) == ["alice", "bob", "carol", "dave", "erin"]
    assert students["alice"].notebooks["ps1"].path == "alice/Copy of ps1.ipynb"
    assert students["bob"].notebooks["ps1"].path == "bob_ps1 (1).ipynb"
    assert any("3 files for ps1.ipynb" in n and "bob_ps1 (1).ipynb (the newest)" in n for n in students["bob"].notes)
    assert students["carol"].notebooks["ps1"].path == "carol_12345_678_ps1-1.ipynb"
    assert any("ignored carol_notes.pdf (not a notebook)" in n for n in students["carol"].notes)
    assert any("took dave/other.ipynb as ps1.ipynb" in n for n in students["dave"].notes)
    assert not students["erin"].notebooks and "empty" in students["erin"].problems[0]
    assert len(unassigned) == 2 and all("does not match the student pattern" in u for u in unassigned)

    students, _ = collect([file("x/u1/ps1.ipynb")], ["ps1"], r"^x/(?P<student>u\d+)/")
    assert list(students) == ["u1"]
    with pytest.raises(ValueError, match="group named 'student'"):
        collect([], ["ps1"], r"^(\w+)/")
    students, unassigned = collect([file("Alice Smith/ps1.ipynb")], ["ps1"], r"^(?P<student>[^/]+)/")
    assert not students and "not usable as a student id" in unassigned[0]


# --- sanitising ------------------------------------------------------------------------------------

def release():
    return read(RELEASE)


def test_sanitize_leaves_a_clean_submission_alone():
    notebook, repairs, notes = sanitize(correct(), release())
    assert repairs == [] and notes == []
    assert [c.source for c in notebook.cells] == [c.source for c in correct().cells]


def test_sanitize_upgrades_colab_format():
    notebook, repairs, _ = sanitize(read_notebook(colab_format(correct())), release())
    assert notebook.nbformat_minor == 5 and all(cell.get("id") for cell in notebook.cells)
    assert repairs == [f"upgraded nbformat 4.0 to 4.5 and gave {len(notebook.cells)} cells ids"]
    nbformat.validate(notebook)


def test_sanitize_recovers_stripped_metadata_and_puts_back_missing_cells():
    notebook, repairs, _ = sanitize(strip_nbgrader(correct()), release())
    assert [nbgrader_meta(c) for c in notebook.cells] == [nbgrader_meta(c) for c in release().cells]
    assert [c.source for c in notebook.cells] == [c.source for c in correct().cells]
    assert len(repairs) == 1 and "no nbgrader metadata" in repairs[0]

    deleted = correct()
    del deleted.cells[index_of(deleted, "test_roc_auc")]
    del deleted.cells[index_of(deleted, "roc_auc")]
    notebook, repairs, _ = sanitize(deleted, release())
    assert index_of(notebook, "roc_auc") + 1 == index_of(notebook, "test_roc_auc")
    assert notebook.cells[index_of(notebook, "roc_auc")].source == release().cells[index_of(release(), "roc_auc")].source
    assert any("answer cell 'roc_auc' was missing: put back the release's empty version" in r for r in repairs)


def test_sanitize_refuses_what_it_cannot_tell():
    ambiguous = strip_nbgrader(correct())
    k = index_of(correct(), "reconstruction_loss")
    ambiguous.cells.insert(k + 1, copy.deepcopy(ambiguous.cells[k]))  # two cells defining reconstruction_loss
    with pytest.raises(Unrecoverable, match="cannot tell which cell is the answer 'reconstruction_loss'"):
        sanitize(ambiguous, release())
    with pytest.raises(Unrecoverable, match="is not a notebook: it is not JSON"):
        read_notebook(b"%PDF-1.4 ...", "x.ipynb")
    with pytest.raises(Unrecoverable, match="not text"):
        read_notebook(b"\xff\xfe\x00\x81", "x.ipynb")
    with pytest.raises(Unrecoverable, match="without a list of cells"):
        read_notebook(b'{"hello": 1}', "x.ipynb")


# --- the sandbox -----------------------------------------------------------------------------------

def test_allowed_folders_never_cover_a_protected_path(tmp_path):
    course = tmp_path / "course"
    (course / ".venv").mkdir(parents=True)
    read, write = allowed_folders([str(tmp_path), str(course), str(course / ".venv"), "/no/such/folder"],
                                  [str(tmp_path / "course")], [str(course)])
    assert read == [(course / ".venv").resolve()] and write == []


def test_output_limit_cuts_each_cell_once():
    class Events:
        def register(self, name, callback):
            self.reset = callback

    class Shell:
        events = Events()

    class Stream:
        def __init__(self):
            self.text = ""

        def write(self, text):
            self.text += text
            return len(text)

    shell, stream = Shell(), Stream()
    limit_output(shell, [stream], 10)
    stream.write("12345678")
    stream.write("abcdef")
    stream.write("more")
    assert stream.text == "12345678ab\n" + TRUNCATION_NOTICE.format(limit=10) + "\n"
    shell.events.reset()
    stream.text = ""
    stream.write("fresh")
    assert stream.text == "fresh"


@pytest.mark.skipif(landlock_abi() < 1, reason="this Linux kernel has no Landlock")
def test_landlock_keeps_the_course_out_of_reach(tmp_path):
    secret = tmp_path / "course" / "gradebook.db"
    secret.parent.mkdir()
    secret.write_text("hidden tests")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    script = textwrap.dedent(f"""
        import sys
        from coursekit.grading.sandbox import SYSTEM_READ, allowed_folders, restrict_filesystem
        read, write = allowed_folders([*SYSTEM_READ, *[p for p in sys.path if p], sys.prefix], [{str(scratch)!r}],
                                      [{str(secret.parent)!r}])
        assert restrict_filesystem(read, write) >= 1
        open({str(scratch / 'ok.txt')!r}, 'w').write('fine')
        for action in (lambda: open({str(secret)!r}).read(), lambda: open({str(secret.parent / 'new')!r}, 'w')):
            try:
                action()
                print('reached')
            except PermissionError:
                print('denied')
        import torch  # the scientific stack still loads
        print(torch.ones(2).sum().item())
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["denied", "denied", "2.0"]
    assert (scratch / "ok.txt").read_text() == "fine"


# --- a whole batch (slow) --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """The fixture zip graded twice: two students at a time, then one at a time in a second course."""
    from coursekit.grading.workflow import grade

    reports = {}
    for jobs in (2, 1):
        course = grading.make_course(tmp_path_factory.mktemp(f"course-jobs{jobs}"), "ps1")
        submissions = fixture_submissions(course, tmp_path_factory.mktemp("zip") / "ps1-submissions.zip")
        reports[jobs] = (course, grade("ps1", submissions, course, jobs=jobs, cell_timeout=CELL_TIMEOUT,
                                       submission_timeout=600))
    return reports


@pytest.mark.slow
def test_every_fixture_case_is_graded_right_or_reported(batch):
    course, report = batch[2]
    outcomes = {o.student: o for o in report.outcomes}
    assert sorted(outcomes) == sorted(EXPECTED)
    for student, expected in EXPECTED.items():
        outcome = outcomes[student]
        if isinstance(expected, str):
            assert outcome.status == "failed" and outcome.reason.startswith(expected), (student, outcome.reason)
            continue
        assert outcome.status == "graded", (student, outcome.reason, outcome.log_tail)
        autograded = {g: p for g, p in outcome.parts.items() if g in TEST_POINTS}
        assert autograded == expected, (student, autograded, outcome.repairs, outcome.notes)
        # the written answer waits for a person, unless it was left blank (then nbgrader gives it 0)
        assert outcome.parts["answer_random_codes"] == (0 if student == "blank" else None)
    for student, repair in EXPECTED_REPAIRS.items():
        assert any(repair in r for r in outcomes[student].repairs), (student, outcomes[student].repairs)
    for student, note in EXPECTED_NOTES.items():
        assert any(note in n for n in outcomes[student].notes), (student, outcomes[student].notes)
    assert not outcomes["correct"].repairs and not outcomes["correct"].notes
    assert report.unassigned == ["README.txt: its path does not match the student pattern "
                                 "'^(?P<student>[A-Za-z0-9][A-Za-z0-9.@+-]*)(?:/|_)'"]


@pytest.mark.slow
def test_batch_results_land_in_nbgrader_gradebook_feedback_and_csv(batch):
    from nbgrader.api import Gradebook

    course, report = batch[2]
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        assert gradebook.find_submission("ps1", "correct").code_score == FULL
        assert gradebook.find_submission("ps1", "buggy").code_score == 5
        students = {s.id for s in gradebook.students}
    assert students == {o.student for o in report.graded}, "failed submissions must not be in the gradebook"
    for outcome in report.graded:
        assert (course / "feedback" / outcome.student / "ps1" / "ps1.html").exists()
        assert (course / "submitted" / outcome.student / "ps1" / "ps1.ipynb").exists()
    assert (course / "grading" / "ps1" / "originals" / "copyof" / "copyof" / "Copy of ps1.ipynb").exists()
    rows = {row["student"]: row for row in csv.DictReader(open(report.csv_path))}
    assert rows["correct"]["autograded_score"] == "12" and rows["correct"]["waiting_for_manual_grading"] == "answer_random_codes"
    assert rows["buggy"]["test_reconstruction_loss"] == "0" and rows["buggy"]["autograded_score"] == "5"
    assert rows["crash"]["status"] == "failed" and rows["crash"]["autograded_score"] == "" and rows["crash"]["problem"]
    assert rows[""]["status"] == "unassigned"


@pytest.mark.slow
def test_student_code_cannot_read_the_course(batch):
    course, report = batch[2]
    executed = read(course / "grading" / "ps1" / "executed" / "sneaky" / "ps1.ipynb")
    printed = "".join(o.get("text", "") for cell in executed.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "READ" not in printed or landlock_abi() < 1
    if landlock_abi() >= 1:
        assert printed.count("DENIED") == 2 and "PermissionError" in printed
    huge = read(course / "grading" / "ps1" / "executed" / "hugeoutput" / "ps1.ipynb")
    cell = huge.cells[index_of(huge, "encoder_decoder")]
    assert sum(len(o.get("text", "")) for o in cell.outputs) < 110_000


@pytest.mark.slow
def test_parallel_grading_gives_the_same_scores_as_serial(batch):
    (_, parallel), (_, serial) = batch[2], batch[1]
    assert parallel.jobs == 2 and serial.jobs == 1
    summary = {jobs: {o.student: (o.status, o.parts, o.repairs, o.reason) for o in report.outcomes}
               for jobs, (_, report) in batch.items()}
    assert summary[2] == summary[1]
    print(f"\nseconds to run {len(parallel.outcomes)} submissions: {serial.run_seconds:.1f} one at a time, "
          f"{parallel.run_seconds:.1f} two at a time")


@pytest.mark.slow
def test_cli_reports_a_course_that_is_not_ready(tmp_path):
    result = subprocess.run([sys.executable, "-m", "coursekit.cli", "grade", "ps1", str(tmp_path), "--course", str(tmp_path)],
                            capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 2 and "no nbgrader_config.py" in result.stderr


def test_replay_refuses_a_notebook_that_is_not_the_one_that_ran(tmp_path):
    from coursekit.grading.nbgrader_ext import ReplayExecution, SandboxedExecute
    from coursekit.grading.workflow import _with_execute_replaced
    from nbgrader.preprocessors import Execute
    from traitlets.config import Config

    ran = correct()
    for cell in ran.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"ran {cell.id}\n")]
    (tmp_path / "alice").mkdir()
    nbformat.write(ran, os.fspath(tmp_path / "alice" / "ps1.ipynb"))
    replay = ReplayExecution(executed_directory=str(tmp_path))
    resources = {"nbgrader": {"student": "alice", "notebook": "ps1"}}
    replayed, _ = replay.preprocess(correct(), resources)
    assert [c.get("outputs") for c in replayed.cells] == [c.get("outputs") for c in ran.cells]
    changed = correct()
    changed.cells[index_of(changed, "roc_auc")].source += "\n# changed after it ran"
    with pytest.raises(ValueError, match="differs from the submission"):
        replay.preprocess(changed, resources)
    with pytest.raises(FileNotFoundError):
        replay.preprocess(correct(), {"nbgrader": {"student": "bob", "notebook": "ps1"}})

    swapped = _with_execute_replaced(Config(), SandboxedExecute)
    assert SandboxedExecute in swapped and Execute not in swapped


@pytest.mark.slow
def test_the_gradebook_url_is_configurable(tmp_path):
    from nbgrader.api import Gradebook

    from coursekit.grading.workflow import grade

    course = grading.make_course(tmp_path, "ps1")
    elsewhere = tmp_path / "elsewhere" / "grades.sqlite"
    elsewhere.parent.mkdir()
    (course / "gradebook.db").rename(elsewhere)
    submissions = tmp_path / "submissions" / "alice"
    submissions.mkdir(parents=True)
    nbformat.write(buggy(BUGS), os.fspath(submissions / "ps1.ipynb"))
    report = grade("ps1", submissions.parent, course, jobs=1, db_url=f"sqlite:///{elsewhere}", feedback=False)
    assert [o.status for o in report.outcomes] == ["graded"]
    assert not (course / "gradebook.db").exists()
    with Gradebook(f"sqlite:///{elsewhere}") as gradebook:
        assert gradebook.find_submission("ps1", "alice").code_score == 5
