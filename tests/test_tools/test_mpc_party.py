"""tools/mpc_party.py end to end: one OS process per party, as on three machines.

Certificates from tools/mpc_certs.py, a parties JSON with loopback ports, a
Block-ReLU ResNet18-CIFAR checkpoint (8 base channels, per-channel spec, 16x16
PNG inputs). The client's predictions are checked against the plaintext model,
every party's sent bytes against the cost model, and a dead or missing party
must make the others fail fast with a one-line error.
"""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from block_relu_plugin.conversion import find_relu_sites
from block_relu_plugin.mpc.compiler import compile_model
from block_relu_plugin.mpc.costmodel import session_costs
from block_relu_plugin.mpc.infer import load_test_inputs, plaintext_logits
from block_relu_plugin.spec import BlockReLUSpec
from block_relu_plugin.utils.config import build_model, load_config

from networks import randomise_bn

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 16
#: per-channel codes cycled through the sites: ReLU, identity, zero. No multi-pixel
#: patches: a patch sum within the fixed-point error of 0 flips its whole gate (see
#: test_mpc/test_networks.py), which random weights make common enough to flip a
#: prediction now and then; these codes keep the secure logits within ~0.03 of the float ones.
CODES = [(1, 1), (0, 1), (1, 0)]

# The client passes --images: only the test pipeline of the dataset is used.
CONFIG = """
_base_ = ['mmpretrain::_base_/models/resnet18_cifar.py']
default_scope = 'mmpretrain'
custom_imports = dict(imports=['block_relu_plugin'], allow_failed_imports=False)
model = dict(type={type!r},{extra}
             backbone=dict(stem_channels=8, base_channels=8),
             head=dict(num_classes=10, in_channels=64),
             data_preprocessor=dict(mean=[128.0] * 3, std=[64.0] * 3, to_rgb=False))
test_dataloader = dict(batch_size=1, num_workers=0, dataset=dict(
    type='CustomDataset', data_root='', pipeline=[dict(type='LoadImageFromFile'),
                                                  dict(type='PackInputs')]))
"""


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    """Certificates, config + spec, checkpoint and 20 PNG images."""
    root = tmp_path_factory.mktemp('mpc_party')
    certs = str(root / 'certs')
    subprocess.run([sys.executable, 'tools/mpc_certs.py', certs, '--server', '127.0.0.1',
                    '--helper', '127.0.0.1'], cwd=REPO, check=True, capture_output=True,
                   timeout=120)
    config = root / 'config.py'
    config.write_text(CONFIG.format(type='ImageClassifier', extra=''))
    sites = find_relu_sites(build_model(str(config)), SIZE)
    spec = str(root / 'spec.json')
    BlockReLUSpec({s.name: np.asarray([CODES[(c + i) % len(CODES)] for c in range(s.channels)])
                   for i, s in enumerate(sites)}).save(spec)
    config.write_text(CONFIG.format(type='BlockReLUImageClassifier',
                                    extra=f' block_relu_cfg=dict(spec={spec!r}),'))
    rng = np.random.default_rng(0)
    images = []
    for i in range(20):
        images.append(str(root / f'{i}.png'))
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(images[-1])
    torch.manual_seed(0)
    model = build_model(str(config))
    model.init_weights()
    randomise_bn(model)
    # A random head blind to the pooled features' common mean, so that the images get
    # different classes (upstream's head init gives ~0.01 logits, all of one class).
    x, _ = load_test_inputs(str(config), model, len(images), images)
    with torch.no_grad():
        mu = model.extract_feat(x)[-1].mean(0)
        w = torch.randn(model.head.fc.weight.shape, generator=torch.Generator().manual_seed(0))
        model.head.fc.weight.copy_(2 * (w - torch.outer(w @ mu, mu) / mu.dot(mu)))
    ckpt = str(root / 'model.pth')
    torch.save({'state_dict': model.state_dict()}, ckpt)
    return dict(root=root, certs=certs, config=str(config), ckpt=ckpt, images=images)


def write_parties(work, name, **timeouts):
    """A parties JSON with two currently free loopback ports."""
    socks = [socket.socket() for _ in range(2)]
    for s in socks:
        s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    path = work['root'] / f'{name}.json'
    path.write_text(json.dumps(dict(cert_dir=work['certs'], client=dict(host='127.0.0.1'),
                                    server=dict(host='127.0.0.1', port=ports[0]),
                                    helper=dict(host='127.0.0.1', port=ports[1]),
                                    frac_bits=12, **timeouts)))
    return str(path)


def start(work, parties, role, n, batch_size=1):
    """Start one party process; its stdout/stderr go to files next to the JSON."""
    cmd = [sys.executable, 'tools/mpc_party.py', '--role', role, '--config', parties,
           work['config'], '--num-images', str(n), '--batch-size', str(batch_size),
           '--threads', '1', '--json-out', f'{parties}.{role}.out.json']
    if role == 'server':
        cmd.insert(cmd.index('--num-images'), work['ckpt'])
    if role == 'client':
        cmd += ['--images'] + work['images'][:n]
    else:
        cmd += ['--shape', str(SIZE), str(SIZE)]
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    with open(f'{parties}.{role}.log', 'w') as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    proc.log_path = out.name
    return proc


def log(proc):
    with open(proc.log_path) as f:
        return f.read()


def stop(procs):
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_three_parties_predictions_and_bytes(work):
    n, bs = 5, 2  # batches of 2, 2, 1
    parties = write_parties(work, 'ok', timeout=60, connect_timeout=60)
    procs = {r: start(work, parties, r, n, bs) for r in ('server', 'helper', 'client')}
    try:
        for r, p in procs.items():
            assert p.wait(120) == 0, f'{r}:\n{log(p)[-3000:]}'
        reports = {r: json.load(open(f'{parties}.{r}.out.json')) for r in procs}
    finally:
        stop(procs)

    # the plaintext float model on the same images
    cfg = load_config(work['config'])
    model = build_model(cfg, checkpoint=work['ckpt']).eval()
    images, _ = load_test_inputs(cfg, model, n, work['images'])
    assert images.shape == (n, 3, SIZE, SIZE)
    plain = plaintext_logits(model, images)
    secure = torch.tensor(reports['client']['logits'], dtype=torch.float64)
    assert secure.shape == plain.shape
    err = float((secure - plain).abs().max())
    assert err < 0.25, err  # fixed-point error (logits of scale ~5)
    # same predictions wherever the float model has no near-tie that this error could flip
    top2 = plain.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * err
    assert int(clear.sum()) >= 3, (top2, err)
    got, want = torch.tensor(reports['client']['predictions']), plain.argmax(1)
    assert torch.equal(got[clear], want[clear]), (got, want)
    assert len(set(want[clear].tolist())) > 1  # not one class for every image

    # bytes: each party's sent bytes == the cost model's, handshake and session included
    shapes = [(min(bs, n - i), 3, SIZE, SIZE) for i in range(0, n, bs)]
    predicted = session_costs(compile_model(model, with_weights=False), shapes)
    parts = predicted.to_dict()['total']['parts']
    for role, rep in reports.items():
        assert rep['role'] == role
        assert rep['sent'] == {k: v for k, v in parts.items()
                               if k.split(':')[1].startswith(f'{role}->')}, role
        assert len(rep['time_per_batch']) == len(shapes)
    assert reports['server']['sent']['session:server->client'] > 0  # masked weights, once


@pytest.mark.parametrize('case', ['killed', 'missing'])
def test_dead_party_fails_the_others(work, case):
    """The helper is killed once connected, or never started: the others exit 1, quickly."""
    if case == 'killed':  # long receive timeout: the death itself must be noticed
        parties = write_parties(work, case, timeout=60, connect_timeout=60)
        roles = ('server', 'helper', 'client')
    else:
        # the start-up window must cover the skew of the two processes' imports
        parties = write_parties(work, case, timeout=10, connect_timeout=10)
        roles = ('server', 'client')
    n = 20
    procs = {r: start(work, parties, r, n) for r in roles}
    try:
        if case == 'killed':
            deadline = time.monotonic() + 90
            while 'helper: connected' not in log(procs['helper']):
                assert procs['helper'].poll() is None, log(procs['helper'])[-3000:]
                assert time.monotonic() < deadline, 'the helper did not connect'
                time.sleep(0.05)
            procs['helper'].kill()
            t0 = time.monotonic()
        for r in ('server', 'client'):
            rc = procs[r].wait(30 if case == 'killed' else 90)
            text = log(procs[r])
            assert rc == 1, f'{r}: exit code {rc}\n{text[-3000:]}'
            last = text.strip().splitlines()[-1]
            assert last.startswith(f'error: {r}: '), text[-3000:]
            assert 'Traceback' not in text, text[-3000:]
            if case == 'killed':
                assert 'closed the connection' in last, last
            else:
                assert 'helper' in last and ('did not connect' in last
                                             or 'cannot reach' in last), last
            assert not os.path.exists(f'{parties}.{r}.out.json')
        if case == 'killed':
            assert time.monotonic() - t0 < 20  # not the 60 s receive timeout
    finally:
        stop(procs)
