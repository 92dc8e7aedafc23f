"""Bad options of the secure-inference tools are refused before any work starts.

Before these checks ``tools/secure_infer.py --bits 0`` started the three party
processes (three times) before failing. Now every option is checked by the
parser: the error is argparse's ``prog: error: argument --x: ...`` (status 2),
and the tool neither loads the config nor starts a party.
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

import block_relu_plugin.utils.config as config_module

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, 'tests', 'data', 'configs', 'resnet18_cifar.py')


def load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f'tool_{name}', os.path.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def files(tmp_path, monkeypatch):
    """Existing files to pass, and a tripwire: loading the config means work started."""
    def started(*args, **kwargs):
        raise AssertionError('the tool started working before refusing its options')
    monkeypatch.setattr(config_module, 'load_config', started)
    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'')
    image = tmp_path / 'a.png'
    image.write_bytes(b'')
    certs = tmp_path / 'certs'
    certs.mkdir()
    parties = tmp_path / 'parties.json'
    parties.write_text(json.dumps({'cert_dir': str(certs)}))
    return dict(ckpt=str(ckpt), image=str(image), parties=str(parties), tmp=tmp_path)


def refused(tool, argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        load_tool(tool).main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    return err.strip().splitlines()[-1]


SECURE_INFER = [  # (options after CONFIG CHECKPOINT, what the one line must say)
    (['--bits', '0'], 'argument --bits: must be in 2..64, got 0'),
    (['--bits', '1'], 'argument --bits: must be in 2..64, got 1'),
    (['--bits', '100'], 'argument --bits: must be in 2..64, got 100'),
    (['--relu-bits', '65'], 'argument --relu-bits: must be in 2..64'),
    (['--pool-bits', 'x'], "argument --pool-bits: expected an integer in 2..64, got 'x'"),
    (['--batch-size', '0'], 'argument --batch-size: must be an integer >= 1, got 0'),
    (['--num-images', '-3'], 'argument --num-images: must be an integer >= 1'),
    (['--calibration-images', '0'], 'argument --calibration-images: must be'),
    (['--margin', '0.5'], 'argument --margin: must be a number >= 1'),
    (['--threads', '0'], 'argument --threads: must be an integer >= 1'),
    (['--spec', 'no_spec.json'], 'argument --spec: no such file: no_spec.json'),
    (['--images', '{image}', 'no.png'], 'argument --images: no such file: no.png'),
    (['--json-out', 'no_dir/r.json'], '--json-out: no such directory: no_dir'),
]


@pytest.mark.parametrize('options,message', SECURE_INFER,
                         ids=[' '.join(o) for o, _ in SECURE_INFER])
def test_secure_infer_refuses_before_any_work(options, message, files, capsys):
    argv = [CONFIG, files['ckpt']] + [o.format(**files) for o in options]
    line = refused('secure_infer', argv, capsys)
    assert message in line, line


def test_secure_infer_missing_files_named(files, capsys):
    assert 'argument config: no such file: nope.py' in \
        refused('secure_infer', ['nope.py', files['ckpt']], capsys)
    assert 'argument checkpoint: no such file: nope.pth' in \
        refused('secure_infer', [CONFIG, 'nope.pth'], capsys)
    # --bits is checked first, whatever the order on the command line
    assert 'argument --bits' in refused('secure_infer', ['nope.py', 'nope.pth', '--bits', '0'],
                                        capsys)


def test_secure_infer_bad_bits_starts_no_process(tmp_path):
    """The real command: one error line, exit 2, and no party (no certificates made)."""
    tmp = tmp_path / 'tmp'
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONWARNINGS'}
    env['TMPDIR'] = str(tmp)  # where LocalCluster would write the parties' certificates
    proc = subprocess.run([sys.executable, 'tools/secure_infer.py', CONFIG, CONFIG,
                           '--bits', '0'], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == \
        'secure_infer.py: error: argument --bits: must be in 2..64, got 0'
    assert 'Traceback' not in proc.stderr
    assert not os.listdir(tmp)


def _party(files, role, *options):
    argv = ['--role', role, '--config', files['parties'], CONFIG]
    if role == 'server':
        argv.append(files['ckpt'])
    if role != 'client':
        argv += ['--shape', '32', '32']
    return argv + list(options)


@pytest.mark.parametrize('bits', ['0', '1', '100'])
@pytest.mark.parametrize('role', ['client', 'server', 'helper'])
def test_mpc_party_refuses_bad_bits(role, bits, files, capsys):
    line = refused('mpc_party', _party(files, role, '--bits', bits), capsys)
    assert f'argument --bits: must be in 2..64, got {bits}' in line


def test_mpc_party_refuses_before_connecting(files, capsys):
    tmp = files['tmp']
    cases = [
        (['--role', 'server', '--config', files['parties'], CONFIG, '--shape', '8', '8'],
         'the server needs the checkpoint'),
        (['--role', 'helper', '--config', files['parties'], CONFIG], '--shape H W is required'),
        (['--role', 'client', '--config', files['parties'], CONFIG, files['ckpt']],
         'only the server may load the checkpoint'),
        (_party(files, 'helper', '--images', files['image']), '--images is for the client'),
        (_party(files, 'client', '--bits', '16'), 'need --shifts FILE'),
        (_party(files, 'client', '--batch-size', '0'), 'argument --batch-size'),
        (_party(files, 'client', '--shifts', 'none.json'), 'argument --shifts: no such file'),
        (['--role', 'client', '--config', str(tmp / 'no.json'), CONFIG],
         'argument --config: no such file'),
    ]
    for argv, message in cases:
        assert message in refused('mpc_party', argv, capsys), argv
    (tmp / 'bad.json').write_text('{"cert_dir": ')
    assert 'not a JSON file' in refused(
        'mpc_party', ['--role', 'client', '--config', str(tmp / 'bad.json'), CONFIG], capsys)
    (tmp / 'gone.json').write_text(json.dumps({'cert_dir': str(tmp / 'gone')}))
    assert 'is not a directory (make it with tools/mpc_certs.py)' in refused(
        'mpc_party', ['--role', 'client', '--config', str(tmp / 'gone.json'), CONFIG], capsys)
