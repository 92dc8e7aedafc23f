"""View tests: what the server and the helper receive is independent of the input.

For every protocol and for each of the two parties that must learn nothing
(server, helper), the party's own keys are fixed and the other parties' keys
drawn fresh for every trial (:mod:`views`). Its whole received view, and
what it computes from it (its output shares; the helper's PrivateCompare
sums and the ratios of the two vectors it gets), must then be

- the same shape for every input,
- fresh: no received value (or derived value) repeats between two trials of
  the same input, since every one of them is masked by randomness the party
  does not hold (a value fixed by the party's keys and the input would be a
  function of the input); bits agree with the other trial's about half the time,
- uniform, and distributed the same for inputs 0, -1 ulp, +1 ulp, +-2^40 and
  a mixed image (ring bytes, Z_67 digits, nibbles of bit messages),
- for the helper: empty, except in SecureNN's ShareConvert and MSB (the
  reference path), where its PrivateCompare outputs have at most one zero
  per element, present with probability 1/2 whatever the input, at a uniform
  column, and nonzero values uniform on 1..66.

``block_relu_plugin/mpc/SECURITY.md`` says why each of these holds;
``tools/dev/breakages.py`` shows that deliberate leaks (no additive mask,
multiplier or permutation in PrivateCompare; no re-randomisation after a
product; a comparison or gate mask the receiver can derive) each fail here or
in test_attacks.py.
"""
import itertools

import numpy as np
import pytest
import torch

import views as V
from block_relu_plugin.mpc import protocols as P

SHAPE = (1, 4, 8, 8)
TRIALS = 5
INPUTS = {
    'zero': torch.zeros(SHAPE, dtype=torch.int64),
    'minus_ulp': torch.full(SHAPE, -1, dtype=torch.int64),
    'plus_ulp': torch.full(SHAPE, 1, dtype=torch.int64),
    'large_pos': torch.full(SHAPE, 2**40, dtype=torch.int64),
    'large_neg': torch.full(SHAPE, -2**40, dtype=torch.int64),
    'mixed': torch.randint(-2**20, 2**20, SHAPE, generator=torch.Generator().manual_seed(0)),
}
W = torch.randint(-2**12, 2**12, (4, 4, 3, 3), generator=torch.Generator().manual_seed(1))
FC = torch.randint(-2**12, 2**12, (10, 256), generator=torch.Generator().manual_seed(2))
# the client's secret is the weights: its views are compared for two weight sets
WEIGHTS = {'w1': (W, FC), 'w2': (-3 * W + 7, 5 * FC - 1)}
_WEIGHTS = {'w': WEIGHTS['w1']}  # the weights the programs use (set per collection)
SIZES = [[2, 2], [1, 1], [0, 1], [4, 8]]


def _w(sess, i):
    w = _WEIGHTS['w'][i]
    return w if sess.role == 'server' else tuple(w.shape)


def _two_mults(sess, xs):
    """x * x and x * 2x: two products of one run (a re-randomiser shared by
    them would make the server's output shares differ by x^2)."""
    return torch.stack([P.mult(sess, xs, xs), P.mult(sess, xs, xs + xs)])


BODIES = {
    'share_input': lambda s, x: V.share(s, x),
    'conv2d': lambda s, x: P.conv2d(s, V.share(s, x), _w(s, 0), None, padding=1, key='v'),
    'linear': lambda s, x: P.linear(s, V.share(s, x).reshape(1, -1), _w(s, 1), None,
                                    key='fc'),
    'two_mults': lambda s, x: _two_mults(s, V.share(s, x)),
    'mult': lambda s, x: P.mult(s, V.share(s, x), V.share(s, x)),
    'drelu': lambda s, x: P.drelu(s, V.share(s, x)),
    'drelu16': lambda s, x: P.drelu(s, V.share(s, x), bits=16, shift=2),
    'relu': lambda s, x: P.relu(s, V.share(s, x)),
    'share_convert': lambda s, x: P.share_convert(s, V.share(s, x)),
    'drelu_securenn': lambda s, x: P.drelu_securenn(s, V.share(s, x)),
    'block_relu': lambda s, x: P.block_relu(s, V.share(s, x), SIZES),
    'block_relu16': lambda s, x: P.block_relu(s, V.share(s, x), SIZES, bits=16, shift=2),
    'max_pool2d': lambda s, x: P.max_pool2d(s, V.share(s, x), 3, 2, 1),
}
# protocols in which the helper receives anything: SecureNN's PrivateCompare (elsewhere
# it only deals)
COMPARING = {'share_convert', 'drelu_securenn'}


def _program(name):
    """Two inferences in one session (inputs ``x``, then ``x2``), so that masks
    reused across runs show up in the view; returns both output shares."""
    body = BODIES[name]

    def program(sess, x, x2):
        outs = [V.output_share(sess, V.passes(sess, body, v)) for v in (x, x2)]
        return None if outs[0] is None else np.stack(outs)
    return program


def _second(inp):
    return INPUTS['zero' if inp == 'mixed' else 'mixed']


@pytest.fixture(scope='module')
def trio():
    t = V.Trio()
    yield t
    t.close()


def collect(trio, adversary, names=tuple(BODIES), inputs=tuple(INPUTS), trials=TRIALS,
            weights=('w1',)):
    """``{name: {secret: [(view, output shares) per trial]}}`` of ``adversary``,
    whose keys are the same in every trial. The secret is the client's input
    (``inputs``) or, for the client, the server's weights (``weights``)."""
    fixed = V.fresh_keys()
    out = {}
    for name in names:
        out[name] = {}
        for inp in inputs:
            for w in weights:
                _WEIGHTS['w'] = WEIGHTS[w]
                x = INPUTS[inp]
                runs = []
                for _ in range(trials):
                    keys = V.keys_fixed_for(adversary, fixed)
                    res = trio.run(_program(name), keys, {r: (x, _second(inp)) for r in V.ROLES})
                    runs.append(res[adversary])
                out[name][inp if len(weights) == 1 else w] = runs
    _WEIGHTS['w'] = WEIGHTS['w1']
    return out


@pytest.fixture(scope='module')
def server_views(trio):
    return collect(trio, 'server')


@pytest.fixture(scope='module')
def helper_views(trio):
    return collect(trio, 'helper')


@pytest.fixture(scope='module')
def client_views(trio):
    """The client knows its input; what it must not learn is the weights, and
    the helper's and server's randomness (which would open activations)."""
    return collect(trio, 'client', inputs=('mixed',), weights=('w1', 'w2'))


def _views(request, who):
    return request.getfixturevalue(f'{who}_views')


def _ring_values(view):
    vals = [a.reshape(-1) for a in V.ring_arrays(view)]
    return np.concatenate(vals) if vals else np.zeros(0, np.int64)


def _byte_hist_values(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.astype(np.int64)).view(np.uint8).astype(np.int64)


def _derived(who, view, out):
    """Values the party computes from its view that must be fresh per trial:
    its output share; the helper's PrivateCompare sums and ratio vectors, and
    the sum of ShareConvert's two masked shares."""
    d = []
    if out is not None and who != 'client':  # the client's shares are key-derived by design
        d.append(('output share', out.reshape(-1, 1)))
    if who == 'helper':
        for c, s in V.pc_pairs(view):
            c, s = c.astype(np.int64), s.astype(np.int64)
            sigma = (c + s) % 67
            ratio = np.where(sigma == 0, -1, (c * V.INV67[sigma]) % 67)
            d.append(('pc sum (sorted)', np.sort(sigma, 1)))
            d.append(('pc ratio (sorted)', np.sort(ratio, 1)))
        ring = V.ring_arrays(view)
        if len(ring) == 2:  # ShareConvert: a_0 + r_0 and a_1 + r_1
            d.append(('opened a + r', (ring[0] + ring[1]).reshape(-1, 1)))
    return d


@pytest.mark.parametrize('who', ['server', 'helper', 'client'])
def test_view_shapes_do_not_depend_on_input(request, who):
    for name, by_input in _views(request, who).items():
        shapes = {inp: [[(p, ph, a.shape, a.dtype.str) for p, ph, a in v] for v, _ in runs]
                  for inp, runs in by_input.items()}
        first = next(iter(shapes.values()))[0]
        if not first:
            continue
        assert first or who == 'client', f'{name}: {who} received nothing'
        for inp, per_trial in shapes.items():
            for s in per_trial:
                assert s == first, (name, inp)


@pytest.mark.parametrize('who', ['server', 'helper', 'client'])
def test_view_is_fresh_under_fixed_keys(request, who):
    """Nothing the party receives or derives repeats across trials: under its
    fixed keys, every value is masked by randomness it does not hold."""
    for name, by_input in _views(request, who).items():
        for inp, runs in by_input.items():
            (v1, o1), (v2, o2) = runs[0], runs[1]
            for (p, ph, a), (_, _, b) in zip(v1, v2):
                if a.dtype == np.int64:
                    same, limit = (a == b).mean(), 0.01
                elif a.dtype == np.bool_:  # fresh bits agree half the time
                    same, limit = (a == b).mean(), 0.5 + max(0.1, 5 * 0.5 / np.sqrt(a.size))
                else:  # Z_67 vectors: compare whole rows
                    same = (a.reshape(len(a), -1) == b.reshape(len(b), -1)).all(-1).mean()
                    limit = 0.01
                assert same < limit, f'{name}/{inp}: {who} gets the same {ph} message ' \
                    f'from {p} in two trials ({same:.0%} of elements)'
            for (what, a), (_, b) in zip(_derived(who, v1, o1), _derived(who, v2, o2)):
                same = (a == b).all(-1).mean()
                assert same < 0.05, f'{name}/{inp}: {who}\'s {what} repeats across trials ' \
                    f'under fixed keys ({same:.0%}): it is a function of the input'


@pytest.mark.parametrize('who', ['server', 'helper', 'client'])
def test_view_is_uniform_and_input_independent(request, who):
    """Received ring elements and Z_67 values are uniform for every input, and
    their distribution (and that of the party's output shares, which after a
    truncation are uniform on a smaller range) is the same for every input."""
    for name, by_input in _views(request, who).items():
        ref = out_ref = None
        for inp, runs in by_input.items():
            outs = [o for _, o in runs if o is not None]
            if outs:
                out_bytes = _byte_hist_values(np.concatenate([o.reshape(-1) for o in outs]))
                if out_ref is None:
                    out_ref = out_bytes
                else:
                    stat, dof = V.chi2_two_sample(out_ref, out_bytes, 256)
                    assert stat < V.chi2_limit(dof), (name, inp, 'output share bytes', stat)
            ring = np.concatenate([_ring_values(v) for v, _ in runs])
            zp = [a.reshape(-1) for v, _ in runs for a in V.zp_arrays(v)]
            bits = [a.reshape(-1) for v, _ in runs for a in V.bit_arrays(v)]
            if bits:
                bits = np.concatenate(bits)
                assert abs(bits.mean() - 0.5) < 5 * 0.5 / np.sqrt(bits.size), (name, inp, 'bits')
                nib = _nibbles(bits)
                exp = nib.size / 16
                chi2 = ((np.bincount(nib, minlength=16) - exp) ** 2 / exp).sum()
                assert chi2 < V.chi2_limit(15), (name, inp, 'bit nibbles', chi2)
                if inp == next(iter(by_input)):
                    nib_ref = nib
                else:
                    stat, dof = V.chi2_two_sample(nib_ref, nib, 16)
                    assert stat < V.chi2_limit(dof), (name, inp, 'bit nibbles vs first input')
            if ring.size:
                assert V.byte_chi2(ring) < V.chi2_limit(255), (name, inp, 'ring bytes')
                bits = np.unpackbits(ring.view(np.uint8)).mean()
                assert abs(bits - 0.5) < 0.02, (name, inp, bits)
            if zp:
                zp = np.concatenate(zp).astype(np.int64)
                assert zp.max() < 67, (name, inp)
                exp = zp.size / 67
                chi2 = ((np.bincount(zp, minlength=67) - exp) ** 2 / exp).sum()
                assert chi2 < V.chi2_limit(66), (name, inp, 'Z_67 values', chi2)
            if ref is None:
                ref = ring
            elif ring.size:
                stat, dof = V.chi2_two_sample(V.top_byte(ref), V.top_byte(ring), 256)
                assert stat < V.chi2_limit(dof), (name, inp, 'top byte vs first input', stat)


def _nibbles(bits: np.ndarray) -> np.ndarray:
    """Bits as 4-bit values (16 bins: enough samples per bin for small messages)."""
    b = bits[:bits.size // 4 * 4].reshape(-1, 4).astype(np.int64)
    return b @ np.array([8, 4, 2, 1])


def test_helper_receives_nothing_outside_securenn(helper_views):
    """The helper deals: in every protocol but SecureNN's ShareConvert and MSB it
    receives no message at all, whatever the input."""
    for name, by_input in helper_views.items():
        for inp, runs in by_input.items():
            got = [(p, ph, a.shape) for v, _ in runs for p, ph, a in v]
            assert bool(got) == (name in COMPARING), (name, inp, got[:3])


def test_helper_private_compare_outputs(helper_views):
    """The helper's legitimate output: per element at most one zero, present
    with probability 1/2 whatever the input, at a uniform column; the other
    sums uniform on 1..66. (Fails without the permutation or the multiplier.)"""
    for name, by_input in helper_views.items():
        if name not in COMPARING:
            continue
        pos_ref = val_ref = None
        for inp, runs in by_input.items():
            zeros_at, nonzero, rows_with_zero, rows = [], [], 0, 0
            for v, _ in runs:
                for c, s in V.pc_pairs(v):
                    sigma = (c.astype(np.int64) + s) % 67
                    z = sigma == 0
                    assert z.sum(1).max() <= 1, (name, inp, 'two zeros in one comparison')
                    rows += len(sigma)
                    rows_with_zero += int(z.any(1).sum())
                    r, col = np.nonzero(z)
                    zeros_at.append(col)
                    nonzero.append(sigma[~z])
            cols = V.pc_pairs(runs[0][0])[0][0].shape[1]
            zeros_at, nonzero = np.concatenate(zeros_at), np.concatenate(nonzero)
            p = rows_with_zero / rows
            assert abs(p - 0.5) < 5 * 0.5 / np.sqrt(rows), (name, inp, 'zero rate', p)
            exp = zeros_at.size / cols
            chi2 = ((np.bincount(zeros_at, minlength=cols) - exp) ** 2 / exp).sum()
            assert chi2 < V.chi2_limit(cols - 1), (name, inp, 'zero position', chi2)
            exp = nonzero.size / 66
            chi2 = ((np.bincount(nonzero, minlength=67)[1:] - exp) ** 2 / exp).sum()
            assert chi2 < V.chi2_limit(65), (name, inp, 'nonzero sums', chi2)
            if pos_ref is None:
                pos_ref, val_ref = zeros_at, nonzero
            else:
                stat, dof = V.chi2_two_sample(pos_ref, zeros_at, cols)
                assert stat < V.chi2_limit(dof), (name, inp, 'zero position vs first input')
                stat, dof = V.chi2_two_sample(val_ref, nonzero, 67)
                assert stat < V.chi2_limit(dof), (name, inp, 'nonzero sums vs first input')


@pytest.mark.parametrize('who', ['server', 'client'])
def test_bit_messages_are_jointly_uniform(request, who):
    """Any two bit messages a party receives, XORed over their common prefix, are
    uniform: a mask reused for two openings (across tree levels, say, whose
    messages differ in length, so no equal-length XOR sees it) would leave the
    XOR of their plaintexts, which is not."""
    for name, by_input in _views(request, who).items():
        for inp, runs in by_input.items():
            ones, total = {}, {}
            for v, _ in runs:
                bits = [a.reshape(-1) for a in V.bit_arrays(v)]
                for i, j in itertools.combinations(range(len(bits)), 2):
                    n = min(len(bits[i]), len(bits[j]))
                    ones[i, j] = ones.get((i, j), 0) + int((bits[i][:n] ^ bits[j][:n]).sum())
                    total[i, j] = total.get((i, j), 0) + n
            for k, n in total.items():
                if n:
                    dev = abs(ones[k] / n - 0.5)
                    assert dev < 5 * 0.5 / np.sqrt(n) + 1e-3, \
                        f'{name}/{inp}: {who}\'s bit messages {k} XOR to a mean of ' \
                        f'{ones[k] / n:.3f} over {n} bits: a shared mask'


def _ring_values_of(view, out) -> list:
    """Every ring element the party holds from a trial: received arrays and its
    output shares (of both runs), flattened."""
    vals = [a.reshape(-1) for a in V.ring_arrays(view)]
    if out is not None:
        vals += [o.reshape(-1).astype(np.int64) for o in out.reshape(out.shape[0], -1)] \
            if out.ndim > 1 else [out.astype(np.int64)]
    return vals


def _leaks(a1, a2, b1) -> bool:
    """A value the party computes depends on the secret: it agrees between two
    trials of one secret (fresh randomness elsewhere) clearly more often than
    between trials of two secrets. (A relation that holds whatever the secret,
    such as a received share equal to the output share, agrees as often both
    ways; with 256 elements the two rates differ by about 0.03 by chance.)"""
    return (a1 == a2).mean() - (a1 == b1).mean() > 0.25


def _combinations(k: int):
    """Index/sign tuples of every +-1 combination of 2 or 3 of k arrays."""
    for i, j in itertools.combinations(range(k), 2):
        yield ((i, 1), (j, 1))
        yield ((i, 1), (j, -1))
    for idx in itertools.combinations(range(k), 3):
        for signs in itertools.product((1, -1), repeat=2):
            yield ((idx[0], 1), (idx[1], signs[0]), (idx[2], signs[1]))


def _pairs_of_secrets(who, by_secret):
    keys = list(by_secret)
    return [(keys[0], keys[1])] if who == 'client' else [('zero', 'mixed'),
                                                        ('large_pos', 'large_neg')]


@pytest.mark.parametrize('who', ['server', 'helper', 'client'])
def test_no_combination_of_the_view_is_a_function_of_the_secret(request, who):
    """No sum or difference of two or three equal-length arrays the party holds
    (messages of both runs, output shares), and no difference between
    elements of one array, is fixed by the secret (input, or the client's
    weights): a mask reused across runs, across products, across elements or
    between two messages would make one so."""
    for name, by_secret in _views(request, who).items():
        for sa, sb in _pairs_of_secrets(who, by_secret):
            (va1, oa1), (va2, oa2) = by_secret[sa][:2]
            vb1, ob1 = by_secret[sb][0]
            a1, a2, b1 = (_ring_values_of(v, o) for v, o in ((va1, oa1), (va2, oa2), (vb1, ob1)))
            bits = [[a.reshape(-1) for a in V.bit_arrays(v)] for v in (va1, va2, vb1)]
            for n in {len(x) for x in a1}:
                idx = [i for i, x in enumerate(a1) if len(x) == n][:14]
                for combo in _combinations(len(idx)):
                    def value(vals, combo=combo):
                        return sum(sg * vals[idx[i]] for i, sg in combo)
                    va1, va2, vb1 = value(a1), value(a2), value(b1)
                    assert not _leaks(va1, va2, vb1), \
                        f'{name}: {who} holds a combination {combo} of its arrays of ' \
                        f'length {n} that is fixed by the secret ({sa} vs {sb})'
                    if n > 1:  # e.g. an opening a + r with one r for all elements
                        assert not _leaks(*(v[1:] - v[:-1] for v in (va1, va2, vb1))), \
                            f'{name}: {who}\'s combination {combo} of its arrays of length ' \
                            f'{n} has element differences fixed by the secret ({sa} vs {sb})'
            for n in {len(x) for x in bits[0]}:
                idx = [i for i, x in enumerate(bits[0]) if len(x) == n][:14]
                for combo in _combinations(len(idx)):
                    xa1, xa2, xb1 = (np.bitwise_xor.reduce([vals[idx[i]] for i, _ in combo])
                                     for vals in bits)
                    assert not _leaks(xa1, xa2, xb1), \
                        f'{name}: {who} holds an XOR {combo} of its bit messages of ' \
                        f'length {n} that is fixed by the secret ({sa} vs {sb})'
            for i, (x1, x2, y1) in enumerate(zip(a1, a2, b1)):
                if len(x1) > 1:
                    d = [v[1:] - v[:-1] for v in (x1, x2, y1)]  # neighbours
                    assert not _leaks(*d), f'{name}: {who}\'s array {i} has element ' \
                        f'differences fixed by the secret ({sa} vs {sb}): a mask shared by elements'


def test_views_cover_every_interactive_protocol(server_views, helper_views, client_views):
    assert set(server_views) == set(BODIES) == set(client_views) == set(helper_views)
