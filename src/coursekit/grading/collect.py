"""Find each student's notebooks in a folder or a zip of submissions (LMS downloads, Colab files).

The student id comes from each file's path (relative to the folder or zip root) through a regular
expression with a group named ``student``. The default takes the first folder name, or the part of
the file name before the first ``_``, so all of these belong to ``alice``::

    alice/ps1.ipynb    alice/Copy of ps1.ipynb    alice_ps1 (1).ipynb    alice_12345_67890_ps1-1.ipynb

The notebook's own name is normalised before it is matched to the release: ``Copy of`` prefixes,
``(1)``/``-1`` copy counters and LMS number prefixes are dropped. Where one student handed in several
files for one notebook, the newest (by the modification time in the zip or on disk) is graded and
the others are reported.
"""

from __future__ import annotations

import datetime
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

DEFAULT_PATTERN = r"^(?P<student>[A-Za-z0-9][A-Za-z0-9.@+-]*)(?:/|_)"
VALID_STUDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")
MAX_BYTES = 100 * 1024 * 1024
_JUNK = re.compile(r"(^|/)(__MACOSX|\.ipynb_checkpoints)(/|$)|(^|/)\.[^/]*$")


@dataclass
class SubmittedFile:
    path: str  # relative to the submissions root, as a POSIX path
    data: bytes
    mtime: float

    @property
    def copy_number(self) -> int:
        found = re.search(r"\((\d+)\)\s*\.ipynb$|-(\d+)\.ipynb$", self.path)
        return int(next(g for g in found.groups() if g)) if found else 0


@dataclass
class Collected:
    """One student's files: ``notebooks`` maps a release notebook name to the file to grade."""

    student: str
    notebooks: dict[str, SubmittedFile] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_submissions(source: Path) -> list[SubmittedFile]:
    """Every regular file in the folder or zip ``source`` (OS junk left out); no file is extracted."""
    source = Path(source)
    files = []
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source).as_posix()
            if path.is_file() and not _JUNK.search(relative):
                size = path.stat().st_size
                data = path.read_bytes() if size <= MAX_BYTES else b""
                files.append(SubmittedFile(relative, data, path.stat().st_mtime))
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            for info in archive.infolist():
                name = PurePosixPath(info.filename.replace("\\", "/")).as_posix()
                if info.is_dir() or _JUNK.search(name):
                    continue
                data = archive.read(info) if info.file_size <= MAX_BYTES else b""
                mtime = datetime.datetime(*info.date_time).timestamp()
                files.append(SubmittedFile(name, data, mtime))
    elif source.exists():
        raise ValueError(f"{source} is neither a folder nor a zip file: expected the submissions as one of those")
    else:
        raise FileNotFoundError(f"no submissions at {source}")
    return files


def notebook_name(file_name: str) -> str:
    """``Copy of ps1 (2).ipynb`` -> ``ps1``: the name a student's file had in the release."""
    stem = re.sub(r"\.ipynb$", "", PurePosixPath(file_name).name, flags=re.IGNORECASE)
    stem = re.sub(r"^((LATE_)?\d+_)+", "", stem, flags=re.IGNORECASE)  # LMS ids in front
    previous = None
    while previous != stem:
        previous = stem
        stem = re.sub(r"^\s*copy[ _]of[ _]", "", stem, flags=re.IGNORECASE)
        stem = re.sub(r"\s*\(\d+\)\s*$|-\d+$|\s+$", "", stem)
    return stem


def collect(files: list[SubmittedFile], release_notebooks: list[str], pattern: str = DEFAULT_PATTERN
            ) -> tuple[dict[str, Collected], list[str]]:
    """Group ``files`` by student and release notebook. Returns the students and the files that
    belong to nobody (each with the reason)."""
    regex = re.compile(pattern)
    if "student" not in regex.groupindex:
        raise ValueError(f"the student pattern {pattern!r} needs a group named 'student', e.g. (?P<student>[^_]+)")
    students: dict[str, Collected] = {}
    unassigned: list[str] = []
    candidates: dict[tuple[str, str], list[SubmittedFile]] = {}
    for file in files:
        found = regex.search(file.path)
        if not found or not found.group("student"):
            unassigned.append(f"{file.path}: its path does not match the student pattern {pattern!r}")
            continue
        student = found.group("student")
        if not VALID_STUDENT.fullmatch(student):
            unassigned.append(f"{file.path}: '{student}' is not usable as a student id (letters, digits, . _ @ + -)")
            continue
        entry = students.setdefault(student, Collected(student))
        if not file.data:
            entry.problems.append(f"{file.path} is empty or larger than {MAX_BYTES // 2**20} MB")
            continue
        if not file.path.lower().endswith(".ipynb"):
            entry.notes.append(f"ignored {file.path} (not a notebook)")
            continue
        rest = file.path[found.end():] if found.end() < len(file.path) else PurePosixPath(file.path).name
        name = notebook_name(rest or file.path)
        match = [n for n in release_notebooks if n.lower() == name.lower()]
        if not match and len(release_notebooks) == 1:
            match = release_notebooks
            if name.lower() != release_notebooks[0].lower():
                entry.notes.append(f"took {file.path} as {release_notebooks[0]}.ipynb (the assignment's only notebook)")
        if not match:
            entry.notes.append(f"ignored {file.path}: no notebook of this assignment is called '{name}' "
                               f"(expected {', '.join(n + '.ipynb' for n in release_notebooks)})")
            continue
        candidates.setdefault((student, match[0]), []).append(file)
    for (student, name), found in candidates.items():
        found.sort(key=lambda f: (f.mtime, f.copy_number))
        chosen = found[-1]
        students[student].notebooks[name] = chosen
        if chosen.path != f"{student}/{name}.ipynb" and len(found) == 1:
            students[student].notes.append(f"{chosen.path} taken as {name}.ipynb")
        if len(found) > 1:
            others = ", ".join(f.path for f in found[:-1])
            students[student].notes.append(f"{len(found)} files for {name}.ipynb: graded {chosen.path} (the newest), "
                                           f"ignored {others}")
    return students, unassigned
