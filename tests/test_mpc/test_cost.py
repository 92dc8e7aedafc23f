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
    """Bytes of 8 elements, by hand (bit messages are packed whole, so 8 elements
    make whole bytes). 64 bits: 21 digits of 3 bits (one-hot: 168 bits), tree
    levels of (pairs, with EQ) (10, 10), (5, 5), (3, 2), (1, 1), (1, 0): 38 AND
    corrections and 58 opened bits per party; 16 bits: 5 digits (40 bits),
    levels (2, 2), (1, 1), (1, 0): 7 corrections, 11 opened bits."""
    # offline: dealt bits (168 + 1 + 38) x 8 / 8, [r] 8 x 8, y_0 8 x 8; online: y_1, the
    # tree, e and the re-randomisation of the arithmetic shares
    d = ours.drelu(8, 64)
    assert (d.offline, d.online, d.rounds) == (207 + 64 + 64, 64 + 2 * 58 + 2 + 64, 8)
    r = ours.relu(8, 64)   # fused: [X r] offline instead of nothing; the same re-randomisation
    assert (r.offline, r.online, r.rounds) == (d.offline + 64, d.online, 8)
    assert r.total() / 8 == 80.625  # was 187 with PrivateCompare
    d16 = ours.drelu(8, 16)  # y crosses as 16-bit words
    assert (d16.offline, d16.online, d16.rounds) == (48 + 64 + 16, 16 + 2 * 11 + 2 + 64, 6)
    r16 = ours.relu(8, 16)   # below 64 bits x is a selected multiplicand: [A r], v - A both ways
    assert (r16.offline, r16.online, r16.rounds) == (d16.offline + 128, d16.online + 64, 6)
    m = ours.mult(1)
    assert (m.offline, m.online, m.rounds) == (16, 32, 2)
    for f, args in [(ours.drelu, (64,)), (ours.relu, (64,)), (ours.relu, (16,))]:
        assert f(8000, *args) == f(8, *args) * 1000  # linear in whole bytes of bits
    assert ours.drelu(1).total() == 8 + 8 + 8 + 8 + 2 * sum(  # ceil per message
        (b + 7) // 8 for b in (30, 15, 8, 3, 2)) + 2 + 26  # ring [r], y, y, R; dealt 207 bits
    # one 8 x 8 channel of 4 x 4 patches: 4 DReLUs gating 64 activations
    assert ours.block_relu([[4, 4]], 1, 8, 8, 16) == ours.compare(4, 16, selected=64)
    # at 64 bits a (1, 1) channel is a fused ReLU, below it a selected multiplicand
    mixed = [[1, 1], [4, 4], [0, 1]]
    assert ours.block_relu(mixed, 2, 8, 8) == ours.compare(
        2 * (64 + 4), 64, fused=2 * 64, selected=2 * 64, groups=[64, 4, 64, 4])
    # bit messages pad per channel: the 4 patches of a channel take 4 x 207 / 8 -> 104 B
    dealt = ('DReLU: dealt bits (leaves, MSB(X), AND triples)', 'offline', 'helper', 'server')
    assert ours.block_relu([[4, 4]] * 3, 1, 8, 8).steps[dealt] == 3 * 104
    assert ours.block_relu([[1, 1]] * 3, 2, 8, 8) == ours.relu(2 * 3 * 64)
    assert ours.block_relu([[1, 1]] * 3, 2, 8, 8, 16) == ours.relu(2 * 3 * 64, 16)
    sc, cm = ours.share_convert(1), ours.compute_msb(1)
    assert (sc.online, sc.offline, sc.rounds) == (16 + 49 + 16 + 2 * 50, 0, 4)
    assert (cm.online, cm.offline, cm.rounds) == (16 + 8 + 2 * 50, 49, 3)
    assert ours.drelu_securenn(8).total() > 3 * ours.drelu(8).total()
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
