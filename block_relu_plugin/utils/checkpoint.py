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
plugin imported therefore load through the restricted unpickler.

Every local checkpoint mmengine loads (``tools/test.py``, ``load_from``,
``--resume``, :func:`block_relu_plugin.utils.config.build_model`, secure
inference, the distillation teacher) goes through :func:`load_checkpoint_file`,
installed as mmengine's local loader. It never turns the restricted unpickler
off itself, and its failures are one :class:`CheckpointError` line: a file that
is no checkpoint at all is named as such, and a checkpoint that needs a global
outside the allowlist (e.g. one written by a runner without the plugin) is
refused by name; torch's own advice to retry with ``weights_only=False`` is not
passed on. A user who trusts such a file sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``
(torch then unpickles fully, since the plugin never passes ``weights_only``).
"""
import os
import pickle
import re
import zipfile
from typing import List

import numpy as np
import torch

#: What a user who trusts a refused checkpoint can do (torch honours it because
#: the plugin leaves ``weights_only`` at its default).
TRUST_HINT = 'if you trust its source, set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1'

# The restricted unpickler's messages for a global it will not resolve.
_REFUSED_GLOBAL = re.compile(
    r'GLOBAL (\S+) (?:was not an allowed global|whose module \S+ is blocked)')


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded (names the file, the reason and the fix)."""


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


def load_checkpoint_file(filename, map_location=None):
    """``torch.load`` a local checkpoint with torch's restricted unpickler; failures as one line.

    A drop-in for mmengine's ``load_from_local`` (see
    :func:`register_checkpoint_loader`).

    Raises:
        FileNotFoundError: if there is no such file.
        CheckpointError: if the file is not a readable checkpoint, or needs a
            global outside the allowlist (named, with what to do if trusted).
    """
    path = os.path.expanduser(os.fspath(filename))
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint {path!r} does not exist or is not a file')
    try:
        return torch.load(path, map_location=map_location)
    except OSError:
        raise  # permissions and the like: the OS message names the file
    except pickle.UnpicklingError as e:  # the restricted unpickler refused something
        refused = _refused_globals(path, str(e))
        if refused:
            names = ', '.join(repr(g) for g in refused)
            raise CheckpointError(
                f'checkpoint {path!r} needs {names}, outside the allowlist of safe globals: it is '
                f'refused because loading it could run code; {TRUST_HINT}') from None
        reason = ' '.join(_unpickler_reason(str(e)).split())
        if _is_torch_zip(path):  # a real torch.save file, with content outside the safe subset
            raise CheckpointError(
                f'checkpoint {path!r} holds data the restricted unpickler does not read '
                f'({reason}): it is refused because loading it could run code; {TRUST_HINT}') \
                from None
        raise CheckpointError(_unreadable(path, reason)) from None
    except Exception as e:  # noqa: B902 -- garbage makes torch.load raise almost anything
        reason = f'{type(e).__name__}: {e}' if str(e) else type(e).__name__
        if os.path.getsize(path) == 0:
            reason = 'empty file'
        raise CheckpointError(_unreadable(path, reason)) from None


def register_checkpoint_loader() -> None:
    """Make :func:`load_checkpoint_file` mmengine's loader of local checkpoint paths."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=load_checkpoint_file, force=True)


def _refused_globals(path: str, message: str) -> List[str]:
    """The globals outside the allowlist: all of them for a zip checkpoint, else the first."""
    found = _REFUSED_GLOBAL.findall(message)
    if not found:
        return []
    try:  # a static listing names every one, not only the first the unpickler met
        listed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: B902 -- legacy format: the message's one will do
        listed = []
    return sorted(set(listed)) or found[:1]


def _is_torch_zip(path: str) -> bool:
    """Whether ``path`` is a zip archive holding a pickle, as ``torch.save`` writes."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith('/data.pkl') or n == 'data.pkl' for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _unpickler_reason(message: str) -> str:
    # torch wraps the unpickler's reason in advice to retry with weights_only=False
    reason = message.split('WeightsUnpickler error:', 1)[-1]
    return reason.split('Check the documentation of torch.load', 1)[0]


def _unreadable(path: str, reason: str) -> str:
    reason = ' '.join(reason.split()).split('. ')[0]  # torch's first sentence says what failed
    if len(reason) > 160:
        reason = reason[:157] + '...'
    return (f'{path!r} is not a readable PyTorch checkpoint ({reason}): '
            're-download or re-train it')
