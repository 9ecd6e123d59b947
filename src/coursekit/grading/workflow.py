"""``coursekit grade``: collect, sanitise, autograde (several students at once), feedback, CSV.

The course is an ordinary nbgrader course (``nbgrader_config.py`` at its root, the assignment
released with ``nbgrader generate_assignment``); grades go into its gradebook (the database URL in
that config, SQLite by default, or ``db_url``). For each student:

1. **collect** (:mod:`coursekit.grading.collect`): find the student's notebook(s) in the folder or
   zip; the originals are kept under ``grading/<assignment>/originals/<student>/``;
2. **sanitise** (:mod:`coursekit.grading.sanitize`): repair what Colab and editing did to the
   notebook, then store it where nbgrader expects it, ``submitted/<student>/<assignment>/``;
3. **run**, in its own process, ``jobs`` students at a time (or as tasks on a dask.distributed cluster,
   ``cluster``; see :class:`ClusterRunner`): ``nbgrader autograde`` in a throwaway
   course that holds this assignment's gradebook entries and this one submission, with the kernel
   sandboxed (:mod:`coursekit.grading.sandbox`): a CPU-time limit per cell (and a wall-clock limit
   several times longer, for cells that wait), memory and output limits, a scratch folder holding only
   the assignment's support files, and on Linux no access to the course or the grader's environment.
   A run that hit a time limit, or failed for a reason that may be the machine's (a kernel that died or
   did not start, a lost process), is **run again alone** once the batch is through; if it fails again
   the student is marked **needs review** with the reason and the cell, and gets no score (never a 0
   that the machine caused). So is a submission that rebinds a library function the tests rely on
   (:mod:`coursekit.grading.integrity`), whose test results cannot be trusted;
4. **score**, one student after another, with nbgrader's own autograder in the real course, the
   execution replaced by the outputs of step 3 (:class:`~coursekit.grading.nbgrader_ext.ReplayExecution`);
5. **feedback** with ``nbgrader generate_feedback`` (HTML under ``feedback/<student>/<assignment>/``);
6. **export** a CSV of every student: status, points per part, repairs, notes (among them the error
   behind each failed test) and problems.

A submission that fails at any step is reported with the reason and the run goes on; it gets no
score in the CSV (never a silent 0), and nothing of an earlier grading of it is deleted.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
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

from coursekit.grading.collect import DEFAULT_PATTERN, AmbiguousSubmissions, collect, read_submissions
from coursekit.grading.integrity import IMAGE_BUDGET, cap_images, image_bytes, inspect_run, static_rebinding
from coursekit.grading.sandbox import landlock_abi
from coursekit.grading.sanitize import Unrecoverable, read_notebook, sanitize

NEEDS_REVIEW = "needs review"

# What the grading processes (and so the students' kernels) see of the environment: no tokens or
# passwords that happen to be in the instructor's shell.
ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "VIRTUAL_ENV", "CONDA_PREFIX", "LD_LIBRARY_PATH",
               "SYSTEMROOT", "TMPDIR", "PYTHONHASHSEED")


@dataclass
class Outcome:
    """What happened to one student's submission."""

    student: str
    name: str = ""  # the student's name as found in the submissions (the id is made from it)
    status: str = "pending"  # graded | needs review (no score: retried, or untrustworthy) | failed (not gradable)
    reason: str = ""  # why it failed or needs review
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

    def review(self, reason: str) -> "Outcome":
        self.status, self.reason = NEEDS_REVIEW, reason
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

    @property
    def needs_review(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == NEEDS_REVIEW]

    def summary(self) -> str:
        lines = [f"coursekit grade {self.assignment}: {len(self.graded)} graded, "
                 f"{sum(1 for o in self.graded if o.repairs)} of them repaired, {len(self.needs_review)} need review "
                 f"(no score), {len(self.failed)} failed"
                 + (f", {len(self.unassigned)} files belong to nobody" if self.unassigned else "")]
        width = max([len(o.student) for o in self.outcomes] + [7])
        for o in self.outcomes:
            name = f" ({o.name})" if o.name and o.name != o.student else ""
            if o.status == "graded":
                manual = f" + {len(o.manual)} for a person" if o.manual else ""
                lines.append(f"  {o.student:<{width}}  graded  {o.auto_score:g}/{o.auto_max:g} autograded{manual}{name}")
            elif o.status == NEEDS_REVIEW:
                lines.append(f"  {o.student:<{width}}  NEEDS REVIEW{name}: {o.reason}")
            else:
                lines.append(f"  {o.student:<{width}}  FAILED{name}  {o.reason}")
            for repair in o.repairs:
                lines.append(f"  {'':<{width}}    repaired: {repair}")
            for note in o.notes:
                lines.append(f"  {'':<{width}}    note: {note}")
        for line in self.unassigned:
            lines.append(f"  nobody's: {line}")
        n = max(len(self.outcomes), 1)
        lines.append(f"running the notebooks took {self.run_seconds:.1f} s with {self.jobs} at once "
                     f"({self.run_seconds / n:.1f} s per submission); scoring and feedback {self.score_seconds:.1f} s")
        lines.append("student code ran " + (f"in a Landlock sandbox (ABI {self.landlock}): it could not read the course, "
                                            "other processes' environment or /dev/shm"
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


def _failure_reason(log: str, where: str) -> str:
    """Why an ``nbgrader autograde`` run produced no executed notebook; ``where`` names the cell running then."""
    at = f" in {where}" if where else ""
    if re.search(r"DeadKernelError|Kernel died|kernel died", log):
        return (f"the kernel died{at} (the student's code crashed Python: os._exit, a segfault, or memory the "
                "system would not give; or the machine killed it)")
    if re.search(r"UnresponsiveKernelError|did not respond|Timeout waiting for", log):
        return f"the kernel stopped responding{at}"
    if re.search(r"Kernel didn't respond|Error starting kernel|kernel.*failed to start", log, flags=re.IGNORECASE):
        return f"the kernel did not start: {_last_line(log)}"
    errors = [line.strip() for line in log.splitlines() if "[ERROR]" in line or "Error:" in line]
    return f"nbgrader autograde failed{at}: {errors[-1] if errors else _last_line(log)}"


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else "(no message)"


@dataclass
class Attempt:
    """One run of one student's notebooks: the executed notebooks, or the problem that stopped it."""

    executed: dict[str, nbformat.NotebookNode] = field(default_factory=dict)
    problem: str = ""  # a time limit hit, or a failure that may be the machine's: run again alone
    seconds: float = 0.0
    log_tail: str = ""


def _timeouts(executed: dict, cpu_limit: float, wall_limit: float) -> str:
    """The time limits an executed notebook hit, as a reason naming the cells ("" if none)."""
    cpu, wall = [], []
    for name, notebook in executed.items():
        run = inspect_run(notebook)
        prefix = f"{name}.ipynb " if len(executed) > 1 else ""
        cpu += [prefix + c for c in run.cpu_timeouts]
        wall += [prefix + c for c in run.wall_timeouts]
    reasons = []
    if cpu:
        reasons.append(f"timed out in {', '.join(cpu)}: used more than {cpu_limit:g} s of CPU time")
    if wall:
        reasons.append(f"timed out in {', '.join(wall)}: ran longer than {wall_limit:g} s of wall-clock time "
                       "(waiting, e.g. sleeping, or a machine far too busy)")
    return "; ".join(reasons)


@dataclass
class RunJob:
    """Everything one run of one student's notebooks needs, as plain data: it can be sent to another
    process or machine (a dask worker), which then needs only coursekit and nbgrader, not the course."""

    assignment: str
    student: str
    course_id: str
    notebooks: dict[str, str]  # "<name>.ipynb" -> the sanitised submission's text
    release_names: list[str]  # the release's notebook names (without .ipynb), in order
    support: dict[str, bytes]  # the release's other files, by path relative to it
    gradebook: bytes  # an SQLite gradebook holding only this assignment's entries
    config_text: str  # the course's nbgrader_config.py
    cpu_limit: float
    wall_seconds: float
    memory_mb: int
    output_limit: int
    submission_timeout: float
    landlock: bool
    protect: list[str]  # paths the kernel must not reach (the course, other runs)
    work_root: str = ""  # where to make the run's folder ("": a per-machine folder under the temp dir)


def _run_environment() -> dict[str, str]:
    """The environment of the grading processes on this machine (see ENVIRONMENT), one compute thread each."""
    environment = {k: v for k, v in os.environ.items() if k in ENVIRONMENT or k.startswith("JUPYTER")}
    bin_dir = str(Path(sys.executable).parent)  # nbgrader, alembic and the kernel come from here
    path = environment.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        environment["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir
    # One compute thread per kernel: the per-cell limit counts the kernel's CPU time, which extra threads
    # would inflate (spinning while they wait for a core) on a busy machine. Parallelism comes from --jobs.
    environment.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return environment


def _shared_work_root(assignment: str) -> Path:
    """The folder of every run on this machine (a cluster worker's): one folder, so each run's kernel can be
    kept out of all the others' (it is protected, the run's own scratch folder inside it is granted)."""
    root = Path(tempfile.gettempdir()) / f"coursekit-grade-runs-{assignment}"
    root.mkdir(mode=0o700, exist_ok=True)
    return root


def run_submission(job: RunJob) -> Attempt:
    """Run one student's notebooks once with ``nbgrader autograde`` in a throwaway course with the sandboxed
    kernel (step 3 of the module doc). Runs wherever it is called: in a thread of the grading process, or as a
    task on a dask worker. A failure that may be the machine's comes back as ``Attempt.problem``."""
    root = Path(job.work_root) if job.work_root else _shared_work_root(job.assignment)
    protect = [*job.protect, str(root)]
    here = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    scratch, throwaway = here / "sandbox", here / "course"
    scratch.mkdir()
    throwaway.mkdir()
    (throwaway / "gradebook.db").write_bytes(job.gradebook)
    submitted = throwaway / "submitted" / job.student / job.assignment
    submitted.mkdir(parents=True)
    for name, text in job.notebooks.items():
        (submitted / name).write_text(text)
    for relative, data in job.support.items():
        (scratch / relative).parent.mkdir(parents=True, exist_ok=True)
        (scratch / relative).write_bytes(data)
    environment = _run_environment()
    nbgrader = shutil.which("nbgrader", path=environment["PATH"]) or "nbgrader"
    overrides = f"""

# --- added by coursekit grade: this throwaway course, and the sandboxed kernel ---
from coursekit.grading.workflow import _with_execute_replaced as _swap
from coursekit.grading.nbgrader_ext import SandboxedExecute as _SandboxedExecute
c.CourseDirectory.root = {str(throwaway)!r}
c.CourseDirectory.db_url = {'sqlite:///' + str(throwaway / 'gradebook.db')!r}
c.CourseDirectory.course_id = {job.course_id!r}
c.CourseDirectory.source_directory = "no-source-here"
c.Autograde.autograde_preprocessors = _swap(c, _SandboxedExecute)
c.SandboxedExecute.sandbox_directory = {str(scratch)!r}
c.SandboxedExecute.progress_file = {str(here / 'progress')!r}
c.Execute.timeout = {int(math.ceil(job.wall_seconds))}
c.SandboxedKernelManager.workdir = {str(scratch)!r}
c.SandboxedKernelManager.memory_mb = {int(job.memory_mb)}
c.SandboxedKernelManager.output_limit = {int(job.output_limit)}
c.SandboxedKernelManager.cell_cpu_limit = {job.cpu_limit!r}
c.SandboxedKernelManager.protect = {protect!r}
c.SandboxedKernelManager.landlock = {bool(job.landlock)!r}
c.SandboxedKernelManager.started_file = {str(here / 'kernels-started')!r}
"""
    (throwaway / "nbgrader_config.py").write_text(job.config_text + overrides)
    result = Attempt()
    start = time.perf_counter()
    try:
        process = subprocess.Popen([nbgrader, "autograde", job.assignment, "--student", job.student, "--force"],
                                   cwd=throwaway, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        try:
            output, _ = process.communicate(timeout=job.submission_timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(process.pid)
            output, _ = process.communicate()
            result.problem = f"the whole notebook ran longer than {job.submission_timeout:g} s: stopped"
        result.seconds = time.perf_counter() - start
        result.log_tail = output[-4000:]
        ran = throwaway / "autograded" / job.student / job.assignment
        expected = [n for n in job.release_names if f"{n}.ipynb" in job.notebooks]
        if not result.problem and (process.returncode != 0 or any(not (ran / f"{n}.ipynb").exists() for n in expected)):
            where = ""
            if (here / "progress").exists():  # the cell that was running when it stopped
                index = int((here / "progress").read_text().split()[0])
                name = next((n for n in expected if not (ran / f"{n}.ipynb").exists()), expected[0])
                cells = nbformat.reads(job.notebooks[f"{name}.ipynb"], as_version=4).cells
                if index < len(cells):
                    grade_id = cells[index].metadata.get("nbgrader", {}).get("grade_id")
                    where = f"cell {index + 1}" + (f" ({grade_id})" if grade_id else "")
            result.problem = _failure_reason(output, where)
        elif not result.problem:
            if not (here / "kernels-started").exists():  # never score a notebook that ran outside the sandbox
                raise GradingError("a notebook ran without coursekit's sandboxed kernel: nbgrader did not take "
                                   f"the configuration; its log:\n{output[-2000:]}")
            result.executed = {p.stem: nbformat.read(os.fspath(p), as_version=4) for p in ran.glob("*.ipynb")}
            result.problem = _timeouts(result.executed, job.cpu_limit, job.wall_seconds)
    except GradingError:
        raise
    except Exception as error:  # noqa: BLE001 (the grader's own failure: retried, then reported)
        result.seconds = time.perf_counter() - start
        result.problem = f"the grader failed while running it: {type(error).__name__}: {error}"
    finally:
        shutil.rmtree(here, ignore_errors=True)
    return result


def _check_sandbox(workdir: str, protect: list[str], config: str) -> str:
    """Run the sandbox's self-check on this machine: "" if it holds, else the reason (used on cluster workers)."""
    check = subprocess.run([sys.executable, "-m", "coursekit.grading.sandbox", "--workdir", workdir,
                            *[a for p in protect for a in ("--protect", p)], "--check", config],
                           env=_run_environment(), capture_output=True, text=True, timeout=300)
    return "" if check.returncode == 0 else _last_line(check.stderr)


class ClusterRunner:
    """Runs the students' notebooks as tasks on a ``dask.distributed`` cluster (``coursekit grade --cluster``).

    ``address`` is a scheduler address (``tcp://host:8786``) or ``"local"`` for a ``LocalCluster`` of
    ``workers`` single-threaded worker processes on this machine. Each task is :func:`run_submission` on one
    :class:`RunJob`; the workers send back the executed notebooks, and the scoring into the gradebook stays
    with the grading process. A worker lost mid-batch is dask's to handle: the scheduler runs its tasks again
    on the other workers (each student's run is independent and its result is kept once, by student, so a
    rerun can neither lose nor double a grade); a task whose workers died ``allowed-failures`` times comes back
    as a problem, and the student is run again alone, then marked needs review."""

    def __init__(self, address: str, workers: int):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise GradingError("--cluster needs dask.distributed: pip install \"coursekit[cluster]\"") from None
        self.cluster = None
        if address == "local":
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=None, memory_limit=0)
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(address, timeout="30s")
            except OSError as error:
                raise GradingError(f"cannot reach the dask scheduler at {address}: {error}") from None
        self.workers = len(self.client.scheduler_info()["workers"])
        if self.workers == 0:
            self.close()
            raise GradingError(f"the dask cluster at {address} has no workers")

    def check_sandbox(self, assignment: str, protect: list[str], config_text: str) -> None:
        """The sandbox's self-check on every worker, before any student code runs there."""
        def check() -> str:
            root = _shared_work_root(assignment)
            work = Path(tempfile.mkdtemp(prefix="check-", dir=root))
            try:
                (work / "nbgrader_config.py").write_text(config_text)
                return _check_sandbox(str(work / "check"), [*protect, str(root)], str(work / "nbgrader_config.py"))
            finally:
                shutil.rmtree(work, ignore_errors=True)

        failed = {w: r for w, r in self.client.run(check).items() if r}
        if failed:
            worker, reason = next(iter(failed.items()))
            raise GradingError(f"the Landlock sandbox does not work on {len(failed)} cluster worker(s), e.g. "
                               f"{worker} ({reason}); rerun with --no-landlock to grade without it")

    def map(self, jobs: list[RunJob], on_result) -> dict[str, Attempt]:
        """Run every job; ``on_result(student, attempt)`` as each finishes. One Attempt per student, always."""
        from distributed import as_completed

        futures = {self.client.submit(run_submission, job, pure=False,
                                      key=f"grade-{job.assignment}-{job.student}-{os.urandom(4).hex()}"): job.student
                   for job in jobs}
        results: dict[str, Attempt] = {}
        for future in as_completed(futures):
            student = futures[future]
            try:
                attempt = future.result()
            except GradingError:
                raise
            except Exception as error:  # noqa: BLE001 (KilledWorker, a lost connection: the machine's, not the student's)
                attempt = Attempt(problem=f"the cluster could not run it: {type(error).__name__}: {error}")
            results[student] = attempt
            on_result(student, attempt)
        return results

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def grade(assignment: str, submissions: Path | str, course: Path | str = ".", *, jobs: int | None = None,
          student_pattern: str = DEFAULT_PATTERN, cell_timeout: float | None = None, wall_factor: float = 5.0,
          memory_mb: int = 4096, output_limit: int = 100_000, submission_timeout: float = 1800,
          image_budget: int = IMAGE_BUDGET, feedback: bool = True, csv_path: Path | str | None = None,
          db_url: str | None = None, landlock: bool = True, cluster: str | None = None, log=print) -> Report:
    """Grade every submission of ``assignment`` in ``submissions`` (a folder or zip); see the module doc.

    ``cell_timeout`` is the CPU time one cell may use (default: ``Execute.timeout`` of the course's
    config); a cell may also run ``wall_factor`` times that long by the clock (for cells that wait rather
    than compute). ``image_budget`` caps the bytes of images kept in an executed notebook. ``cluster``: run the
    notebooks as tasks on a dask.distributed cluster, a scheduler address or ``"local"`` for a LocalCluster of
    ``jobs`` workers (see :class:`ClusterRunner`); ``jobs`` is then the cluster's number of workers."""
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
    try:
        students, unassigned = collect(read_submissions(Path(submissions)), list(release_notebooks), student_pattern)
    except AmbiguousSubmissions as error:
        raise GradingError(str(error)) from None
    outcomes = {}
    rebinding: dict[str, list[str]] = {}  # found in the code itself, before anything runs
    for student in sorted(students):
        collected = students[student]
        outcome = outcomes[student] = Outcome(student, name=collected.name, notes=list(collected.notes))
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
                for cell in notebook.cells:  # nbgrader clears them before it runs the notebook; the original keeps them
                    if cell.cell_type == "code":
                        cell.outputs, cell.execution_count = [], None
                rebinding.setdefault(student, []).extend(
                    f"{name}.ipynb {r}" if len(release_notebooks) > 1 else r for r in static_rebinding(notebook))
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

    # 3. run the notebooks, `jobs` students at a time (or as tasks on a dask cluster), each in its own
    # throwaway course
    ready = [o for o in outcomes.values() if o.status == "pending"]
    tmp_root = Path(tempfile.mkdtemp(prefix=f"coursekit-grade-{assignment}-"))
    template = tmp_root / "gradebook.db"
    _copy_assignment(db_url, f"sqlite:///{template}", assignment, course_id)
    config_text = (course / "nbgrader_config.py").read_text()
    protect = [str(course), str(tmp_root)]
    if db_url.startswith("sqlite:///"):
        protect.append(db_url[len("sqlite:///"):])
    cpu_limit = float(cell_timeout or config.Execute.get("timeout") or config.ExecutePreprocessor.get("timeout") or 120)
    wall_limit = cpu_limit * wall_factor
    support = {str(p.relative_to(release)): p.read_bytes() for p in sorted(release.rglob("*"))
               if p.is_file() and p.suffix != ".ipynb" and ".ipynb_checkpoints" not in p.parts}
    gradebook_bytes = template.read_bytes()

    def job(student: str, wall_seconds: float) -> RunJob:
        submitted = Path(coursedir.format_path(coursedir.submitted_directory, student, assignment))
        return RunJob(assignment=assignment, student=student, course_id=course_id,
                      notebooks={p.name: p.read_text() for p in sorted(submitted.glob("*.ipynb"))},
                      release_names=list(release_notebooks), support=support, gradebook=gradebook_bytes,
                      config_text=config_text, cpu_limit=cpu_limit, wall_seconds=wall_seconds, memory_mb=memory_mb,
                      output_limit=output_limit, submission_timeout=submission_timeout, landlock=landlock,
                      protect=protect, work_root="" if runner else str(tmp_root))

    def logged(student: str, result: Attempt) -> None:
        log(f"  ran {student}: {'to run again alone: ' + result.problem if result.problem else 'done'} "
            f"in {result.seconds:.1f} s")

    runner = None
    start = time.perf_counter()
    try:
        if cluster:
            runner = ClusterRunner(cluster, jobs)
            jobs = runner.workers
        if landlock and landlock_abi() >= 1:  # before any student code runs: does the sandbox hold here?
            reason = _check_sandbox(str(tmp_root / "check"), protect, str(course / "nbgrader_config.py"))
            if reason:
                raise GradingError(f"the Landlock sandbox does not work on this machine ({reason}); "
                                   "rerun with --no-landlock to grade without it")
            if runner:
                runner.check_sandbox(assignment, protect, config_text)
        where = f"on the dask cluster {cluster} ({jobs} workers)" if runner else f"{jobs} at a time"
        log(f"running {len(ready)} submissions of {assignment}, {where}")
        start = time.perf_counter()

        def run_alone(student: str, wall_seconds: float) -> Attempt:
            if runner:
                return runner.map([job(student, wall_seconds)], lambda *_: None)[student]
            return run_submission(job(student, wall_seconds))

        if runner:
            attempts = runner.map([job(o.student, wall_limit) for o in ready], logged)
        else:
            def first_run(outcome: Outcome) -> Attempt:
                result = run_submission(job(outcome.student, wall_limit))
                logged(outcome.student, result)
                return result

            with ThreadPoolExecutor(max_workers=jobs) as pool:
                attempts = dict(zip([o.student for o in ready], pool.map(first_run, ready)))
        # what hit a limit or failed in a way the machine may have caused runs again, alone this time
        for outcome in ready:
            first = attempts[outcome.student]
            if not first.problem:
                continue
            log(f"  running {outcome.student} again, alone ({first.problem})")
            second = run_alone(outcome.student, 2 * wall_limit)
            second.seconds += first.seconds
            attempts[outcome.student] = second
            if second.problem:
                outcome.review(f"{second.problem}, also when run again alone" if second.problem == first.problem else
                               f"{second.problem}, when run again alone (the first run, beside others: {first.problem})")
            else:
                outcome.notes.append(f"run again alone after the first run's problem ({first.problem}): "
                                     "this time it ran normally")
    finally:
        if runner:
            runner.close()
        shutil.rmtree(tmp_root, ignore_errors=True)
    run_seconds = time.perf_counter() - start
    for outcome in ready:
        result = attempts[outcome.student]
        outcome.run_seconds, outcome.log_tail = result.seconds, result.log_tail
        if result.executed:
            (executed_dir / outcome.student).mkdir()
        for name, notebook in result.executed.items():
            run = inspect_run(notebook)
            outcome.notes += [f"{w} printed too much: its output was cut" for w in run.truncated]
            outcome.notes += run.errors
            rebound = [f"{name}.ipynb {r}" if len(result.executed) > 1 else r for r in run.rebinding]
            rebound += [r for r in rebinding.get(outcome.student, []) if r not in rebound]
            if rebound and outcome.status == "pending":
                outcome.review(f"rebinds library functions the tests may use, so its test results cannot be trusted: "
                               f"{'; '.join(rebound)}")
            elif run.watch_failures and outcome.status == "pending":
                more = len(run.watch_failures) - 1
                outcome.review("the grader's watch for rebound library functions failed, so the test results were not "
                               f"checked for rebinding: {run.watch_failures[0]}"
                               + (f" (and at {more} more cell{'s' * (more > 1)})" if more else ""))
            stored = image_bytes(notebook)
            removed = cap_images(notebook, image_budget)
            if removed:
                outcome.notes.append(f"{name}.ipynb: the run drew {stored / 2**20:.1f} MB of images; "
                                     f"{removed / 2**20:.1f} MB of them were left out of the graded notebook and "
                                     f"the feedback (limit {image_budget / 2**20:g} MB)")
            nbformat.write(notebook, os.fspath(executed_dir / outcome.student / f"{name}.ipynb"))

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
        if outcome.name and outcome.name != outcome.student:  # the name behind a made-up id, for the formgrader
            with Gradebook(db_url, course_id) as gradebook:
                gradebook.update_or_create_student(outcome.student, last_name=outcome.name)
        for _ in range(2):  # a failure here is the grader's: tried twice, then left for review, never scored
            result = api.autograde(assignment, outcome.student, force=True, create=True)
            if result["success"]:
                break
        if not result["success"]:
            outcome.review(f"nbgrader could not score the executed notebook (tried twice): "
                           f"{_last_line(result.get('error') or result.get('log'))}")
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
    """One row per student: id and name, status, autograded points (blank unless graded: never a silent 0),
    each part, what waits for manual grading, repairs, notes, and the reason it failed or needs review."""
    parts = list(dict.fromkeys(g for o in report.outcomes for g in o.parts))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", "name", "status", "autograded_score", "autograded_max", *parts,
                         "waiting_for_manual_grading", "repairs", "notes", "problem"])
        for o in report.outcomes:
            graded = o.status == "graded"
            writer.writerow([o.student, o.name or o.student, o.status, f"{o.auto_score:g}" if graded else "",
                             f"{o.auto_max:g}" if graded else "",
                             *[("manual" if o.parts[g] is None else f"{o.parts[g]:g}") if g in o.parts else "" for g in parts],
                             " ".join(o.manual), " | ".join(o.repairs), " | ".join(o.notes), o.reason])
        for line in report.unassigned:
            writer.writerow(["", "", "unassigned", "", "", *[""] * len(parts), "", "", "", line])
