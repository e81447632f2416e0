"""Helpers shared by the face transforms: instance selection, box <-> numpy."""
from __future__ import annotations

from typing import Union

import numpy as np
from mmdet.structures.bbox import BaseBoxes

#: Per-instance result keys that must stay aligned when faces are dropped.
INSTANCE_KEYS = ('gt_bboxes', 'gt_bboxes_labels', 'gt_ignore_flags', 'gt_keypoints',
                 'gt_keypoints_visible')

BoxesLike = Union[BaseBoxes, np.ndarray]


def boxes_to_numpy(boxes: BoxesLike) -> np.ndarray:
    """``(N, 4)`` float32 copy of ``BaseBoxes`` or an array."""
    if isinstance(boxes, BaseBoxes):
        return boxes.tensor.detach().cpu().numpy().astype(np.float32).reshape(-1, 4)
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()


def boxes_like(array: np.ndarray, like: BoxesLike) -> BoxesLike:
    """Wrap ``array`` in the same type (box class, dtype, device) as ``like``."""
    if isinstance(like, BaseBoxes):
        return type(like)(like.tensor.new_tensor(array))
    return np.asarray(array, dtype=np.float32)


def num_instances(results: dict) -> int:
    """Number of faces in ``results`` (0 when nothing is loaded)."""
    for key in INSTANCE_KEYS:
        if results.get(key) is not None:
            return len(results[key])
    return 0


def select_instances(results: dict, keep: np.ndarray) -> None:
    """Index every per-instance key with the boolean mask ``keep`` (in place)."""
    keep = np.asarray(keep, dtype=bool)
    for key in INSTANCE_KEYS:
        if results.get(key) is not None:
            results[key] = results[key][keep]


def record_homography(results: dict, matrix: np.ndarray) -> None:
    """Compose ``matrix`` onto ``results['homography_matrix']`` as mmdet does."""
    matrix = matrix.astype(np.float32)
    previous = results.get('homography_matrix')
    results['homography_matrix'] = matrix if previous is None else matrix @ previous
