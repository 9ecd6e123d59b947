"""Limits for the kernel that runs a student's notebook while it is graded.

``python -m coursekit.grading.sandbox [options] -f CONNECTION_FILE`` starts an IPython kernel (the
same one ``ipykernel_launcher`` starts) after it has

- capped its data memory (``RLIMIT_DATA``: heap and private writable mappings; ``RLIMIT_AS`` would
  not do, importing torch alone reserves over 3 GB of address space), so a runaway allocation fails
  with ``MemoryError`` in the cell instead of taking the machine down;
- cut the text a single cell may print, so a loop of ``print`` cannot fill the gradebook;
- on Linux 5.13 and later, used Landlock to give up read and write access to every folder except the
  system's, Python's own and one scratch folder. The course (solutions, gradebook, other students'
  work) is then out of reach even by absolute path. Where Landlock is missing the kernel still runs
  in a scratch folder outside the course, and :func:`landlock_abi` tells the caller so.

The limits are applied before the kernel starts any thread, and are inherited by anything the
student's code starts.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import sys
from pathlib import Path

# Landlock (linux/landlock.h): system call numbers are the same on every architecture.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_WRITE_DIR_RIGHTS = sum(1 << bit for bit in range(4, 13))  # remove/make dir, file, socket, fifo, ...
_REFER, _TRUNCATE = 1 << 13, 1 << 14
_FILE_RIGHTS_READ = _EXECUTE | _READ_FILE

# Folders every Python needs to read (the interpreter, shared libraries, certificates, /proc).
SYSTEM_READ = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/opt", "/proc", "/sys", "/snap",
               "/var/lib", "/run")
# Folders the kernel may also write to (it needs /dev/null and shared memory).
SYSTEM_WRITE = ("/dev",)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def landlock_abi() -> int:
    """The Landlock ABI version this kernel offers, 0 where there is none (not Linux, too old, off)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        version = _libc().syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def allowed_folders(read: list[str], write: list[str], protected: list[str]) -> tuple[list[Path], list[Path]]:
    """The existing folders to open for reading and for writing, leaving out any folder that holds a
    protected path (the course root's solutions, gradebook, ...): access granted to a folder covers all
    that is below it."""
    protected_paths = [Path(p).resolve() for p in protected]

    def keep(paths):
        kept = []
        for path in paths:
            try:
                resolved = Path(path).resolve()
            except OSError:
                continue
            if resolved.exists() and not any(_inside(p, resolved) for p in protected_paths) and resolved not in kept:
                kept.append(resolved)
        return kept

    return keep(read), keep(write)


def restrict_filesystem(read: list[Path], write: list[Path]) -> int:
    """Allow this process (and its children) only ``read`` (read and execute) and ``write`` (all
    file rights) from now on. Returns the Landlock ABI used; 0 if the kernel has no Landlock."""
    abi = landlock_abi()
    if abi < 1:
        return 0
    libc = _libc()
    handled = _EXECUTE | _WRITE_FILE | _READ_FILE | _READ_DIR | _WRITE_DIR_RIGHTS
    if abi >= 2:
        handled |= _REFER
    if abi >= 3:
        handled |= _TRUNCATE
    attr = _RulesetAttr(handled)
    ruleset = libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for paths, rights in ((read, _EXECUTE | _READ_FILE | _READ_DIR), (write, handled)):
            for path in paths:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                try:
                    allowed = rights if path.is_dir() else rights & (_FILE_RIGHTS_READ | _WRITE_FILE | _TRUNCATE)
                    rule = _PathBeneathAttr(allowed & handled, fd)
                    if libc.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
                        raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
                finally:
                    os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    return abi


def limit_memory(megabytes: int) -> None:
    """Cap the data memory (heap and private writable mappings) of this process and its children."""
    if megabytes > 0:
        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


TRUNCATION_NOTICE = "[coursekit grader: output of this cell cut after {limit:,} characters]"


def limit_output(shell, streams, limit: int) -> None:
    """Let each cell print at most ``limit`` characters on ``streams`` (stdout, stderr); past that
    the text is dropped and one notice says so. The count restarts with every cell."""
    state = {"left": limit, "noticed": False}

    def reset(*args, **kwargs):
        state.update(left=limit, noticed=False)

    shell.events.register("pre_run_cell", reset)
    for stream in streams:
        original = stream.write

        def write(text, original=original):
            if state["left"] >= len(text):
                state["left"] -= len(text)
                return original(text)
            if state["left"] > 0:
                original(text[: state["left"]])
                state["left"] = 0
            if not state["noticed"]:
                state["noticed"] = True
                original("\n" + TRUNCATION_NOTICE.format(limit=limit) + "\n")
            return len(text)

        stream.write = write


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-mb", type=int, default=0, help="data-memory limit in MiB (0: none)")
    parser.add_argument("--output-limit", type=int, default=0, help="characters one cell may print (0: no limit)")
    parser.add_argument("--workdir", required=True, help="the scratch folder: the only one the kernel may write")
    parser.add_argument("--protect", action="append", default=[], help="a path the kernel must not reach")
    parser.add_argument("--no-landlock", action="store_true", help="do not restrict the file system")
    parser.add_argument("--check", default=None,
                        help="instead of starting a kernel, apply the limits and check that this file cannot be read")
    args, kernel_argv = parser.parse_known_args(argv)

    workdir = Path(args.workdir).resolve()
    for name, sub in (("IPYTHONDIR", ".ipython"), ("MPLCONFIGDIR", ".matplotlib"), ("HOME", "."),
                      ("TMPDIR", "tmp"), ("XDG_CACHE_HOME", ".cache")):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(workdir / sub)
    limit_memory(args.memory_mb)
    abi = 0
    if not args.no_landlock:
        connection = [kernel_argv[i + 1] for i, arg in enumerate(kernel_argv[:-1]) if arg == "-f"]
        python_paths = [p for p in sys.path if p] + [sys.prefix, sys.base_prefix, sys.exec_prefix,
                                                    os.path.dirname(sys.executable)]
        read, write = allowed_folders([*SYSTEM_READ, *python_paths],
                                      [*SYSTEM_WRITE, str(workdir), *connection], args.protect)
        abi = restrict_filesystem(read, write)
    if args.check:
        try:
            open(args.check, "rb").close()
        except PermissionError:
            pass
        else:
            sys.exit(f"the sandbox did not work: {args.check} could still be read (Landlock ABI {abi})")
        import ipykernel.kernelapp  # noqa: F401 (the kernel must still be able to load)

        print(f"sandbox ok (Landlock ABI {abi})")
        return

    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.initialize(kernel_argv)
    if args.output_limit > 0:
        limit_output(app.shell, [sys.stdout, sys.stderr], args.output_limit)
    app.start()


if __name__ == "__main__":
    main()
