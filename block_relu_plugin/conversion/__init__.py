from .convert import convert_block_relu, maxpool_to_avgpool, relu6_to_relu
from .sites import (NoSitesError, ReLUSite, SiteError, TraceError, count_relus, find_relu_sites,
                    run_tensor_forward)
from .split import ReLUCalls, split_and_find_sites, split_reused_relus

__all__ = [
    'ReLUSite', 'find_relu_sites', 'count_relus', 'run_tensor_forward', 'NoSitesError',
    'SiteError', 'TraceError', 'split_reused_relus', 'split_and_find_sites', 'ReLUCalls',
    'convert_block_relu', 'maxpool_to_avgpool', 'relu6_to_relu'
]
