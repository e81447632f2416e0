"""Packing that keeps landmarks."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from mmdet.datasets.transforms import PackDetInputs
from mmdet.registry import TRANSFORMS

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

    The image is transposed to CHW with numpy: the same tensor as mmdet's,
    but torch's CPU ``permute().contiguous()`` took ~30 ms for a 640x640
    float image here, numpy ~1 ms.

    Args:
        meta_keys: metainfo keys to pack.
        channels_last: pack the image as the ``(C, H, W)`` view of its
            ``(H, W, C)`` array (no copy; memory stays channels-last), for a
            data preprocessor that writes channels-last batches
            (:class:`~mmretinaface.apis.optimize.ChannelsLastDetDataPreprocessor`,
            which ``FaceInferencer``'s optimized CPU model has: it then reads
            pixels in memory order instead of transposing them back). Same
            values and shape; ``DetDataPreprocessor`` also accepts it.
    """

    mapping_table = {
        **PackDetInputs.mapping_table,
        'gt_keypoints': 'keypoints',
        'gt_keypoints_visible': 'keypoints_visible',
    }

    def __init__(self, meta_keys: Sequence[str] = DEFAULT_META_KEYS,
                 channels_last: bool = False) -> None:
        super().__init__(meta_keys=tuple(meta_keys))
        self.channels_last = channels_last

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
            if self.channels_last:  # a view: HWC memory, CHW shape
                if not (img.flags.c_contiguous and img.flags.writeable):
                    img = img.copy(order='C')  # flipped views, read-only arrays
                packed['inputs'] = torch.from_numpy(img).permute(2, 0, 1)
            else:
                packed['inputs'] = torch.from_numpy(
                    np.ascontiguousarray(img.transpose(2, 0, 1)))
        return packed

    def __repr__(self) -> str:
        return f'{super().__repr__()[:-1]}, channels_last={self.channels_last})'
