"""Small helpers shared across the package."""
from typing import Any, Optional

import numpy as np


def to_numpy(value: Any, dtype: Optional[np.dtype] = None) -> np.ndarray:
    """Tensor (any device), mmdet boxes (``.tensor``) or array-like -> numpy array."""
    if hasattr(value, 'tensor') and not isinstance(value, np.ndarray):  # mmdet BaseBoxes
        value = value.tensor
    if hasattr(value, 'detach'):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)
