import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # party processes import mpc_programs

ROLES = ('client', 'server', 'helper')


def all3(*args):
    """The same arguments for the three parties (only the client uses the data)."""
    return {r: args for r in ROLES}


@pytest.fixture(scope='session')
def cluster():
    from block_relu_plugin.mpc import LocalCluster
    with LocalCluster(timeout=30, light=True) as cl:
        yield cl
