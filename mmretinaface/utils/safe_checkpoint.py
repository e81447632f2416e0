"""Let weights-only ``torch.load`` read MMEngine runner checkpoints.

torch >= 2.6 loads with ``weights_only=True`` by default and mmengine 0.10
calls ``torch.load`` without the argument, so resuming (and ``load_from`` of a
runner checkpoint) fails on what a runner checkpoint stores besides tensors:

* ``message_hub.log_scalars``: ``HistoryBuffer`` objects holding numpy arrays
  (``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``
  and the dtype classes it BUILDs, e.g. ``numpy.dtypes.Float64DType``);
  ``HistoryBuffer.__getstate__`` also pickles its statistics methods
  (``HistoryBuffer.min`` ...) as ``builtins.getattr(HistoryBuffer, 'min')``;
* ``message_hub.runtime_info``: numpy scalars such as ``eta``
  (``numpy._core.multiarray.scalar``).

We allow-list exactly those instead of turning safe loading off for every file
a user hands us. ``getattr`` is the dangerous one: it is allow-listed as a
restricted stand-in that only returns ``HistoryBuffer``'s registered statistics
methods and refuses everything else, so a crafted checkpoint cannot reach any
other attribute through it.
"""
from typing import Any, Callable, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

#: numpy scalar types whose dtype classes may appear in a checkpoint.
_NUMPY_TYPES = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                np.uint64, np.float16, np.float32, np.float64)

#: ``HistoryBuffer``'s default statistics (its class registry fills on first use).
_DEFAULT_STATISTICS = frozenset({'min', 'max', 'current', 'mean'})

SafeGlobal = Union[Callable, Tuple[Callable, str]]


def history_buffer_getattr(obj: Any, name: str) -> Callable:
    """``getattr`` for unpickling, limited to ``HistoryBuffer``'s statistics methods."""
    if obj is HistoryBuffer and isinstance(name, str) and (
            name in _DEFAULT_STATISTICS or name in HistoryBuffer._statistics_methods):
        return getattr(HistoryBuffer, name)
    raise torch.serialization.pickle.UnpicklingError(
        f'refusing getattr({obj!r}, {name!r}) while loading a checkpoint: only '
        'HistoryBuffer statistics methods are allowed')


def _numpy_globals() -> List[SafeGlobal]:
    """The numpy callables and types that pickled arrays and scalars reference.

    Registered under both module spellings (``numpy._core`` for numpy 2,
    ``numpy.core`` for checkpoints written with numpy 1).
    """
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    out: List[SafeGlobal] = [np.ndarray, np.dtype]
    for fn in (multiarray._reconstruct, multiarray.scalar):
        for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
            out.append((fn, f'{module}.{fn.__name__}'))
    dtype_classes = {type(np.dtype(t)) for t in _NUMPY_TYPES}
    for cls in dtype_classes:
        if cls is not np.dtype:  # numpy < 1.20: plain np.dtype instances
            out.append(cls)
    return out


def runner_checkpoint_globals() -> List[SafeGlobal]:
    """Everything :func:`allow_runner_checkpoint_globals` registers."""
    return [HistoryBuffer, (history_buffer_getattr, 'builtins.getattr'), *_numpy_globals()]


def allow_runner_checkpoint_globals() -> None:
    """Allow-list the types MMEngine runner checkpoints contain (idempotent).

    Process-wide (``torch.serialization.add_safe_globals``): every later
    ``torch.load`` with the default ``weights_only=True`` reads runner
    checkpoints, and still refuses any other pickled object.
    """
    torch.serialization.add_safe_globals(runner_checkpoint_globals())
