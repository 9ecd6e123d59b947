"""``coursekit grade`` beyond one machine: notebooks run on a dask.distributed cluster, a PostgreSQL gradebook.

The tests grade a tiny nbgrader assignment built here (one answer, one test cell that also waits a
moment so that a worker can be killed in the middle of a run), so that they exercise the machinery,
not torch: each run costs a kernel start and the wait.

- on a ``LocalCluster`` the scores equal those of the usual local processes, for a correct, a wrong
  and a blank submission;
- a worker killed (with its children, as a lost machine) while it runs a student's notebook costs a
  rerun on another worker, never a lost or doubled grade;
- the gradebook on a real PostgreSQL server that the test starts itself (``initdb`` and ``pg_ctl``
  from the machine's PostgreSQL, on a socket and 127.0.0.1), with two grading runs of different
  assignments writing into it at the same time: every grade of both lands.
"""

from __future__ import annotations

import csv
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import pytest

import grading
from grading import ROOT

pytest.importorskip("distributed")

POINTS = 2
WAIT = 3.0  # seconds the test cell sleeps: wall-clock time, not CPU time, so no limit is near


def _cell(kind: str, source: str, **nbgrader) -> nbformat.NotebookNode:
    meta = {"schema_version": 3, "locked": False, "solution": False, "grade": False, "task": False, **nbgrader}
    make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    return make(source, metadata={"nbgrader": meta})


def tiny_source(assignment: str) -> nbformat.NotebookNode:
    """An nbgrader source notebook: write ``double(x)``; its test cell is worth POINTS."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [
        nbformat.v4.new_markdown_cell(f"# {assignment}: write `double(x)`"),
        _cell("code", "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
              solution=True, grade_id="double"),
        _cell("code", f"import time\ntime.sleep({WAIT})\nassert double(3) == 6, 'double(3) should be 6'",
              grade=True, locked=True, points=POINTS, grade_id="test_double"),
    ]
    return notebook


def make_tiny_course(course: Path, assignments: list[str], db_url: str | None = None) -> Path:
    shutil.copy(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
    for assignment in assignments:
        (course / "solutions" / assignment).mkdir(parents=True)
        nbformat.write(tiny_source(assignment), os.fspath(course / "solutions" / assignment / f"{assignment}.ipynb"))
        extra = [f"--CourseDirectory.db_url={db_url}"] if db_url else []
        grading.run_nbgrader(course, "generate_assignment", assignment, "--force", *extra)
    return course


def submissions(folder: Path, course: Path, assignment: str, students: dict[str, str]) -> Path:
    """One folder per student; the answer is 'right', 'wrong' or 'blank' (the release untouched)."""
    release = grading.read(course / "exercises" / assignment / f"{assignment}.ipynb")
    for student, kind in students.items():
        notebook = nbformat.from_dict(release)
        for cell in notebook.cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == "double" and kind != "blank":
                cell.source = "def double(x):\n    return " + ("2 * x" if kind == "right" else "x + 2")
        (folder / student).mkdir(parents=True)
        nbformat.write(notebook, os.fspath(folder / student / f"{assignment}.ipynb"))
    return folder


STUDENTS = {"ada": "right", "ben": "wrong", "cy": "blank", "dee": "right"}
EXPECTED = {s: (POINTS if kind == "right" else 0) for s, kind in STUDENTS.items()}


def scores(report) -> dict[str, float | None]:
    return {o.student: o.auto_score for o in report.outcomes}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    course = make_tiny_course(tmp_path_factory.mktemp("course"), ["tiny"])
    folder = submissions(tmp_path_factory.mktemp("submissions"), course, "tiny", STUDENTS)
    return course, folder


@pytest.mark.slow
def test_a_local_cluster_gives_the_same_scores_as_local_processes(tiny, tmp_path):
    from coursekit.grading.workflow import grade

    course, folder = tiny
    lines: list[str] = []
    serial = grade("tiny", folder, course, jobs=2, feedback=False, csv_path=tmp_path / "serial.csv")
    clustered = grade("tiny", folder, course, jobs=2, cluster="local", feedback=False,
                      csv_path=tmp_path / "cluster.csv", log=lines.append)
    assert scores(serial) == EXPECTED
    assert scores(clustered) == scores(serial)
    assert all(o.status == "graded" for o in clustered.outcomes)
    assert any("on the dask cluster local (2 workers)" in line for line in lines)
    assert clustered.jobs == 2


def _kill_tree(pid: int) -> None:
    import psutil

    process = psutil.Process(pid)
    for child in process.children(recursive=True) + [process]:
        try:
            child.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


@pytest.mark.slow
def test_a_worker_lost_mid_batch_costs_a_rerun_never_a_lost_or_doubled_grade(tiny, tmp_path):
    from distributed import Client, LocalCluster
    from nbgrader.api import Gradebook

    from coursekit.grading.workflow import grade

    course, folder = tiny
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit=0)
    watcher = Client(cluster)
    killed: list[str] = []

    def kill_one_worker_while_it_runs_a_notebook():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            busy = {w: keys for w, keys in watcher.processing().items() if keys}
            if busy:
                time.sleep(WAIT / 2)  # well inside the run: the kernel is up, the test cell is sleeping
                address = next(iter(busy))
                pid = watcher.run(os.getpid, workers=[address])[address]
                _kill_tree(pid)
                killed.append(address)
                return
            time.sleep(0.1)

    thread = threading.Thread(target=kill_one_worker_while_it_runs_a_notebook)
    try:
        thread.start()
        lines: list[str] = []
        report = grade("tiny", folder, course, cluster=cluster.scheduler_address, feedback=False,
                       csv_path=tmp_path / "grades.csv", log=lines.append)
        thread.join()
    finally:
        watcher.close()
        cluster.close()
    assert killed, "the test never saw a worker running a notebook"
    assert scores(report) == EXPECTED, "\n".join(lines)
    rows = list(csv.DictReader((tmp_path / "grades.csv").open()))
    assert sorted(row["student"] for row in rows) == sorted(STUDENTS)  # each student once
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        graded = gradebook.find_assignment("tiny").submissions
        assert sorted(s.student.id for s in graded) == sorted(STUDENTS)
        assert {s.student.id: s.code_score for s in graded} == EXPECTED


def test_an_unreachable_scheduler_is_a_clear_error(tiny):
    from coursekit.grading.workflow import GradingError, grade

    course, folder = tiny
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(GradingError, match=f"cannot reach the dask scheduler at tcp://127.0.0.1:{port}"):
        grade("tiny", folder, course, cluster=f"tcp://127.0.0.1:{port}", feedback=False)


# --- a PostgreSQL gradebook -------------------------------------------------------------------------


def _postgres_bin(program: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}")) or [shutil.which(program) or ""]
    if not found[-1]:
        pytest.fail(f"PostgreSQL's {program} is not installed: the gradebook test needs a local PostgreSQL server "
                    "(Debian: apt-get install postgresql)")
    return found[-1]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of our own on 127.0.0.1 (a free port), trust authentication, stopped afterwards.
    As root, it runs as the 'postgres' user (initdb refuses root)."""
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    as_user: list[str] = []
    home = Path(tempfile.mkdtemp(prefix="coursekit-pg-"))
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(home, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, sockets = home / "data", home
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "grader", "--no-sync"],
                   check=True, capture_output=True, text=True)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(home / "log"), "-w", "-o",
                    f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True, text=True)
    try:
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=port, user="grader", dbname="postgres")
        connection.autocommit = True
        connection.cursor().execute("CREATE DATABASE gradebook")
        connection.close()
        yield f"postgresql+psycopg2://grader@127.0.0.1:{port}/gradebook"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_two_grading_runs_write_into_one_postgresql_gradebook_at_once(postgres, tmp_path):
    from nbgrader.api import Gradebook

    (tmp_path / "course").mkdir()
    course = make_tiny_course(tmp_path / "course", ["tiny1", "tiny2"], db_url=postgres)
    assert not (course / "gradebook.db").exists(), "generate_assignment wrote to SQLite, not to PostgreSQL"
    students = {f"s{i:02d}": ("right" if i % 3 else "wrong") for i in range(4)}
    runs = {}
    for assignment in ("tiny1", "tiny2"):
        folder = submissions(tmp_path / f"in-{assignment}", course, assignment, students)
        command = [sys.executable, "-m", "coursekit.cli", "grade", assignment, str(folder), "--course", str(course),
                   "--jobs", "1", "--db-url", postgres, "--no-feedback", "--csv", str(tmp_path / f"{assignment}.csv")]
        runs[assignment] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for assignment, process in runs.items():  # both at once: neither waits for the other to start
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, f"grading {assignment} failed:\n{output}"
    expected = {s: (POINTS if kind == "right" else 0) for s, kind in students.items()}
    with Gradebook(postgres, "generative-image-models") as gradebook:
        for assignment in ("tiny1", "tiny2"):
            graded = gradebook.find_assignment(assignment).submissions
            assert {s.student.id: s.code_score for s in graded} == expected, assignment
            rows = {row["student"]: row for row in csv.DictReader((tmp_path / f"{assignment}.csv").open())}
            assert sorted(rows) == sorted(students)
