"""Attacks that try to reconstruct secrets from one party's whole view and keys.

The helper's reconstruction attack on PrivateCompare (issue 9): if the client
sends the helper ``pi(s c_0)`` and the server ``pi(s c_1)`` (a common nonzero
multiplier s and permutation pi per element, no additive mask), then each
column's pair ``(s c_0, s c_1)`` is a known point of the projective line over
Z_67 whatever s is. The helper dealt both parties' Z_67 shares of its bits of
X, so for a guess of the compared bits t (MSB first) and the mask bit beta it
can predict every column's pair; a depth-first search over t, pruned by the
multiset of observed points, finds t, and ``a = y - X`` with y's compared
bits t gives the DReLU input. On the protocol as it is (an additive mask u
per column from the client-server key) each vector alone is uniform, so the
points carry nothing and the search recovers nothing.
"""
from collections import Counter

import numpy as np
import pytest
import torch

import views as V
from block_relu_plugin.mpc import protocols as P
from block_relu_plugin.mpc.prf import PRF
from block_relu_plugin.mpc.ring import bits_msb_first

INV = V.INV67


def _point(a: int, b: int):
    """The projective point of the pair (a, b) over Z_67 (s cancels)."""
    if a:
        return (1, b * int(INV[a]) % 67)
    return (0, 1) if b else (0, 0)


def recover_t(d0: np.ndarray, d1: np.ndarray, xs0: np.ndarray, xs1: np.ndarray,
              max_nodes: int = 20000):
    """The compared bits t (MSB first) and beta consistent with one element's
    two column vectors, or None. ``xs0``/``xs1``: the Z_67 shares of X's bits
    the helper dealt to the client and the server."""
    m = len(xs0)
    seen = Counter(_point(int(a), int(b)) for a, b in zip(d0, d1))
    nodes = [0]

    def dfs(i, beta, pre0, pre1, t, left):
        nodes[0] += 1
        if nodes[0] > max_nodes:
            return None
        sign = 1 - 2 * beta
        if i == m:  # the extra column: beta=0: total + 1 (server), beta=1: total
            pt = _point(pre0 % 67, (pre1 + (1 - beta)) % 67)
            return list(t) if left[pt] > 0 else None
        for ti in (0, 1):
            c0 = (pre0 + sign * (-int(xs0[i]))) % 67
            c1 = (pre1 + sign * (ti - int(xs1[i])) + 1) % 67
            pt = _point(c0, c1)
            if left[pt] <= 0:
                continue
            left[pt] -= 1
            w0 = int(xs0[i]) * (1 - 2 * ti)
            w1 = int(xs1[i]) * (1 - 2 * ti) + ti
            got = dfs(i + 1, beta, pre0 + w0, pre1 + w1, t + [ti], left)
            left[pt] += 1
            if got is not None:
                return got
        return None

    for beta in (0, 1):
        got = dfs(0, beta, 0, 0, [], Counter(seen))
        if got is not None:
            return got
    return None


def drelu_program(sess, x):
    return V.output_share(sess, V.passes(sess, lambda s, x: P.drelu(s, V.share(s, x)), x))


def attack_drelu_inputs(trio, keys, view, n):
    """The helper's attack on ``drelu(share_input(x))`` (ops 0 and 1 of run 0):
    from its view and its own keys, the DReLU inputs it can reconstruct."""
    big_x = PRF(keys['ch']).stream(0, 1, 0).ring((n,)) + PRF(keys['sh']).stream(0, 1, 0).ring((n,))
    xs0 = PRF(keys['ch']).stream(0, 1, 1).zp((n, 63)).numpy().astype(np.int64)
    xs1 = (bits_msb_first(big_x, 62, 0).numpy() - xs0) % 67
    (d0, d1), = V.pc_pairs(view)
    out = []
    for e in range(n):
        t = recover_t(d0[e], d1[e], xs0[e], xs1[e])
        if t is None:
            out.append(None)
            continue
        y63 = int(''.join(map(str, t)), 2)               # y mod 2^63
        a63 = (y63 - int(big_x[e]) % 2**63) % 2**63       # a mod 2^63
        out.append(a63 - 2**63 if a63 >= 2**62 else a63)  # |a| < 2^62
    return out


@pytest.fixture(scope='module')
def trio():
    t = V.Trio()
    yield t
    t.close()


def _no_additive_mask(sess, op, n, cols):
    s, u, perm = ORIGINAL_MASKS(sess, op, n, cols)
    return s, torch.zeros_like(u), perm


ORIGINAL_MASKS = P._pc_masks


@pytest.mark.parametrize('protocol', ['without u (old)', 'as shipped'])
def test_helper_reconstructs_drelu_inputs_only_without_the_additive_mask(
        trio, monkeypatch, protocol):
    n = 24
    x = torch.randint(-2**40, 2**40, (n,), generator=torch.Generator().manual_seed(3))
    x[:4] = torch.tensor([0, -1, 1, -2**40])
    if protocol == 'without u (old)':
        monkeypatch.setattr(P, '_pc_masks', _no_additive_mask)
    keys = V.fresh_keys()
    res = trio.run(drelu_program, keys, {r: (x,) for r in V.ROLES})
    got = attack_drelu_inputs(trio, keys, res['helper'][0], n)
    hits = sum(g == int(v) for g, v in zip(got, x))
    if protocol == 'without u (old)':
        # (a rare element has a second consistent solution, found first)
        assert hits >= 0.9 * n, f'the attack recovers only {hits}/{n} inputs of the old protocol'
    else:
        assert hits == 0, f'the helper recovered {hits} of {n} DReLU inputs'


def _conv_twice(sess, x, w):
    """Two inferences of one conv layer in one session (the weight is sent once)."""
    def body(s, v):
        return P.conv2d(s, V.share(s, v), w if s.role == 'server' else tuple(w.shape), None,
                        padding=1, key='w')
    return [V.passes(sess, body, x) for _ in range(2)]


def test_client_cannot_check_a_weight_hypothesis(trio):
    """The client holds F = W - B (once per session) and, per run, C_0 =
    conv(A, B) - C_1 with A from its own key pair. If C_1 were the same in two
    runs, C_0 - C_0' = conv(A - A', B) = conv(A - A', W - F): the client could
    check any guess of W (and solve for it). C_1 is fresh per run, so the
    relation holds for no element."""
    from block_relu_plugin.mpc.ring import ring_conv2d
    x = torch.randint(-2**20, 2**20, (1, 3, 6, 6), generator=torch.Generator().manual_seed(4))
    w = torch.randint(-2**12, 2**12, (4, 3, 3, 3), generator=torch.Generator().manual_seed(5))
    keys = V.fresh_keys()
    view = trio.run(_conv_twice, keys, {r: (x, w) for r in V.ROLES})['client'][0]
    (f,), c0 = V.ring_arrays([v for v in view if v[1] == 'session']), \
        V.ring_arrays([v for v in view if v[1] == 'offline'])
    a = [PRF(keys['ch']).stream(run, 1, 0).ring(tuple(x.shape)) for run in (0, 1)]
    lhs = torch.from_numpy(c0[0] - c0[1]).reshape(1, 4, 6, 6)
    rhs = ring_conv2d(a[0] - a[1], w - torch.from_numpy(f).reshape(w.shape), padding=1)
    assert (lhs == rhs).float().mean() < 0.01, 'the client can verify the weights'
