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
the levels (from the batch the test pipeline packed, so any pipeline works)
and merges them. It serves ``tools/test.py --scale-protocol pyramid`` and
``FaceInferencer(..., pyramid=True)``; docs/inference.md has the measurements
behind the defaults.
"""
import math
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
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


def pyramid_scales(image_size: float, coarsest_side: float = 512) -> List[float]:
    """Level scales ``1, 1/2, 1/4, ...``: halved until the image's shorter side
    (``image_size``) is at most ``coarsest_side`` pixels at the coarsest level, where
    a face as large as the image is then within the anchors."""
    if coarsest_side <= 0:
        raise ValueError(f'coarsest_side must be > 0, got {coarsest_side}')
    scales = [1.0]
    while image_size * scales[-1] > coarsest_side:
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


def halve_image(image: Tensor) -> Tensor:
    """A ``(C, H, W)`` image (uint8 as packed, or float) at exactly half scale.

    Each output pixel is the mean of a 2x2 block (OpenCV's area interpolation,
    per channel: on uint8 many times faster than float ops on the preprocessed
    batch); an odd last row or column is dropped, so output pixel ``i``
    covers input pixels ``2i, 2i + 1`` and coordinates map back by a factor 2.
    """
    height, width = image.shape[-2:]
    half_h, half_w = max(height // 2, 1), max(width // 2, 1)
    planes = image.cpu().contiguous().numpy()
    out = [cv2.resize(plane[:2 * half_h, :2 * half_w], (half_w, half_h),
                      interpolation=cv2.INTER_AREA) for plane in planes]
    return torch.from_numpy(np.stack(out)).to(image.device)


def halve_data(data: dict) -> dict:
    """A batch as the data preprocessor takes it (``inputs``: ``(C, H, W)`` images,
    ``data_samples``) at half scale: images by :func:`halve_image`; new samples (the
    metainfo only) whose ``img_shape`` is the halved image's and whose
    ``scale_factor`` and ``pyramid_scale`` are halved, so that ``rescale=True``
    maps predictions back to the original pixels."""
    inputs = [halve_image(image) for image in data['inputs']]
    samples = []
    for image, sample in zip(inputs, data['data_samples']):
        meta = dict(sample.metainfo)
        factor_x, factor_y = meta.get('scale_factor', (1.0, 1.0))
        meta.update(img_shape=tuple(image.shape[-2:]), scale_factor=(factor_x / 2, factor_y / 2),
                    pyramid_scale=meta.get('pyramid_scale', 1.0) / 2)
        samples.append(DetDataSample(metainfo=meta))
    return dict(inputs=inputs, data_samples=samples)


@MODELS.register_module()
class FacePyramidTTAModel(BaseTTAModel):
    """Image-pyramid inference for faces larger than the anchors (see the module doc).

    ``test_step`` runs ``module`` on the batch and on halved copies
    (:func:`halve_data`; as many as :func:`pyramid_scales` asks for the images'
    shorter side: none up to ``coarsest_side``, then the result is the module's
    own) and merges per image with :func:`merge_pyramid_levels`.
    Defaults measured on real photos (docs/inference.md): the detector finds
    faces of 32..576 px whole, so a level needs no coarser one once its shorter
    side is at most 512; on close-ups the input level's large detections are
    fragments and false alarms on blurry texture, and a 400 px window dropped
    all but 3 of 58 on 12 of them while leaving smaller faces as single scale
    finds them.

    Args:
        module: the detector (config or model).
        max_face_size: largest face (``sqrt(w * h)``, level pixels) a level keeps
            (the coarsest keeps any).
        coarsest_side: the coarsest level's shorter side is at most this.
        overlap: fraction of a level's upper size bound where the next level starts.
        claim_score: score a coarser face needs to drop the fragments inside it.
        min_iof: part of a fragment's area inside that face.
        tta_cfg: ``nms`` (an mmcv NMS config) and ``max_per_img`` of the merge.
    """

    def __init__(self, module, max_face_size: float = 400.0, coarsest_side: float = 512.0,
                 overlap: float = 0.8, claim_score: float = 0.5, min_iof: float = 0.5,
                 tta_cfg: Optional[dict] = None, data_preprocessor=None) -> None:
        super().__init__(module=module, data_preprocessor=data_preprocessor)
        if max_face_size <= 0:
            raise ValueError(f'max_face_size must be > 0, got {max_face_size}')
        pyramid_scales(1.0, coarsest_side)  # checks the arguments
        level_size_ranges([1.0, 0.5], max_face_size, overlap)
        self.max_face_size = float(max_face_size)
        self.coarsest_side = float(coarsest_side)
        self.overlap = float(overlap)
        self.claim_score = float(claim_score)
        self.min_iof = float(min_iof)
        self.tta_cfg = tta_cfg or dict(nms=dict(type='nms', iou_threshold=0.4), max_per_img=750)

    def test_step(self, data: dict) -> List[DetDataSample]:
        """Detect on every pyramid level of the batch and merge per image.

        ``data`` is what the data preprocessor takes (``inputs``: a list of
        ``(C, H, W)`` images); each level goes through ``module.test_step``.
        """
        for sample in data['data_samples']:
            sample.set_metainfo(dict(pyramid_scale=1.0))
        shorter = max(min(image.shape[-2:]) for image in data['inputs'])
        views = [self.module.test_step(data)]
        for _ in pyramid_scales(shorter, self.coarsest_side)[1:]:
            data = halve_data(data)
            views.append(self.module.test_step(data))
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
