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
    for b in (64, 16):
        d = ours.drelu(1, b)
        assert d.online == 2 * b + 16 and d.offline == b + 15
        r = ours.relu(1, b)
        assert r.online == 2 * b + 48 and r.offline == b + 31
    m = ours.mult(1)
    assert (m.online, m.offline) == (32, 16)
    assert ours.block_relu([[4, 4]], 1, 8, 8, 16).online == 4 * (32 + 16 + 16) + 64 * 16
    sc, cm = ours.share_convert(1), ours.compute_msb(1)
    assert (sc.online, sc.offline, sc.rounds) == (226, 0, 4)
    assert (cm.online, cm.offline, cm.rounds) == (154, 72, 3)
    assert ours.drelu_securenn(1).online == 380 > ours.drelu(1).online
    c = ours.conv2d(100, 50, 30)
    assert (c.online, c.offline, c.session) == (0, 1040, 400)
    assert ours.share_input(100).online == 800
    assert ours.conv2d(100, 50, 30, first_use=False).session == 0
    assert ours.max_pool2d(1, 9).total() == ours.relu(8).total()
