"""The four target networks, built from their test configs (tests/data/configs)."""
import os

import torch

TEST_DIR = os.path.dirname(__file__)
CONFIG_DIR = os.path.join(TEST_DIR, 'data', 'configs')

# name -> (test config, input size used in tests, block_relu_cfg edits)
NETWORKS = {
    'resnet18_cifar': ('resnet18_cifar.py', 32, {}),
    'resnet50': ('resnet50.py', 64, {}),
    'deeplabv3_r50': ('deeplabv3_r50.py', 64, {}),
    'deeplabv3_mnv2': ('deeplabv3_mnv2.py', 64, {'relu6_to_relu': True}),
}


def network_config(name):
    return os.path.join(CONFIG_DIR, NETWORKS[name][0])


def build_network(name, seed=0):
    """Build a target network from its test config: the plain upstream model, unsplit."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(network_config(name))
    init_default_scope(cfg.default_scope)
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def randomise_bn(model, seed=0):
    """Random BatchNorm statistics and affine parameters (so folding is not the identity)."""
    from torch import nn
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=g) * 0.6 - 0.3)
    return model.eval()
