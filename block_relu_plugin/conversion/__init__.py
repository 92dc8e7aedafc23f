from .convert import convert_block_relu, maxpool_to_avgpool, relu6_to_relu
from .sites import ReLUSite, count_relus, find_relu_sites, run_tensor_forward
from .split import split_reused_relus

__all__ = [
    'ReLUSite', 'find_relu_sites', 'count_relus', 'run_tensor_forward',
    'split_reused_relus', 'convert_block_relu', 'maxpool_to_avgpool', 'relu6_to_relu'
]
