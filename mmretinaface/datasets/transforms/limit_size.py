"""Cap the network input size: huge photos are downscaled, results map back through
``scale_factor`` (mmdet's ``rescale=True``)."""
from __future__ import annotations

import numbers
from typing import Optional, Tuple

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.registry import TRANSFORMS

from ._utils import record_homography

#: Longer-side limit of the shipped test pipelines (a 6000x4000 photo runs at 4096x2731).
DEFAULT_MAX_SIZE = 4096


def limited_size(width: int, height: int, max_size: Optional[int]) -> Tuple[int, int]:
    """``(width, height)`` scaled so that the longer side is at most ``max_size``.

    Unchanged when it already fits or ``max_size`` is ``None`` / 0; sides are
    rounded and kept >= 1.
    """
    longer = max(width, height)
    if not max_size or longer <= max_size:
        return width, height
    ratio = max_size / longer
    return (min(max_size, max(1, int(round(width * ratio)))),
            min(max_size, max(1, int(round(height * ratio)))))


@TRANSFORMS.register_module()
class LimitSize(BaseTransform):
    """Downscale images whose longer side exceeds ``max_size`` (aspect ratio kept).

    Bounds time and memory on huge photos; smaller images pass unchanged.
    The applied per-axis scale ``(new_w / w, new_h / h)`` is multiplied into
    ``scale_factor`` (so it composes with an earlier resize), and the
    detector's ``rescale=True`` maps boxes and landmarks back to the pixels of
    the loaded image. Loaded ``gt_bboxes`` / ``gt_keypoints`` are scaled too.
    Modifies ``img``, ``img_shape``, ``scale_factor``, ``homography_matrix``.

    Args:
        max_size: longer-side limit in pixels; ``None`` or 0 disables it.
            ``FaceInferencer(max_size=...)`` and its per-call ``max_size``
            set this value.
        interpolation: mmcv interpolation; ``'area'`` does not alias fine detail.
    """

    def __init__(self, max_size: Optional[int] = DEFAULT_MAX_SIZE,
                 interpolation: str = 'area') -> None:
        check_max_size(max_size)
        self.max_size = max_size
        self.interpolation = interpolation

    def transform(self, results: dict) -> dict:
        img = results['img']
        height, width = img.shape[:2]
        new_w, new_h = limited_size(width, height, self.max_size)
        results.setdefault('scale_factor', (1.0, 1.0))
        if (new_w, new_h) == (width, height):
            return results
        results['img'] = mmcv.imresize(img, (new_w, new_h), interpolation=self.interpolation,
                                       backend='cv2')
        results['img_shape'] = results['img'].shape[:2]
        sx, sy = new_w / width, new_h / height
        prev_x, prev_y = results['scale_factor']
        results['scale_factor'] = (prev_x * sx, prev_y * sy)
        boxes = results.get('gt_bboxes')
        if isinstance(boxes, np.ndarray):
            results['gt_bboxes'] = boxes * np.array([sx, sy, sx, sy], boxes.dtype)
        elif boxes is not None:
            boxes.rescale_((sx, sy))
        if results.get('gt_keypoints') is not None:
            results['gt_keypoints'] = (results['gt_keypoints']
                                       * np.array([sx, sy], np.float32)).astype(np.float32)
        record_homography(results, np.array([[sx, 0, 0], [0, sy, 0], [0, 0, 1]]))
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(max_size={self.max_size}, '
                f'interpolation={self.interpolation!r})')


def check_max_size(max_size: Optional[int]) -> None:
    """ValueError unless ``max_size`` is ``None`` or an int >= 0."""
    if max_size is not None and (isinstance(max_size, bool)
                                 or not isinstance(max_size, numbers.Integral) or max_size < 0):
        raise ValueError(f'max_size must be an int >= 0 (0 or None: no limit), got {max_size!r}')
