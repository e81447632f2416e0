"""SSD box coder and RetinaFace landmark coder (variances 0.1 / 0.2).

Priors are (cx, cy, w, h) in pixels; boxes are (x1, y1, x2, y2) pixels;
landmarks are ``(..., K, 2)`` pixels. All functions broadcast over leading
dimensions, so they serve per-image targets, batched losses and export.
"""
from typing import Sequence

import torch
from mmdet.models.task_modules.coders import BaseBBoxCoder
from mmdet.registry import TASK_UTILS
from torch import Tensor

DEFAULT_VARIANCES = (0.1, 0.2)


def encode_boxes(boxes: Tensor, priors: Tensor,
                 variances: Sequence[float] = DEFAULT_VARIANCES) -> Tensor:
    """xyxy boxes -> SSD deltas (dx, dy, dw, dh) relative to the priors."""
    centers = (boxes[..., :2] + boxes[..., 2:]) / 2
    wh = boxes[..., 2:] - boxes[..., :2]
    d_xy = (centers - priors[..., :2]) / (variances[0] * priors[..., 2:])
    d_wh = torch.log(wh / priors[..., 2:]) / variances[1]
    return torch.cat([d_xy, d_wh], dim=-1)


def decode_boxes(deltas: Tensor, priors: Tensor,
                 variances: Sequence[float] = DEFAULT_VARIANCES) -> Tensor:
    """SSD deltas -> xyxy boxes (inverse of :func:`encode_boxes`, no clamping)."""
    centers = priors[..., :2] + deltas[..., :2] * variances[0] * priors[..., 2:]
    half = priors[..., 2:] * torch.exp(deltas[..., 2:] * variances[1]) / 2
    return torch.cat([centers - half, centers + half], dim=-1)


def encode_landmarks(points: Tensor, priors: Tensor,
                     variances: Sequence[float] = DEFAULT_VARIANCES) -> Tensor:
    """``(..., K, 2)`` points -> ``(..., 2K)`` offsets from the prior centre."""
    prior = priors[..., None, :]
    offsets = (points - prior[..., :2]) / (variances[0] * prior[..., 2:])
    return offsets.flatten(-2)


def decode_landmarks(deltas: Tensor, priors: Tensor,
                     variances: Sequence[float] = DEFAULT_VARIANCES) -> Tensor:
    """``(..., 2K)`` offsets -> ``(..., K, 2)`` points in pixels."""
    offsets = deltas.unflatten(-1, (-1, 2))
    prior = priors[..., None, :]
    return prior[..., :2] + offsets * variances[0] * prior[..., 2:]


@TASK_UTILS.register_module()
class SSDBoxCoder(BaseBBoxCoder):
    """The reference ``encode`` / ``decode``; priors are (cx, cy, w, h).

    ``RetinaFaceHead``'s ``bbox_coder``. No clamping to the image, as the reference.
    """

    encode_size = 4

    def __init__(self, variances: Sequence[float] = DEFAULT_VARIANCES, **kwargs) -> None:
        super().__init__(**kwargs)
        self.variances = tuple(float(v) for v in variances)

    def encode(self, bboxes: Tensor, gt_bboxes: Tensor) -> Tensor:
        return encode_boxes(gt_bboxes, bboxes, self.variances)

    def decode(self, bboxes: Tensor, pred_bboxes: Tensor) -> Tensor:
        return decode_boxes(pred_bboxes, bboxes, self.variances)


@TASK_UTILS.register_module()
class LandmarkCoder:
    """The reference ``encode_landm`` / ``decode_landm`` for any number of points.

    ``RetinaFaceHead``'s ``kpt_coder``: ``(..., K, 2)`` points <-> ``(..., 2K)`` offsets.
    """

    def __init__(self, variances: Sequence[float] = DEFAULT_VARIANCES) -> None:
        self.variances = tuple(float(v) for v in variances)

    def encode(self, priors: Tensor, points: Tensor) -> Tensor:
        return encode_landmarks(points, priors, self.variances)

    def decode(self, priors: Tensor, deltas: Tensor) -> Tensor:
        return decode_landmarks(deltas, priors, self.variances)
