"""Find each student's notebooks in a folder or a zip of submissions (LMS downloads, Colab files).

The student comes from each file's path (relative to the folder or zip root) through a regular
expression with a group named ``student``. The default takes the first folder name, or the part of
the file name before the first ``_``, so all of these belong to ``alice``::

    alice/ps1.ipynb    alice/Copy of ps1.ipynb    alice_ps1 (1).ipynb    alice_12345_67890_ps1-1.ipynb

A name that is not a plain ASCII id (``José``, ``Alice Smith``, ``王芳``) gets a stable id made from
it (:func:`student_id`: ``Jose-<6 hex digits>``), and the name itself is kept for the report and the
gradebook. Where every notebook sits under one wrapper folder (``export-2026-11-30/alice/ps1.ipynb``),
the wrapper is dropped before the pattern is applied; and where files from different folders would
still map to one student, :func:`collect` refuses (:class:`AmbiguousSubmissions`) rather than grade
one of them and silently drop the others.

The notebook's own name is normalised before it is matched to the release: ``Copy of`` prefixes,
``(1)``/``-1`` copy counters and LMS number prefixes are dropped. Where one student handed in several
files for one notebook, the newest (by the modification time in the zip or on disk) is graded and
the others are reported.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import re
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

# the first folder, or the file name up to the first "_": any letters (José, 王芳), spaces inside allowed
DEFAULT_PATTERN = r"^(?P<student>[^/_\s][^/_]*?)\s*(?:/|_)"
VALID_STUDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")
MAX_BYTES = 100 * 1024 * 1024
_JUNK = re.compile(r"(^|/)(__MACOSX|\.ipynb_checkpoints)(/|$)|(^|/)\.[^/]*$")


class AmbiguousSubmissions(ValueError):
    """Files from different folders map to the same student: grading would merge different people."""


def student_id(name: str) -> str:
    """A stable gradebook id for a student's name as found in a path: the name itself where it is a plain
    id (letters, digits, . _ @ + -), otherwise an ASCII form of it plus 6 hex digits of its hash, so
    ``José`` -> ``Jose-`` + 6 digits, different from ``Jose`` and the same in every batch (the name is
    taken in Unicode NFC form, whatever form the zip stored)."""
    name = unicodedata.normalize("NFC", name.strip())
    if VALID_STUDENT.fullmatch(name):
        return name
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9._@+-]+", "-", ascii_name).strip("-._@+")
    digest = hashlib.sha1(name.encode()).hexdigest()[:6]
    return f"{slug}-{digest}" if slug else f"student-{digest}"


@dataclass
class SubmittedFile:
    path: str  # relative to the submissions root, as a POSIX path
    data: bytes
    mtime: float
    match_path: str = ""  # the path the student pattern reads (``path`` without a wrapper folder)

    @property
    def key(self) -> str:
        return self.match_path or self.path

    @property
    def copy_number(self) -> int:
        found = re.search(r"\((\d+)\)\s*\.ipynb$|-(\d+)\.ipynb$", self.path)
        return int(next(g for g in found.groups() if g)) if found else 0


@dataclass
class Collected:
    """One student's files: ``notebooks`` maps a release notebook name to the file to grade."""

    student: str
    name: str = ""  # the student's name as found in the paths
    notebooks: dict[str, SubmittedFile] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_submissions(source: Path) -> list[SubmittedFile]:
    """Every regular file in the folder or zip ``source`` (OS junk left out); no file is extracted."""
    source = Path(source)
    files = []
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            relative = unicodedata.normalize("NFC", path.relative_to(source).as_posix())
            if path.is_file() and not _JUNK.search(relative):
                size = path.stat().st_size
                data = path.read_bytes() if size <= MAX_BYTES else b""
                files.append(SubmittedFile(relative, data, path.stat().st_mtime))
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            for info in archive.infolist():
                name = info.filename
                if not info.flag_bits & 0x800:  # no UTF-8 flag: zipfile read the name as cp437, many tools wrote UTF-8
                    try:
                        name = name.encode("cp437").decode("utf-8")
                    except (UnicodeEncodeError, UnicodeDecodeError):
                        pass
                name = unicodedata.normalize("NFC", PurePosixPath(name.replace("\\", "/")).as_posix())
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


def _mapping(files: list[SubmittedFile], regex) -> tuple[int, int]:
    """(distinct students, notebooks matching no student) that ``regex`` finds among the notebooks in ``files``."""
    found = [regex.search(f.key) for f in files if f.key.lower().endswith(".ipynb")]
    students = {m.group("student") for m in found if m and m.group("student")}
    return len(students), sum(1 for m in found if not m or not m.group("student"))


def drop_wrappers(files: list[SubmittedFile], pattern: str = DEFAULT_PATTERN) -> tuple[list[SubmittedFile], list[str]]:
    """Where every notebook lies under the same folders (``export/2026/alice/ps1.ipynb``), read the paths
    below as many of them as lets the pattern tell the most students apart, without leaving more
    notebooks to nobody. Returns the files (``match_path`` set where a wrapper was dropped) and the
    wrapper folders dropped."""
    regex = re.compile(pattern)
    notebooks = [f.path.split("/") for f in files if f.path.lower().endswith(".ipynb")]
    if len(notebooks) < 2:
        return files, []
    depth = 0  # folders every notebook shares
    while all(len(parts) > depth + 1 and parts[depth] == notebooks[0][depth] for parts in notebooks):
        depth += 1
    best, best_mapping = 0, _mapping(files, regex)
    for d in range(1, depth + 1):
        prefix = "/".join(notebooks[0][:d]) + "/"
        inner = [dataclasses.replace(f, match_path=f.path[len(prefix):]) if f.path.startswith(prefix) else f for f in files]
        students, unmatched = _mapping(inner, regex)
        if students > best_mapping[0] and unmatched <= best_mapping[1]:
            best, best_mapping = d, (students, unmatched)
    if not best:
        return files, []
    prefix = "/".join(notebooks[0][:best]) + "/"
    return ([dataclasses.replace(f, match_path=f.path[len(prefix):]) if f.path.startswith(prefix) else f for f in files],
            notebooks[0][:best])


def collect(files: list[SubmittedFile], release_notebooks: list[str], pattern: str = DEFAULT_PATTERN
            ) -> tuple[dict[str, Collected], list[str]]:
    """Group ``files`` by student and release notebook. Returns the students (by :func:`student_id`) and
    the files that belong to nobody (each with the reason). Raises :class:`AmbiguousSubmissions` where
    files from different folders map to the same student and notebook."""
    regex = re.compile(pattern)
    if "student" not in regex.groupindex:
        raise ValueError(f"the student pattern {pattern!r} needs a group named 'student', e.g. (?P<student>[^_]+)")
    files, wrappers = drop_wrappers(files, pattern)
    students: dict[str, Collected] = {}
    unassigned: list[str] = []
    candidates: dict[tuple[str, str], list[SubmittedFile]] = {}
    for file in files:
        found = regex.search(file.key)
        if not found or not found.group("student"):
            unassigned.append(f"{file.path}: its path does not match the student pattern {pattern!r}")
            continue
        name = unicodedata.normalize("NFC", found.group("student").strip())
        student = student_id(name)
        entry = students.setdefault(student, Collected(student, name=name))
        if wrappers and not entry.notes:
            entry.notes.append(f"read the students from the folders inside {'/'.join(wrappers)}/ (it held every notebook)")
        if not file.data:
            entry.problems.append(f"{file.path} is empty or larger than {MAX_BYTES // 2**20} MB")
            continue
        if not file.key.lower().endswith(".ipynb"):
            entry.notes.append(f"ignored {file.path} (not a notebook)")
            continue
        rest = file.key[found.end():] if found.end() < len(file.key) else PurePosixPath(file.key).name
        notebook = notebook_name(rest or file.key)
        match = [n for n in release_notebooks if n.lower() == notebook.lower()]
        if not match and len(release_notebooks) == 1:
            match = release_notebooks
            if notebook.lower() != release_notebooks[0].lower():
                entry.notes.append(f"took {file.path} as {release_notebooks[0]}.ipynb (the assignment's only notebook)")
        if not match:
            entry.notes.append(f"ignored {file.path}: no notebook of this assignment is called '{notebook}' "
                               f"(expected {', '.join(n + '.ipynb' for n in release_notebooks)})")
            continue
        candidates.setdefault((student, match[0]), []).append(file)
    clashes = [f"student '{student}' ({name}.ipynb): {', '.join(f.path for f in found)}"
               for (student, name), found in candidates.items()
               if len({PurePosixPath(f.key).parent for f in found}) > 1]
    if clashes:
        raise AmbiguousSubmissions(
            "files in different folders map to the same student, so grading would merge different people or "
            "versions; nothing was graded. Pass --student-pattern with a (?P<student>...) group that tells them "
            "apart (e.g. '^[^/]+/(?P<student>[^/]+)/' for one wrapper folder), or remove the extra files:\n  "
            + "\n  ".join(clashes))
    for (student, name), found in candidates.items():
        found.sort(key=lambda f: (f.mtime, f.copy_number))
        chosen = found[-1]
        students[student].notebooks[name] = chosen
        if PurePosixPath(chosen.key).name != f"{name}.ipynb" and len(found) == 1:
            students[student].notes.append(f"{chosen.path} taken as {name}.ipynb")
        if len(found) > 1:
            others = ", ".join(f.path for f in found[:-1])
            students[student].notes.append(f"{len(found)} files for {name}.ipynb: graded {chosen.path} (the newest), "
                                           f"ignored {others}")
    return students, unassigned
