"""Secure inference against the real labels, on a network trained on real Fashion-MNIST.

A narrow ResNet18-CIFAR (16x16 inputs) is trained (mmengine's Runner) on a slice of the real
training set; ``tools/secure_infer.py`` then runs the first test images under
3-party secure inference. Its secure accuracy must equal the accuracy the
stock test path (Runner.test: test dataloader, test_step, evaluator) gives the
plaintext network on the same images, and both must be far above chance.
"""
import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, 'configs/demo/resnet18-w16_fashion-mnist.py')
NUM_TEST = 50

# ResNet18-CIFAR at base width 4 on 16x16 images: ~76 % on the first 50 test images after
# 4 epochs on 2,000 training images (a few CPU seconds); secure inference ~2.5 MB per image.
PIPELINE = [dict(type='Resize', scale=(16, 16)), dict(type='PackInputs')]
CONFIG = """
_base_ = [{demo!r}]
model = dict(backbone=dict(stem_channels=4, base_channels=4), head=dict(in_channels=32))
input_size = (16, 16)
train_dataloader = dict(batch_size=32, dataset=dict(num_samples=2000, pipeline={pipeline!r}))
test_dataloader = dict(dataset=dict(pipeline={pipeline!r}))
val_dataloader = None
val_cfg = None
val_evaluator = None
param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=True, T_max=4, eta_min=1e-3,
                        convert_to_iter_based=True)]
train_cfg = dict(by_epoch=True, max_epochs=4)
default_hooks = dict(logger=dict(interval=1000),
                     checkpoint=dict(type='CheckpointHook', interval=4, by_epoch=True))
"""


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Config and checkpoint of a width-4 ResNet18 trained on 2,000 real training images."""
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner
    # module fixtures run before conftest's per-test one-thread fixture
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp('truth')
    config = root / 'config.py'
    config.write_text(CONFIG.format(demo=DEMO, pipeline=PIPELINE))
    cfg = Config.fromfile(str(config))
    cfg.work_dir = str(root / 'work')
    try:
        Runner.from_cfg(cfg).train()
    finally:
        torch.set_num_threads(threads)
    with open(root / 'work' / 'last_checkpoint') as f:
        return str(config), f.read().strip()


def test_secure_accuracy_equals_stock_test_accuracy(trained, tmp_path):
    config, checkpoint = trained
    out = tmp_path / 'report.json'
    _tool('secure_infer').main([config, checkpoint, '--num-images', str(NUM_TEST),
                                '--batch-size', '25', '--json-out', str(out)])
    with open(out) as f:
        report = json.load(f)
    metric = report['metric']
    assert report['num_images'] == NUM_TEST and metric['name'] == 'accuracy/top1'
    # the plaintext network on the tensors fed to secure inference = the stock test path
    assert metric['plaintext'] == pytest.approx(metric['stock'], abs=1e-6)
    assert metric['secure'] == pytest.approx(metric['stock'], abs=1e-6)
    assert metric['stock'] > 50, metric  # 10 classes: chance is 10 %
    assert report['predicted_equal']
    b = report['bytes']
    assert b['per_image']['online_offline'] == pytest.approx(
        b['per_image']['online'] + b['per_image']['offline'])
    assert b['weights'] > 0 and b['weights'] + b['handshake'] == b['session']
