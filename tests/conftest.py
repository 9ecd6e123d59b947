"""Shared test settings: offline data, CPU, small thread count."""

import os

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
def mnist_test():
    from coursekit.data import load_mnist

    return load_mnist("test", source="bundled")
