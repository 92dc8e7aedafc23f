"""Side by side: our 3-party secure inference and SecretFlow SPU ABY3 on the same ResNet18-CIFAR.

Runs from our virtual environment (``.venv``); SPU runs in its own
(``benchmarks/peers/.venv-spu``, made by ``setup_peers.sh``) as a subprocess.
Same network (mmpretrain ResNet_CIFAR depth 18, 100 classes, 32x32, all
ReLU, batch-norm folded), same weights (random, seed 0; BN statistics random
too, so the folding is exercised), same random images, same ring Z_2^64,
three parties as separate processes on 127.0.0.1 for both:

* ours: ``secure_inference`` (client, server, helper; mutual TLS), exact
  64-bit DReLU, batch 1 and one batch of ``--ours-batch`` (default 8, as
  SPU's); bytes from the parties' meters
  (online + offline per image, masked weights once per session), rounds
  from the cost model (online hops on the critical path, per run), time on
  the client's clock (offline + online).
* SPU: ``spu_resnet18.py`` (ABY3, FM64, 18 fractional bits, semi-honest),
  the weights our compiler folded and quantised (exported as ``.npz``), its
  link counters per run (all three parties), messages = send actions per
  party per run, time on the client's clock from input sharing to logits.

Both compare their logits with the float model's (plaintext torch).
Not part of the test suite or CI; it takes about 5 minutes on 2 cores when they are free.

    bash benchmarks/peers/setup_peers.sh && .venv/bin/python benchmarks/peers/compare.py
"""
import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CONFIG = os.path.join(ROOT, 'tests', 'data', 'configs', 'resnet18_cifar.py')
SPU_PY = os.path.join(HERE, '.venv-spu', 'bin', 'python')
MB = 1e6


def build_model(seed: int = 0):
    """ResNet18-CIFAR with random weights and random BN statistics (deterministic)."""
    from torch.nn.modules.batchnorm import _BatchNorm

    from block_relu_plugin.utils.config import build_model as build
    torch.manual_seed(seed)
    model = build(CONFIG)
    model.init_weights()
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            c = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
            m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(c, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(c, generator=g))
    return model.eval()


def export_weights(program, images, plain_logits, path):
    """The folded, quantised weights of the compiled program as float64 arrays, for SPU."""
    from block_relu_plugin.mpc.compiler import SecureConv2d, SecureLinear
    from block_relu_plugin.mpc.ring import decode
    frac = program.options['frac_bits']
    arrays = {'images': images.numpy().astype(np.float32),
              'plain_logits': plain_logits.numpy().astype(np.float64)}
    for label, m in program.sites():
        if not isinstance(m, (SecureConv2d, SecureLinear)):
            continue
        w = decode(m.weight, frac).double().numpy()
        b = (decode(m.bias, frac).double().numpy() if m.bias is not None
             else np.zeros(w.shape[0]))
        arrays[f'{label}.weight'], arrays[f'{label}.bias'] = w, b
        if isinstance(m, SecureConv2d):
            if m.dilation != (1, 1) or m.groups != 1:
                raise SystemExit(f'{label}: dilation/groups are not exported')
            arrays[f'{label}.stride'] = np.asarray(m.stride)
            arrays[f'{label}.padding'] = np.asarray(m.padding)
    np.savez(path, **arrays)
    return sum(int(np.prod(a.shape)) for k, a in arrays.items()
               if k.endswith(('.weight', '.bias')))


def run_ours(model, images, n1, nb):
    """Exact 64-bit DReLU: batch 1 (n1 images), then one batch of nb images, one cluster.

    A failed batched run (e.g. a party killed for memory) is recorded as
    ``out['error']`` instead of ending the comparison.
    """
    from block_relu_plugin.mpc import LocalCluster
    from block_relu_plugin.mpc.infer import secure_inference
    out = {}
    with LocalCluster(timeout=1800, light=True) as cluster:
        # warm-up: the parties import mmpretrain while unpickling the first program
        secure_inference(model, images=images[:1, :, :8, :8], bits=64, cluster=cluster)
        for key, n, bs in (('batch1', n1, 1), ('batched', nb, nb)):
            try:
                res = secure_inference(model, images=images[:n], bits=64, batch_size=bs,
                                       cluster=cluster, timeout=3600)
            except Exception as e:  # noqa: BLE001 - reported in the table
                if key == 'batch1':
                    raise
                out['error'] = f'batch {nb}: {type(e).__name__}: {str(e)[:300]}'
                print(f'ours {out["error"]}', flush=True)
                break
            if not res['predicted_equal']:
                raise SystemExit('our meters differ from the cost model')
            out[key] = res
    return out


def layer_kinds(program):
    from block_relu_plugin.mpc.compiler import SecureConv2d, SecureLinear, SecureReLU
    kinds = {}
    for label, m in program.sites():
        if isinstance(m, (SecureConv2d, SecureLinear)):
            kinds[label] = 'linear'
        elif isinstance(m, SecureReLU):
            kinds[label] = 'relu'
    return kinds


def ours_breakdown(res, kinds, n):
    """Online + offline bytes per image of the ReLUs and of the convolutions / fc."""
    parts = {'relu': 0, 'linear': 0, 'other': 0}
    for label, c in res['layers'].items():
        parts[kinds.get(label, 'other')] += c['online'] + c['offline']
    return {k: v / n for k, v in parts.items()}


def run_spu(npz, n1, n8, work):
    if not os.path.exists(SPU_PY):
        raise SystemExit(f'{SPU_PY} is missing: run bash benchmarks/peers/setup_peers.sh first')
    out = os.path.join(work, 'spu.json')
    cmd = [SPU_PY, os.path.join(HERE, 'spu_resnet18.py'), '--weights', npz, '--out', out,
           '--batch1-images', str(n1), '--batch8', str(n8)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f'SPU run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n'
                         f'{proc.stderr[-3000:]}')
    with open(out) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--batch1-images', type=int, default=2, help='images run at batch 1')
    ap.add_argument('--batch8', type=int, default=8, help='images in the batched run')
    ap.add_argument('--ours-batch', type=int, default=8,
                    help='our batched run\'s size (default 8; ours holds the offline material '
                         'of the whole batch at client and server: batch 8 ran on a 24 GB '
                         'machine, the PrivateCompare version did not)')
    ap.add_argument('--json', default=os.path.join(HERE, 'last_run.json'),
                    help='every figure of both runtimes (default: %(default)s)')
    ap.add_argument('--report', metavar='JSON', help='print the table of a saved run and exit')
    ap.add_argument('--skip-ours', action='store_true', help='SPU only (export still runs)')
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            return report(json.load(f))
    if args.batch1_images < 1 or args.batch8 < 2 or args.ours_batch < 1:
        ap.error('--batch1-images and --ours-batch must be >= 1, --batch8 >= 2')
    torch.set_num_threads(1)
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # init_weights' per-tensor lines
    from block_relu_plugin.conversion import find_relu_sites
    from block_relu_plugin.mpc.compiler import compile_model
    from block_relu_plugin.mpc.infer import plaintext_logits

    n1, n8 = args.batch1_images, args.batch8
    nb = args.ours_batch
    model = build_model()
    images = torch.randn(max(n1, n8, nb), 3, 32, 32, generator=torch.Generator().manual_seed(0))
    plain = plaintext_logits(model, images)
    program = compile_model(model, bits=64)
    relus = sum(s.relus for s in find_relu_sites(model, 32))
    work = tempfile.mkdtemp(prefix='peers_')
    try:
        npz = os.path.join(work, 'resnet18_cifar.npz')
        nparams = export_weights(program, images, plain, npz)
        print(f'ResNet18-CIFAR: {nparams:,} weights, {relus:,} ReLUs per image; '
              f'batch 1 x {n1} images, one batch of {n8} (ours: {nb})', flush=True)
        ours = None
        if not args.skip_ours:
            t = time.perf_counter()
            ours = run_ours(model, images, n1, nb)
            print(f'ours done in {time.perf_counter() - t:.0f} s', flush=True)
        t = time.perf_counter()
        spu = run_spu(npz, n1, n8, work)
        print(f'SPU done in {time.perf_counter() - t:.0f} s', flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    if ours:
        o1, ob = ours['batch1'], ours.get('batched')
        b = o1['bytes']['per_image']
        br = ours_breakdown(o1, layer_kinds(program), n1)
        runs = [(o1, n1)] + ([(ob, nb)] if ob else [])
        rows.append(dict(
            runtime='ours', protocol='3-party, exact 64-bit DReLU',
            total=b['online_offline'], online=b['online'], offline=b['offline'],
            session=o1['bytes']['weights'], rounds=f'{o1["rounds"]} rounds (online)',
            t1=o1['time']['total_per_image'], batch=nb,
            tb=ob['time']['total_per_image'] if ob else None,
            err=max(r['max_logit_error'] for r, _ in runs),
            agree=sum(r['agreement'] * n for r, n in runs) / sum(n for _, n in runs),
            relu=br['relu'], linear=br['linear'],
            t1_online=o1['time']['online_per_image'],
            tb_online=ob['time']['online_per_image'] if ob else None,
            total_b=ob['bytes']['per_image']['online_offline'] if ob else None,
            error=ours.get('error')))
    s1, sb = spu['batch1'], spu[spu['batch8_key']]
    ops = s1['ops_bytes_per_image']
    rows.append(dict(
        runtime=f'SPU {spu["spu_version"]}', protocol='ABY3, 3 parties, semi-honest',
        total=s1['bytes_per_image'], online=s1['bytes_per_image'], offline=0.0,
        session=spu['weight_share_bytes'],
        rounds=f'~{max(s1["send_actions_per_party_per_run"]):.0f} msgs/party',
        t1=s1['seconds_per_image'], batch=n8, tb=sb['seconds_per_image'],
        err=spu['max_logit_error'], agree=spu['argmax_agreement'],
        relu=sum(v for k, v in ops.items() if k in SPU_RELU_OPS),
        linear=sum(v for k, v in ops.items() if k in ('pphlo.convolution', 'pphlo.dot')),
        total_b=sb['bytes_per_image'], error=None))
    keep = ('num_images', 'batch_size', 'options', 'agreement', 'max_logit_error', 'bytes',
            'layers', 'rounds', 'time')
    results = {'relus_per_image': relus, 'weights': nparams, 'batch1_images': n1,
               'rows': rows, 'spu': spu,
               'ours': ({k: ({f: v[f] for f in keep} if isinstance(v, dict) else v)
                         for k, v in ours.items()} if ours else None)}
    with open(args.json, 'w') as f:  # before printing, so that --report can redo the table
        json.dump(results, f, indent=1, default=float)
    report(results)


SPU_RELU_OPS = ('pphlo.less', 'pphlo.multiply', 'pphlo.maximum', 'pphlo.select')


def _f(v, fmt):
    return 'failed' if v is None else format(v, fmt)


def report(results):
    """The table and the per-kind breakdown from the saved figures."""
    rows, relus = results['rows'], results['relus_per_image']
    print(f'\nResNet18-CIFAR, 100 classes, 32x32, all ReLU, BN folded, ring Z_2^64; '
          f'{results["weights"]:,} weights, {relus:,} ReLUs per image; batch 1 x '
          f'{results["batch1_images"]} images, then one batch; three processes on 127.0.0.1\n')
    print('| runtime | protocol | MB / image (total) | online | offline | MB once per session '
          '| rounds / messages per run | s / image b1 | s / image batched | images/s b1 '
          '| images/s batched | max abs logit err | argmax agreement |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        tb = r['tb']
        print(f'| {r["runtime"]} | {r["protocol"]} | {r["total"] / MB:.1f} | {r["online"] / MB:.1f} '
              f'| {r["offline"] / MB:.1f} | {r["session"] / MB:.1f} | {r["rounds"]} '
              f'| {r["t1"]:.2f} | {_f(tb, ".2f")} (b{r["batch"]}) | {1 / r["t1"]:.3f} '
              f'| {_f(tb and 1 / tb, ".3f")} (b{r["batch"]}) | {r["err"]:.2e} '
              f'| {100 * r["agree"]:.0f} % |')
    print()
    for r in rows:
        line = (f'{r["runtime"]}: ReLUs {r["relu"] / MB:.1f} MB ({r["relu"] / relus:.1f} B each), '
                f'convolutions + fc {r["linear"] / MB:.1f} MB per image; batch {r["batch"]}: '
                f'{_f(r["total_b"] and r["total_b"] / MB, ".1f")} MB per image')
        if 't1_online' in r:
            line += (f'; online time {r["t1_online"]:.2f} s per image (b1), '
                     f'{_f(r["tb_online"], ".2f")} (b{r["batch"]})')
        if r.get('error'):
            line += f'\n  {r["error"]}'
        print(line)
    spu = results['spu']
    print(f'SPU: batch-1 seconds per image {", ".join(f"{t:.2f}" for t in spu["batch1"]["seconds"])}; '
          f'weight sharing {spu["weight_share_seconds"]:.1f} s; the jax network on the exported '
          f'weights is the float model to {spu["jax_plaintext_error"]:.1e} (weights rounded to '
          f'our 2^-12 grid, which both runtimes use)')
    if len(rows) == 2:
        o, s = rows
        line = (f'\nours / SPU: bytes per image {o["total"] / s["total"]:.2f}x (target <= 0.80), '
                f'time per image b1 {o["t1"] / s["t1"]:.2f}x (target <= 0.50)')
        if o['tb'] is not None and o['batch'] == s['batch']:
            line += f', b{o["batch"]} {o["tb"] / s["tb"]:.2f}x'
        line += f'; once per session {o["session"] / s["session"]:.2f}x'
        if s['total'] != o['total']:
            cross = (o['session'] - s['session']) / (s['total'] - o['total'])
            if cross > 0:
                line += f'; session totals (once + per image) cross at {cross:.1f} images'
        print(line)
    print('Bytes: payload of every link, all three parties. Ours: the meters (equal to the cost '
          'model), online + offline. SPU: its link counters per run plus the input / output '
          'shares it moves; SPU ABY3 has no offline phase. Time: the client\'s clock.')


if __name__ == '__main__':
    sys.exit(main())
