"""ResNet18-CIFAR (all ReLU, BN folded) under SecretFlow SPU ABY3, three processes on loopback.

Runs inside the SPU virtual environment (``setup_peers.sh``), not ours. Input:
an ``.npz`` written by ``compare.py`` with the folded weights of every conv /
linear layer (``<label>.weight``, ``<label>.bias``, ``<label>.stride``,
``<label>.padding``; mmpretrain labels such as ``backbone.layer2.0.conv1``),
the test ``images`` (N, 3, 32, 32) and the plaintext ``plain_logits`` of our
float model. Output: one JSON file (``--out``) with bytes, messages, times and
logits agreement.

Parties (ranks of one SPU ABY3 device, FM64 ring, semi-honest), each a
separate process linked by SPU's brpc socket link on 127.0.0.1:

* rank 0 owns the weights: it secret-shares them once per session and sends
  each other party its share over the link (the weight-share bytes);
* rank 1 is the client: it shares each input batch, and every party sends
  it its output share, from which it reconstructs the logits;
* rank 2 only computes.

Bytes: inside an SPU ``Run`` every party's link counters (SPU's own
``enable_pphlo_profile`` report, "Link details: total send bytes ...") are
summed over the three parties; the input shares and output shares that the
script moves itself over the same link are counted as their payload bytes
and added (our runtime counts its input sharing and output reveal too).
Messages: the link's send actions per party. Wall time: the client's clock
from the input sharing to the reconstructed logits.

    python spu_resnet18.py --weights w.npz --out spu.json [--batch1-images 2] [--batch8 8]
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

WORLD = 3
OWNER, CLIENT = 0, 1
FRAC_BITS = 18  # SPU's default for FM64, set explicitly so every party agrees


# ----------------------------------------------------------------- the network
def layer_names(npz_keys):
    """Conv / linear labels of ResNet18-CIFAR in forward order, checked against the file."""
    labels = {k.rsplit('.', 1)[0] for k in npz_keys if k.endswith('.weight')}
    order = ['backbone.conv1']
    for stage in range(1, 5):
        for block in range(2):
            p = f'backbone.layer{stage}.{block}'
            order += [f'{p}.conv1', f'{p}.conv2']
            if f'{p}.downsample.0' in labels:
                order.append(f'{p}.downsample.0')
    order.append('head.fc')
    missing = [n for n in order if n not in labels]
    extra = sorted(labels - set(order))
    if missing or extra:
        raise SystemExit(f'weights file is not ResNet18-CIFAR: missing {missing}, unexpected '
                         f'{extra}')
    return order


def load_params(npz, order):
    """Flat list [w0, b0, w1, b1, ...] (float32) and per-conv (stride, padding)."""
    flat, geometry = [], {}
    for name in order:
        flat += [npz[f'{name}.weight'].astype(np.float32), npz[f'{name}.bias'].astype(np.float32)]
        if name != 'head.fc':
            geometry[name] = (tuple(int(v) for v in npz[f'{name}.stride']),
                              tuple(int(v) for v in npz[f'{name}.padding']))
    return flat, geometry


def make_forward(order, geometry):
    """``forward(params, x) -> logits`` in jax.numpy (NCHW, OIHW like torch)."""
    import jax
    import jax.numpy as jnp
    index = {name: 2 * i for i, name in enumerate(order)}

    def conv(params, name, x):
        (s, p), i = geometry[name], index[name]
        y = jax.lax.conv_general_dilated(x, params[i], window_strides=s,
                                         padding=[(p[0], p[0]), (p[1], p[1])],
                                         dimension_numbers=('NCHW', 'OIHW', 'NCHW'))
        return y + params[i + 1].reshape(1, -1, 1, 1)

    def relu(x):
        return jnp.maximum(x, 0)

    def forward(params, x):
        x = relu(conv(params, 'backbone.conv1', x))
        for stage in range(1, 5):
            for block in range(2):
                p = f'backbone.layer{stage}.{block}'
                out = relu(conv(params, f'{p}.conv1', x))
                out = conv(params, f'{p}.conv2', out)
                identity = conv(params, f'{p}.downsample.0', x) if f'{p}.downsample.0' in index \
                    else x
                x = relu(out + identity)
        x = jnp.mean(x, axis=(2, 3))
        i = index['head.fc']
        return x @ params[i].T + params[i + 1]

    return forward


# ----------------------------------------------------------------- launcher side
def compile_executables(forward, params, batches):
    """One SPU executable per batch size; inputs p0..pK (weights) then x."""
    import spu.libspu as L
    import spu.utils.frontend as fe
    names = [f'p{i}' for i in range(len(params))] + ['x']
    out = {}
    for n in batches:
        x = np.zeros((n, 3, 32, 32), np.float32)
        exe, _ = fe.compile(fe.Kind.JAX, forward, (params, x), {}, names,
                            [L.Visibility.VIS_SECRET] * len(names),
                            lambda outs: [f'logits{i}' for i in range(len(outs))])
        out[n] = exe
    return out


def free_ports(k):
    socks = [socket.socket() for _ in range(k)]
    for s in socks:
        s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


_RUN = re.compile(r'\[Profiling\] SPU execution')
_OP = re.compile(r'- (pphlo\.\w+), executed (\d+) times, duration ([\d.e+-]+)s, send bytes (\d+) '
                 r'recv bytes (\d+), send actions (\d+), recv actions (\d+)')
_LINK = re.compile(r'Link details: total send bytes (\d+), recv bytes (\d+), send actions (\d+), '
                   r'recv actions (\d+)')


def parse_log(text):
    """Per Run, in order: {'send_bytes', 'send_actions', 'ops': {pphlo op: send bytes}}."""
    runs, cur, section = [], None, None
    for line in text.splitlines():
        if _RUN.search(line):
            cur, section = {'ops': {}}, None
        elif cur is not None and 'profiling: total time' in line:
            section = 'hlo' if 'HLO profiling' in line else None  # not HAL / MPC
        elif cur is not None and section == 'hlo' and (m := _OP.search(line)):
            cur['ops'][m.group(1)] = cur['ops'].get(m.group(1), 0) + int(m.group(4))
        elif cur is not None and (m := _LINK.search(line)):
            cur['send_bytes'], cur['send_actions'] = int(m.group(1)), int(m.group(3))
            runs.append(cur)
            cur = None
    return runs


def launch(args):
    import jax
    npz = np.load(args.weights)
    order = layer_names(npz.files)
    params, geometry = load_params(npz, order)
    images = npz['images'].astype(np.float32)
    plain = npz['plain_logits'].astype(np.float64)
    n1 = min(args.batch1_images, images.shape[0])
    if args.batch8 > images.shape[0]:
        raise SystemExit(f'--batch8 {args.batch8} needs that many images, the file has '
                         f'{images.shape[0]}')
    forward = make_forward(order, geometry)
    # export check: the jax network on the exported weights is our float model up to
    # the weights' fixed-point rounding (a wrong layer, stride or padding is O(logits))
    jax_logits = np.asarray(jax.jit(forward)(params, images), np.float64)
    jax_err = float(np.abs(jax_logits - plain).max())
    if jax_err > 0.05 * max(1.0, float(np.abs(plain).max())):
        raise SystemExit(f'the jax network on the exported weights differs from our float model '
                         f'by {jax_err:g} (max |logit| {np.abs(plain).max():g}): export bug')

    t = time.perf_counter()
    exes = compile_executables(forward, params, sorted({1, args.batch8}))
    compile_s = time.perf_counter() - t
    work = tempfile.mkdtemp(prefix='spu_r18_')
    for n, exe in exes.items():
        with open(os.path.join(work, f'exe{n}.bin'), 'wb') as f:
            f.write(exe.SerializeToString())
    ports = free_ports(WORLD)
    base = [sys.executable, os.path.abspath(__file__), '--weights', os.path.abspath(args.weights),
            '--batch1-images', str(n1), '--batch8', str(args.batch8), '--workdir', work,
            '--ports', ','.join(map(str, ports))]
    procs, logs = [], []
    for rank in range(WORLD):
        log = open(os.path.join(work, f'party{rank}.log'), 'w')
        logs.append(log)
        procs.append(subprocess.Popen(base + ['--party', str(rank)], stdout=log,
                                      stderr=subprocess.STDOUT))
    deadline = time.time() + args.timeout
    try:
        while any(p.poll() is None for p in procs):
            bad = [r for r, p in enumerate(procs) if p.poll() not in (None, 0)]
            if bad or time.time() > deadline:
                raise RuntimeError(f'party {bad[0]} failed' if bad else 'timeout')
            time.sleep(0.5)
        bad = [r for r, p in enumerate(procs) if p.returncode != 0]
        if bad:
            raise RuntimeError(f'party {bad[0]} failed')
    except BaseException as e:
        for p in procs:
            if p.poll() is None:
                p.kill()
        tails = []
        for rank in range(WORLD):
            logs[rank].close()
            with open(os.path.join(work, f'party{rank}.log')) as f:
                tails.append(f'--- party {rank}\n' + ''.join(f.readlines()[-15:]))
        raise SystemExit(f'SPU run: {e} (logs in {work})\n' + '\n'.join(tails))
    for log in logs:
        log.close()

    parties = []
    for rank in range(WORLD):
        with open(os.path.join(work, f'party{rank}.json')) as f:
            res = json.load(f)
        with open(os.path.join(work, f'party{rank}.log')) as f:
            res['runs'] = parse_log(f.read())
        if len(res['runs']) != len(res['run_tags']):
            raise SystemExit(f'party {rank}: {len(res["runs"])} profiled runs in its log, '
                             f'expected {len(res["run_tags"])}')
        parties.append(res)
    client = parties[CLIENT]
    logits = np.asarray(client['logits'], np.float64)

    def per_tag(tag):
        """Summed over parties and over the runs with this tag."""
        runs = [(r, run) for r, p in enumerate(parties)
                for run, t in zip(p['runs'], p['run_tags']) if t == tag]
        ops = {}
        for _, run in runs:
            for k, v in run['ops'].items():
                ops[k] = ops.get(k, 0) + v
        actions = [sum(run['send_actions'] for r2, run in runs if r2 == r) for r in range(WORLD)]
        return sum(run['send_bytes'] for _, run in runs), ops, actions

    def summary(tag, images_):
        run_bytes, ops, actions = per_tag(tag)
        io_bytes = sum(p['io_bytes'][tag] for p in parties)
        times = client['times'][tag]
        return {'images': images_, 'run_bytes': run_bytes, 'io_bytes': io_bytes,
                'bytes_per_image': (run_bytes + io_bytes) / images_,
                'ops_bytes_per_image': {k: v / images_ for k, v in sorted(ops.items())},
                'send_actions_per_party_per_run': [a / len(times) for a in actions],
                'seconds': times, 'seconds_per_image': sum(times) / images_}

    b1 = summary('b1', n1)
    b8 = summary(f'b{args.batch8}', args.batch8)
    ref = np.concatenate([plain[:n1], plain[:args.batch8]])
    result = {
        'runtime': 'SPU', 'spu_version': client['spu_version'], 'protocol': 'ABY3',
        'field': 'FM64', 'fxp_fraction_bits': FRAC_BITS, 'parties': WORLD,
        'link': 'brpc on 127.0.0.1', 'compile_seconds': compile_s,
        'weight_share_bytes': sum(p['io_bytes']['weights'] for p in parties),
        'weight_share_seconds': client['weight_seconds'],
        'batch1': b1, f'batch{args.batch8}': b8, 'batch8_key': f'batch{args.batch8}',
        'max_logit_error': float(np.abs(logits - ref).max()),
        'argmax_agreement': float((logits.argmax(1) == ref.argmax(1)).mean()),
        'jax_plaintext_error': jax_err,
    }
    shutil.rmtree(work, ignore_errors=True)  # kept on failure, for the party logs
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=1))


# ----------------------------------------------------------------- party side
class Channel:
    """Share objects over the SPU link, counting the payload bytes this party sends."""

    def __init__(self, lctx):
        self.lctx = lctx
        self.sent = 0

    def send_share(self, dst, share):
        chunks = list(share.share_chunks)
        msgs = [share.meta, str(len(chunks)).encode()] + chunks
        for m in msgs:
            self.lctx.send(dst, m)
            self.sent += len(m)

    def recv_share(self, src):
        import spu.libspu as L
        s = L.Share()
        s.meta = self.lctx.recv(src)
        n = int(self.lctx.recv(src))
        s.share_chunks = [self.lctx.recv(src) for _ in range(n)]
        return s


def party(args):
    import spu
    import spu.libspu as L
    rank = args.party
    ports = [int(p) for p in args.ports.split(',')]
    desc = L.link.Desc()
    for r, port in enumerate(ports):
        desc.add_party(f'p{r}', f'127.0.0.1:{port}')
    desc.connect_retry_times = 300
    desc.connect_retry_interval_ms = 1000
    desc.recv_timeout_ms = 3600 * 1000
    lctx = L.link.create_brpc(desc, rank)
    cfg = L.RuntimeConfig(protocol=L.ProtocolKind.ABY3, field=L.FieldType.FM64,
                          fxp_fraction_bits=FRAC_BITS)
    cfg.enable_pphlo_profile = True  # prints the link's byte / action counters per Run
    rt = spu.Runtime(lctx, cfg)
    io = spu.Io(WORLD, cfg)
    ch = Channel(lctx)
    exes = {}
    for n in sorted({1, args.batch8}):
        exe = L.Executable()
        with open(os.path.join(args.workdir, f'exe{n}.bin'), 'rb') as f:
            exe.ParseFromString(f.read())
        exes[n] = exe
    io_bytes, run_tags, times, logits = {}, [], {}, []

    # ---- once per session: the owner shares the weights
    lctx.barrier()
    t0, mark = time.perf_counter(), ch.sent
    names = [n for n in exes[1].input_names if n != 'x']
    if rank == OWNER:
        npz = np.load(args.weights)
        params, _ = load_params(npz, layer_names(npz.files))
        for name, w in zip(names, params):
            shares = io.make_shares(w, L.Visibility.VIS_SECRET)
            for dst in range(WORLD):
                if dst != rank:
                    ch.send_share(dst, shares[dst])
            rt.set_var(name, shares[rank])
    else:
        for name in names:
            rt.set_var(name, ch.recv_share(OWNER))
    lctx.barrier()
    weight_seconds = time.perf_counter() - t0
    io_bytes['weights'] = ch.sent - mark

    # ---- per batch: the client shares x, all run, the client reconstructs
    images = np.load(args.weights)['images'].astype(np.float32) if rank == CLIENT else None
    plan = [('b1', 1, i) for i in range(args.batch1_images)] + [(f'b{args.batch8}',
                                                                   args.batch8, 0)]
    for tag, n, start in plan:
        lctx.barrier()
        t0, mark = time.perf_counter(), ch.sent
        exe = exes[n]
        if rank == CLIENT:
            shares = io.make_shares(images[start:start + n], L.Visibility.VIS_SECRET)
            for dst in range(WORLD):
                if dst != rank:
                    ch.send_share(dst, shares[dst])
            rt.set_var('x', shares[rank])
        else:
            rt.set_var('x', ch.recv_share(CLIENT))
        rt.run(exe)
        run_tags.append(tag)
        out = rt.get_var(exe.output_names[0])
        if rank == CLIENT:
            parts = [out if r == rank else ch.recv_share(r) for r in range(WORLD)]
            logits.append(np.asarray(io.reconstruct(parts), np.float64).reshape(n, -1))
        else:
            ch.send_share(CLIENT, out)
        times.setdefault(tag, []).append(time.perf_counter() - t0)
        io_bytes[tag] = io_bytes.get(tag, 0) + ch.sent - mark
        rt.del_var('x')
        rt.del_var(exe.output_names[0])
    lctx.barrier()
    sys.stdout.flush()
    res = {'rank': rank, 'io_bytes': io_bytes, 'run_tags': run_tags, 'times': times,
           'weight_seconds': weight_seconds, 'spu_version': spu.__version__,
           'logits': np.concatenate(logits).tolist() if logits else None}
    with open(os.path.join(args.workdir, f'party{rank}.json'), 'w') as f:
        json.dump(res, f)
    lctx.stop_link()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--weights', required=True, help='.npz written by compare.py')
    ap.add_argument('--out', help='result JSON (launcher)')
    ap.add_argument('--batch1-images', type=int, default=2, help='images run one at a time')
    ap.add_argument('--batch8', type=int, default=8, help='images in the one batched run')
    ap.add_argument('--timeout', type=float, default=3600, help='seconds for the whole run')
    ap.add_argument('--party', type=int, help=argparse.SUPPRESS)
    ap.add_argument('--workdir', help=argparse.SUPPRESS)
    ap.add_argument('--ports', help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.batch1_images < 1 or args.batch8 < 2:
        ap.error('--batch1-images must be >= 1 and --batch8 >= 2 (batch 1 is run separately)')
    if args.party is not None:
        party(args)
    else:
        if not args.out:
            ap.error('--out is required')
        launch(args)


if __name__ == '__main__':
    main()
