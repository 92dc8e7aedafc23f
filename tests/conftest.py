import os
import sys

import pytest
import torch

import block_relu_plugin  # noqa: F401  (registers the plugin)

# Test modules import shared helpers (networks.py) from this folder.
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # Tests run small forwards, often beside party or worker processes on two
    # cores: one thread each avoids oversubscription (and makes two-worker
    # distortion runs bit-identical to one-worker runs).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
