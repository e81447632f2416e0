"""Packing that keeps landmarks."""
from __future__ import annotations

from typing import Sequence

import torch
from mmdet.datasets.transforms import PackDetInputs
from mmdet.registry import TRANSFORMS

from ...utils.image_io import hwc_to_chw

DEFAULT_META_KEYS = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                     'flip_direction', 'crop_failed')


@TRANSFORMS.register_module()
class PackFaceInputs(PackDetInputs):
    """mmdet ``PackDetInputs`` that also packs landmarks.

    ``gt_keypoints`` -> ``gt_instances.keypoints`` float32 ``(N, K, 2)`` and
    ``gt_keypoints_visible`` -> ``gt_instances.keypoints_visible`` float32
    ``(N, K)``; ignored faces (``gt_ignore_flags``) go to
    ``ignored_instances`` with their landmarks. Meta keys missing from the
    results are skipped (mmdet behaviour), so the default ``meta_keys``
    (mmdet's plus ``crop_failed``) suit train and test pipelines.

    The image becomes the same CHW tensor as mmdet's, through the faster
    :func:`~mmretinaface.utils.image_io.hwc_to_chw`.
    """

    mapping_table = {
        **PackDetInputs.mapping_table,
        'gt_keypoints': 'keypoints',
        'gt_keypoints_visible': 'keypoints_visible',
    }

    def __init__(self, meta_keys: Sequence[str] = DEFAULT_META_KEYS) -> None:
        super().__init__(meta_keys=tuple(meta_keys))

    def transform(self, results: dict) -> dict:
        img = results.pop('img', None)
        try:
            packed = super().transform(results)
        finally:
            if img is not None:
                results['img'] = img
        if img is not None:
            if img.ndim < 3:
                img = img[..., None]
            packed['inputs'] = torch.from_numpy(hwc_to_chw(img))
        return packed

