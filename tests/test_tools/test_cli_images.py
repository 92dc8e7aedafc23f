"""``--images`` on the demo configs, whose test pipelines have no loading step.

The demos' datasets hand the pipeline an in-memory ``img`` (gray replicated to
3 channels), so image files used to reach ``PackInputs`` with no image at all
(``KeyError: 'inputs'`` in the data preprocessor). A test image written to a
PNG must now give exactly the tensor the dataset path gives, and
``tools/secure_infer.py --images`` must run it securely, with its progress line.
"""
import importlib.util
import os

import numpy as np
import pytest
import torch
from PIL import Image

from block_relu_plugin.mpc.infer import load_test_inputs
from block_relu_plugin.utils.config import build_model, load_config

from test_datasets.fashion_data import fashion_mnist  # noqa: F401  (fixture)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMOS = ['resnet18-w16_fashion-mnist.py', 'deeplabv3_mnv2-relu_fashion-mosaic.py']


@pytest.mark.parametrize('demo', DEMOS)
def test_image_file_equals_the_dataset_path(demo, tmp_path, fashion_mnist):  # noqa: F811
    cfg = load_config(os.path.join(REPO, 'configs', 'demo', demo))
    model = build_model(cfg).eval()
    # the raw sample before the pipeline: gray replicated, saved as a gray PNG
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope(cfg.default_scope)
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    raw = dataset.get_data_info(0)
    img = raw['img'] if 'img' in raw else dataset.prepare_data(0)['inputs'].permute(1, 2, 0)
    img = np.asarray(img)
    assert img.ndim == 3 and (img == img[..., :1]).all()  # gray replicated
    path = str(tmp_path / 'img0.png')
    Image.fromarray(np.ascontiguousarray(img[..., 0])).save(path)

    from_file, labels = load_test_inputs(cfg, model, 1, [path])
    from_dataset, _ = load_test_inputs(cfg, model, 1, indices=[0])
    assert labels is None
    torch.testing.assert_close(from_file, from_dataset, rtol=0, atol=0)


def test_missing_image_file_is_named(tmp_path):
    cfg = load_config(os.path.join(REPO, 'configs', 'demo', DEMOS[0]))
    with pytest.raises(FileNotFoundError, match='nope.png'):
        load_test_inputs(cfg, build_model(cfg), 1, [str(tmp_path / 'nope.png')])


TINY = """
_base_ = [{demo!r}]
model = dict(backbone=dict(stem_channels=4, base_channels=4), head=dict(in_channels=32))
input_size = (16, 16)
test_dataloader = dict(dataset=dict(pipeline=[dict(type='Resize', scale=(16, 16)),
                                              dict(type='PackInputs')]))
"""


def test_secure_infer_images_on_the_demo_config(tmp_path, capfd):
    """The tool end to end on one PNG (the demo at base width 4, 16x16), with progress."""
    config = tmp_path / 'tiny_demo.py'
    config.write_text(TINY.format(demo=os.path.join(REPO, 'configs', 'demo', DEMOS[0])))
    torch.manual_seed(0)
    ckpt = str(tmp_path / 'tiny.pth')
    torch.save({'state_dict': build_model(load_config(str(config))).state_dict()}, ckpt)
    image = str(tmp_path / 'shirt.png')
    Image.fromarray((np.arange(28 * 28).reshape(28, 28) % 251).astype(np.uint8)).save(image)

    spec = importlib.util.spec_from_file_location(
        'tool_secure_infer', os.path.join(REPO, 'tools', 'secure_infer.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = str(tmp_path / 'report.json')
    tool.main([str(config), ckpt, '--images', image, '--num-images', '1', '--json-out', out])
    captured = capfd.readouterr()
    import json
    report = json.load(open(out))
    assert report['num_images'] == 1 and report['agreement'] == 1.0
    assert report['predicted_equal']
    # the client's progress (stderr is not a terminal here: whole lines)
    assert 'client: secure inference: 1/1 images' in captured.err, captured.err
