"""``coursekit grade``: collect, sanitise, autograde (several students at once), feedback, CSV.

The course is an ordinary nbgrader course (``nbgrader_config.py`` at its root, the assignment
released with ``nbgrader generate_assignment``); grades go into its gradebook (the database URL in
that config, SQLite by default, or ``db_url``). For each student:

1. **collect** (:mod:`coursekit.grading.collect`): find the student's notebook(s) in the folder or
   zip; the originals are kept under ``grading/<assignment>/originals/<student>/``;
2. **sanitise** (:mod:`coursekit.grading.sanitize`): repair what Colab and editing did to the
   notebook, then store it where nbgrader expects it, ``submitted/<student>/<assignment>/``;
3. **run**, in its own process, ``jobs`` students at a time: ``nbgrader autograde`` in a throwaway
   course that holds this assignment's gradebook entries and this one submission, with the kernel
   sandboxed (:mod:`coursekit.grading.sandbox`): time limit per cell, memory and output limits, a
   scratch folder holding only the assignment's support files, and on Linux no access to the course;
4. **score**, one student after another, with nbgrader's own autograder in the real course, the
   execution replaced by the outputs of step 3 (:class:`~coursekit.grading.nbgrader_ext.ReplayExecution`);
5. **feedback** with ``nbgrader generate_feedback`` (HTML under ``feedback/<student>/<assignment>/``);
6. **export** a CSV of every student: status, points per part, repairs and problems.

A submission that fails at any step is reported with the reason and the run goes on; it gets no
score in the CSV (never a silent 0), and nothing of an earlier grading of it is deleted.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from coursekit.grading.collect import DEFAULT_PATTERN, collect, read_submissions
from coursekit.grading.sandbox import TRUNCATION_NOTICE, landlock_abi
from coursekit.grading.sanitize import Unrecoverable, read_notebook, sanitize

# What the grading processes (and so the students' kernels) see of the environment: no tokens or
# passwords that happen to be in the instructor's shell.
ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "VIRTUAL_ENV", "CONDA_PREFIX", "LD_LIBRARY_PATH",
               "SYSTEMROOT", "TMPDIR", "PYTHONHASHSEED")


@dataclass
class Outcome:
    """What happened to one student's submission."""

    student: str
    status: str = "pending"  # graded | failed
    reason: str = ""  # why it failed
    files: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parts: dict[str, float | None] = field(default_factory=dict)  # grade_id -> points, None: waits for a person
    max_points: dict[str, float] = field(default_factory=dict)
    run_seconds: float = 0.0
    score_seconds: float = 0.0
    log_tail: str = ""

    @property
    def auto_score(self) -> float | None:
        return sum(p for p in self.parts.values() if p is not None) if self.status == "graded" else None

    @property
    def auto_max(self) -> float:
        return sum(self.max_points[g] for g, p in self.parts.items() if p is not None)

    @property
    def manual(self) -> list[str]:
        return [g for g, p in self.parts.items() if p is None]

    def fail(self, reason: str) -> "Outcome":
        self.status, self.reason = "failed", reason
        return self


@dataclass
class Report:
    assignment: str
    outcomes: list[Outcome]
    unassigned: list[str]
    jobs: int
    run_seconds: float  # wall-clock time of step 3, all students
    score_seconds: float  # wall-clock time of steps 4-5
    landlock: int
    csv_path: Path
    json_path: Path

    @property
    def graded(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "graded"]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def summary(self) -> str:
        lines = [f"coursekit grade {self.assignment}: {len(self.graded)} graded, "
                 f"{sum(1 for o in self.graded if o.repairs)} of them repaired, {len(self.failed)} failed"
                 + (f", {len(self.unassigned)} files belong to nobody" if self.unassigned else "")]
        width = max([len(o.student) for o in self.outcomes] + [7])
        for o in self.outcomes:
            if o.status == "graded":
                manual = f" + {len(o.manual)} for a person" if o.manual else ""
                lines.append(f"  {o.student:<{width}}  graded  {o.auto_score:g}/{o.auto_max:g} autograded{manual}")
            else:
                lines.append(f"  {o.student:<{width}}  FAILED  {o.reason}")
            for repair in o.repairs:
                lines.append(f"  {'':<{width}}    repaired: {repair}")
            for note in o.notes:
                lines.append(f"  {'':<{width}}    note: {note}")
        for line in self.unassigned:
            lines.append(f"  nobody's: {line}")
        n = max(len(self.outcomes), 1)
        lines.append(f"running the notebooks took {self.run_seconds:.1f} s with {self.jobs} at once "
                     f"({self.run_seconds / n:.1f} s per submission); scoring and feedback {self.score_seconds:.1f} s")
        lines.append("student code ran " + (f"in a Landlock sandbox (ABI {self.landlock}): it could not read the course"
                                            if self.landlock else
                                            "in a scratch folder outside the course, without Landlock (not available "
                                            "here): it ran as you and could have opened course files by absolute path"))
        lines.append(f"grades: {self.csv_path}   details: {self.json_path}")
        return "\n".join(lines)


class GradingError(RuntimeError):
    """The course or the assignment is not ready to grade (nothing was graded)."""


def load_course_config(course: Path):
    """The course's ``nbgrader_config.py`` as a traitlets Config, with the course root filled in."""
    from traitlets.config.loader import PyFileConfigLoader

    if not (course / "nbgrader_config.py").exists():
        raise GradingError(f"no nbgrader_config.py in {course}: run from the course root or pass --course")
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.CourseDirectory.root = str(course)
    return config


def _with_execute_replaced(config, replacement):
    """The autograde preprocessors of ``config`` (nbgrader's by default) with Execute swapped for ``replacement``."""
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute

    current = config.Autograde.get("autograde_preprocessors") or Autograde.class_traits()["autograde_preprocessors"].default()
    swapped = [replacement if (isinstance(p, type) and issubclass(p, Execute)) or p in ("Execute", "nbgrader.preprocessors.Execute")
               else p for p in current]
    if replacement not in swapped:
        raise GradingError("the course's Autograde.autograde_preprocessors has no Execute step to sandbox")
    return swapped


def _copy_assignment(source_url: str, target_url: str, assignment: str, course_id: str) -> None:
    """A gradebook at ``target_url`` holding only ``assignment``'s notebooks and cells (no students)."""
    from nbgrader.api import Gradebook

    with Gradebook(source_url, course_id) as source, Gradebook(target_url, course_id) as target:
        found = source.find_assignment(assignment)
        target.add_assignment(assignment, duedate=found.duedate)
        for notebook in found.notebooks:
            target.add_notebook(notebook.name, assignment, kernelspec=notebook.kernelspec)
            for cell in notebook.grade_cells:
                target.add_grade_cell(cell.name, notebook.name, assignment, max_score=cell.max_score, cell_type=cell.cell_type)
            for cell in notebook.solution_cells:
                target.add_solution_cell(cell.name, notebook.name, assignment)
            for cell in notebook.task_cells:
                target.add_task_cell(cell.name, notebook.name, assignment, max_score=cell.max_score, cell_type=cell.cell_type)
            for cell in notebook.source_cells:
                target.add_source_cell(cell.name, notebook.name, assignment, cell_type=cell.cell_type, locked=cell.locked,
                                       source=cell.source, checksum=cell.checksum)


def _kill_tree(pid: int) -> None:
    import psutil

    try:
        parent = psutil.Process(pid)
        processes = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=10)


def _failure_reason(log: str) -> str:
    if re.search(r"DeadKernelError|Kernel died|kernel died", log):
        return ("the kernel died while running the notebook (the student's code crashed Python: os._exit, a "
                "segfault, or memory the system would not give)")
    if re.search(r"UnresponsiveKernelError|did not respond|Timeout waiting for", log):
        return "the kernel stopped responding while running the notebook"
    errors = [line.strip() for line in log.splitlines() if "[ERROR]" in line or "Error:" in line]
    return f"nbgrader autograde failed: {errors[-1] if errors else _last_line(log)}"


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else "(no message)"


def _execution_notes(path: Path, cell_timeout: float | None) -> list[str]:
    """Cells stopped at the time limit and cells whose printing was cut, in an executed notebook."""
    notes = []
    notice = TRUNCATION_NOTICE.split("{")[0]
    for k, cell in enumerate(nbformat.read(os.fspath(path), as_version=4).cells):
        if cell.cell_type != "code":
            continue
        where = f"cell {k + 1}" + (f" ({cell.metadata['nbgrader']['grade_id']})" if cell.metadata.get("nbgrader", {}).get("grade_id") else "")
        names = {o.get("ename") for o in cell.outputs if o.output_type == "error"}
        if names & {"CellTimeoutError", "KeyboardInterrupt", "TimeoutError"}:
            limit = f" of {cell_timeout:g} s" if cell_timeout else ""
            notes.append(f"{where} was stopped at the per-cell time limit{limit}")
        # cut by the kernel (our notice) or afterwards by nbgrader's LimitOutput (its own marker)
        if any(o.output_type == "stream" and (notice in o.get("text", "") or "... Output truncated ..." in o.get("text", ""))
               for o in cell.outputs):
            notes.append(f"{where} printed too much: its output was cut")
    return notes


def grade(assignment: str, submissions: Path | str, course: Path | str = ".", *, jobs: int | None = None,
          student_pattern: str = DEFAULT_PATTERN, cell_timeout: int | None = None, memory_mb: int = 4096,
          output_limit: int = 100_000, submission_timeout: float = 1800, feedback: bool = True,
          csv_path: Path | str | None = None, db_url: str | None = None, landlock: bool = True,
          log=print) -> Report:
    """Grade every submission of ``assignment`` in ``submissions`` (a folder or zip); see the module doc."""
    from nbgrader.api import Gradebook, MissingEntry
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from coursekit.grading.nbgrader_ext import ReplayExecution

    course = Path(course).resolve()
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):  # nbgrader runs `alembic` from the PATH
        os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    config = load_course_config(course)
    if db_url:
        config.CourseDirectory.db_url = db_url
    coursedir = CourseDirectory(config=config)
    db_url, course_id = coursedir.db_url, coursedir.course_id
    release = Path(coursedir.format_path(coursedir.release_directory, ".", assignment))
    release_notebooks = {p.stem: nbformat.read(os.fspath(p), as_version=4) for p in sorted(release.glob("*.ipynb"))}
    if not release_notebooks:
        raise GradingError(f"no released notebooks in {release}: run `nbgrader generate_assignment {assignment}` first")
    with Gradebook(db_url, course_id) as gradebook:
        try:
            gradebook.find_assignment(assignment)
        except MissingEntry:
            raise GradingError(f"the gradebook has no assignment '{assignment}': run `nbgrader generate_assignment "
                               f"{assignment}` in {course} first") from None
    jobs = max(1, jobs or os.cpu_count() or 1)
    work = course / "grading" / assignment
    executed_dir = work / "executed"
    shutil.rmtree(executed_dir, ignore_errors=True)
    executed_dir.mkdir(parents=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")

    # 1-2. collect and sanitise
    students, unassigned = collect(read_submissions(Path(submissions)), list(release_notebooks), student_pattern)
    outcomes = {}
    for student in sorted(students):
        collected = students[student]
        outcome = outcomes[student] = Outcome(student, notes=list(collected.notes))
        outcome.files = [f.path for f in collected.notebooks.values()]
        for file in collected.notebooks.values():
            original = work / "originals" / student / file.path
            original.parent.mkdir(parents=True, exist_ok=True)
            original.write_bytes(file.data)
        if not collected.notebooks:
            outcome.fail("; ".join(collected.problems) or "no notebook of this assignment among the files handed in"
                         + (f" ({'; '.join(collected.notes)})" if collected.notes else ""))
            continue
        repaired = {}
        try:
            for name, file in collected.notebooks.items():
                notebook = read_notebook(file.data, file.path)
                notebook, repairs, notes = sanitize(notebook, release_notebooks[name])
                repaired[name] = notebook
                outcome.repairs += [f"{name}: {r}" if len(release_notebooks) > 1 else r for r in repairs]
                outcome.notes += notes
        except Unrecoverable as error:
            outcome.fail(str(error))
            continue
        outcome.notes += [f"no {name}.ipynb handed in: nbgrader scores it 0" for name in release_notebooks if name not in repaired]
        target = Path(coursedir.format_path(coursedir.submitted_directory, student, assignment))
        texts = {f"{name}.ipynb": nbformat.writes(notebook) + "\n" for name, notebook in repaired.items()}
        if target.exists() and {p.name: p.read_text() for p in target.glob("*.ipynb")} != texts:
            # an earlier, different submission: kept, not overwritten
            shutil.move(os.fspath(target), os.fspath(work / "replaced" / f"{student}-{stamp}"))
        target.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            (target / name).write_text(text)

    # 3. run the notebooks, `jobs` students at a time, each in its own throwaway course
    ready = [o for o in outcomes.values() if o.status == "pending"]
    tmp_root = Path(tempfile.mkdtemp(prefix=f"coursekit-grade-{assignment}-"))
    template = tmp_root / "gradebook.db"
    _copy_assignment(db_url, f"sqlite:///{template}", assignment, course_id)
    config_text = (course / "nbgrader_config.py").read_text()
    protect = [str(course), str(tmp_root)]
    if db_url.startswith("sqlite:///"):
        protect.append(db_url[len("sqlite:///"):])
    environment = {k: v for k, v in os.environ.items() if k in ENVIRONMENT or k.startswith("JUPYTER")}
    environment["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    nbgrader = shutil.which("nbgrader", path=environment["PATH"]) or "nbgrader"

    if landlock and landlock_abi() >= 1:  # before any student code runs: does the sandbox hold here?
        check = subprocess.run([sys.executable, "-m", "coursekit.grading.sandbox", "--workdir", str(tmp_root / "check"),
                                *[a for p in protect for a in ("--protect", p)], "--check", str(course / "nbgrader_config.py")],
                               env=environment, capture_output=True, text=True, timeout=300)
        if check.returncode != 0:
            shutil.rmtree(tmp_root, ignore_errors=True)
            raise GradingError(f"the Landlock sandbox does not work on this machine ({_last_line(check.stderr)}); "
                               "rerun with --no-landlock to grade without it")

    def run(outcome: Outcome) -> None:
        student = outcome.student
        here = Path(tempfile.mkdtemp(prefix=f"{student}-", dir=tmp_root))
        scratch, throwaway = here / "sandbox", here / "course"
        scratch.mkdir()
        throwaway.mkdir()
        shutil.copy(template, throwaway / "gradebook.db")
        shutil.copytree(Path(coursedir.format_path(coursedir.submitted_directory, student, assignment)),
                        throwaway / "submitted" / student / assignment)
        for support in release.rglob("*"):
            if support.is_file() and support.suffix != ".ipynb" and ".ipynb_checkpoints" not in support.parts:
                (scratch / support.relative_to(release)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(support, scratch / support.relative_to(release))
        overrides = f"""

# --- added by coursekit grade: this throwaway course, and the sandboxed kernel ---
from coursekit.grading.workflow import _with_execute_replaced as _swap
from coursekit.grading.nbgrader_ext import SandboxedExecute as _SandboxedExecute
c.CourseDirectory.root = {str(throwaway)!r}
c.CourseDirectory.db_url = {'sqlite:///' + str(throwaway / 'gradebook.db')!r}
c.CourseDirectory.course_id = {course_id!r}
c.CourseDirectory.source_directory = "no-source-here"
c.Autograde.autograde_preprocessors = _swap(c, _SandboxedExecute)
c.SandboxedExecute.sandbox_directory = {str(scratch)!r}
c.SandboxedKernelManager.workdir = {str(scratch)!r}
c.SandboxedKernelManager.memory_mb = {int(memory_mb)}
c.SandboxedKernelManager.output_limit = {int(output_limit)}
c.SandboxedKernelManager.protect = {protect!r}
c.SandboxedKernelManager.landlock = {bool(landlock)!r}
c.SandboxedKernelManager.started_file = {str(here / 'kernels-started')!r}
"""
        if cell_timeout:
            overrides += f"c.Execute.timeout = {int(cell_timeout)}\n"
        (throwaway / "nbgrader_config.py").write_text(config_text + overrides)
        start = time.perf_counter()
        process = subprocess.Popen([nbgrader, "autograde", assignment, "--student", student, "--force"], cwd=throwaway,
                                   env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            output, _ = process.communicate(timeout=submission_timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(process.pid)
            output, _ = process.communicate()
            outcome.fail(f"running the notebook took longer than {submission_timeout:g} s in all: stopped")
        outcome.run_seconds = time.perf_counter() - start
        outcome.log_tail = output[-4000:]
        ran = Path(throwaway / "autograded" / student / assignment)
        if outcome.status == "pending":
            missing = [n for n in release_notebooks if (throwaway / "submitted" / student / assignment / f"{n}.ipynb").exists()
                       and not (ran / f"{n}.ipynb").exists()]
            if process.returncode != 0 or missing:
                outcome.fail(_failure_reason(output))
            else:
                if not (here / "kernels-started").exists():  # never score a notebook that ran outside the sandbox
                    raise GradingError("a notebook ran without coursekit's sandboxed kernel: nbgrader did not take "
                                       f"the configuration; its log:\n{output[-2000:]}")
                (executed_dir / student).mkdir()
                for notebook in ran.glob("*.ipynb"):
                    shutil.copy(notebook, executed_dir / student / notebook.name)
                    outcome.notes += _execution_notes(notebook, cell_timeout or config.Execute.get("timeout") or config.ExecutePreprocessor.get("timeout"))
        shutil.rmtree(here, ignore_errors=True)
        log(f"  ran {student}: {outcome.status if outcome.status == 'failed' else 'done'} in {outcome.run_seconds:.1f} s")

    log(f"running {len(ready)} submissions of {assignment}, {jobs} at a time")
    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(run, ready))
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    run_seconds = time.perf_counter() - start

    # 4-5. score into the course's gradebook with nbgrader's autograder (outputs replayed), then feedback
    start = time.perf_counter()
    config.Autograde.autograde_preprocessors = _with_execute_replaced(config, ReplayExecution)
    config.ReplayExecution.executed_directory = str(executed_dir)
    api = NbGraderAPI(config=config)
    with warnings.catch_warnings():
        # nbgrader's gradebook code trips SQLAlchemy's autoflush warnings; they say nothing about the grades
        warnings.simplefilter("ignore")
        _score(api, outcomes, assignment, db_url, course_id, feedback)
    score_seconds = time.perf_counter() - start

    # 6. the CSV and the details
    csv_path = Path(csv_path) if csv_path else work / "grades.csv"
    json_path = work / "report.json"
    report = Report(assignment, list(outcomes.values()), unassigned, jobs, run_seconds, score_seconds,
                    landlock_abi() if landlock else 0, csv_path, json_path)
    write_csv(report, csv_path)
    json_path.write_text(json.dumps({
        "assignment": assignment, "jobs": jobs, "run_seconds": run_seconds, "score_seconds": score_seconds,
        "landlock": report.landlock, "unassigned": unassigned,
        "outcomes": [{**asdict(o), "auto_score": o.auto_score} for o in report.outcomes]}, indent=1))
    log(report.summary())
    return report


def _score(api, outcomes, assignment, db_url, course_id, feedback) -> None:
    """Score each executed submission into the course's gradebook, one after another, and write its feedback."""
    from nbgrader.api import Gradebook

    for outcome in outcomes.values():
        if outcome.status != "pending":
            continue
        began = time.perf_counter()
        result = api.autograde(assignment, outcome.student, force=True, create=True)
        if not result["success"]:
            outcome.fail(f"nbgrader could not score the executed notebook: {_last_line(result.get('error') or result.get('log'))}")
            outcome.log_tail = result.get("log", "")[-4000:]
            continue
        if feedback:
            result = api.generate_feedback(assignment, outcome.student)
            if not result["success"]:
                outcome.notes.append(f"no feedback file: {_last_line(result.get('error') or result.get('log'))}")
        with Gradebook(db_url, course_id) as gradebook:
            submission = gradebook.find_submission(assignment, outcome.student)
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    outcome.parts[grade.name] = None if grade.needs_manual_grade else grade.auto_score
                    outcome.max_points[grade.name] = grade.max_score
        outcome.status = "graded"
        outcome.score_seconds = time.perf_counter() - began


def write_csv(report: Report, path: Path) -> None:
    """One row per student: status, autograded points (blank when it failed: never a silent 0), each
    part, what waits for manual grading, repairs, notes and the reason for a failure."""
    parts = list(dict.fromkeys(g for o in report.outcomes for g in o.parts))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", "status", "autograded_score", "autograded_max", *parts, "waiting_for_manual_grading",
                         "repairs", "notes", "problem"])
        for o in report.outcomes:
            graded = o.status == "graded"
            writer.writerow([o.student, o.status, f"{o.auto_score:g}" if graded else "", f"{o.auto_max:g}" if graded else "",
                             *[("manual" if o.parts[g] is None else f"{o.parts[g]:g}") if g in o.parts else "" for g in parts],
                             " ".join(o.manual), " | ".join(o.repairs), " | ".join(o.notes), o.reason])
        for line in report.unassigned:
            writer.writerow(["", "unassigned", "", "", *[""] * len(parts), "", "", "", line])
