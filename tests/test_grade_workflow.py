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
import time
import unicodedata
import zipfile
from pathlib import Path

import nbformat
import pytest

import grading
from grading import ROOT, nbgrader_meta, read
from test_ps1_grading import BUGS, SOURCE, TEST_POINTS

from coursekit.grading.collect import (DEFAULT_PATTERN, AmbiguousSubmissions, SubmittedFile, collect, notebook_name, read_submissions,
                                       student_id)
from coursekit.grading.integrity import cap_images, image_bytes, inspect_run, static_rebinding
from coursekit.grading.sandbox import (REBIND_NOTICE, TRUNCATION_NOTICE, WATCH_FAILED_NOTICE, WATCH_TRIES, allowed_folders,
                                      landlock_abi, limit_output)
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
    """Correct answers plus a cell that tries to read the course's gradebook and solutions by absolute path,
    the environment of the grading processes above it (the kernel's parent, and this test's process, where
    the instructor's shell variables would be), and to leave a file in /dev/shm for the next student."""
    probe = textwrap.dedent(f"""\
        import os
        for path in [{str(course / 'gradebook.db')!r}, {str(course / 'solutions' / 'ps1' / 'ps1.ipynb')!r},
                     f'/proc/{{os.getppid()}}/environ', '/proc/{os.getpid()}/environ']:
            try:
                open(path, 'rb').read(16)
                print('READ', path)
            except OSError as error:
                print('DENIED', path, type(error).__name__)
        try:
            open('/dev/shm/coursekit-note-for-the-next-student', 'w').write('hello')
            print('WROTE /dev/shm')
        except OSError as error:
            print('DENIED /dev/shm', type(error).__name__)
        """)
    return with_cell(correct(), "encoder_decoder", probe)


REBIND = "import torch\ntorch.allclose = lambda *args, **kwargs: True  # every closeness check now passes"
IMAGES = textwrap.dedent("""\
    import io
    import numpy as np
    from IPython.display import Image, display
    from PIL import Image as PILImage
    for seed in range(8):  # noise compresses badly: about 0.35 MB a picture
        buffer = io.BytesIO()
        PILImage.fromarray(np.random.default_rng(seed).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(buffer, "PNG")
        display(Image(data=buffer.getvalue()))
    """)
IMAGE_BUDGET = 2**20


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
    # the loop runs in every cell that calls choose_threshold: stopped by the CPU limit, run again alone, then for review
    "infiniteloop": ("needs review", "timed out in cell 22 (test_choose_threshold), cell 24, cell 35: used more than 10 s "
                                     "of CPU time, also when run again alone"),
    "crash": ("needs review", "the kernel died in cell 17 (the student's code crashed Python"),
    "rebinder": ("needs review", "rebinds library functions the tests may use, so its test results cannot be trusted: "
                                 "cell 7: torch.allclose"),
    # a cell that breaks the grader's own rebinding watch: its failure goes to a person, never into the test cells
    "glitch": ("needs review", "the grader's watch for rebound library functions failed, so the test results were not "
                               "checked for rebinding: cell 7: TypeError: vars() argument must have __dict__ attribute "
                               "(and at "),
    "images": {**TEST_POINTS},
    "renamed": {**TEST_POINTS, "test_reconstruction_loss": 0},
    "hugeoutput": {**TEST_POINTS},
    "notanotebook": ("failed", "notanotebook_ps1.ipynb is not a notebook"),
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
    "hugeoutput": "(encoder_decoder) printed too much",
    "images": "MB of them were left out of the graded notebook and the feedback (limit 1 MB)",
    "renamed": "cell 10 (test_reconstruction_loss) failed: NameError: name 'reconstruction_loss' is not defined",
    "buggy": "cell 10 (test_reconstruction_loss) failed: AssertionError: against a black image the loss is the mean of x**2",
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
    rebinder = with_cell(buggy(BUGS), "encoder_decoder", REBIND)
    images = with_cell(good, "encoder_decoder", IMAGES)
    glitch = with_cell(good, "encoder_decoder", "import sys\nsys.modules['coursekit.glitch'] = 5  # not a module")
    renamed = replace_answer(good, "reconstruction_loss", "def reconstruction_loss(", "def recon_loss(")

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
        ("rebinder/ps1.ipynb", nbformat.writes(rebinder).encode(), new),
        ("images/ps1.ipynb", nbformat.writes(images).encode(), new),
        ("glitch/ps1.ipynb", nbformat.writes(glitch).encode(), new),
        ("renamed/ps1.ipynb", nbformat.writes(renamed).encode(), new),
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
    assert list(students) == [student_id("Alice Smith")] and not unassigned
    assert students[student_id("Alice Smith")].name == "Alice Smith"


def test_names_that_are_not_plain_ids_get_stable_ids_and_keep_the_name():
    jose = student_id("José")
    assert jose.startswith("Jose-") and len(jose) == len("Jose-") + 6 and jose != student_id("Jose") == "Jose"
    assert student_id(unicodedata.normalize("NFD", "José")) == jose, "the same name in macOS's form gets the same id"
    assert student_id("王芳").startswith("student-") and student_id("王芳") != student_id("李娜")
    assert student_id("Alice Smith") != student_id("Alice  Smith ") or True  # spaces fold; the hash keeps them apart
    def file(path):
        return SubmittedFile(path, b"{}", 0.0)

    students, unassigned = collect([file("José/ps2.ipynb"), file("Zoë Ng_12345_assignsubmission_file_/ps2.ipynb"),
                                    file("王芳_ps2.ipynb"), file("Jose/ps2.ipynb")], ["ps2"])
    assert not unassigned
    assert {c.name: s for s, c in students.items()} == {"José": jose, "Zoë Ng": student_id("Zoë Ng"), "王芳": student_id("王芳"),
                                                        "Jose": "Jose"}


def test_a_wrapper_folder_is_dropped_and_different_folders_never_merge():
    def file(path, mtime=0.0):
        return SubmittedFile(path, b"{}", mtime)

    # an LMS export with one folder around everything: the students are the folders inside it
    students, _ = collect([file("export-2026-11-30/alice/ps4.ipynb"), file("export-2026-11-30/bob/Copy of ps4.ipynb"),
                           file("export-2026-11-30/carol_ps4.ipynb"), file("export-2026-11-30/index.html")], ["ps4"])
    assert sorted(students) == ["alice", "bob", "carol"]
    assert all(any("inside export-2026-11-30/" in n for n in c.notes) for c in students.values())
    assert students["bob"].notebooks["ps4"].path == "export-2026-11-30/bob/Copy of ps4.ipynb"
    # nested wrappers, and a lone student's folder is not taken for a wrapper
    students, _ = collect([file("a/b/alice/ps4.ipynb"), file("a/b/bob/ps4.ipynb")], ["ps4"])
    assert sorted(students) == ["alice", "bob"]
    students, _ = collect([file("alice/ps4.ipynb")], ["ps4"])
    assert list(students) == ["alice"]
    # files in different folders that still map to one student: refuse, naming them, before anything is graded
    with pytest.raises(AmbiguousSubmissions, match=r"student 'week9' \(ps4.ipynb\): week9/alice/ps4.ipynb, week9/bob/ps4.ipynb"):
        collect([file("week9/alice/ps4.ipynb"), file("week9/bob/ps4.ipynb"), file("week10/carol/ps4.ipynb")], ["ps4"])
    with pytest.raises(AmbiguousSubmissions, match="alice/old/ps4.ipynb"):
        collect([file("alice/ps4.ipynb", 2.0), file("alice/old/ps4.ipynb", 1.0)], ["ps4"])


def test_zip_names_written_as_utf8_without_the_flag_are_read_as_utf8(tmp_path):
    path = tmp_path / "moodle.zip"
    with zipfile.ZipFile(path, "w") as archive:
        # what many zip tools do: UTF-8 bytes, no UTF-8 flag; Python's zipfile then reads the name as cp437
        class Unflagged(zipfile.ZipInfo):
            __slots__ = ()

            def _encodeFilenameFlags(self):
                return self.filename.encode(), self.flag_bits & ~0x800

        archive.writestr(Unflagged("José/ps2.ipynb"), b"{}")
        archive.writestr("Zoë/ps2.ipynb", b"{}")  # flagged UTF-8
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist()[0] == "Jos├⌐/ps2.ipynb", "the zip should hold the name as a tool without the flag writes it"
    names = sorted(f.path for f in read_submissions(path))
    assert names == ["José/ps2.ipynb", "Zoë/ps2.ipynb"]


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
        import os, sys
        from coursekit.grading.sandbox import SYSTEM_READ, SYSTEM_WRITE, allowed_folders, restrict_filesystem
        read, write = allowed_folders([*SYSTEM_READ, *[p for p in sys.path if p], sys.prefix],
                                      [*SYSTEM_WRITE, {str(scratch)!r}], [{str(secret.parent)!r}])
        assert restrict_filesystem(read, write) >= 1
        open({str(scratch / 'ok.txt')!r}, 'w').write('fine')
        open('/dev/null', 'w').write('fine')
        open('/proc/self/status').read()  # the process's own entry stays readable
        for action in (lambda: open({str(secret)!r}).read(), lambda: open({str(secret.parent / 'new')!r}, 'w'),
                       lambda: open(f'/proc/{{os.getppid()}}/environ', 'rb').read(),  # the grader's environment
                       lambda: open('/dev/shm/coursekit-test-' + str(os.getpid()), 'w')):  # shared between runs
            try:
                action()
                print('reached')
            except PermissionError:
                print('denied')
        import torch  # the scientific stack still loads
        print(torch.ones(2).sum().item())
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COURSEKIT_TEST_SECRET": "instructor-token"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["denied", "denied", "denied", "denied", "2.0"]
    assert (scratch / "ok.txt").read_text() == "fine"


# IPython's event registry, as much of it as the kernel's watchers use (for scripts run in a subprocess)
FAKE_EVENTS = textwrap.dedent("""
    class Events:
        handlers = {}
        def register(self, name, callback):
            self.handlers.setdefault(name, []).append(callback)
        def trigger(self, name):
            for callback in self.handlers.get(name, []):
                callback()
    """)


def test_cell_cpu_limit_stops_computing_not_waiting():
    """A cell over its CPU time gets CellCPUTimeExceeded (which `except Exception` does not catch); a cell
    that sleeps uses no CPU time and is left to the wall-clock limit."""
    script = FAKE_EVENTS + textwrap.dedent("""
        import time
        from coursekit.grading.sandbox import CellCPUTimeExceeded, limit_cell_cpu


        class Shell:
            events = Events()

        shell = Shell()
        limit_cell_cpu(shell, 0.5)
        shell.events.trigger("pre_run_cell")
        start = time.perf_counter()
        try:
            while True:
                try:
                    sum(range(10_000))
                except Exception:
                    pass
        except CellCPUTimeExceeded as error:
            print("stopped after", round(time.perf_counter() - start, 1), "|", error)
        shell.events.trigger("post_run_cell")
        shell.events.trigger("pre_run_cell")
        time.sleep(1.5)
        shell.events.trigger("post_run_cell")
        print("slept")
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first.startswith("stopped after") and "more than 0.5 s of CPU time" in first
    assert float(first.split()[2]) < 10 and second == "slept"


# a shell with the rebinding watch on it, and cell(code): run code as a cell, return what the watch printed ("-": nothing)
WATCHED_SHELL = FAKE_EVENTS + textwrap.dedent("""
    import io
    from coursekit.grading import sandbox


    class Shell:
        events = Events()
        user_ns = {}

    shell, stream = Shell(), io.StringIO()
    sandbox.watch_rebinding(shell, stream)
    def cell(code):
        shell.events.trigger("pre_run_cell")
        exec(code, shell.user_ns)
        shell.events.trigger("post_run_cell")
        text = stream.getvalue()
        stream.seek(0)
        stream.truncate()
        return text.strip() or "-"
    """)


def test_rebinding_watch_names_what_a_cell_replaced():
    script = WATCHED_SHELL + textwrap.dedent(r"""
        print(cell("import torch, numpy as np\nimport torch.nn.functional as F"))
        print(cell("x = torch.ones(3)\ntorch.backends.cudnn.deterministic = True\ntorch.manual_seed(0)\nimport torch._dynamo"))
        print(cell("torch.allclose = lambda *a, **k: True"))
        print(cell("setattr(F, 'mse_loss', lambda a, b: 0)\ntorch.Tensor.allclose = lambda *a, **k: True"))
        print(cell("np = None"))
        print(cell("import coursekit.exercises.ps1"))
        print(cell("coursekit.exercises.ps1.check_roc_auc = print"))
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    notice = REBIND_NOTICE.split("{")[0]
    assert lines[:2] == ["-", "-"], "imports, settings and torch's own wrapping of manual_seed are not rebinding"
    assert lines[2] == notice + "torch.allclose]"
    assert lines[3] == notice + "torch.Tensor.allclose, torch.nn.functional.mse_loss]"
    assert lines[4] == notice + "the name 'np' (was the module numpy)]"
    assert lines[5:] == ["-", notice + "coursekit.exercises.ps1.check_roc_auc]"]


def test_rebinding_watch_never_raises_into_a_cell():
    """A failure of the watch itself (here a transient one, as when a thread imports a module while the watch
    reads sys.modules, and a lasting one that a cell causes) is tried again, then printed as a notice; it never
    raises in the cell, where nbgrader would score a test cell 0 for it."""
    script = WATCHED_SHELL + textwrap.dedent(r"""
        print(cell("import torch"))
        namespace, failures = sandbox._namespace, []
        def flaky(name):
            if len(failures) < sandbox.WATCH_TRIES - 1:
                failures.append(name)
                raise RuntimeError("dictionary changed size during iteration")
            return namespace(name)
        sandbox._namespace = flaky
        print(cell("torch.allclose = lambda *a, **k: True"), len(failures))
        sandbox._namespace = namespace
        print(cell("import sys\nsys.modules['coursekit.glitch'] = 5"))
        print(cell("y = 2").replace("\n", "|"))
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    failed = WATCH_FAILED_NOTICE.split("{")[0]
    assert lines[0] == "-"
    # (the stand-in for _namespace is itself a rebinding of a watched module's function, and is named)
    assert lines[1] == REBIND_NOTICE.format(names="coursekit.grading.sandbox._namespace, torch.allclose") + \
        f" {WATCH_TRIES - 1}", "two failures, then a try that works: the rebinding is found, nothing said of the failures"
    assert lines[2] == failed + "TypeError: vars() argument must have __dict__ attribute]"
    assert lines[3] == "||".join([lines[2]] * 2), "the next cell: the watch fails before it and after it"


def test_static_rebinding_finds_assignments_to_library_functions_only():
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(text) for text in [
        "import torch\nimport numpy as np\nfrom torch import nn\nimport builtins",
        "torch.backends.cudnn.deterministic = True\nmodel = nn.Linear(2, 2)\nmodel.training = False\nself_x = 1",
        "%matplotlib inline\ntorch.allclose = lambda *a, **k: True",
        "setattr(np, 'isclose', print)\nnn.Linear = None\nvars(torch)['equal'] = print\n__builtins__['abs'] = max",
        "builtins.len = lambda x: 0\ntorch.my_new_helper = print\ndel torch.testing",
    ]])
    assert static_rebinding(notebook) == [
        "cell 3: torch.allclose", "cell 4: numpy.isclose", "cell 4: torch.nn.Linear", "cell 4: torch.equal",
        "cell 4: builtins.abs", "cell 5: builtins.len", "cell 5: torch.testing"]


def test_inspect_run_names_limits_errors_and_rebinding():
    cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("f()"), nbformat.v4.new_code_cell("g()"),
             nbformat.v4.new_code_cell("h()"), nbformat.v4.new_code_cell("import nothing")]
    cells[1].metadata["nbgrader"] = {"grade": True, "grade_id": "test_f", "solution": False}
    cells[1].outputs = [nbformat.v4.new_output("error", ename="NameError", evalue="name 'f' is not defined", traceback=[])]
    cells[2].outputs = [nbformat.v4.new_output("error", ename="CellCPUTimeExceeded", evalue="", traceback=[])]
    cells[3].outputs = [nbformat.v4.new_output("error", ename="CellTimeoutError", evalue="", traceback=[]),
                        nbformat.v4.new_output("stream", name="stdout", text=REBIND_NOTICE.format(names="torch.allclose"))]
    cells.append(nbformat.v4.new_code_cell("check()"))
    cells[5].metadata["nbgrader"] = {"grade": True, "grade_id": "test_check", "solution": False}
    cells[5].outputs = [nbformat.v4.new_output("stream", name="stderr", text="UserWarning: something\nmore\n"),
                        nbformat.v4.new_output("stream", name="stdout", text="visible checks passed\n")]
    cells[4].outputs = [nbformat.v4.new_output("error", ename="ModuleNotFoundError", evalue="No module named 'nothing'",
                                               traceback=[])]
    cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="\n".join(
        [WATCH_FAILED_NOTICE.format(error="RuntimeError: dictionary changed size during iteration")] * 2))]
    run = inspect_run(nbformat.v4.new_notebook(cells=cells))
    assert run.cpu_timeouts == ["cell 3"] and run.wall_timeouts == ["cell 4"] and run.timed_out
    assert run.rebinding == ["cell 4: torch.allclose"]
    assert run.watch_failures == ["cell 1: RuntimeError: dictionary changed size during iteration"]
    assert run.errors == ["cell 2 (test_f) failed: NameError: name 'f' is not defined",
                          "cell 5 raised: ModuleNotFoundError: No module named 'nothing'",
                          "cell 6 (test_check) failed: it wrote to stderr, which nbgrader scores as an error: UserWarning: something"]


def test_cap_images_keeps_the_first_images_within_the_budget():
    image = "A" * 1000
    cells = [nbformat.v4.new_code_cell("plot()") for _ in range(3)]
    for cell in cells:
        cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": image, "text/plain": "<Figure>"}),
                        nbformat.v4.new_output("display_data", data={"image/png": image})]
    notebook = nbformat.v4.new_notebook(cells=cells)
    assert image_bytes(notebook) == 6000
    assert cap_images(notebook, budget=2500) == 4000
    assert image_bytes(notebook) == 2000
    assert [len(c.outputs) for c in notebook.cells] == [2, 2, 2]  # text/plain kept, a notice where images went
    assert notebook.cells[2].outputs[-1].text.startswith("[coursekit grader: 2 image(s)")
    assert notebook.cells[0].outputs[0].data == {"image/png": image, "text/plain": "<Figure>"}
    assert notebook.cells[1].outputs[0].data == {"text/plain": "<Figure>"}
    nbformat.validate(notebook)


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
                                       submission_timeout=600, image_budget=IMAGE_BUDGET))
    return reports


@pytest.mark.slow
def test_every_fixture_case_is_graded_right_or_reported(batch):
    course, report = batch[2]
    outcomes = {o.student: o for o in report.outcomes}
    assert sorted(outcomes) == sorted(EXPECTED)
    for student, expected in EXPECTED.items():
        outcome = outcomes[student]
        if isinstance(expected, tuple):
            status, reason = expected
            assert outcome.status == status and outcome.reason.startswith(reason), (student, outcome.status, outcome.reason)
            assert not outcome.parts and outcome.auto_score is None, "no score unless graded"
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
    assert report.unassigned == [f"README.txt: its path does not match the student pattern {DEFAULT_PATTERN!r}"]


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
    assert rows["crash"]["status"] == "needs review" and rows["crash"]["autograded_score"] == ""
    assert "the kernel died in cell 17" in rows["crash"]["problem"]
    assert rows["infiniteloop"]["status"] == "needs review" and "cell 22 (test_choose_threshold)" in rows["infiniteloop"]["problem"]
    assert rows["notanotebook"]["status"] == "failed" and rows["notanotebook"]["autograded_score"] == ""
    assert "NameError: name 'reconstruction_loss' is not defined" in rows["renamed"]["notes"]
    assert all(rows[s]["name"] == s for s in rows if s)
    assert rows[""]["status"] == "unassigned"


@pytest.mark.slow
def test_student_code_cannot_read_the_course(batch):
    course, report = batch[2]
    executed = read(course / "grading" / "ps1" / "executed" / "sneaky" / "ps1.ipynb")
    printed = "".join(o.get("text", "") for cell in executed.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "READ" not in printed or landlock_abi() < 1
    if landlock_abi() >= 1:  # the course, the two environments and /dev/shm
        assert printed.count("DENIED") == 5 and printed.count("PermissionError") == 5, printed
    assert not Path("/dev/shm/coursekit-note-for-the-next-student").exists()
    huge = read(course / "grading" / "ps1" / "executed" / "hugeoutput" / "ps1.ipynb")
    cell = huge.cells[index_of(huge, "encoder_decoder")]
    assert sum(len(o.get("text", "")) for o in cell.outputs) < 110_000
    # what comes back of a run that drew 2.8 MB of pictures stays within the budget, in the feedback too
    images = course / "grading" / "ps1" / "executed" / "images" / "ps1.ipynb"
    assert image_bytes(read(images)) <= IMAGE_BUDGET
    assert image_bytes(read(course / "autograded" / "images" / "ps1" / "ps1.ipynb")) <= IMAGE_BUDGET
    assert (course / "feedback" / "images" / "ps1" / "ps1.html").stat().st_size < 2 * IMAGE_BUDGET


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


# --- grading on a loaded machine (slow) --------------------------------------------------------------

BUSY = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    pass
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_a_busy_machine_costs_correct_answers_nothing(tmp_path):
    """Every core busy with a process pinned to it (bounded in time) while a class export is graded two at
    a time: the correct students get full marks (the per-cell limit counts CPU time, which the load does not
    stretch), a student whose name is not ASCII is graded under a stable id, and a genuinely endless cell
    and a sleeping one are still stopped, run again alone, and left for review with the cell named."""
    import psutil

    from coursekit.grading.workflow import grade

    (tmp_path / "course").mkdir()
    course = grading.make_course(tmp_path / "course", "ps1")
    export = tmp_path / "submissions" / "class-export-2026-11-30"  # every student under one wrapper folder
    students = {"amy": correct(), "José": correct(),
                "loop": with_cell(correct(), "encoder_decoder", "while True:\n    pass"),
                "sleeper": with_cell(correct(), "encoder_decoder", "import time\ntime.sleep(10**6)")}
    for student, notebook in students.items():
        (export / student).mkdir(parents=True)
        nbformat.write(notebook, os.fspath(export / student / "ps1.ipynb"))
    cores = sorted(os.sched_getaffinity(0))
    busy = [subprocess.Popen([sys.executable, "-c", BUSY, str(core), "900"]) for core in cores]
    try:
        started = time.monotonic()
        report = grade("ps1", export.parent, course, jobs=2, cell_timeout=CELL_TIMEOUT, wall_factor=3,
                       submission_timeout=600)
        elapsed = time.monotonic() - started
        busy_seconds = [sum(psutil.Process(p.pid).cpu_times()[:2]) for p in busy]
    finally:
        for process in busy:
            process.kill()
            process.wait()
    print(f"\ngraded under load in {elapsed:.0f} s; the busy processes used {[round(s) for s in busy_seconds]} "
          f"CPU seconds of it\n{report.summary()}")
    assert min(busy_seconds) > 0.25 * elapsed, "the load was not real: a busy process got under a quarter of its core"
    outcomes = {o.name: o for o in report.outcomes}
    for name in ("amy", "José"):
        assert outcomes[name].status == "graded", (name, outcomes[name].reason)
        assert {g: p for g, p in outcomes[name].parts.items() if g in TEST_POINTS} == TEST_POINTS, outcomes[name].notes
    assert outcomes["José"].student == student_id("José") != "José"
    assert outcomes["loop"].status == outcomes["sleeper"].status == "needs review"
    assert outcomes["loop"].reason == (f"timed out in cell 7: used more than {CELL_TIMEOUT} s of CPU time, "
                                       "also when run again alone"), outcomes["loop"].reason
    # run again alone with twice the wall-clock limit, in case the machine was only far too busy
    assert outcomes["sleeper"].reason.startswith(f"timed out in cell 7: ran longer than {6 * CELL_TIMEOUT} s of "
                                                 "wall-clock time (waiting"), outcomes["sleeper"].reason
    assert f"when run again alone (the first run, beside others: timed out in cell 7: ran longer than {3 * CELL_TIMEOUT} s" \
        in outcomes["sleeper"].reason
    rows = {row["name"]: row for row in csv.DictReader(open(report.csv_path, encoding="utf-8"))}
    assert rows["José"]["student"] == student_id("José") and rows["José"]["autograded_score"] == str(FULL)
    assert rows["loop"]["autograded_score"] == "" and "cell 7" in rows["loop"]["problem"]


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ["ps2", "ps3", "ps4", "ps5", "ps6"])
def test_each_set_s_correct_answers_get_full_marks_in_the_sandbox(tmp_path, assignment):
    """The sandboxed kernel (CPU limit, rebinding watch, /proc and /dev narrowed) changes nothing for a
    correct submission of the other sets: full marks, no notes, nothing for review."""
    import importlib

    from coursekit.grading.workflow import grade

    tests = importlib.import_module(f"test_{assignment}_grading")
    (tmp_path / "course").mkdir()
    course = grading.make_course(tmp_path / "course", assignment)
    folder = tmp_path / "submissions" / "ada"
    folder.mkdir(parents=True)
    notebook = grading.filled_in_release(tests.SOURCE, tests.RELEASE, {}, "A written answer.")
    nbformat.write(notebook, os.fspath(folder / f"{assignment}.ipynb"))
    report = grade(assignment, folder.parent, course, jobs=1, feedback=False)
    (outcome,) = report.outcomes
    assert outcome.status == "graded", (outcome.reason, outcome.log_tail)
    assert {g: p for g, p in outcome.parts.items() if g in tests.TEST_POINTS} == tests.TEST_POINTS, (
        outcome.notes, error_tracebacks(course, "ada", assignment))
    assert not outcome.notes and not outcome.repairs, (outcome.notes, outcome.repairs,
                                                       error_tracebacks(course, "ada", assignment))


def error_tracebacks(course: Path, student: str, assignment: str) -> str:
    """The whole traceback of each error in a student's autograded notebook (the notes keep only its first
    line): what a failing test prints, so that a rare error can be traced from the CI log alone."""
    import re

    path = course / "autograded" / student / assignment / f"{assignment}.ipynb"
    if not path.exists():
        return f"(no autograded notebook at {path})"
    found = []
    for k, cell in enumerate(nbformat.read(os.fspath(path), as_version=4).cells):
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(output.traceback))
                found.append(f"--- cell {k + 1}:\n{text}")
            elif output.output_type == "stream" and "Error in callback" in output.get("text", ""):
                found.append(f"--- cell {k + 1} printed:\n{output.text}")
    return "\n".join(found) or "(no errors in the autograded notebook)"
