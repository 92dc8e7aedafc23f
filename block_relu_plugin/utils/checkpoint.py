"""Load mmengine runner checkpoints with torch's safe (``weights_only``) unpickler.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7
does not pass ``weights_only``, so ``tools/test.py`` and ``--resume`` fail on
runner checkpoints: they contain a few non-tensor objects (mmengine's
``HistoryBuffer`` in the message hub, numpy arrays and scalars).

Trust model: rather than turning the restricted unpickler off (which would let
a checkpoint from someone else run code), the plugin adds exactly those data
classes to torch's allowlist, and makes ``HistoryBuffer`` pickle its data only:
upstream it also pickles its statistics functions, which unpickling resolves
through ``builtins.getattr``, a global that must never be allowlisted (it
reaches any attribute of any allowed object). Checkpoints written with the
plugin imported therefore load through the restricted unpickler. A checkpoint
that needs anything else (e.g. one written by a runner without the plugin)
still fails with torch's error naming the global, and should only be loaded
with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` if it comes from a trusted source.
"""
import numpy as np
import torch


def checkpoint_safe_globals() -> list:
    """The globals that mmengine runner checkpoints need besides tensors."""
    from mmengine.logging import HistoryBuffer
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    dtypes = [type(np.dtype(t)) for t in
              ('float64', 'float32', 'float16', 'int64', 'int32', 'int16', 'int8',
               'uint8', 'bool')]
    return [HistoryBuffer, np.ndarray, np.dtype, multiarray._reconstruct,
            multiarray.scalar, *dtypes]


def _history_buffer_getstate(self) -> dict:
    # Data only; __setstate__ restores the (class-level) statistics methods.
    state = dict(self.__dict__)
    state.pop('statistics_methods', None)
    return state


def register_checkpoint_safe_globals() -> None:
    """Allowlist :func:`checkpoint_safe_globals` and make HistoryBuffer pickle data only."""
    from mmengine.logging import HistoryBuffer
    HistoryBuffer.__getstate__ = _history_buffer_getstate
    torch.serialization.add_safe_globals(checkpoint_safe_globals())
