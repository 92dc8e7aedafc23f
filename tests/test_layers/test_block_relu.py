import numpy as np
import pytest
import torch

from block_relu_plugin.layers import BlockReLU, num_drelus


def reference_block_relu(x, sizes):
    """Straightforward per-patch Block-ReLU (METHOD.md), one patch at a time."""
    y = x.clone()
    _, C, H, W = x.shape
    for c in range(C):
        bh, bw = (int(v) for v in sizes[c])
        if (bh, bw) == (0, 1):
            continue
        if (bh, bw) == (1, 0):
            y[:, c] = 0
            continue
        for i in range(0, H, bh):
            for j in range(0, W, bw):
                patch = x[:, c, i:i + bh, j:j + bw]
                keep = patch.double().mean(dim=(1, 2)) > 0
                y[:, c, i:i + bh, j:j + bw] = patch * keep[:, None, None].to(x.dtype)
    return y


def random_sizes(rng, C, H, W):
    sizes = np.stack([rng.integers(1, H + 3, C), rng.integers(1, W + 3, C)], 1)
    codes = rng.random(C)
    sizes[codes < 0.15] = (0, 1)
    sizes[(codes >= 0.15) & (codes < 0.25)] = (1, 0)
    sizes[(codes >= 0.25) & (codes < 0.4)] = (1, 1)
    return sizes


@pytest.mark.parametrize('seed', range(12))
def test_forward_backward_match_reference(seed):
    rng = np.random.default_rng(seed)
    C, H, W = int(rng.integers(1, 9)), int(rng.integers(1, 13)), int(rng.integers(1, 13))
    sizes = random_sizes(rng, C, H, W)
    torch.manual_seed(seed)
    x = torch.randn(3, C, H, W, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    y = BlockReLU(sizes)(x)
    y_ref = reference_block_relu(x_ref, sizes)
    assert torch.equal(y, y_ref)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    assert torch.equal(x.grad, x_ref.grad)
    # The gate is a constant for autograd: the gradient is the gate itself.
    assert torch.equal(x.grad, g * (y != 0))


def test_special_codes_and_relu():
    x = torch.randn(2, 4, 5, 7)
    y = BlockReLU([[1, 1], [0, 1], [1, 0], [9, 9]])(x)
    assert torch.equal(y[:, 0], torch.relu(x[:, 0]))
    assert torch.equal(y[:, 1], x[:, 1])
    assert torch.equal(y[:, 2], torch.zeros_like(x[:, 2]))
    whole = (x[:, 3].sum(dim=(1, 2)) > 0).float()[:, None, None]
    assert torch.equal(y[:, 3], x[:, 3] * whole)
    assert torch.equal(BlockReLU()(x), torch.relu(x))
    assert torch.equal(BlockReLU([2, 3])(x), BlockReLU([[2, 3]] * 4)(x))


def test_inplace_matches_out_of_place_and_grad():
    sizes = [[2, 2], [1, 1], [0, 1], [3, 1]]
    x = torch.randn(2, 4, 6, 6)
    expected = BlockReLU(sizes)(x)
    a = x.clone().requires_grad_()
    b = a * 1.0
    out = BlockReLU(sizes, inplace=True)(b)
    assert out.data_ptr() == b.data_ptr()
    assert torch.equal(out, expected)
    out.sum().backward()
    assert torch.equal(a.grad, (expected != 0).float())


def test_non_finite_inputs_are_not_hidden():
    x = torch.tensor([[[[float('-inf'), 1.0], [float('nan'), -2.0]]]])
    assert torch.equal(BlockReLU([[1, 1]])(x).nan_to_num(7), torch.relu(x).nan_to_num(7))
    # A NaN makes its patch's sum NaN (not > 0): the patch is gated off, and
    # the NaN stays visible in the output instead of becoming 0.
    y = BlockReLU([[1, 2]])(torch.tensor([[[[float('nan'), 5.0], [1.0, 2.0]]]]))
    assert torch.isnan(y[0, 0, 0, 0]) and y[0, 0, 0, 1] == 0
    assert torch.equal(y[0, 0, 1], torch.tensor([1.0, 2.0]))


def test_float16_gates_match_float32():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 9, 9).half()
    sizes = [[2, 2], [3, 3], [1, 4], [1, 1], [0, 1], [9, 9]]
    y16 = BlockReLU(sizes)(x)
    assert y16.dtype == torch.float16
    assert torch.equal((y16 != 0), BlockReLU(sizes)(x.float()) != 0)
    assert torch.equal(BlockReLU(sizes).gate(x), BlockReLU(sizes).gate(x.float()).half())


def test_no_state_in_state_dict_and_channel_mismatch():
    act = BlockReLU([[2, 2]] * 3)
    assert act.state_dict() == {}
    with pytest.raises(ValueError, match='3 channels'):
        act(torch.randn(1, 4, 4, 4))


@pytest.mark.parametrize('bad', [[[-1, 2]], [[1.5, 2]], [[0, 0]], [[1, 2, 3]], [['a', 'b']]])
def test_bad_block_sizes(bad):
    with pytest.raises(ValueError):
        BlockReLU(bad)


def test_num_drelus():
    sizes = np.array([[1, 1], [2, 2], [3, 2], [0, 1], [1, 0], [8, 8], [100, 1]])
    assert num_drelus(sizes, 7, 5).tolist() == [35, 12, 9, 0, 0, 1, 5]
    assert int(num_drelus((2, 3), 32, 32)) == 16 * 11


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu():
    sizes = random_sizes(np.random.default_rng(1), 5, 9, 11)
    x = torch.randn(2, 5, 9, 11)
    act = BlockReLU(sizes)
    cpu = act(x)
    assert torch.equal(act.cuda()(x.cuda()).cpu(), cpu)


def test_gate_is_mean_greater_than_zero_at_exact_zero():
    """The method gates on mean > 0: a patch summing to exactly 0 is zeroed (the
    secure layer computes the same function, tests/test_mpc/test_protocols.py)."""
    x = torch.tensor([[1., -1.], [-1., 1.], [0., 0.], [2., -1.], [-2., 1.]]).reshape(1, 5, 1, 2)
    y = BlockReLU([[1, 2]] * 5)(x)
    assert torch.equal(y[0, :3], torch.zeros(3, 1, 2))
    assert torch.equal(y[0, 3], x[0, 3]) and torch.equal(y[0, 4], torch.zeros(1, 2))
