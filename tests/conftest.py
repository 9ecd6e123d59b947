"""Shared test settings: offline data, CPU, small thread count."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

os.environ.setdefault("COURSEKIT_OFFLINE", "1")  # tests use the bundled digits, never the network
os.environ.setdefault("COURSEKIT_DEVICE", "cpu")
# Under pytest-xdist each worker gets its share of the cores, and so do the kernels and graders it starts,
# rather than every worker's threads fighting over all of them.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_threads = max(1, min(2, (os.cpu_count() or 1) // _workers))
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
torch.set_num_threads(min(_threads, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark("ddpm_vs_diffusers")``: import a script of ``benchmarks/`` as a module (the
    benchmarks are scripts, not a package)."""
    import importlib.util

    folder = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def mnist_test():
    from coursekit.data import load_mnist

    return load_mnist("test", source="bundled")


@dataclass
class BookBuild:
    """One offline `jupyter-book build -W` of the repository: its HTML folder and how the build ended."""

    html: Path
    returncode: int
    output: str  # the end of the build's stdout and stderr


@pytest.fixture(scope="session")
def book_build(tmp_path_factory) -> BookBuild:
    """Build the book once per test run, for tests/test_book.py and tests/test_browser.py alike.

    Under pytest-xdist each worker has its own session, so the build goes to the folder that all
    workers share (the parent of a worker's basetemp) under a file lock: the first worker to ask
    builds, the others wait and read the result. The executed notebooks' scratch copies are removed.
    """
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    output_dir, result_file = root / "book-build", root / "book-build.json"
    with FileLock(str(root / "book-build.lock")):
        if not result_file.exists():
            jupyter_book = Path(sys.executable).parent / "jupyter-book"
            repository = Path(__file__).resolve().parents[1]
            result = subprocess.run([str(jupyter_book), "build", str(repository), "--path-output", str(output_dir),
                                     "-W", "--keep-going"], capture_output=True, text=True,
                                    env={**os.environ, "COURSEKIT_OFFLINE": "1"}, timeout=3000)
            shutil.rmtree(output_dir / "_build" / "jupyter_execute", ignore_errors=True)
            result_file.write_text(json.dumps({"returncode": result.returncode,
                                               "output": result.stdout[-6000:] + result.stderr[-6000:]}))
    result = json.loads(result_file.read_text())
    return BookBuild(html=output_dir / "_build" / "html", returncode=result["returncode"], output=result["output"])
