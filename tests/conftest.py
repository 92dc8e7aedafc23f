import os
import sys

import pytest
import torch

import block_relu_plugin  # noqa: F401  (registers the plugin)

# Test modules import shared helpers (networks.py) from this folder.
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _single_thread_torch():
    # Two cores are shared with the party processes of the MPC tests.
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)
