"""Prior boxes ("anchors") of the reference RetinaFace, as pure tensor math.

The reference ``PriorBox`` lays ``len(min_sizes[k])`` square boxes on every
cell of a ``ceil(H / step) x ceil(W / step)`` grid, position-major then size,
levels concatenated. We keep the same order but work in input pixels
(centre ``(j + 0.5) * step``, size ``min_size``) instead of [0, 1]
coordinates: IoU and the SSD encoding are invariant to that per-axis scaling,
and pixels stay correct for padded, non-square batches.
"""
from functools import lru_cache
from math import ceil
from typing import List, Sequence, Tuple

import torch
from mmdet.registry import TASK_UTILS
from torch import Tensor


def level_prior_boxes(feat_hw: Tuple[int, int], step: int, min_sizes: Sequence[float],
                      device: torch.device = torch.device('cpu'),
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """Priors of one level, ``(H * W * len(min_sizes), 4)`` in (cx, cy, w, h) pixels."""
    h, w = feat_hw
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * step
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * step
    cy, cx = torch.meshgrid(ys, xs, indexing='ij')
    sizes = torch.as_tensor(min_sizes, device=device, dtype=dtype)
    num_sizes = sizes.numel()
    centers = torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=-1)
    centers = centers.repeat_interleave(num_sizes, dim=0)
    wh = sizes.repeat(h * w).unsqueeze(-1).expand(-1, 2)
    return torch.cat([centers, wh], dim=-1)


def prior_boxes(featmap_sizes: Sequence[Tuple[int, int]], steps: Sequence[int],
                min_sizes: Sequence[Sequence[float]],
                device: torch.device = torch.device('cpu'),
                dtype: torch.dtype = torch.float32) -> Tensor:
    """All levels concatenated, ``(num_priors, 4)`` in (cx, cy, w, h) pixels."""
    return torch.cat([
        level_prior_boxes(tuple(hw), step, sizes, device, dtype)
        for hw, step, sizes in zip(featmap_sizes, steps, min_sizes)
    ])


def reference_featmap_sizes(image_hw: Tuple[int, int],
                            steps: Sequence[int]) -> List[Tuple[int, int]]:
    """Grid sizes the reference derives from the image size: ``ceil(size / step)``."""
    return [(ceil(image_hw[0] / s), ceil(image_hw[1] / s)) for s in steps]


@TASK_UTILS.register_module()
class RetinaFacePriorGenerator:
    """Reference prior boxes with a per-shape cache.

    The reference's ``clip`` option (clamping priors to the image) is not
    offered: the published models are trained and run without it.

    Args:
        min_sizes: box sizes per level, e.g. ``[[16, 32], [64, 128], [256, 512]]``.
        steps: strides of the levels, e.g. ``[8, 16, 32]``.
    """

    def __init__(self, min_sizes: Sequence[Sequence[float]], steps: Sequence[int]) -> None:
        if len(min_sizes) != len(steps):
            raise ValueError(f'min_sizes has {len(min_sizes)} levels but steps has '
                             f'{len(steps)}; they must match')
        self.min_sizes = [tuple(float(s) for s in sizes) for sizes in min_sizes]
        self.steps = [int(s) for s in steps]

    @property
    def num_levels(self) -> int:
        return len(self.steps)

    @property
    def num_base_priors(self) -> List[int]:
        """Priors per grid cell, per level (the head's anchors per position)."""
        return [len(sizes) for sizes in self.min_sizes]

    def grid_priors(self, featmap_sizes: Sequence[Tuple[int, int]],
                    device: torch.device = torch.device('cpu'),
                    dtype: torch.dtype = torch.float32, cache: bool = True) -> Tensor:
        """(cx, cy, w, h) priors in pixels for the given feature-map sizes.

        ``cache=True`` keeps the result per shape, device and dtype (sizes are
        turned into ints); ``cache=False`` computes them from the sizes as given,
        which keeps them traceable (ONNX export with dynamic height and width).
        """
        if not cache:
            return prior_boxes(featmap_sizes, self.steps, self.min_sizes, device, dtype)
        key = tuple(tuple(int(v) for v in hw) for hw in featmap_sizes)
        return self._cached(key, str(device), dtype)

    @lru_cache(maxsize=16)  # noqa: B019 - bounded, keyed by shape; generators are few
    def _cached(self, featmap_sizes, device: str, dtype: torch.dtype) -> Tensor:
        return prior_boxes(featmap_sizes, self.steps, self.min_sizes, torch.device(device),
                           dtype)
