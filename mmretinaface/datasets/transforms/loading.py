"""Annotation loading with landmarks."""
from __future__ import annotations

from typing import Optional

import numpy as np
from mmdet.datasets.transforms import LoadAnnotations
from mmdet.registry import TRANSFORMS


@TRANSFORMS.register_module()
class LoadFaceAnnotations(LoadAnnotations):
    """mmdet ``LoadAnnotations`` that also loads landmarks.

    Reads each instance's ``keypoints`` ``(K, 2)`` and ``keypoints_visible``
    ``(K,)`` into ``gt_keypoints`` float32 ``(N, K, 2)`` and
    ``gt_keypoints_visible`` float32 ``(N, K)``. Instances without
    ``keypoints`` get zeros with visibility 0, so box-only data also works.

    Args:
        with_keypoints: load the landmarks (default True).
        num_keypoints: ``K`` used when it cannot be read from the instances
            (no faces); falls back to ``results['num_keypoints']``, then 5.
        **kwargs: mmdet ``LoadAnnotations`` arguments (``with_bbox``,
            ``with_label``, ``box_type``...).
    """

    def __init__(self, with_keypoints: bool = True, num_keypoints: Optional[int] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.with_keypoints = with_keypoints
        self.num_keypoints = num_keypoints

    def _num_keypoints(self, results: dict) -> int:
        for instance in results.get('instances', []):
            if 'keypoints' in instance:
                return int(np.asarray(instance['keypoints']).reshape(-1, 2).shape[0])
        if self.num_keypoints is not None:
            return self.num_keypoints
        return int(results.get('num_keypoints', 5))

    def _load_kps(self, results: dict) -> None:
        """Fill ``gt_keypoints`` and ``gt_keypoints_visible``."""
        instances = results.get('instances', [])
        k = self._num_keypoints(results)
        kps = np.zeros((len(instances), k, 2), dtype=np.float32)
        vis = np.zeros((len(instances), k), dtype=np.float32)
        for i, instance in enumerate(instances):
            if 'keypoints' not in instance:
                continue
            kps[i] = np.asarray(instance['keypoints'], dtype=np.float32).reshape(k, 2)
            if 'keypoints_visible' in instance:
                vis[i] = np.asarray(instance['keypoints_visible'], dtype=np.float32).reshape(k)
            else:
                vis[i] = 1.0
        results['gt_keypoints'] = kps
        results['gt_keypoints_visible'] = vis

    def transform(self, results: dict) -> dict:
        results = super().transform(results)
        if self.with_keypoints:
            self._load_kps(results)
        return results

    def __repr__(self) -> str:
        return (super().__repr__()[:-1] + f', with_keypoints={self.with_keypoints}, '
                f'num_keypoints={self.num_keypoints})')
