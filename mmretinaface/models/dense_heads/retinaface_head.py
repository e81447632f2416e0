"""RetinaFace head: per-level 1x1 class / box / landmark convolutions on prior boxes.

Built from config like mmdet's heads: the prior generator and the box and
landmark coders (``TASK_UTILS``), the assigner (``train_cfg.assigner``) and the
loss (``loss_multibox``). One flatten (:meth:`RetinaFaceHead.flatten_outputs`;
prediction takes only the candidates' rows, :func:`gather_level_rows`), one
prior lookup (:meth:`~RetinaFaceHead.get_priors`) and one decode
(:meth:`~RetinaFaceHead.decode`) serve the loss, prediction and ONNX export.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures.bbox import get_box_tensor, get_box_wh, scale_boxes
from mmdet.utils import ConfigType, InstanceList, OptConfigType, OptInstanceList, OptMultiConfig
from mmengine.structures import InstanceData
from torch import Tensor, nn

from ..task_modules.assigners import matching_dtype
from ..utils import nms_needs_cpu, select_candidates, single_class_nms


def flatten_level_outputs(level_outputs: Sequence[Tensor], dim: int) -> Tensor:
    """Per-level ``(B, A * dim, H, W)`` maps -> ``(B, sum(H * W * A), dim)``.

    The reference layout: NHWC, anchors fastest, levels concatenated.
    """
    return torch.cat(
        [out.permute(0, 2, 3, 1).reshape(out.shape[0], -1, dim) for out in level_outputs], dim=1)


def gather_level_rows(level_outputs: Sequence[Tensor], dim: int,
                      rows: Sequence[Tensor]) -> List[Tensor]:
    """Per image ``i``, ``flatten_level_outputs(level_outputs, dim)[i, rows[i]]``, ``(n_i, dim)``.

    Maps with ``A`` anchors on every level and contiguous ``H x W`` planes are joined
    untransposed, ``(B, A, dim, sum(H * W))``, row ``r`` being anchor ``r % A`` at position
    ``r // A``; other maps (channels-last: no transpose needed) are flattened.
    """
    anchors = {out.shape[1] // dim for out in level_outputs}
    if len(anchors) != 1 or any(out.stride(-1) != 1 or out.stride(-2) != out.shape[-1]
                                for out in level_outputs):
        return list(flatten_level_outputs(level_outputs, dim)[i, r] for i, r in enumerate(rows))
    (num, ) = anchors
    maps = torch.cat([out.flatten(2) for out in level_outputs], dim=2)
    maps = maps.view(maps.shape[0], num, dim, -1)
    return [img_maps[r % num, :, torch.div(r, num, rounding_mode='floor')]
            for img_maps, r in zip(maps, rows)]


@MODELS.register_module()
class RetinaFaceHead(BaseDenseHead):
    """RetinaFace head: MultiBox loss, and prediction that keeps landmarks.

    Args:
        in_channels: channels of every input level.
        num_classes: foreground classes (1: face). The class branch predicts
            ``num_classes + 1`` softmax logits per prior, background first.
        num_keypoints: landmarks per face (5 for the published models).
        prior_generator: a ``RetinaFacePriorGenerator`` config.
        bbox_coder: box coder config (``SSDBoxCoder``, variances 0.1 / 0.2).
        kpt_coder: landmark coder config (``LandmarkCoder``).
        loss_multibox: loss config (``MultiBoxLoss``: ``neg_pos_ratio``,
            ``loc_weight``). Named like mmdet's ``loss_cls`` / ``loss_bbox``
            (``loss`` is the head's method).
        train_cfg: ``assigner``, e.g. ``dict(type='RetinaFacePriorAssigner',
            pos_iou_thr=0.35, min_best_iou=0.2)``; needed by the loss only.
        test_cfg: ``score_thr``, ``nms_pre`` (``-1``: all), ``nms``, ``max_per_img``.
    """

    def __init__(self,
                 in_channels: int,
                 num_classes: int = 1,
                 num_keypoints: int = 5,
                 prior_generator: ConfigType = dict(
                     type='RetinaFacePriorGenerator',
                     min_sizes=[[16, 32], [64, 128], [256, 512]],
                     steps=[8, 16, 32]),
                 bbox_coder: ConfigType = dict(type='SSDBoxCoder', variances=(0.1, 0.2)),
                 kpt_coder: ConfigType = dict(type='LandmarkCoder', variances=(0.1, 0.2)),
                 loss_multibox: ConfigType = dict(
                     type='MultiBoxLoss', neg_pos_ratio=7, loc_weight=2.0),
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_classes != 1:
            raise ValueError('RetinaFaceHead detects one class (face); '
                             f'got num_classes={num_classes}')
        if num_keypoints < 0:
            raise ValueError(f'num_keypoints must be >= 0, got {num_keypoints}')
        self.num_classes = num_classes
        self.num_keypoints = num_keypoints
        self.prior_generator = TASK_UTILS.build(prior_generator)
        self.bbox_coder = TASK_UTILS.build(bbox_coder)
        self.kpt_coder = TASK_UTILS.build(kpt_coder)
        self.loss_multibox = MODELS.build(loss_multibox)
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self.assigner = None
        if train_cfg:
            if 'assigner' not in train_cfg:
                raise ValueError(
                    "RetinaFaceHead's train_cfg needs assigner=dict(type='RetinaFacePriorAssigner',"
                    f' pos_iou_thr=..., min_best_iou=...); got keys {sorted(train_cfg)} '
                    '(neg_pos_ratio and loc_weight belong in bbox_head.loss_multibox)')
            self.assigner = TASK_UTILS.build(train_cfg['assigner'])
        self.cls_out = num_classes + 1
        self.kpt_out = 2 * num_keypoints

        def level_convs(out_per_prior: int) -> nn.ModuleList:
            return nn.ModuleList(
                nn.Conv2d(in_channels, num_priors * out_per_prior, 1)
                for num_priors in self.prior_generator.num_base_priors)

        self.cls_convs = level_convs(self.cls_out)
        self.reg_convs = level_convs(4)
        self.kpt_convs = level_convs(self.kpt_out)

    def forward(self, x: Tuple[Tensor, ...]) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """Raw per-level maps: class logits, box deltas, landmark deltas."""
        if len(x) != self.prior_generator.num_levels:
            raise ValueError(f'RetinaFaceHead expects {self.prior_generator.num_levels} '
                             f'feature levels, got {len(x)}')
        cls_scores = [conv(f) for conv, f in zip(self.cls_convs, x)]
        bbox_preds = [conv(f) for conv, f in zip(self.reg_convs, x)]
        kpt_preds = [conv(f) for conv, f in zip(self.kpt_convs, x)]
        return cls_scores, bbox_preds, kpt_preds

    # ------------------------------------------- shared by loss, predict and export
    def flatten_outputs(self, cls_scores: List[Tensor], bbox_preds: List[Tensor],
                        kpt_preds: List[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """The reference's ``(B, P, 2)``, ``(B, P, 4)``, ``(B, P, 2K)`` tensors."""
        return (flatten_level_outputs(cls_scores, self.cls_out),
                flatten_level_outputs(bbox_preds, 4),
                flatten_level_outputs(kpt_preds, self.kpt_out))

    def get_priors(self, cls_scores: List[Tensor], cached: bool = True) -> Tensor:
        """(cx, cy, w, h) pixel priors for the feature-map sizes of ``cls_scores``.

        ``cached=False`` builds them with traceable ops (ONNX export with
        dynamic height and width); the values are the same.
        """
        ref = cls_scores[0]
        return self.prior_generator.grid_priors(
            [tuple(s.shape[-2:]) for s in cls_scores], ref.device, ref.dtype, cache=cached)

    def decode(self, priors: Tensor, bbox_deltas: Tensor,
               kpt_deltas: Tensor) -> Tuple[Tensor, Tensor]:
        """Boxes ``(..., 4)`` xyxy and landmarks ``(..., K, 2)`` in input pixels.

        ``priors`` ``(..., 4)`` broadcast against the deltas ``(..., 4)`` and
        ``(..., 2K)``: all priors of a batch (export) or the candidates of one
        image (:meth:`predict_by_feat`).
        """
        return (self.bbox_coder.decode(priors, bbox_deltas),
                self.kpt_coder.decode(priors, kpt_deltas))

    # --------------------------------------------------------------------- loss
    def loss_by_feat(self,
                     cls_scores: List[Tensor],
                     bbox_preds: List[Tensor],
                     kpt_preds: List[Tensor],
                     batch_gt_instances: InstanceList,
                     batch_img_metas: List[dict],
                     batch_gt_instances_ignore: OptInstanceList = None) -> Dict[str, Tensor]:
        """MultiBox loss of the per-level outputs (see :meth:`loss_by_flat`).

        Ignored faces (``batch_gt_instances_ignore``) take no part, as in the
        reference, which drops them from the labels.
        """
        cls, reg, kpt = self.flatten_outputs(cls_scores, bbox_preds, kpt_preds)
        return self.loss_by_flat(cls, reg, kpt, self.get_priors(cls_scores), batch_gt_instances)

    def loss_by_flat(self, cls_logits: Tensor, bbox_deltas: Tensor, kpt_deltas: Tensor,
                     priors: Tensor, batch_gt_instances: InstanceList) -> Dict[str, Tensor]:
        """MultiBox loss of flattened outputs: assign, encode the positives' targets, loss.

        Args:
            cls_logits, bbox_deltas, kpt_deltas: ``(B, P, 2)``, ``(B, P, 4)``,
                ``(B, P, 2K)`` (:meth:`flatten_outputs`).
            priors: ``(P, 4)`` (cx, cy, w, h) pixels.
            batch_gt_instances: per image ``bboxes`` (xyxy pixels, tensor or
                ``HorizontalBoxes``), optional ``keypoints`` ``(G, K, 2)`` and
                ``keypoints_visible`` ``(G, K)`` (> 0 = annotated; default: all
                annotated when ``keypoints`` is given, none otherwise).
        """
        if self.assigner is None:
            raise ValueError('RetinaFaceHead.loss needs train_cfg=dict(assigner=dict('
                             "type='RetinaFacePriorAssigner', ...)) in the model config")
        num_imgs, num_priors = cls_logits.shape[:2]
        if len(batch_gt_instances) != num_imgs:
            raise ValueError(f'{num_imgs} images in the predictions but '
                             f'{len(batch_gt_instances)} ground-truth instance lists')
        if priors.size(0) != num_priors:
            raise ValueError(f'{priors.size(0)} priors for {num_priors} predictions per image')
        priors = priors.to(cls_logits.device)
        match = self.assigner.assign(priors, batch_gt_instances)
        img_idx, prior_idx = match.pos_mask.nonzero(as_tuple=True)
        bbox_targets, kpt_targets, kpt_visible = self.get_targets(
            priors[prior_idx], match.flat_gt_inds[img_idx, prior_idx], batch_gt_instances)
        return self.loss_multibox(cls_logits, match.pos_mask, bbox_deltas[img_idx, prior_idx],
                                  bbox_targets, kpt_deltas[img_idx, prior_idx], kpt_targets,
                                  kpt_visible)

    def get_targets(self, pos_priors: Tensor, gt_inds: Tensor,
                    batch_gt_instances: InstanceList) -> Tuple[Tensor, Tensor, Tensor]:
        """Encoded box ``(N, 4)`` and landmark ``(N, 2K)`` targets of the positives,
        and their landmarks' visibility ``(N, K)`` bool.

        ``gt_inds`` index the batch's concatenated ground truths. Targets are
        encoded in float32 (float64 for float64 priors), like the matching.
        """
        device, dtype = pos_priors.device, matching_dtype(pos_priors.dtype)
        pos_priors = pos_priors.to(dtype)
        boxes = torch.cat([get_box_tensor(gt.bboxes).reshape(-1, 4)
                           for gt in batch_gt_instances]).to(device, dtype)
        points, visible = [], []
        for gt in batch_gt_instances:
            if 'keypoints' in gt:
                kpts = gt.keypoints
                if kpts.shape[1:] != (self.num_keypoints, 2):
                    raise ValueError(
                        f'gt keypoints have shape {tuple(kpts.shape)}, expected '
                        f'(N, {self.num_keypoints}, 2); set num_keypoints consistently in '
                        'the model and the dataset')
                vis = gt.get('keypoints_visible', kpts.new_ones(kpts.shape[:2]))
            else:
                kpts = boxes.new_zeros((len(gt), self.num_keypoints, 2))
                vis = boxes.new_zeros((len(gt), self.num_keypoints))
            points.append(kpts.to(device, dtype))
            visible.append(vis.to(device) > 0)
        points, visible = torch.cat(points), torch.cat(visible)
        return (self.bbox_coder.encode(pos_priors, boxes[gt_inds]),
                self.kpt_coder.encode(pos_priors, points[gt_inds]), visible[gt_inds])

    # ------------------------------------------------------------------ predict
    def predict_by_feat(self,
                        cls_scores: List[Tensor],
                        bbox_preds: List[Tensor],
                        kpt_preds: List[Tensor],
                        batch_img_metas: Optional[List[dict]] = None,
                        cfg: OptConfigType = None,
                        rescale: bool = False,
                        with_nms: bool = True) -> InstanceList:
        """Per image: score threshold and top-k, decode, rescale, NMS, ``max_per_img``.

        Returns one ``InstanceData`` per image with ``bboxes``, ``scores``,
        ``labels`` and ``keypoints`` (N, K, 2); with ``rescale`` they are in
        original-image pixels (divided by ``scale_factor``). ``nms_pre`` keeps
        the top priors over all levels together, as the reference's ``top_k``.
        """
        cfg = self.test_cfg if cfg is None else cfg  # read only: no per-call copy
        priors = self.get_priors(cls_scores)
        cls = flatten_level_outputs(cls_scores, self.cls_out)
        # softmax over (background, face) is sigmoid(face - background): equal to ~1e-7 and
        # ~30x cheaper on CPU than a softmax over a last dimension of 2
        scores = torch.sigmoid(cls[..., 1] - cls[..., 0])
        nms_pre = cfg.get('nms_pre', -1)
        candidates = [select_candidates(img_scores, cfg.get('score_thr', 0.0),
                                        nms_pre if nms_pre > 0 else None)
                      for img_scores in scores]
        idx = [img_idx for _, img_idx in candidates]
        batch_img_metas = batch_img_metas or [{} for _ in range(scores.shape[0])]
        return [
            self._predict_candidates(img_scores, img_idx, priors, img_reg, img_kpt, meta, cfg,
                                     rescale, with_nms)
            for (img_scores, img_idx), img_reg, img_kpt, meta in zip(
                candidates, gather_level_rows(bbox_preds, 4, idx),
                gather_level_rows(kpt_preds, self.kpt_out, idx), batch_img_metas)
        ]

    def _predict_candidates(self, scores: Tensor, idx: Tensor, priors: Tensor,
                            bbox_deltas: Tensor, kpt_deltas: Tensor, img_meta: dict,
                            cfg: ConfigType, rescale: bool = False,
                            with_nms: bool = True) -> InstanceData:
        """One image's candidates (``scores``, prior indices ``idx``, deltas) -> results:
        decoded, then mmdet's ``_bbox_post_process`` steps (rescale, ``min_bbox_size``,
        NMS on the CPU (:func:`~mmretinaface.models.utils.nms_needs_cpu`),
        ``max_per_img``; equal results) on plain tensors, keypoints rescaled like boxes."""
        bboxes, keypoints = self.decode(priors[idx], bbox_deltas, kpt_deltas)
        if rescale:
            if not img_meta or img_meta.get('scale_factor') is None:
                raise ValueError('rescale=True needs scale_factor in the image meta')
            scale = [1 / s for s in img_meta['scale_factor']]  # (w, h), as mmdet's boxes
            if scale != [1.0, 1.0]:  # the original-size pipeline: nothing to scale
                bboxes = scale_boxes(bboxes, scale)
                keypoints = keypoints * keypoints.new_tensor(scale)
        min_size = cfg.get('min_bbox_size', -1)
        if min_size >= 0:
            w, h = get_box_wh(bboxes)
            valid = (w > min_size) & (h > min_size)
            if not valid.all():
                bboxes, scores, keypoints = bboxes[valid], scores[valid], keypoints[valid]
        if with_nms and bboxes.numel() > 0:
            device = bboxes.device
            on_cpu = (bboxes.cpu(), scores.cpu()) if nms_needs_cpu(device) else (bboxes, scores)
            keep, scores = single_class_nms(*on_cpu, cfg['nms'], cfg.get('max_per_img'))
            keep, scores = keep.to(device), scores.to(device)  # some NMS types re-weight them
            bboxes, keypoints = bboxes[keep], keypoints[keep]
        return InstanceData(bboxes=bboxes, scores=scores,
                            labels=scores.new_zeros(scores.shape, dtype=torch.long),
                            keypoints=keypoints)
