"""Tools print no dependency warnings (``pkg_resources`` deprecation), and only those are muted.

mmengine imports and reloads ``pkg_resources`` when ``Config.fromfile`` meets
an ``mmpretrain::`` base config; without the plugin's filter each tool run
printed that deprecation warning three times.
"""
import os
import subprocess
import sys
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIG = """
_base_ = ['mmpretrain::_base_/models/resnet18_cifar.py']
default_scope = 'mmpretrain'
custom_imports = dict(imports=['block_relu_plugin'], allow_failed_imports=False)
model = dict(backbone=dict(stem_channels=4, base_channels=4),
             head=dict(num_classes=2, in_channels=32))
input_size = (16, 16)
"""


def run(args):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONWARNINGS'}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_tools_print_no_warnings(tmp_path):
    config = tmp_path / 'tiny.py'
    config.write_text(CONFIG)
    # count_drelus loads a config with an mmpretrain:: base, where the warnings fired
    for args in (['tools/make_spec.py', '--help'], ['tools/analysis/count_drelus.py', str(config)]):
        proc = run(args)
        assert proc.returncode == 0, proc.stderr
        assert 'pkg_resources' not in proc.stderr and 'Warning' not in proc.stderr, \
            (args, proc.stderr)
    assert 'total' in proc.stdout


def test_only_the_dependency_warnings_are_muted():
    """The filter matches the pkg_resources message from its two sources, nothing else."""
    import importlib

    import pkg_resources

    from block_relu_plugin._dependency_warnings import mute_dependency_warnings
    message = 'pkg_resources is deprecated as an API. (a control)'
    with warnings.catch_warnings(record=True) as log:
        warnings.resetwarnings()  # not pytest.ini's filters: show all ...
        warnings.simplefilter('always')
        mute_dependency_warnings()  # ... but what this filter mutes
        importlib.reload(pkg_resources)  # the real warning, attributed to importlib
        warnings.warn_explicit(message, UserWarning, 'package_utils.py', 1,
                               module='mmengine.utils.package_utils')
        warnings.warn_explicit(message, UserWarning, 'elsewhere.py', 1, module='some_user_lib')
        warnings.warn_explicit('another warning (a control)', UserWarning, 'package_utils.py',
                               2, module='mmengine.utils.package_utils')
    shown = [str(w.message) for w in log]
    assert shown == [message, 'another warning (a control)'], shown
