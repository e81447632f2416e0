"""Horizontal mirror that also mirrors landmarks and swaps left/right points."""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
from mmdet.datasets.transforms import RandomFlip
from mmdet.registry import TRANSFORMS


# 'RandomFlipWithLandmarks': the name of earlier configs, kept as an alias
@TRANSFORMS.register_module(name=['MirrorWithLandmarks', 'RandomFlipWithLandmarks'])
class MirrorWithLandmarks(RandomFlip):
    """mmdet ``RandomFlip`` (horizontal only) that also mirrors ``gt_keypoints``.

    Boxes follow mmdet (``x1' = W - x2``, the reference's convention) and
    landmarks use ``x' = W - x`` (continuous pixel coordinates, as the
    reference), then points are re-ordered with ``flip_indices`` so that the
    "left eye" is still the one on the image's left: ``new[:, i] =
    old[:, flip_indices[i]]`` for coordinates and visibility alike.

    ``flip_indices`` comes from the constructor when given, else from
    ``results['flip_indices']`` (``WiderFaceDataset`` puts its metainfo there).

    Args:
        prob: flip probability (0.5 in the reference).
        direction: only ``'horizontal'`` is supported.
        flip_indices: optional override of the dataset's ``flip_indices``.
    """

    def __init__(self, prob: float = 0.5, direction: str = 'horizontal',
                 flip_indices: Optional[Sequence[int]] = None, **kwargs) -> None:
        if direction != 'horizontal':
            raise ValueError('MirrorWithLandmarks only supports horizontal flips, '
                             f'got {direction!r}')
        super().__init__(prob=float(prob), direction=direction, **kwargs)
        self.flip_indices = None if flip_indices is None else [int(i) for i in flip_indices]

    def _get_flip_indices(self, results: dict, num_keypoints: int) -> List[int]:
        indices = self.flip_indices
        if indices is None:
            indices = results.get('flip_indices')
        if indices is None:
            raise KeyError('MirrorWithLandmarks needs flip_indices: set it on the transform '
                           "or put results['flip_indices'] (WiderFaceDataset does)")
        indices = [int(i) for i in indices]
        if sorted(indices) != list(range(num_keypoints)):
            raise ValueError(f'flip_indices {indices} is not a permutation of '
                             f'range({num_keypoints})')
        return indices

    def _flip(self, results: dict) -> None:
        super()._flip(results)
        kps = results.get('gt_keypoints')
        if kps is None:
            return
        width = results['img'].shape[1]
        indices = self._get_flip_indices(results, kps.shape[1])
        flipped = kps.copy()
        flipped[..., 0] = width - flipped[..., 0]
        results['gt_keypoints'] = np.ascontiguousarray(flipped[:, indices])
        if results.get('gt_keypoints_visible') is not None:
            results['gt_keypoints_visible'] = np.ascontiguousarray(
                results['gt_keypoints_visible'][:, indices])

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(prob={self.prob}, direction={self.direction!r}, '
                f'flip_indices={self.flip_indices})')
