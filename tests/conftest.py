"""Test setup shared by the whole suite.

Without a GPU, Triton kernels run through the interpreter: TRITON_INTERPRET must be set before
any Triton kernel module is imported, so it is set here, first.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        # The marker, not `"cuda" in item.keywords`: keywords also hold the names of the parent
        # directories, so a checkout in a folder named "cuda" would skip every test.
        if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
            item.add_marker(skip_cuda)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
