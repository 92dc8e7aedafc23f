"""Helpers shared by the MPC tests."""

ROLES = ('client', 'server', 'helper')


def all3(*args):
    """The same arguments for the three parties (only the client uses the data)."""
    return {r: args for r in ROLES}
