"""Let weights-only ``torch.load`` read MMEngine runner checkpoints.

torch >= 2.6 loads with ``weights_only=True`` by default and mmengine 0.10
calls ``torch.load`` without the argument, so resuming fails on the numpy
scalars/arrays and ``HistoryBuffer`` objects a runner checkpoint stores. We
allow-list exactly those types instead of turning safe loading off for every
file a user hands us.
"""
import numpy as np
import torch


def _numpy_globals() -> list:
    """The numpy callables and types that pickled arrays and scalars reference."""
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in (
        np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8,
        np.uint16, np.uint32, np.uint64, np.bool_)]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes]


def allow_runner_checkpoint_globals() -> None:
    """Allow-list the types MMEngine runner checkpoints contain (idempotent)."""
    from mmengine.logging import HistoryBuffer
    torch.serialization.add_safe_globals([HistoryBuffer, *_numpy_globals()])
