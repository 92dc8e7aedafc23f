from .block_relu import IDENTITY, RELU, ZERO, BlockReLU, check_block_sizes, num_drelus

__all__ = ['BlockReLU', 'num_drelus', 'check_block_sizes', 'IDENTITY', 'RELU', 'ZERO']
