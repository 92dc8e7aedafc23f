"""Cost formulas: the reference model reproduces REFERENCE-RUNTIME.md 4.10."""
import numpy as np
import pytest

from block_relu_plugin.mpc import cost

ref, ours = cost.reference, cost.ours


@pytest.mark.parametrize('bits,drelu,relu', [(64, 496, 536), (16, 208, 248), (20, 232, 272),
                                             (32, 304, 344)])
def test_reference_per_element(bits, drelu, relu):
    assert ref.drelu(1, bits).total() == drelu == 6 * bits + 112
    assert ref.relu(1, bits).total() == relu == 6 * bits + 152
    assert ref.private_compare(1, bits).total() == 2 * bits
    assert ref.share_convert(1, bits).total() == 3 * bits + 32
    assert ref.msb(1, bits).total() == 3 * bits + 80
    assert ref.max_pool2d(1, 9, bits).total() == 8 * (6 * bits + 152)


def test_reference_layers():
    assert ref.mult(10).total() == 400
    assert ref.conv2d(100, 50, 30).total() == 8 * (2 * 100 + 2 * 50 + 30)
    assert ref.reveal_to_client(100).total() == 800
    assert ref.handshake().total() == 128
    sizes = np.array([[1, 1], [2, 2], [0, 1], [3, 3]])
    n_blk = 64 + 16 + 0 + 9
    m_act = 3 * 64
    assert ref.block_relu(sizes, 1, 8, 8, 16).total() == (6 * 16 + 128) * n_blk + 24 * m_act
    assert ref.block_relu([[0, 1]], 1, 8, 8).total() == 0


def test_reference_resnet18_cifar_relu_total():
    """493,540,032 B = conv traffic + 557,056 ReLUs x 536 + 128 + 800 (section 8)."""
    convs = []  # (|X|, |W|, |Y|) of ResNet18-CIFAR, FC as a 1x1 conv
    convs.append((3 * 32 * 32, 64 * 3 * 9, 64 * 32 * 32))
    c_in, hw = 64, 32
    for c, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for b in range(2):
            s = stride if b == 0 else 1
            ho = hw // s
            convs.append((c_in * hw * hw, c * c_in * 9, c * ho * ho))
            convs.append((c * ho * ho, c * c * 9, c * ho * ho))
            if s != 1 or c_in != c:
                convs.append((c_in * hw * hw, c * c_in, c * ho * ho))
            c_in, hw = c, ho
    convs.append((512, 512 * 100, 100))
    relus = 64 * 32 * 32 + sum(2 * 2 * c * h * h for c, h in [(64, 32), (128, 16), (256, 8),
                                                             (512, 4)])
    assert relus == 557056
    total = (sum((ref.conv2d(*c) for c in convs), cost.Cost()).total()
             + ref.relu(relus, 64).total() + ref.handshake().total()
             + ref.reveal_to_client(100).total())
    assert total == 493540032


def test_ours_per_element():
    """Bytes per element, by hand. Z_67 messages are packed, one record per element:
    63 or 64 digits in 49 B, 15 in 12 B, 16 in 13 B (test_packing.py)."""
    d = ours.drelu(1, 64)   # offline: bit shares 49 + y 8; online: y 8 + PC 2 x 49 + g 8
    assert (d.offline, d.online, d.rounds) == (57, 114, 3) and d.total() == 171  # was 223
    r = ours.relu(1, 64)    # fused: g and X g (16) and the re-randomisation (8)
    assert (r.offline, r.online, r.rounds) == (57, 130, 4) and r.total() == 187  # was 271
    d16 = ours.drelu(1, 16)
    assert (d16.offline, d16.online) == (12 + 8, 8 + 2 * 13 + 8)
    m = ours.mult(1)
    assert (m.offline, m.online, m.rounds) == (16, 32, 2)
    r16 = ours.relu(1, 16)   # below 64 bits: DReLU, then a Beaver product
    assert (r16.offline, r16.online) == (d16.offline + m.offline, d16.online + m.online)
    for f, args in [(ours.drelu, (64,)), (ours.relu, (64,)), (ours.relu, (16,)),
                    (ours.share_convert, ()), (ours.compute_msb, ())]:
        assert f(1000, *args) == f(1, *args) * 1000  # linear in the element count
    # one 8 x 8 channel of 4 x 4 patches: 4 DReLUs, 64 gated activations
    assert ours.block_relu([[4, 4]], 1, 8, 8, 16) == ours.drelu(4, 16) + ours.scalar_mult(64, 4)
    # at 64 bits a (1, 1) channel is a fused ReLU, below it a DReLU and a Beaver product
    mixed = [[1, 1], [4, 4], [0, 1]]
    assert ours.block_relu(mixed, 2, 8, 8) == ours.drelu(2 * (64 + 4)) + \
        ours.fused_product(2 * 64) + ours.scalar_mult(2 * 64, 2 * 4)
    assert ours.block_relu([[1, 1]] * 3, 2, 8, 8) == ours.relu(2 * 3 * 64)
    assert ours.block_relu([[1, 1]] * 3, 2, 8, 8, 16) == ours.relu(2 * 3 * 64, 16)
    sc, cm = ours.share_convert(1), ours.compute_msb(1)
    assert (sc.online, sc.offline, sc.rounds) == (16 + 49 + 16 + 2 * 50, 0, 4)
    assert (cm.online, cm.offline, cm.rounds) == (16 + 8 + 2 * 50, 49, 3)
    assert ours.drelu_securenn(1).online > ours.drelu(1).online
    c = ours.conv2d(100, 50, 30)
    assert (c.online, c.offline, c.session) == (0, 1040, 400)
    assert ours.share_input(100).online == 800
    assert ours.conv2d(100, 50, 30, first_use=False).session == 0
    assert ours.max_pool2d(1, 9) == ours.relu(4) + ours.relu(2) + ours.relu(1) + ours.relu(1)


def test_ours_steps_add_up():
    """The per-step profile partitions the bytes: per (phase, src, dst) its sum is the part."""
    c = ours.relu(1000) + ours.block_relu([[2, 2], [0, 1]], 2, 8, 8, 16) + \
        ours.conv2d(100, 50, 30) * 2
    summed = {}
    for (step, phase, src, dst), v in c.steps.items():
        assert step, 'every byte of ours is tagged with its protocol step'
        summed[(phase, src, dst)] = summed.get((phase, src, dst), 0) + v
    assert summed == dict(c.parts)
