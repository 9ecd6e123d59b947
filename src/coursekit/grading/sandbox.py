"""Limits for the kernel that runs a student's notebook while it is graded.

``python -m coursekit.grading.sandbox [options] -f CONNECTION_FILE`` starts an IPython kernel (the
same one ``ipykernel_launcher`` starts) after it has

- capped its data memory (``RLIMIT_DATA``: heap and private writable mappings; ``RLIMIT_AS`` would
  not do, importing torch alone reserves over 3 GB of address space), so a runaway allocation fails
  with ``MemoryError`` in the cell instead of taking the machine down;
- cut the text a single cell may print, so a loop of ``print`` cannot fill the gradebook;
- on Linux 5.13 and later, used Landlock to give up read and write access to every folder except the
  system's, Python's own and one scratch folder. The course (solutions, gradebook, other students'
  work) is then out of reach even by absolute path. Of ``/proc`` only the kernel's own entry and a
  few machine-wide files stay readable, so the environment of the grader and of the instructor's
  shell (``/proc/<pid>/environ`` of the kernel's ancestors) cannot be read; of ``/dev`` only the
  null, zero and random devices stay, so ``/dev/shm`` is no channel between students' runs. Where
  Landlock is missing the kernel still runs in a scratch folder outside the course, and
  :func:`landlock_abi` tells the caller so.

The limits are applied before the kernel starts any thread, and are inherited by anything the
student's code starts. Once the kernel runs, two watchers work cell by cell:

- :func:`limit_cell_cpu` stops a cell that has used more than its share of *CPU time* (not wall-clock
  time, which a busy machine stretches) by raising :class:`CellCPUTimeExceeded` in it;
- :func:`watch_rebinding` notices a cell that rebinds a library function the tests rely on (say
  ``torch.allclose = ...``) and prints :data:`REBIND_NOTICE` into that cell's output, so that the
  grader can mark the submission for review instead of trusting its test results.

Neither watcher may raise into a cell for a failure of its own: nbgrader scores a test cell with an
error output 0. Should the rebinding watch fail (say a thread imports a module while it reads
``sys.modules``), it tries again, and after :data:`WATCH_TRIES` failures prints
:data:`WATCH_FAILED_NOTICE` instead, which the grader reports as needing review.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import signal
import sys
import threading
import time
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

# Folders every Python needs to read (the interpreter, shared libraries, certificates), and of /proc
# only the process's own entry (resolved by the process that restricts itself) and machine-wide facts:
# not /proc/<pid> of any other process, whose environ would show the grader's environment.
SYSTEM_READ = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/opt", "/sys", "/snap", "/var/lib", "/run",
               "/proc/self", "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/loadavg", "/proc/uptime",
               "/proc/version", "/proc/sys", "/proc/filesystems")
# Files the kernel may also write to: the harmless devices, not /dev/shm (shared by every process on the
# machine and outliving the run: a channel between students) nor anything else in /dev.
SYSTEM_WRITE = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")


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


class CellCPUTimeExceeded(BaseException):
    """Raised in a cell that used more CPU time than the limit (a BaseException: ``except Exception`` does
    not swallow it)."""


def cpu_seconds() -> float:
    """CPU time used so far by this process, all its threads together."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def limit_cell_cpu(shell, seconds: float, poll: float = 0.05) -> None:
    """Stop any cell of ``shell`` that uses more than ``seconds`` of CPU time: :class:`CellCPUTimeExceeded`
    is raised in it (again every second, should the cell catch it). CPU time, unlike wall-clock time,
    does not grow when other processes compete for the cores, so a correct answer is not cut short on
    a busy machine; a cell that waits without computing (``time.sleep``) is left to the grader's
    wall-clock limit."""
    state = {"start": None, "raised": 0.0}
    main_thread = threading.main_thread().ident

    def started(*args, **kwargs):
        state.update(start=cpu_seconds(), raised=0.0)

    def finished(*args, **kwargs):
        state["start"] = None

    def handler(signum, frame):
        start = state["start"]
        if start is not None and cpu_seconds() - start > seconds:
            raise CellCPUTimeExceeded(f"this cell used more than {seconds:g} s of CPU time (the grader's limit per cell)")

    def watch():
        while True:
            time.sleep(poll)
            start = state["start"]
            if start is None or cpu_seconds() - start <= seconds or time.monotonic() - state["raised"] < 1.0:
                continue
            state["raised"] = time.monotonic()
            signal.pthread_kill(main_thread, signal.SIGUSR2)

    signal.signal(signal.SIGUSR2, handler)
    shell.events.register("pre_run_cell", started)
    shell.events.register("post_run_cell", finished)
    threading.Thread(target=watch, name="coursekit-cpu-limit", daemon=True).start()


REBIND_NOTICE = "[coursekit grader: this cell rebinds {names}]"
WATCH_FAILED_NOTICE = "[coursekit grader: the rebinding watch failed at this cell: {error}]"
WATCH_TRIES = 3
# Modules whose functions the hidden tests call to check answers: rebinding one of them (torch.allclose =
# ...) would change what the tests compute. Imported before any student code runs.
WATCHED_MODULES = ("builtins", "math", "operator", "torch", "torch.nn", "torch.nn.functional", "torch.testing",
                   "torch.linalg", "numpy", "numpy.testing", "numpy.linalg")
WATCHED_PREFIXES = ("coursekit.", "scipy.", "sklearn.")  # also watched once the notebook imports them


# Builtins that IPython and ipykernel themselves swap around every cell.
_KERNEL_MANAGED = {"builtins": {"exit", "quit", "get_ipython", "display", "input", "raw_input", "getpass", "help",
                                "__IPYTHON__", "dreload", "copyright", "credits", "license"}}


def _callables(name: str, namespace: dict) -> dict:
    skip = _KERNEL_MANAGED.get(name, ())
    # a copy first: dict.copy() reads the dict in one go, where iterating it (even inside list()) allocates and
    # so can run the garbage collector, a finaliser and another thread, which may import a module meanwhile
    return {key: value for key, value in namespace.copy().items()
            if key not in skip and (callable(value) or type(value).__name__ == "module")}


def _class_namespace(cls) -> dict:
    """Every attribute of ``cls`` as stored (inherited ones too): the raw object from the first class of the
    MRO that holds it, so that a method the class inherits from C and a Python override of it differ."""
    found = {}
    for klass in reversed(cls.__mro__):
        found.update(vars(klass))
    return found


def _namespace(name: str) -> dict:
    if name == "torch.Tensor":
        torch = sys.modules.get("torch")
        return _class_namespace(torch.Tensor) if torch is not None else {}
    module = sys.modules.get(name)
    return vars(module) if module is not None else {}


def library_folders() -> tuple[str, ...]:
    """Where installed code lives (the standard library, site-packages, the watched packages' own folders):
    read-only to the student's code under Landlock."""
    import sysconfig

    folders = {sysconfig.get_paths().get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    for name in ("torch", "numpy", "scipy", "sklearn", "coursekit"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            folders.add(os.path.dirname(module.__file__))
    return tuple(os.path.join(os.path.realpath(f), "") for f in folders if f)


def made_by_a_library(value, folders: tuple[str, ...]) -> bool:
    """Whether ``value`` is a Python function whose code lies in ``folders``: a library's own wrapper (torch
    wraps ``torch.manual_seed`` when ``torch._dynamo`` loads), not the student's replacement."""
    code = getattr(value, "__code__", None) or getattr(getattr(value, "__func__", None), "__code__", None)
    return code is not None and os.path.realpath(code.co_filename).startswith(folders)


def rebound(snapshot: dict, user_ns: dict, modules_in_namespace: dict) -> list[str]:
    """What differs from ``snapshot``: watched functions replaced (other than by a library's own code) or
    deleted, and global names that held a watched module and now hold something else."""
    folders = library_folders()
    changed = []
    for name, original in snapshot.items():
        now = _namespace(name)
        changed += [f"{name}.{attribute}" for attribute, value in original.items()
                    if (current := now.get(attribute, None)) is not value
                    and not (current is not None and made_by_a_library(current, folders))]
    changed += [f"the name '{k}' (was the module {v.__name__})" for k, v in modules_in_namespace.items()
                if user_ns.get(k) is not v]
    return sorted(changed)


def watch_rebinding(shell, stream=None) -> dict:
    """After each cell of ``shell``, compare the functions, classes and submodules of the watched modules
    (and the methods of ``torch.Tensor``) with what they were before the first cell ran; print
    :data:`REBIND_NOTICE` naming each one the cell replaced or deleted, and each global name that held a
    watched module and now holds something else. Returns the snapshot (for tests)."""
    import importlib

    stream = stream or sys.stdout  # not stderr: nbgrader would score the cell 0 for it; the grader reads the notice
    snapshot: dict[str, dict] = {}
    for name in WATCHED_MODULES:  # imported now, before any student code; their snapshot is taken in the first cell
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 (a module this environment lacks is simply not watched)
            pass
    modules_in_namespace: dict[str, object] = {}
    reported: set[str] = set()

    def take_new():
        names = [*WATCHED_MODULES, "torch.Tensor",
                 *[n for n, m in sys.modules.copy().items() if m is not None and n.startswith(WATCHED_PREFIXES)]]
        for name in names:
            if name not in snapshot and (name in sys.modules or (name == "torch.Tensor" and "torch" in sys.modules)):
                snapshot[name] = _callables(name, _namespace(name))

    def before():
        take_new()
        modules_in_namespace.clear()
        modules_in_namespace.update({k: v for k, v in shell.user_ns.copy().items()
                                     if type(v).__name__ == "module" and getattr(v, "__name__", "") in snapshot})

    def after():
        changed = [name for name in rebound(snapshot, shell.user_ns, modules_in_namespace) if name not in reported]
        reported.update(changed)
        if changed:
            stream.write("\n" + REBIND_NOTICE.format(names=", ".join(changed[:20])) + "\n")
            stream.flush()
        take_new()

    def guarded(step):
        # a failure of the watch itself is the grader's, never the cell's: try again, then say so in the output
        def hook(*args, **kwargs):
            for _ in range(WATCH_TRIES):
                try:
                    return step()
                except Exception as error:  # noqa: BLE001
                    failure = f"{type(error).__name__}: {error}"
            stream.write("\n" + WATCH_FAILED_NOTICE.format(error=failure) + "\n")
            stream.flush()

        return hook

    shell.events.register("pre_run_cell", guarded(before))
    shell.events.register("post_run_cell", guarded(after))
    return snapshot


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-mb", type=int, default=0, help="data-memory limit in MiB (0: none)")
    parser.add_argument("--output-limit", type=int, default=0, help="characters one cell may print (0: no limit)")
    parser.add_argument("--cell-cpu-limit", type=float, default=0, help="CPU seconds one cell may use (0: no limit)")
    parser.add_argument("--no-rebind-watch", action="store_true", help="do not watch for rebound library functions")
    parser.add_argument("--workdir", required=True, help="the scratch folder: the only one the kernel may write")
    parser.add_argument("--protect", action="append", default=[], help="a path the kernel must not reach")
    parser.add_argument("--no-landlock", action="store_true", help="do not restrict the file system")
    parser.add_argument("--check", default=None,
                        help="instead of starting a kernel, apply the limits and check that this file cannot be read")
    args, kernel_argv = parser.parse_known_args(argv)

    workdir = Path(args.workdir).resolve()
    # joblib (imported by scikit-learn) probes for multiprocessing semaphores, which need /dev/shm, and
    # warns on stderr when it cannot have them; nbgrader scores any stderr output in a test cell as a
    # failure, so without this a correct answer whose tests import sklearn would lose its points.
    os.environ["JOBLIB_MULTIPROCESSING"] = "0"
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
        # the course, the grader's environment (through /proc) and /dev/shm must all be out of reach
        for path, mode in ((args.check, "rb"), (f"/proc/{os.getppid()}/environ", "rb"),
                           (f"/dev/shm/coursekit-sandbox-check-{os.getpid()}", "wb")):
            if not os.path.exists(os.path.dirname(path)):
                continue
            try:
                open(path, mode).close()
            except PermissionError:
                continue
            if mode == "wb":
                os.unlink(path)
            sys.exit(f"the sandbox did not work: {path} could still be opened ({mode}; Landlock ABI {abi})")
        import ipykernel.kernelapp  # noqa: F401 (the kernel must still be able to load)

        print(f"sandbox ok (Landlock ABI {abi})")
        return

    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.initialize(kernel_argv)
    if args.output_limit > 0:
        limit_output(app.shell, [sys.stdout, sys.stderr], args.output_limit)
    if args.cell_cpu_limit > 0:
        limit_cell_cpu(app.shell, args.cell_cpu_limit)
    if not args.no_rebind_watch:
        watch_rebinding(app.shell)
    app.start()


if __name__ == "__main__":
    main()
