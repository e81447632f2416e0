"""Multi-scale inference: small faces from upscaled copies, large ones from halved copies.

RetinaFace's anchors span 16..512 px (strides 8/16/32). A face much larger
than that is not found at the input scale, its parts (eyes, cheeks, chin) are;
a face of a few pixels is missed. The detector runs on the input at several
scales: explicit factors (``2.0``: an upscaled copy for small faces, skipped
when it would exceed ``max_upscaled_side``) and, with ``halve``, copies halved
once per level as the image's size needs. Each level keeps the face sizes it
sees well (scale-aware ranges as in SNIP: the finest level keeps faces up to
``max_face_size`` of its pixels, every coarser level only faces too large for
the finer ones), then the levels are merged by box voting (boxes and landmarks
averaged over each group of overlapping detections, weighted by score, as in
the RetinaFace paper) or NMS, and the finer levels' fragments lying inside a
confident coarser face are dropped.

Selection and merge are pure functions on ``InstanceData``; :class:`FacePyramidTTAModel`
makes the levels from the packed batch (any pipeline) and merges them. The named
:data:`SCALE_SETTINGS` serve ``FaceInferencer(scales=...)``, ``--scales`` and
``tools/test.py --scale-protocol`` (measurements: docs/inference.md).
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

from ..utils.image_io import hwc_to_chw
from .utils import nms_needs_cpu

#: Named multi-scale settings (:class:`FacePyramidTTAModel` arguments). ``pyramid``:
#: halved copies for large faces; ``crowd``: also a 1.5x copy for small faces (crowds;
#: chosen on real WIDER FACE photos, docs/inference.md).
SCALE_SETTINGS = {
    'single': dict(scales=(1.0, ), halve=False),
    'pyramid': dict(scales=(1.0, ), halve=True),
    'crowd': dict(scales=(1.5, 1.0), halve=True),
}


def scale_setting(scales) -> dict:
    """:class:`FacePyramidTTAModel` arguments for a setting's name or a sequence of
    factors (exactly those scales, no halving); ValueError naming the choices."""
    if isinstance(scales, str):
        if scales not in SCALE_SETTINGS:
            raise ValueError(f'unknown scales setting {scales!r}: one of '
                             f'{", ".join(SCALE_SETTINGS)}, or a sequence of factors')
        return dict(SCALE_SETTINGS[scales])
    try:
        factors = tuple(sorted({float(f) for f in scales}, reverse=True))
    except (TypeError, ValueError):
        factors = ()
    if not factors or factors[-1] <= 0:
        raise ValueError(f'scales must be a setting name ({", ".join(SCALE_SETTINGS)}) or '
                         f'positive factors, e.g. (1.0, 2.0); got {scales!r}')
    return dict(scales=factors, halve=False)


def level_scales(shorter: float, longer: float, scales: Sequence[float] = (1.0, ),
                 halve: bool = False, coarsest_side: float = 512,
                 max_upscaled_side: float = 2048) -> List[float]:
    """The scales an image runs at, decreasing: ``scales`` (factors above 1 only while
    the copy's longer side stays within ``max_upscaled_side``; at least the smallest
    factor is kept) and, with ``halve``, the halvings of :func:`pyramid_scales` below
    the smallest factor."""
    factors = sorted({float(s) for s in scales}, reverse=True)
    kept = [s for s in factors if s <= 1 or longer * s <= max_upscaled_side] or factors[-1:]
    if halve:
        lowest = kept[-1]
        kept += [lowest * s for s in pyramid_scales(shorter * lowest, coarsest_side)[1:]]
    return kept


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


def level_size_ranges(scales: Sequence[float], max_face_size: float, overlap: float = 0.8,
                      max_upscaled_face: float = math.inf) -> List[Tuple[float, float]]:
    """Face sizes (input pixels, ``lower < size <= upper``) that each level keeps.

    Level ``k`` (``scales`` in decreasing order) keeps faces up to
    ``max_face_size`` of its own pixels (``max_face_size / scales[k]``; the
    coarsest level has no upper bound; an upscaled level, scale above 1, at most
    ``max_upscaled_face`` input pixels: it is there for the small faces) and,
    except the finest, only those above ``overlap`` times the finer level's
    upper bound: the levels overlap by that margin so a face at a boundary is
    kept by one level at least (the merge removes the duplicate).
    """
    if not 0 < overlap <= 1:
        raise ValueError(f'overlap must be in (0, 1], got {overlap}')
    if any(s <= 0 for s in scales) or any(a <= b for a, b in zip(scales, scales[1:])):
        raise ValueError(f'scales must be positive and strictly decreasing, got {list(scales)}')
    uppers = [min(max_face_size / s, max_upscaled_face if s > 1 else math.inf)
              for s in scales[:-1]] + [math.inf]
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


def vote_groups(bboxes: Tensor, scores: Tensor, iou_thr: float) -> Tensor:
    """Group of each detection for box voting: the index (into the sorted-by-score
    detections) of the first detection that greedy NMS at ``iou_thr`` keeps and
    whose IoU with it exceeds ``iou_thr`` (a kept one is its own group), i.e. the
    detection that NMS would suppress it with. Returns ``(order, group)``."""
    order = scores.argsort(descending=True, stable=True)
    bboxes = bboxes[order]
    keep = batched_nms(bboxes, scores[order], bboxes.new_zeros(len(bboxes)),
                       dict(type='nms', iou_threshold=iou_thr))[1].sort().values
    overlaps = bbox_overlaps(bboxes, bboxes[keep]) > iou_thr
    overlaps[keep, torch.arange(len(keep))] = True
    return order, keep[overlaps.int().argmax(dim=1)]


def box_vote(instances: InstanceData, iou_thr: float = 0.4) -> InstanceData:
    """Box voting: NMS's survivors, each with the boxes and landmarks (``keypoints``) of
    its group (:func:`vote_groups`: the survivor and the detections it suppresses)
    averaged with score weights; scores and other fields are the survivor's."""
    if len(instances) == 0:
        return instances
    order, group = vote_groups(instances.bboxes, instances.scores, iou_thr)
    ranked = instances[order]
    weights = ranked.scores.double()
    leaders = group.unique()  # in score order: NMS's output order
    out = ranked[leaders]
    slot = torch.searchsorted(leaders, group)
    total = weights.new_zeros(len(leaders)).index_add_(0, slot, weights)
    for key in ('bboxes', 'keypoints'):
        if key in ranked:
            values = ranked[key].double().flatten(1) * weights[:, None]
            mean = values.new_zeros(len(leaders), values.shape[1]).index_add_(0, slot, values)
            out[key] = (mean / total[:, None]).to(ranked[key].dtype).view_as(out[key])
    return out


def merge_pyramid_levels(levels: Sequence[InstanceData], scales: Sequence[float],
                         max_face_size: float, overlap: float = 0.8,
                         nms_cfg: Optional[dict] = None, claim_score: float = 0.5,
                         min_iof: float = 0.5, max_per_img: int = -1,
                         merge: str = 'vote', max_upscaled_face: float = math.inf,
                         upscaled_score: float = 1.0) -> InstanceData:
    """Merge per-level predictions (all in input pixels) into one set.

    Each level keeps the sizes of :func:`level_size_ranges`, the scores of
    upscaled levels (scale above 1) multiplied by ``upscaled_score``; the union is
    merged by :func:`box_vote` (``merge='vote'``) or one NMS (``'nms'``; both
    at ``nms_cfg``'s IoU threshold, mmcv's NMS), then :func:`fragment_mask`
    drops fragments and the ``max_per_img`` best are kept. Fields other than
    ``bboxes`` / ``scores`` (labels, keypoints) follow their boxes.
    """
    if merge not in ('vote', 'nms'):
        raise ValueError(f"merge must be 'vote' or 'nms', got {merge!r}")
    if len(levels) != len(scales):
        raise ValueError(f'{len(levels)} levels but {len(scales)} scales')
    nms_cfg = nms_cfg or dict(type='nms', iou_threshold=0.4)
    kept = []
    for k, (preds, (lower, upper)) in enumerate(
            zip(levels, level_size_ranges(scales, max_face_size, overlap, max_upscaled_face))):
        sizes = face_sizes(preds.bboxes)
        preds = preds[(sizes > lower) & (sizes <= upper)]
        if scales[k] > 1 and upscaled_score != 1:
            preds.scores = preds.scores * upscaled_score
        preds.level_ids = preds.scores.new_full((len(preds), ), k, dtype=torch.long)
        kept.append(preds)
    merged = InstanceData.cat(kept)  # each detection's level travels with it
    if len(merged):
        # as in the head, NMS runs on the CPU whatever the device (mmcv's CPU ops)
        device = merged.bboxes.device
        host = merged.cpu() if nms_needs_cpu(device) else merged
        if merge == 'vote':
            host = box_vote(host, nms_cfg.get('iou_threshold', 0.4))
        else:
            host = host[batched_nms(host.bboxes, host.scores, host.labels, nms_cfg)[1]]
        merged = host.to(device)
        merged = merged[~fragment_mask(merged.bboxes, merged.scores, merged.level_ids,
                                       claim_score, min_iof)]
    del merged.level_ids
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


def resize_data(data: dict, factor: float) -> dict:
    """A batch as the data preprocessor takes it (``inputs``: ``(C, H, W)`` images,
    ``data_samples``) rescaled by ``factor``: exactly halved (:func:`halve_image`) for
    0.5, else OpenCV's bilinear (up) or area (down) resize. The new samples (the
    metainfo only) get the new ``img_shape`` and ``scale_factor`` multiplied by the
    size ratio, so that ``rescale=True`` maps predictions back to the original pixels;
    ``pyramid_scale`` records the level's scale."""
    inputs, samples = [], []
    for image, sample in zip(data['inputs'], data['data_samples']):
        height, width = image.shape[-2:]
        if factor == 0.5:
            out = halve_image(image)
        else:
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            interp = cv2.INTER_LINEAR if factor > 1 else cv2.INTER_AREA
            hwc = image.cpu().permute(1, 2, 0).contiguous().numpy()
            out = cv2.resize(hwc, size, interpolation=interp).reshape(size[1], size[0], -1)
            out = torch.from_numpy(hwc_to_chw(out)).to(image.device)
        meta = dict(sample.metainfo)
        factor_x, factor_y = meta.get('scale_factor', (1.0, 1.0))
        ratio_x = out.shape[-1] / width if factor != 0.5 else 0.5
        ratio_y = out.shape[-2] / height if factor != 0.5 else 0.5
        meta.update(img_shape=tuple(out.shape[-2:]),
                    scale_factor=(factor_x * ratio_x, factor_y * ratio_y),
                    pyramid_scale=meta.get('pyramid_scale', 1.0) * factor)
        inputs.append(out)
        samples.append(DetDataSample(metainfo=meta))
    return dict(inputs=inputs, data_samples=samples)


@MODELS.register_module()
class FacePyramidTTAModel(BaseTTAModel):
    """Multi-scale inference for small and large faces (see the module doc).

    ``test_step`` runs ``module`` on the batch at each of :func:`level_scales`
    (upscaled copies, the input, halved copies: :func:`resize_data`) and merges
    per image with :func:`merge_pyramid_levels`. With one level the result is
    the module's own. Defaults measured on real photos (docs/inference.md): the
    detector finds faces of 32..576 px whole, so a level needs no coarser one
    once its shorter side is at most 512; on close-ups the input level's large
    detections are fragments and false alarms on blurry texture, and a 400 px
    window dropped all but 3 of 58 on 12 of them while leaving smaller faces as
    single scale finds them.

    Args:
        module: the detector (config or model).
        scales: the factors to run at (``(1.0, )``: the input; ``(2.0, 1.0)``
            adds a 2x copy for small faces).
        halve: also run halved copies below the smallest factor, as many as
            the image's size needs (the pyramid for large faces).
        max_face_size: largest face (``sqrt(w * h)``, level pixels) a level keeps
            (the coarsest keeps any).
        coarsest_side: the coarsest level's shorter side is at most this.
        max_upscaled_side: an upscaled copy runs only while its longer side is
            at most this (bounds time and memory; large photos need it least).
        max_upscaled_face: largest face (input pixels) an upscaled level keeps:
            it is there for the small faces, the input level sees larger ones
            better (measured: keeping larger ones cost easy-set AP).
        upscaled_score: factor on the scores of upscaled levels: a face seen
            only in an upscaled copy is less certain (measured: upscaled texture
            gave false alarms >= 0.5 at 1.0, none more than single scale at 0.8).
        overlap: fraction of a level's upper size bound where the next level starts.
        claim_score: score a coarser face needs to drop the fragments inside it.
        min_iof: part of a fragment's area inside that face.
        merge: ``'vote'`` (box voting) or ``'nms'``.
        tta_cfg: ``nms`` (an mmcv NMS config: its IoU threshold is the merge's)
            and ``max_per_img`` of the merge.
    """

    def __init__(self, module, scales: Sequence[float] = (1.0, ), halve: bool = True,
                 max_face_size: float = 400.0, coarsest_side: float = 512.0,
                 max_upscaled_side: float = 2048.0, max_upscaled_face: float = 48.0,
                 upscaled_score: float = 0.8, overlap: float = 0.8,
                 claim_score: float = 0.5, min_iof: float = 0.5, merge: str = 'vote',
                 tta_cfg: Optional[dict] = None, data_preprocessor=None) -> None:
        super().__init__(module=module, data_preprocessor=data_preprocessor)
        if max_face_size <= 0:
            raise ValueError(f'max_face_size must be > 0, got {max_face_size}')
        if merge not in ('vote', 'nms'):
            raise ValueError(f"merge must be 'vote' or 'nms', got {merge!r}")
        self.scales = scale_setting(scales)['scales']
        pyramid_scales(1.0, coarsest_side)  # checks the arguments
        level_size_ranges([1.0, 0.5], max_face_size, overlap)
        self.halve = bool(halve)
        self.max_face_size = float(max_face_size)
        self.coarsest_side = float(coarsest_side)
        self.max_upscaled_side = float(max_upscaled_side)
        self.max_upscaled_face = float(max_upscaled_face)
        self.upscaled_score = float(upscaled_score)
        self.overlap = float(overlap)
        self.claim_score = float(claim_score)
        self.min_iof = float(min_iof)
        self.merge = merge
        self.tta_cfg = tta_cfg or dict(nms=dict(type='nms', iou_threshold=0.4), max_per_img=750)

    def test_step(self, data: dict) -> List[DetDataSample]:
        """Detect on every level of the batch and merge per image.

        ``data`` is what the data preprocessor takes (``inputs``: a list of
        ``(C, H, W)`` images); each level goes through ``module.test_step``.
        Halved levels are made from the previous one (exact 2x2 means).
        """
        for sample in data['data_samples']:
            sample.set_metainfo(dict(pyramid_scale=1.0))
        shorter = max(min(image.shape[-2:]) for image in data['inputs'])
        longer = max(max(image.shape[-2:]) for image in data['inputs'])
        scales = level_scales(shorter, longer, self.scales, self.halve, self.coarsest_side,
                              self.max_upscaled_side)
        views, previous = [], None
        for scale in scales:
            if previous is not None and scale == previous[0] / 2 and scale < 1:
                level = resize_data(previous[1], 0.5)
            else:
                level = data if scale == 1 else resize_data(data, scale)
            views.append(self.module.test_step(level))
            previous = (scale, level)
        return self.merge_preds([list(per_image) for per_image in zip(*views)])

    def merge_preds(self, data_samples_list: List[List[DetDataSample]]) -> List[DetDataSample]:
        """Per image: its levels (finest first, ``pyramid_scale`` in the metainfo) -> one,
        with the input level's metainfo and ground truth."""
        results = []
        for views in data_samples_list:
            if len(views) == 1:
                results.append(views[0])
                continue
            merged = merge_pyramid_levels(
                [view.pred_instances for view in views],
                [view.metainfo.get('pyramid_scale', 1.0) for view in views],
                self.max_face_size, self.overlap, self.tta_cfg['nms'], self.claim_score,
                self.min_iof, self.tta_cfg.get('max_per_img', -1), self.merge,
                self.max_upscaled_face, self.upscaled_score)
            result = next((v for v in views if v.metainfo.get('pyramid_scale') == 1.0),
                          views[0])
            result.pred_instances = merged
            results.append(result)
        return results
