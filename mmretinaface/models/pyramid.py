"""Image-pyramid inference: small faces from the input, large ones from downscaled copies.

RetinaFace's anchors span 16..512 px (strides 8/16/32). A face much larger
than that is not found at the input scale, its parts (eyes, cheeks, chin) are.
The pyramid runs the detector on the input and on copies halved once per
level, as many as the image's size needs; each level keeps the face sizes it
sees well (the input keeps faces up to ``max_face_size`` pixels, every
coarser level only faces too large for the finer ones), then the levels are
merged with NMS and the finer levels' fragments lying inside a confident
coarser face are dropped. Landmarks travel with their boxes.

The selection and merge are pure functions on ``InstanceData`` in input
pixels; :class:`FacePyramidTTAModel` is the thin registered shell that makes
the levels (from the preprocessed batch, so any test pipeline works) and
merges them. It serves ``tools/test.py --scale-protocol pyramid`` and
``FaceInferencer(..., pyramid=True)``; docs/inference.md has the measurements
behind the defaults.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.ops import batched_nms
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox_overlaps
from mmengine.model import BaseTTAModel
from mmengine.structures import InstanceData
from torch import Tensor

from .utils import nms_needs_cpu


def face_sizes(bboxes: Tensor) -> Tensor:
    """Face size of each xyxy box: ``sqrt(w * h)`` (the side of the square anchor it matches)."""
    wh = (bboxes[:, 2:] - bboxes[:, :2]).clamp(min=0)
    return (wh[:, 0] * wh[:, 1]).sqrt()


def pyramid_scales(image_size: float, max_face_size: float) -> List[float]:
    """Level scales ``1, 1/2, 1/4, ...``: one more level while a face as large as the
    image (``image_size``, its shorter side) would still be above ``max_face_size``
    pixels of the last level (the coarsest level keeps any size)."""
    if max_face_size <= 0:
        raise ValueError(f'max_face_size must be > 0, got {max_face_size}')
    scales = [1.0]
    while max_face_size / scales[-1] < image_size:
        scales.append(scales[-1] / 2)
    return scales


def level_size_ranges(scales: Sequence[float], max_face_size: float, overlap: float = 0.8
                      ) -> List[Tuple[float, float]]:
    """Face sizes (input pixels, ``lower < size <= upper``) that each level keeps.

    Level ``k`` (``scales`` in decreasing order) keeps faces up to
    ``max_face_size`` of its own pixels (``max_face_size / scales[k]``; the
    coarsest level has no upper bound) and, except the finest, only those
    above ``overlap`` times the finer level's upper bound: the levels overlap
    by that margin so a face at a boundary is kept by one level at least
    (NMS removes the duplicate).
    """
    if not 0 < overlap <= 1:
        raise ValueError(f'overlap must be in (0, 1], got {overlap}')
    if any(s <= 0 for s in scales) or any(a <= b for a, b in zip(scales, scales[1:])):
        raise ValueError(f'scales must be positive and strictly decreasing, got {list(scales)}')
    uppers = [max_face_size / s for s in scales[:-1]] + [math.inf]
    lowers = [0.0] + [overlap * upper for upper in uppers[:-1]]
    return list(zip(lowers, uppers))


def fragment_mask(bboxes: Tensor, scores: Tensor, levels: Tensor, claim_score: float = 0.5,
                  min_iof: float = 0.5) -> Tensor:
    """True for detections that lie inside a confident face of a coarser level.

    A detection is a fragment when at least ``min_iof`` of its area is inside
    a box from a coarser level (larger level index) scoring ``claim_score``
    or more: the parts of a large face that the finer levels see as faces.
    """
    if not len(bboxes):
        return bboxes.new_zeros((0, ), dtype=torch.bool)
    claims = (scores >= claim_score)
    iof = bbox_overlaps(bboxes, bboxes, mode='iof')  # (i, j): area of i inside j / area of i
    coarser = levels[None, :] > levels[:, None]
    return ((iof >= min_iof) & coarser & claims[None, :]).any(dim=1)


def merge_pyramid_levels(levels: Sequence[InstanceData], scales: Sequence[float],
                         max_face_size: float, overlap: float = 0.8,
                         nms_cfg: Optional[dict] = None, claim_score: float = 0.5,
                         min_iof: float = 0.5, max_per_img: int = -1) -> InstanceData:
    """Merge per-level predictions (all in input pixels) into one set.

    Each level keeps the sizes of :func:`level_size_ranges`; the union goes
    through one NMS (``nms_cfg``, mmcv's) and :func:`fragment_mask`, then the
    ``max_per_img`` best are kept. Fields other than ``bboxes`` / ``scores``
    (labels, keypoints) follow their boxes.
    """
    if len(levels) != len(scales):
        raise ValueError(f'{len(levels)} levels but {len(scales)} scales')
    nms_cfg = nms_cfg or dict(type='nms', iou_threshold=0.4)
    kept, level_ids = [], []
    for k, (preds, (lower, upper)) in enumerate(
            zip(levels, level_size_ranges(scales, max_face_size, overlap))):
        sizes = face_sizes(preds.bboxes)
        preds = preds[(sizes > lower) & (sizes <= upper)]
        kept.append(preds)
        level_ids.append(preds.scores.new_full((len(preds), ), k, dtype=torch.long))
    merged = InstanceData.cat(kept)
    level_ids = torch.cat(level_ids)
    if len(merged):
        # as in the head, NMS runs on the CPU whatever the device (mmcv's CPU ops)
        host = merged.cpu() if nms_needs_cpu(merged.bboxes.device) else merged
        _, keep = batched_nms(host.bboxes, host.scores, host.labels, nms_cfg)
        keep = keep.to(merged.bboxes.device)
        merged, level_ids = merged[keep], level_ids[keep]
        fragments = fragment_mask(merged.bboxes, merged.scores, level_ids, claim_score, min_iof)
        merged = merged[~fragments]
    if max_per_img > 0:
        merged = merged[:max_per_img]
    return merged


def halve_batch(inputs: Tensor, data_samples: Sequence[DetDataSample]
                ) -> Tuple[Tensor, List[DetDataSample]]:
    """A preprocessed batch ``(B, C, H, W)`` at half scale and samples that describe it.

    Each output pixel is the mean of a 2x2 block (a trailing odd row or column
    averages the pixels it has), so the scale is exactly 1/2 in both axes:
    ``scale_factor`` and ``pyramid_scale`` are halved (``rescale=True`` then
    maps predictions back to original pixels) and ``img_shape`` rounded up.
    """
    small = F.avg_pool2d(inputs, kernel_size=2, ceil_mode=True)
    samples = []
    for sample in data_samples:
        meta = dict(sample.metainfo)
        img_h, img_w = meta.get('img_shape', inputs.shape[-2:])
        factor_x, factor_y = meta.get('scale_factor', (1.0, 1.0))
        meta.update(img_shape=(math.ceil(img_h / 2), math.ceil(img_w / 2)),
                    pad_shape=tuple(small.shape[-2:]), batch_input_shape=tuple(small.shape[-2:]),
                    scale_factor=(factor_x / 2, factor_y / 2),
                    pyramid_scale=meta.get('pyramid_scale', 1.0) / 2)
        samples.append(DetDataSample(metainfo=meta))
    return small, samples


@MODELS.register_module()
class FacePyramidTTAModel(BaseTTAModel):
    """Image-pyramid inference for faces larger than the anchors (see the module doc).

    ``test_step`` preprocesses the batch once, runs ``module`` on it and on
    halved copies (:func:`halve_batch`; as many as :func:`pyramid_scales` asks
    for the batch's shorter side: none when it is at most ``max_face_size``,
    then the result is the module's own) and merges per image with
    :func:`merge_pyramid_levels`. Defaults measured on real photos
    (docs/inference.md): the detector sees faces of 32..576 px well, larger
    detections at the input scale are mostly fragments and false alarms on
    blurry texture; 400 keeps a margin and needs two levels at 640x480 and
    1280x720.

    Args:
        module: the detector (config or model).
        max_face_size: largest face (``sqrt(w * h)``, level pixels) a level keeps
            (the coarsest keeps any).
        overlap: fraction of a level's upper size bound where the next level starts.
        claim_score: score a coarser face needs to drop the fragments inside it.
        min_iof: part of a fragment's area inside that face.
        tta_cfg: ``nms`` (an mmcv NMS config) and ``max_per_img`` of the merge.
    """

    def __init__(self, module, max_face_size: float = 400.0, overlap: float = 0.8,
                 claim_score: float = 0.5, min_iof: float = 0.5,
                 tta_cfg: Optional[dict] = None, data_preprocessor=None) -> None:
        super().__init__(module=module, data_preprocessor=data_preprocessor)
        pyramid_scales(1.0, max_face_size)  # checks the arguments
        level_size_ranges([1.0, 0.5], max_face_size, overlap)
        self.max_face_size = float(max_face_size)
        self.overlap = float(overlap)
        self.claim_score = float(claim_score)
        self.min_iof = float(min_iof)
        self.tta_cfg = tta_cfg or dict(nms=dict(type='nms', iou_threshold=0.4), max_per_img=750)

    def test_step(self, data) -> List[DetDataSample]:
        """Detect on every pyramid level of the batch and merge per image."""
        data = self.module.data_preprocessor(data, False)
        inputs, samples = data['inputs'], data['data_samples']
        for sample in samples:
            sample.set_metainfo(dict(pyramid_scale=1.0))
        num_levels = len(pyramid_scales(min(inputs.shape[-2:]), self.max_face_size))
        views = [self.module(inputs, samples, mode='predict')]
        for _ in range(num_levels - 1):
            inputs, samples = halve_batch(inputs, samples)
            views.append(self.module(inputs, samples, mode='predict'))
        return self.merge_preds([list(per_image) for per_image in zip(*views)])

    def merge_preds(self, data_samples_list: List[List[DetDataSample]]) -> List[DetDataSample]:
        """Per image: its levels (finest first, ``pyramid_scale`` in the metainfo) -> one."""
        results = []
        for views in data_samples_list:
            merged = merge_pyramid_levels(
                [view.pred_instances for view in views],
                [view.metainfo.get('pyramid_scale', 1.0) for view in views],
                self.max_face_size, self.overlap, self.tta_cfg['nms'], self.claim_score,
                self.min_iof, self.tta_cfg.get('max_per_img', -1))
            result = views[0]  # the input level: its metainfo and ground truth
            result.pred_instances = merged
            results.append(result)
        return results
