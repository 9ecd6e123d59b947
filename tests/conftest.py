"""Shared test settings: offline data, CPU, small thread count."""

import os

import pytest
import torch

os.environ.setdefault("COURSEKIT_OFFLINE", "1")  # tests use the bundled digits, never the network
os.environ.setdefault("COURSEKIT_DEVICE", "cpu")
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def mnist_test():
    from coursekit.data import load_mnist

    return load_mnist("test", source="bundled")
