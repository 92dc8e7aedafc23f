"""Edge cases of the DReLU-based protocols, in-process (three threads, real framed
connections): composing DReLU's output, empty inputs, the truncation limit, and a
peer's ring message of the wrong type."""
import pytest
import torch

import views as V
from block_relu_plugin.mpc import protocols as P


@pytest.fixture(scope='module')
def trio():
    t = V.Trio()
    yield t
    t.close()


def _reveal(sess, y):
    return P.reveal_to_client(sess, y)


def _run(trio, body, x):
    """``body(sess, shared x)`` offline then online; the client's opened result."""
    def program(sess, x):
        return V.passes(sess, lambda s, x: _reveal(s, body(s, V.share(s, x))), x)
    return trio.run(program, V.fresh_keys(), {r: (x,) for r in V.ROLES})['client'][1]


@pytest.mark.parametrize('bits,shift', [(64, 0), (16, 3)])
def test_drelu_output_composes(trio, bits, shift):
    """DReLU's arithmetic shares are re-randomised like a product's, so the client's
    share is known offline and a product with it is right (it was not before)."""
    x = torch.randint(-2**17, 2**17, (64,), generator=torch.Generator().manual_seed(bits))
    got = _run(trio, lambda s, v: P.mult(s, P.drelu(s, v, bits, shift), v), x)
    assert torch.equal(got, x * (x >= 0).long())


def test_empty_inputs(trio):
    x = torch.zeros((0, 4, 3, 3), dtype=torch.int64)
    assert _run(trio, lambda s, v: P.relu(s, v), x).shape == (0, 4, 3, 3)
    assert _run(trio, lambda s, v: P.relu(s, v, 16, 2), x).shape == (0, 4, 3, 3)
    assert _run(trio, lambda s, v: P.block_relu(s, v, [[2, 2]] * 4, 16, 2), x).shape == x.shape
    assert _run(trio, lambda s, v: P.drelu(s, v), x).shape == x.shape


def test_truncation_limit_is_refused(trio):
    """Each party truncates its own share; a wrap cancels only while bits + shift <= 64."""
    x = torch.ones(8, dtype=torch.int64)
    with pytest.raises(RuntimeError, match=r'bits \+ shift must be <= 64'):
        _run(trio, lambda s, v: P.drelu(s, v, 63, 3), x)
    x = torch.ones((1, 1, 4, 4), dtype=torch.int64)
    with pytest.raises(RuntimeError, match=r'bits \+ shift \+ log2\(patch pixels\)'):
        _run(trio, lambda s, v: P.block_relu(s, v, [[4, 4]], 62, 1), x)


def test_a_ring_message_of_the_wrong_type_is_named(monkeypatch):
    """The helper's dealt ring shares sent as float64 make the server fail, naming the
    helper, instead of turning into float shares."""
    trio = V.Trio()
    for s in trio.sessions.values():
        for c in s.conns.values():
            c.timeout = 3
    real = P.Session.send

    def send(self, peer, t, phase=None):
        if self.role == 'helper' and t.dtype == torch.int64 and self.is_offline:
            t = t.double()
        return real(self, peer, t, phase)
    monkeypatch.setattr(P.Session, 'send', send)
    try:
        with pytest.raises(RuntimeError, match='server: .*ring elements \\(int64\\) from helper'):
            _run(trio, lambda s, v: P.relu(s, v), torch.arange(-8, 8))
    finally:
        trio.close()
