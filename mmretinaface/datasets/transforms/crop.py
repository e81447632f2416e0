"""RetinaFace's square crop (landmark aware) and its pad-if-failed companion."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.registry import TRANSFORMS

from ._utils import boxes_like, boxes_to_numpy, num_instances, record_homography, select_instances

#: Reference crop sizes, as fractions of the image's short side.
REFERENCE_SCALES = (0.3, 0.45, 0.6, 0.8, 1.0)


@TRANSFORMS.register_module()
class RandomSquareCrop(BaseTransform):
    """Random square crop of RetinaFace (``_crop`` in the reference).

    Up to ``max_tries`` times: pick a side ``int(scale * short_side)`` with
    ``scale`` uniform over ``scales`` and a uniform top-left corner; accept
    the window when some usable face (not ignored, positive size) lies fully
    inside it (iof >= 1). On acceptance the image is cropped, faces whose
    centre is strictly inside the window are kept (ignored ones too, they
    stay ignored), boxes are clipped to the window, and landmarks are shifted
    and clamped to ``[0, side]`` (``outside_landmarks='clamp'``, the
    reference) or, with ``'invisible'``, also get visibility 0 when they fell
    outside. When no window is accepted (or there is no usable face) nothing
    changes and ``results['crop_failed'] = True`` so that
    :class:`PadToSquareIfCropFailed` squares the image instead.

    Required keys: ``img``, ``gt_bboxes``; optional ``gt_bboxes_labels``,
    ``gt_ignore_flags``, ``gt_keypoints``, ``gt_keypoints_visible``.
    Modified: ``img``, ``img_shape`` and all instance keys (kept aligned).
    Added: ``crop_failed``, ``homography_matrix``.

    Args:
        scales: crop sides as fractions of the short side.
        max_tries: windows sampled before giving up.
        outside_landmarks: ``'clamp'`` or ``'invisible'``.
    """

    def __init__(self, scales: Sequence[float] = REFERENCE_SCALES, max_tries: int = 250,
                 outside_landmarks: str = 'clamp') -> None:
        if outside_landmarks not in ('clamp', 'invisible'):
            raise ValueError("outside_landmarks must be 'clamp' or 'invisible', "
                             f'got {outside_landmarks!r}')
        if not scales or any(not 0 < s <= 1 for s in scales):
            raise ValueError(f'scales must be in (0, 1], got {scales}')
        self.scales = tuple(float(s) for s in scales)
        self.max_tries = int(max_tries)
        self.outside_landmarks = outside_landmarks

    def _sample_window(self, width: int, height: int,
                       boxes: np.ndarray) -> Optional[Tuple[int, int, int]]:
        """``(left, top, side)`` of an accepted window, or ``None``.

        Uses the global ``np.random`` state, which mmengine seeds per process
        and per dataloader worker (as mmdet's own random transforms do).
        """
        short_side = min(width, height)
        randint = np.random.randint  # noqa: NPY002
        for _ in range(self.max_tries):
            scale = self.scales[randint(len(self.scales))]
            side = int(scale * short_side)
            left = 0 if width == side else int(randint(width - side))
            top = 0 if height == side else int(randint(height - side))
            inside = ((boxes[:, 0] >= left) & (boxes[:, 1] >= top)
                      & (boxes[:, 2] <= left + side) & (boxes[:, 3] <= top + side))
            if inside.any():
                return left, top, side
        return None

    def transform(self, results: dict) -> dict:
        img = results['img']
        height, width = img.shape[:2]
        n = num_instances(results)
        boxes = boxes_to_numpy(results['gt_bboxes']) if n else np.zeros((0, 4), np.float32)
        ignored = np.asarray(results.get('gt_ignore_flags', np.zeros(n, bool)), dtype=bool)
        usable = ~ignored & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        window = self._sample_window(width, height, boxes[usable]) if usable.any() else None
        if window is None:
            results['crop_failed'] = True
            return results
        left, top, side = window
        right, bottom = left + side, top + side

        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        keep = ((centres[:, 0] > left) & (centres[:, 0] < right)
                & (centres[:, 1] > top) & (centres[:, 1] < bottom))
        select_instances(results, keep)
        kept = boxes[keep]
        kept[:, 0::2] = np.clip(kept[:, 0::2], left, right) - left
        kept[:, 1::2] = np.clip(kept[:, 1::2], top, bottom) - top
        results['gt_bboxes'] = boxes_like(kept, results['gt_bboxes'])

        if results.get('gt_keypoints') is not None:
            kps = results['gt_keypoints'] - np.array([left, top], dtype=np.float32)
            if self.outside_landmarks == 'invisible' and 'gt_keypoints_visible' in results:
                outside = ((kps < 0) | (kps > side)).any(axis=-1)
                vis = results['gt_keypoints_visible'].copy()
                vis[outside] = 0
                results['gt_keypoints_visible'] = vis
            results['gt_keypoints'] = np.clip(kps, 0, side).astype(np.float32)

        results['img'] = img[top:bottom, left:right]
        results['img_shape'] = results['img'].shape[:2]
        results['crop_failed'] = False
        record_homography(results, np.array([[1, 0, -left], [0, 1, -top], [0, 0, 1]]))
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(scales={self.scales}, max_tries={self.max_tries}, '
                f'outside_landmarks={self.outside_landmarks!r})')


@TRANSFORMS.register_module()
class PadToSquareIfCropFailed(BaseTransform):
    """Pad bottom/right to a square with the mean colour, only if the crop failed.

    Reads ``results['crop_failed']`` (missing means the crop did not fail,
    so nothing is padded). Boxes and landmarks do not move (the origin stays
    top-left). Modifies ``img`` and ``img_shape``; adds ``pad_to_square``
    (whether it padded).

    Args:
        pad_val: fill colour in the image's channel order (BGR mean of the
            reference by default).
    """

    def __init__(self, pad_val: Sequence[float] = (104, 117, 123)) -> None:
        self.pad_val = tuple(float(v) for v in pad_val)

    def transform(self, results: dict) -> dict:
        results['pad_to_square'] = False
        if not results.get('crop_failed', False):
            return results
        img = results['img']
        height, width = img.shape[:2]
        side = max(height, width)
        if height == width:
            return results
        padded = np.empty((side, side) + img.shape[2:], dtype=img.dtype)
        fill = np.asarray(self.pad_val, dtype=np.float64)
        padded[...] = fill if img.ndim == 3 and img.shape[2] == len(fill) else fill[0]
        padded[:height, :width] = img
        results['img'] = padded
        results['img_shape'] = padded.shape[:2]
        results['pad_to_square'] = True
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(pad_val={self.pad_val})'
