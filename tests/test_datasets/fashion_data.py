"""The real-data fixture of these tests (not a conftest.py: other test folders
import names from the top-level ``conftest`` module, which a second conftest.py
would shadow)."""
import pytest

from block_relu_plugin.datasets.idx import FASHION_MNIST_ROOT, IDXError, load_fashion_mnist


@pytest.fixture(scope='session')
def fashion_mnist():
    """The real Fashion-MNIST arrays; FAILS (not skips) with the install hint if absent."""
    try:
        return {split: load_fashion_mnist(FASHION_MNIST_ROOT, split) for split in ('train', 'test')}
    except IDXError as e:
        pytest.fail(f'Fashion-MNIST is required (tools/setup_env.sh installs it): {e}')
