"""Distillation (``distill_cfg``) for both codebases on small real networks.

The teacher must be frozen (same weights and statistics after a train step, no
gradients, outside the optimizer), the loss must be the task loss plus
``weight * T^2 * KL(softmax(t / T) || softmax(s / T))`` computed here another way,
and the student's checkpoints must keep the plain model's layout.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from block_relu_plugin.conversion import find_relu_sites
from block_relu_plugin.layers import BlockReLU
from block_relu_plugin.models import kd_loss
from block_relu_plugin.spec import BlockReLUSpec

SIZE = 32
T, WEIGHT = 3.0, 0.7  # not the defaults, so a default that leaks in shows

CLS_MODEL = dict(
    backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=8, base_channels=8),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=64,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    data_preprocessor=dict(type='ClsDataPreprocessor', mean=[128.] * 3, std=[64.] * 3))
NORM = dict(type='BN', requires_grad=True)
SEG_MODEL = dict(
    backbone=dict(type='ResNetV1c', depth=18, stem_channels=16, base_channels=8,
                  strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), out_indices=(0, 1, 2, 3),
                  norm_cfg=NORM, contract_dilation=True),
    # No dropout, so two forwards of the student agree and the loss can be recomputed.
    decode_head=dict(type='ASPPHead', in_channels=64, in_index=3, channels=16,
                     dilations=(1, 2, 3, 4), dropout_ratio=0, num_classes=5, norm_cfg=NORM,
                     loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    auxiliary_head=dict(type='FCNHead', in_channels=32, in_index=2, channels=8, num_convs=1,
                        dropout_ratio=0, num_classes=5, norm_cfg=NORM,
                        loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4)),
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[128.] * 3, std=[64.] * 3,
                           size=(SIZE, SIZE), pad_val=0, seg_pad_val=255),
    train_cfg=dict(), test_cfg=dict(mode='whole'))
CODEBASES = {
    'mmpretrain': ('BlockReLUImageClassifier', CLS_MODEL),
    'mmseg': ('BlockReLUEncoderDecoder', SEG_MODEL),
}


def _build(codebase, **kwargs):
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(codebase)
    model_type, model = CODEBASES[codebase]
    return MODELS.build(dict(model, type=model_type, **kwargs))


def _randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


@pytest.fixture(params=list(CODEBASES))
def setup(request, tmp_path):
    """(codebase, plain all-ReLU teacher with its weights, student, checkpoint path)."""
    codebase = request.param
    edits = dict(maxpool_to_avgpool=True) if codebase == 'mmseg' else {}
    teacher = _randomise(_build(codebase, block_relu_cfg=edits), seed=1).eval()
    ckpt = str(tmp_path / 'teacher.pth')
    torch.save({'state_dict': teacher.state_dict()}, ckpt)
    spec = str(tmp_path / 'spec.json')
    BlockReLUSpec.uniform(find_relu_sites(teacher, SIZE), (2, 2)).save(spec)
    student = _randomise(_build(
        codebase, block_relu_cfg=dict(edits, spec=spec),
        distill_cfg=dict(teacher_checkpoint=ckpt, temperature=T, weight=WEIGHT)), seed=2)
    return codebase, teacher, student, ckpt


def _batch(codebase, n=4, seed=0):
    """A batch as the data loader gives it (uint8 images, data samples)."""
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, SIZE, SIZE), generator=g, dtype=torch.uint8)
              for _ in range(n)]
    if codebase == 'mmpretrain':
        from mmpretrain.structures import DataSample
        samples = [DataSample().set_gt_label(int(torch.randint(0, 10, (1, ), generator=g)))
                   for _ in range(n)]
    else:
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        samples = []
        for _ in range(n):
            label = torch.randint(0, 5, (1, SIZE, SIZE), generator=g)
            label[:, :4] = 255  # ignored pixels: the distillation term must skip them too
            s = SegDataSample(gt_sem_seg=PixelData(data=label))
            s.set_metainfo(dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE),
                                pad_shape=(SIZE, SIZE)))
            samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def _logits(codebase, model, inputs):
    """The logits the distillation term compares, computed from the model's parts."""
    if codebase == 'mmpretrain':
        return model.head(model.extract_feat(inputs))
    logits = model.decode_head(model.extract_feat(inputs))
    return F.interpolate(logits, (SIZE, SIZE), mode='bilinear', align_corners=False)


def test_kd_loss_is_temperature_scaled_kl():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 7, generator=g) * 3, torch.randn(6, 7, generator=g) * 3
    expected = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction='batchmean')
    assert torch.allclose(kd_loss(s, t, T), expected * T * T, rtol=1e-5)
    # Per pixel with a mask: the mean over the valid pixels only.
    s, t = torch.randn(2, 7, 3, 4, generator=g), torch.randn(2, 7, 3, 4, generator=g)
    valid = torch.rand(2, 3, 4, generator=g) > 0.3
    per_pixel = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction='none').sum(1)
    assert torch.allclose(kd_loss(s, t, T, valid), per_pixel[valid].mean() * T * T, rtol=1e-5)
    assert kd_loss(s, s.clone(), T).abs() < 1e-6
    nothing = kd_loss(s.requires_grad_(), t, T, torch.zeros_like(valid))
    assert nothing == 0 and nothing.requires_grad


def test_loss_is_task_loss_plus_distillation(setup):
    codebase, teacher, student, _ = setup
    student.train()
    data = student.data_preprocessor(_batch(codebase), training=True)
    inputs, samples = data['inputs'], data['data_samples']
    losses = student.loss(inputs, samples)
    with torch.no_grad():
        s, t = _logits(codebase, student, inputs), _logits(codebase, teacher, inputs)
    if codebase == 'mmpretrain':
        labels = torch.cat([d.gt_label for d in samples])
        assert torch.allclose(losses['loss'], F.cross_entropy(s, labels), rtol=1e-5)
        valid = None
        task_keys = {'loss'}
    else:
        labels = torch.stack([d.gt_sem_seg.data for d in samples]).squeeze(1)
        # mmseg's CE averages over all pixels, ignored ones counting as 0.
        ce = F.cross_entropy(s, labels, ignore_index=255, reduction='sum') / labels.numel()
        assert torch.allclose(losses['decode.loss_ce'], ce, rtol=1e-5)
        valid = labels != 255
        task_keys = {'decode.loss_ce', 'aux.loss_ce'}
    # The task losses are the plain model's.
    plain = super(type(student), student).loss(inputs, samples)
    for key in task_keys:
        assert torch.allclose(losses[key], plain[key], rtol=1e-6), key
    log_s, p_t = F.log_softmax(s / T, 1), F.softmax(t / T, 1)
    kl = (p_t * (p_t.log() - log_s)).sum(1)
    kl = kl[valid] if valid is not None else kl
    assert torch.allclose(losses['loss_distill'], WEIGHT * T * T * kl.mean(), rtol=1e-4)
    assert losses['loss_distill'] > 0


def test_teacher_frozen_over_train_step(setup):
    from mmengine.optim import build_optim_wrapper
    codebase, teacher, student, _ = setup
    optim = build_optim_wrapper(student, dict(optimizer=dict(type='SGD', lr=0.5, momentum=0.9)))
    student.train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    log = student.train_step(_batch(codebase), optim)
    assert 'loss_distill' in log
    t = student.distiller.teacher
    assert t is not None and not t.training
    # Its weights and BN statistics are the checkpoint's, before and after the step.
    for k, v in t.state_dict().items():
        assert torch.equal(v, teacher.state_dict()[k]), k
    assert all(not p.requires_grad and p.grad is None for p in t.parameters())
    in_optimizer = {id(p) for g in optim.optimizer.param_groups for p in g['params']}
    assert not in_optimizer & {id(p) for p in t.parameters()}
    assert in_optimizer == {id(p) for p in student.parameters()}
    assert any(not torch.equal(v, before[k]) for k, v in student.state_dict().items())
    # .train() on the student leaves the teacher in eval mode; .to() moves it along.
    student.train()
    assert not t.training
    student.double()
    assert all(p.dtype == torch.float64 for p in t.parameters())


def test_teacher_takes_the_precision_of_a_student_made_double_before_it_existed(setup):
    codebase, teacher, student, _ = setup
    student.double().train()
    data = student.data_preprocessor(_batch(codebase), training=True)
    losses = student.loss(data['inputs'].double(), data['data_samples'])
    assert all(p.dtype == torch.float64 for p in student.distiller.teacher.parameters())
    assert losses['loss_distill'].dtype == torch.float64  # not computed in float32
    assert losses['loss_distill'] > 0


def test_student_checkpoint_has_the_plain_layout(setup):
    codebase, teacher, student, ckpt = setup
    student.train_step(_batch(codebase), _sgd(student))  # the teacher is built now
    keys = set(student.state_dict())
    assert keys == set(teacher.state_dict())
    assert not any('teacher' in k or 'distill' in k for k in keys)
    teacher.load_state_dict(student.state_dict(), strict=True)
    student.load_state_dict(torch.load(ckpt)['state_dict'], strict=True)


def test_teacher_is_the_all_relu_network(setup):
    codebase, teacher, student, _ = setup
    student.train_step(_batch(codebase), _sgd(student))
    t = student.distiller.teacher
    assert any(isinstance(m, BlockReLU) for m in student.modules())
    assert not any(isinstance(m, BlockReLU) for m in t.modules())
    assert [type(m) for m in t.modules()] == [type(m) for m in teacher.modules()]


def _sgd(model):
    from mmengine.optim import build_optim_wrapper
    return build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.1)))


@pytest.mark.parametrize('cfg, error, match', [
    (dict(teacher_checkpoint='x.pth', temprature=4), KeyError, 'temprature'),
    (dict(temperature=4.0), KeyError, 'teacher_checkpoint'),
    (dict(teacher_checkpoint='x.pth', temperature=0), ValueError, 'temperature'),
    (dict(teacher_checkpoint='x.pth', weight=-1), ValueError, 'weight'),
])
@pytest.mark.parametrize('codebase', list(CODEBASES))
def test_bad_distill_cfg(codebase, cfg, error, match):
    with pytest.raises(error, match=match):
        _build(codebase, distill_cfg=cfg)


def test_missing_teacher_checkpoint_fails_at_the_first_loss(tmp_path):
    student = _build('mmpretrain', distill_cfg=dict(teacher_checkpoint=str(tmp_path / 'no.pth')))
    with pytest.raises((FileNotFoundError, IOError), match='no.pth'):
        student.train_step(_batch('mmpretrain'), _sgd(student))
