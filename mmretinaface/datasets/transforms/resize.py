"""Resizes that also scale landmarks."""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.datasets.transforms import Resize
from mmdet.registry import TRANSFORMS

from ._utils import record_homography

#: The reference's five OpenCV interpolations (LINEAR, CUBIC, AREA, NEAREST, LANCZOS4).
REFERENCE_INTERPOLATIONS = ('bilinear', 'bicubic', 'area', 'nearest', 'lanczos')


def _scale_keypoints(results: dict, sx: float, sy: float) -> None:
    if results.get('gt_keypoints') is not None:
        scale = np.array([sx, sy], dtype=np.float32)
        results['gt_keypoints'] = (results['gt_keypoints'] * scale).astype(np.float32)


@TRANSFORMS.register_module()
class RandomInterpResize(BaseTransform):
    """Resize to a fixed ``img_dim`` (square by default) with a random interpolation.

    The last step of the reference training augmentation: the image is
    stretched to ``img_dim x img_dim`` with one of ``interpolations`` chosen
    uniformly; boxes and landmarks are scaled by ``sx = W' / W``,
    ``sy = H' / H``. Modifies ``img``, ``img_shape``, ``gt_bboxes``,
    ``gt_keypoints``; adds ``scale``, ``scale_factor`` ``(sx, sy)``,
    ``keep_ratio`` (False), ``interpolation`` and ``homography_matrix``.

    Args:
        img_dim: output side, or ``(width, height)``.
        interpolations: mmcv interpolation names to choose from.
    """

    def __init__(self, img_dim: Union[int, Tuple[int, int]] = 640,
                 interpolations: Sequence[str] = REFERENCE_INTERPOLATIONS) -> None:
        self.size = (img_dim, img_dim) if isinstance(img_dim, int) else tuple(img_dim)
        if len(self.size) != 2 or min(self.size) <= 0:
            raise ValueError(f'img_dim must be a positive int or (w, h), got {img_dim}')
        if not interpolations:
            raise ValueError('interpolations must not be empty')
        self.interpolations = tuple(interpolations)

    def transform(self, results: dict) -> dict:
        img = np.ascontiguousarray(results['img'])
        height, width = img.shape[:2]
        # global np.random: seeded by mmengine per process / dataloader worker
        interpolation = self.interpolations[np.random.randint(len(self.interpolations))]  # noqa: NPY002
        out_w, out_h = self.size
        results['img'] = mmcv.imresize(img, (out_w, out_h), interpolation=interpolation,
                                       backend='cv2')
        sx, sy = out_w / width, out_h / height
        results['img_shape'] = results['img'].shape[:2]
        results['scale'] = (out_w, out_h)
        results['scale_factor'] = (sx, sy)
        results['keep_ratio'] = False
        results['interpolation'] = interpolation
        if results.get('gt_bboxes') is not None and len(results['gt_bboxes']):
            boxes = results['gt_bboxes']
            if isinstance(boxes, np.ndarray):
                results['gt_bboxes'] = (boxes * np.array([sx, sy, sx, sy], np.float32))
            else:
                boxes.rescale_((sx, sy))
        _scale_keypoints(results, sx, sy)
        record_homography(results, np.array([[sx, 0, 0], [0, sy, 0], [0, 0, 1]]))
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(img_dim={self.size}, '
                f'interpolations={self.interpolations})')


@TRANSFORMS.register_module()
class ResizeWithLandmarks(Resize):
    """mmdet ``Resize`` that also scales ``gt_keypoints`` (no clipping).

    Use it where mmdet's ``Resize`` would see loaded landmarks (e.g. a test
    pipeline that loads annotations before resizing). Same arguments as
    ``Resize``; the keypoint scale is the actual ``W'/W``, ``H'/H``. An image
    whose size does not change is passed on without a copy.
    """

    def _resize_img(self, results: dict) -> None:
        """mmdet's, but an image that keeps its size is kept as is, not copied by
        ``cv2.resize`` (the test pipelines' ``scale_factor=1.0``: every image)."""
        img = results.get('img')
        if img is not None:
            height, width = img.shape[:2]
            size = (mmcv.rescale_size((width, height), results['scale']) if self.keep_ratio
                    else tuple(results['scale']))
            if size == (width, height):
                results['img_shape'] = img.shape[:2]
                results['scale_factor'] = (1.0, 1.0)
                results['keep_ratio'] = self.keep_ratio
                return
        super()._resize_img(results)

    def transform(self, results: dict) -> dict:
        height, width = results['img'].shape[:2]
        results = super().transform(results)
        new_h, new_w = results['img'].shape[:2]
        _scale_keypoints(results, new_w / width, new_h / height)
        return results
