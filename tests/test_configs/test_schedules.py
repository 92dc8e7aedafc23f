"""The paper configs train with the authors' schedules and start from OpenMMLab's checkpoints.

The authors' schedules are mmcv 1.x ``lr_config``s (shared/design/METHOD.md). Each config's
``param_scheduler`` is built as mmengine's runner builds it and stepped as its
``ParamSchedulerHook`` steps it; the lr of every iteration must be what mmcv 1.x's
``LrUpdaterHook`` gives for the authors' ``lr_config`` (written below as they wrote it).
"""
import ast
import glob
import os

import pytest
import torch
from mmengine.config import Config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EPOCH_LEN = 100  # iterations per epoch in the simulation (the schedules do not depend on it)

CIFAR_FT = dict(lr=0.005, weight_decay=1e-3, epochs=120, batch_size=64,
                lr_config=dict(policy='step', step=[30, 60, 90], gamma=0.25, min_lr=1e-4,
                               warmup='linear', warmup_ratio=0.01, warmup_iters=5,
                               warmup_by_epoch=True))
IN1K_FT = dict(lr=0.005, weight_decay=1e-4, epochs=25,
               lr_config=dict(policy='step', step=[12, 18, 22], gamma=0.25, min_lr=1e-4,
                              warmup='linear', warmup_ratio=0.01, warmup_iters=1,
                              warmup_by_epoch=True))
SEG_FT = dict(lr=5e-4, weight_decay=5e-4,
              lr_config=dict(policy='poly', power=0.9, min_lr=1e-4, by_epoch=False,
                             warmup='linear', warmup_ratio=0.01, warmup_iters=1000))
# config (relative to configs/) -> the authors' optimizer, length and lr_config
AUTHORS = {
    'mmpretrain/resnet18_cifar100/resnet18_2xb64_cifar100.py': dict(
        lr=0.1, weight_decay=1e-3, epochs=200, batch_size=64,
        lr_config=dict(policy='step', step=[60, 120, 160], gamma=0.2)),
    'mmpretrain/resnet18_cifar100/resnet18_block-relu-*_2xb64_cifar100.py': CIFAR_FT,
    'mmpretrain/resnet50_in1k/resnet50-avgpool_8xb32_in1k.py': dict(
        lr=1e-4, weight_decay=1e-4, epochs=15, lr_config=dict(policy='fixed')),
    'mmpretrain/resnet50_in1k/resnet50-avgpool_block-relu-*_8xb32_in1k.py': IN1K_FT,
    'mmseg/deeplabv3_mnv2_ade20k/mobilenet-v2-relu-d8_deeplabv3_block-relu-*_4xb4-40k_*.py':
        dict(SEG_FT, iters=40000),
    'mmseg/deeplabv3_r50_voc12aug/deeplabv3_r50-avgpool-d8_4xb4-3k_voc12aug-512x512.py': dict(
        lr=1e-4, weight_decay=5e-4, iters=3000, lr_config=dict(policy='fixed')),
    'mmseg/deeplabv3_r50_voc12aug/deeplabv3_r50-avgpool-d8_block-relu-*_4xb4-20k_*.py':
        dict(SEG_FT, iters=20000),
}

def _matches(pattern):
    return sorted(os.path.relpath(p, os.path.join(REPO, 'configs'))
                  for p in glob.glob(os.path.join(REPO, 'configs', pattern)))


# One config per pattern is simulated (the 6 % one where there are several); the others
# (other budgets, distillation) must have the same optimizer, schedule and length.
REPRESENTATIVE = {pattern: next((c for c in _matches(pattern) if '6pct_' in c),
                                _matches(pattern)[0]) for pattern in AUTHORS}
SIBLINGS = sorted((c, REPRESENTATIVE[pattern]) for pattern in AUTHORS
                  for c in _matches(pattern) if c != REPRESENTATIVE[pattern])

R50 = ('https://download.openmmlab.com/mmclassification/v0/resnet/'
       'resnet50_8xb32_in1k_20210831-ea4938fc.pth')
MNV2 = ('https://download.openmmlab.com/mmsegmentation/v0.5/mobilenet_v2/'
        'deeplabv3_m-v2-d8_512x512_160k_ade20k/'
        'deeplabv3_m-v2-d8_512x512_160k_ade20k_20200825_223255-63986343.pth')
VOC = ('https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3/'
       'deeplabv3_r50-d8_512x512_40k_voc12aug/'
       'deeplabv3_r50-d8_512x512_40k_voc12aug_20200613_161546-2ae96e7e.pth')
# The configs that start from OpenMMLab's published baselines, as the authors did.
STARTS = {
    'mmpretrain/resnet50_in1k/resnet50-avgpool_8xb32_in1k.py': R50,
    'mmseg/deeplabv3_mnv2_ade20k/'
    'mobilenet-v2-relu-d8_deeplabv3_block-relu-6pct_4xb4-40k_ade20k-512x512.py': MNV2,
    'mmseg/deeplabv3_r50_voc12aug/deeplabv3_r50-avgpool-d8_4xb4-3k_voc12aug-512x512.py': VOC,
}


def mmcv1_lr(lr_config, base_lr, it, epoch_len, max_iters):
    """The lr of iteration ``it`` under mmcv 1.x's ``LrUpdaterHook`` for ``lr_config``."""
    c = lr_config
    if c['policy'] == 'fixed':
        lr = base_lr
    elif c['policy'] == 'step':
        epoch = it // epoch_len
        exp = next((i for i, s in enumerate(c['step']) if epoch < s), len(c['step']))
        lr = max(base_lr * c['gamma']**exp, c.get('min_lr') or 0)
    else:  # poly, per iteration
        lr = (base_lr - c['min_lr']) * (1 - it / max_iters)**c['power'] + c['min_lr']
    warmup = c.get('warmup_iters', 0) * (epoch_len if c.get('warmup_by_epoch') else 1)
    if c.get('warmup') and it < warmup:
        lr *= 1 - (1 - it / warmup) * (1 - c['warmup_ratio'])
    return lr


def mmengine_lrs(cfg, epoch_len):
    """The lr of every iteration under ``cfg.param_scheduler``, stepped as the runner steps it."""
    import block_relu_plugin.engine  # noqa: F401  (WarmupPolyLR)
    from mmengine.optim import OptimWrapper
    from mmengine.registry import PARAM_SCHEDULERS
    by_epoch = cfg.train_cfg.get('by_epoch', False)
    max_epochs = cfg.train_cfg.get('max_epochs')
    max_iters = max_epochs * epoch_len if by_epoch else cfg.train_cfg.max_iters
    param = torch.nn.Parameter(torch.zeros(1))
    optim = OptimWrapper(torch.optim.SGD([param], lr=cfg.optim_wrapper.optimizer.lr))
    specs = cfg.get('param_scheduler') or []
    schedulers = []
    for spec in (specs if isinstance(specs, (list, tuple)) else [specs]):
        spec = dict(spec)
        spec.setdefault('end', max_epochs if spec.get('by_epoch', True) else max_iters)
        schedulers.append(PARAM_SCHEDULERS.build(
            spec, default_args=dict(optimizer=optim, epoch_length=epoch_len)))
    lrs = []
    for it in range(max_iters):
        lrs.append(optim.param_groups[0]['lr'])
        optim.optimizer.step()
        for s in schedulers:
            if not s.by_epoch:
                s.step()
        if by_epoch and (it + 1) % epoch_len == 0:
            for s in schedulers:
                if s.by_epoch:
                    s.step()
    return lrs, max_iters


def test_every_finetune_config_is_covered():
    names = set(REPRESENTATIVE.values()) | {c for c, _ in SIBLINGS}
    for path in glob.glob(os.path.join(REPO, 'configs', 'mm*', '*', '*.py')):
        rel = os.path.relpath(path, os.path.join(REPO, 'configs'))
        if ('block-relu' in rel or 'avgpool' in rel) and 'submission' not in rel:
            assert rel in names, rel


@pytest.mark.parametrize('pattern', sorted(AUTHORS), ids=lambda p: REPRESENTATIVE[p])
def test_authors_schedule(pattern):
    want, config = AUTHORS[pattern], REPRESENTATIVE[pattern]
    cfg = Config.fromfile(os.path.join(REPO, 'configs', config))
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == (
        'SGD', want['lr'], 0.9, want['weight_decay'])
    if 'epochs' in want:
        assert cfg.train_cfg.by_epoch and cfg.train_cfg.max_epochs == want['epochs']
    else:
        assert cfg.train_cfg.type == 'IterBasedTrainLoop'
        assert cfg.train_cfg.max_iters == want['iters']
    if 'batch_size' in want:
        assert cfg.train_dataloader.batch_size == want['batch_size']
    c = want['lr_config']
    # Few iterations per epoch where nothing happens within an epoch.
    epoch_len = EPOCH_LEN if c.get('warmup_by_epoch') else 5
    lrs, max_iters = mmengine_lrs(cfg, epoch_len)
    ref = [mmcv1_lr(c, want['lr'], it, epoch_len, max_iters) for it in range(max_iters)]
    warmup = c.get('warmup_iters', 0) * (epoch_len if c.get('warmup_by_epoch') else 1)
    for it, (got, exp) in enumerate(zip(lrs, ref)):
        # mmengine's epoch-based LinearLR reaches 1 one iteration before mmcv's warmup does
        # (relative difference < 1 / warmup iterations); everywhere else they agree.
        rtol = 1 / warmup if it < warmup and c.get('warmup_by_epoch') else 1e-9
        assert got == pytest.approx(exp, rel=rtol), f'iteration {it}: lr {got}, authors {exp}'


@pytest.mark.parametrize('config, representative', SIBLINGS, ids=[c for c, _ in SIBLINGS])
def test_same_schedule_as_the_6pct_config(config, representative):
    # Read, not loaded (loading a config with an mmseg:: base takes seconds): the file and
    # any base between it and the simulated config may set only the model.
    path = os.path.join(REPO, 'configs', config)
    while os.path.relpath(path, os.path.join(REPO, 'configs')) != representative:
        with open(path) as f:
            tree = ast.parse(f.read())
        names = {t.id for node in tree.body if isinstance(node, ast.Assign)
                 for t in node.targets if isinstance(t, ast.Name)}
        assert names <= {'_base_', 'model'}, f'{path} sets {sorted(names - {"_base_", "model"})}'
        base = next(ast.literal_eval(node.value) for node in tree.body
                    if isinstance(node, ast.Assign) and node.targets[0].id == '_base_')
        path = os.path.normpath(os.path.join(os.path.dirname(path), base))


@pytest.mark.parametrize('config', sorted(STARTS))
def test_starts_from_openmmlab_checkpoint(config):
    cfg = Config.fromfile(os.path.join(REPO, 'configs', config))
    assert cfg.load_from == STARTS[config]


def test_distillation_teacher_is_the_starting_network():
    paths = glob.glob(os.path.join(REPO, 'configs', 'mm*', '*', '*distill*.py'))
    assert {p.split(os.sep)[-3] for p in paths} == {'mmpretrain', 'mmseg'}
    for path in paths:
        cfg = Config.fromfile(path)
        assert cfg.model.distill_cfg.teacher_checkpoint == cfg.load_from, path
        assert cfg.model.distill_cfg.temperature == 4.0


@pytest.mark.parametrize('kwargs, match', [
    (dict(end=100, by_epoch=True), 'by_epoch=False'),
    (dict(), 'needs end'),
    (dict(end=100, warmup_iters=10, warmup_ratio=0), 'warmup_ratio'),
])
def test_warmup_poly_lr_bad_arguments(kwargs, match):
    from block_relu_plugin.engine import WarmupPolyLR
    optim = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=match):
        WarmupPolyLR(optim, **kwargs)
