"""Break the code on purpose, one breakage at a time, and show the tests fail.

Each breakage is a small source edit applied to a fresh copy of the working
tree (the tree itself is never touched); the copy's tests that guard that
part then run against it. A breakage that no test catches is reported as
``MISSED`` and makes the script exit 1. The leaks of issue 9 are here (the
PrivateCompare masks, the re-randomisation after a product), those of the
dealer DReLU of issue 11 (a mask the receiver can derive, dealt bits sent
in the clear), with the core's other guards: the layer, the knapsack, the
distortion, the secure Block-ReLU's gate, the transport's frame cap.

Usage: python tools/dev/breakages.py [--only NAME ...] [--list] [-k PYTEST_K]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Breakage(NamedTuple):
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: Tuple[str, ...]


P = 'block_relu_plugin/mpc/protocols.py'
MPC_SECURITY = ('tests/test_mpc/test_views.py', 'tests/test_mpc/test_attacks.py')
BREAKAGES = [
    Breakage('pc-no-additive-mask', 'PrivateCompare: client and server send pi(s*c_j), no u',
             P, '(c * s + (u if j == 0 else -u)) % P', '(c * s) % P', MPC_SECURITY),
    Breakage('pc-no-multiplier', 'PrivateCompare: no nonzero multiplier s',
             P, '(c * s + (u if j == 0 else -u)) % P', '(c + (u if j == 0 else -u)) % P',
             MPC_SECURITY),
    Breakage('pc-no-permutation', 'PrivateCompare: columns not permuted',
             P, 'torch.gather((c * s + (u if j == 0 else -u)) % P, 1, perm)',
             '((c * s + (u if j == 0 else -u)) % P)', MPC_SECURITY),
    Breakage('beaver-no-rerandomisation', "products (Beaver, fused ReLU): the client's "
             're-randomiser R = 0',
             P, "r = sess.stream('own', op, 13).ring(shape)", 'r = torch.zeros(shape, dtype=DTYPE)',
             MPC_SECURITY),
    # found by an attacker's review: each leaks, yet keeps results right
    Breakage('prf-run-ignored', 'PRF streams ignore the run: every mask repeats across inferences',
             'block_relu_plugin/mpc/session.py', 'return prf.stream(self.run, op, tag)',
             'return prf.stream(0, op, tag)', MPC_SECURITY),
    Breakage('conv-c1-per-session', "conv/linear C_1 fixed per session: the client solves for B, "
             'then W = F + B', P,
             ("sess.send('client', c - sess.stream('sh', op, 1).ring(out_shape))",
              "sess.put(op, 'c1', sess.stream('sh', op, 1).ring(out_shape))"),
             ("sess.send('client', c - sess.session_stream('sh', slot, 1).ring(out_shape))",
              "sess.put(op, 'c1', sess.session_stream('sh', slot, 1).ring(out_shape))"),
             MPC_SECURITY),
    Breakage('msb-x-from-client-key', "MSB: the helper's X drawn from the client-helper key "
             'alone (X_1 = 0)', P,
             ("odd_reduce(sess.stream('sh', op, 0).ring((n,))))",
              "x_j, xb = odd_reduce(sess.stream('sh', op, 0).ring((n,))), sess.take(op, 'v')"),
             ("torch.zeros(n, dtype=DTYPE))",
              "x_j, xb = torch.zeros(n, dtype=DTYPE), sess.take(op, 'v')"), MPC_SECURITY),
    Breakage('drelu-x-from-client-key', "DReLU: the helper's X drawn from the client-helper key "
             'alone (X_1 = 0): the server opens its share of a to the client', P,
             ("(sess.stream('sh', op, 0).ring((n,)) << lo)",
              "y_j = a + (sess.stream(pair, op, 0).ring((n,)) << lo)"),
             ("(0 << lo)", "y_j = a + (sess.stream(pair, op, 0).ring((n,)) << lo) * (1 - j)"),
             MPC_SECURITY),
    Breakage('drelu-leaves-unmasked', "DReLU: the helper sends the server the one-hot leaves "
             'of X unmasked', P,
             "parts = [plan.one_hot(big_x) ^ sess.stream('ch', op, 1).bits(",
             "parts = [plan.one_hot(big_x) ^ 0 * sess.stream('ch', op, 1).bits(", MPC_SECURITY),
    Breakage('drelu-tree-mask-from-cs', "DReLU: the client masks its tree openings with the "
             'client-server key', P,
             "m = sess.stream(pair, op, 100 + lv).bits(",
             "m = sess.stream('cs' if j == 0 else pair, op, 100 + lv).bits(", MPC_SECURITY),
    Breakage('drelu-gate-mask-from-cs', "DReLU: the client masks its share of d (e = d xor r) "
             'with the client-server key', P,
             "e = _exchange_bits(sess, (d ^ sess.stream(pair, op, 5).bits(",
             "e = _exchange_bits(sess, (d ^ sess.stream('cs' if j == 0 else pair, op, 5).bits(",
             MPC_SECURITY),
    Breakage('drelu-tree-mask-reused-across-levels', 'DReLU: every tree level masks its '
             'openings with the same stream (found by a fresh review: each opening alone '
             'stays uniform)', P,
             ("(sess.stream(k, op, 100 + lv).bits(", "m = sess.stream(pair, op, 100 + lv).bits("),
             ("(sess.stream(k, op, 100).bits(", "m = sess.stream(pair, op, 100).bits("),
             MPC_SECURITY),
    Breakage('select-a-from-client-key', "gated product: A drawn from the client-helper key "
             'alone (A_1 = 0): the server opens its share of v', P,
             "big_a = sess.stream(pair, op, 8).ring((ms,))",
             "big_a = sess.stream(pair, op, 8).ring((ms,)) * (1 - j)", MPC_SECURITY),
    Breakage('shareconvert-r-per-batch', 'ShareConvert: one mask r for every element', P,
             "r = sess.stream('cs', op, 30).ring((n,))",
             "r = sess.stream('cs', op, 30).ring((1,)).expand(n)", MPC_SECURITY),
    Breakage('beaver-r-per-run', "products: one re-randomiser R for every product of a run", P,
             "r = sess.stream('own', op, 13).ring(shape)",
             "r = sess.stream('own', 0, 13).ring(shape)", MPC_SECURITY),
    Breakage('zp-unpack-unchecked', 'a packed Z_67 word >= 67^10 is decoded, not refused',
             'block_relu_plugin/mpc/ring.py', 'if (acc >= np.uint64(P ** k)).any():',
             'if False:', ('tests/test_mpc/test_packing.py',)),
    Breakage('bits-unpack-unchecked', 'a packed bit message with padding bits set is accepted',
             'block_relu_plugin/mpc/bits.py', 'if bits[n * k:].any():', 'if False:',
             ('tests/test_mpc/test_packing.py',)),
    Breakage('drelu-and-constant-dropped', "DReLU tree: the client omits the public term of the "
             'Beaver AND (E F)', P, 'and_gt ^= big_p & big_q', 'and_gt ^= 0',
             ('tests/test_mpc/test_protocols.py',)),
    Breakage('secure-gate-sum-ge-0', 'secure Block-ReLU gates on sum >= 0 (plaintext: > 0)',
             P, 'neg = -sums', 'neg = -sums - 1  # 1 - [-sum - 1 >= 0] = [sum >= 0]',
             ('tests/test_mpc/test_protocols.py',)),
    Breakage('layer-gate-sum-ge-0', 'BlockReLU layer keeps patches whose sum is >= 0',
             'block_relu_plugin/layers/block_relu.py', 'signs = (sums > 0).to(x.dtype)',
             'signs = (sums >= 0).to(x.dtype)', ('tests/test_layers/test_block_relu.py',)),
    Breakage('layer-identity-channels-zeroed', 'BlockReLU layer zeroes identity channels',
             'block_relu_plugin/layers/block_relu.py', 'signs[:, -2] = 1  # identity channels',
             'signs[:, -2] = 0', ('tests/test_layers/test_block_relu.py',)),
    Breakage('knapsack-argmax', 'exact knapsack returns the most distorting final state',
             'block_relu_plugin/budget/knapsack.py', 'state = int(np.argmin(s_dist))',
             'state = int(np.argmax(s_dist))', ('tests/test_budget/test_knapsack.py',)),
    Breakage('knapsack-over-budget', 'exact knapsack admits one DReLU over the budget',
             'block_relu_plugin/budget/knapsack.py', '(n_cost + least <= budget))',
             '(n_cost + least <= budget + 1))', ('tests/test_budget/test_knapsack.py',)),
    Breakage('distortion-abs-error', 'exact distortion sums abs(diff) instead of diff^2',
             'block_relu_plugin/budget/distortion.py',
             'sse = diff.square().sum(dim=(1, 2), dtype=torch.float64)',
             'sse = diff.abs().sum(dim=(1, 2), dtype=torch.float64)',
             ('tests/test_budget/test_distortion.py',)),
    Breakage('transport-no-frame-cap', 'receiver allocates whatever payload a header claims',
             'block_relu_plugin/mpc/transport.py', 'if nbytes > limit:  # checked before',
             'if False:  # checked before', ('tests/test_mpc/test_transport.py',)),
    Breakage('transport-dialer-trusts-any-role', 'the dialing side accepts any role',
             'block_relu_plugin/mpc/transport.py', 'if got != peer:', 'if False:',
             ('tests/test_mpc/test_transport.py',)),
]


def copy_tree(dst: str) -> None:
    """The working tree as git sees it (tracked and untracked, not ignored)."""
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split('\0')
    for f in filter(None, files):
        src = os.path.join(ROOT, f)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dst, f)), exist_ok=True)
            shutil.copy2(src, os.path.join(dst, f))


def apply(tree: str, b: Breakage) -> None:
    """Replace ``old`` by ``new`` (or each of several such pairs) in ``path``."""
    path = os.path.join(tree, b.path)
    with open(path) as f:
        src = f.read()
    edits = zip(b.old, b.new) if isinstance(b.old, tuple) else [(b.old, b.new)]
    for old, new in edits:
        if src.count(old) != 1:
            raise SystemExit(f'{b.name}: the text to break occurs {src.count(old)} times in '
                             f'{b.path} (expected once): update tools/dev/breakages.py')
        src = src.replace(old, new)
    with open(path, 'w') as f:
        f.write(src)


def run_tests(tree: str, tests, k=None) -> Tuple[bool, str]:
    cmd = [sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider', *tests]
    if k:
        cmd += ['-k', k]
    env = dict(os.environ, PYTHONPATH=tree)
    p = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(('FAILED', 'ERROR'))]
    return p.returncode == 0, (lines[0] if lines else p.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--only', nargs='*', help='breakage names to run (default: all)')
    ap.add_argument('--list', action='store_true', help='list the breakages and exit')
    ap.add_argument('-k', help='pytest -k expression passed to every run')
    args = ap.parse_args(argv)
    chosen = [b for b in BREAKAGES if not args.only or b.name in args.only]
    if args.list:
        for b in chosen:
            print(f'{b.name:28s} {b.what}')
        return 0
    rows, missed = [], 0
    for b in chosen:
        with tempfile.TemporaryDirectory(prefix='breakage-') as tree:
            copy_tree(tree)
            apply(tree, b)
            t0 = time.time()
            passed, detail = run_tests(tree, b.tests, args.k)
        missed += passed
        rows.append((b.name, 'MISSED' if passed else 'caught', f'{time.time() - t0:.0f} s',
                     detail[:110]))
        print(f'{rows[-1][0]:28s} {rows[-1][1]:7s} {rows[-1][2]:>6s}  {rows[-1][3]}', flush=True)
    print(f'\n{len(rows) - missed} of {len(rows)} breakages caught')
    return 1 if missed else 0


if __name__ == '__main__':
    sys.exit(main())
