import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # party processes import mpc_programs

from mpc_util import ROLES, all3  # noqa: E402,F401


@pytest.fixture(scope='session')
def cluster():
    from block_relu_plugin.mpc import LocalCluster
    with LocalCluster(timeout=30, light=True) as cl:
        yield cl
