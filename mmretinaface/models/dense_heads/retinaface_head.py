"""RetinaFace head: per-level 1x1 class / box / landmark convolutions on prior boxes."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.ops import batched_nms
from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.utils import ConfigType, InstanceList, OptConfigType, OptInstanceList, OptMultiConfig
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor, nn

from ..losses.multibox import multibox_loss
from ..task_modules.coders import decode_boxes, decode_landmarks
from ..task_modules.prior_box import prior_boxes


def flatten_level_outputs(level_outputs: Sequence[Tensor], dim: int) -> Tensor:
    """Per-level ``(B, A * dim, H, W)`` maps -> ``(B, sum(H * W * A), dim)``.

    The reference layout: NHWC, anchors fastest, levels concatenated.
    """
    return torch.cat(
        [out.permute(0, 2, 3, 1).reshape(out.shape[0], -1, dim) for out in level_outputs], dim=1)


@MODELS.register_module()
class RetinaFaceHead(BaseDenseHead):
    """RetinaFace head with MultiBoxLoss and landmark-keeping prediction.

    Args:
        in_channels: channels of every input level.
        num_classes: foreground classes (1: face). The class branch predicts
            ``num_classes + 1`` softmax logits per prior, background first.
        num_keypoints: landmarks per face (5 for the published models).
        prior_generator: a :class:`RetinaFacePriorGenerator` config.
        variances: SSD centre / size variances shared by the box and landmark
            coders.
        train_cfg: matching and loss hyper-parameters, see ``default_train_cfg``.
        test_cfg: ``score_thr``, ``nms_pre``, ``nms``, ``max_per_img``.
    """

    default_train_cfg = dict(pos_iou_thr=0.35, min_best_iou=0.2, neg_pos_ratio=7,
                             loc_weight=2.0)

    def __init__(self,
                 in_channels: int,
                 num_classes: int = 1,
                 num_keypoints: int = 5,
                 prior_generator: ConfigType = dict(
                     type='RetinaFacePriorGenerator',
                     min_sizes=[[16, 32], [64, 128], [256, 512]],
                     steps=[8, 16, 32]),
                 variances: Sequence[float] = (0.1, 0.2),
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
        self.variances = tuple(float(v) for v in variances)
        self.prior_generator = TASK_UTILS.build(prior_generator)
        self.train_cfg = {**self.default_train_cfg, **(train_cfg or {})}
        self.test_cfg = test_cfg
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

    # ------------------------------------------------------------------ helpers
    def flatten_outputs(self, cls_scores: List[Tensor], bbox_preds: List[Tensor],
                        kpt_preds: List[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """The reference's ``(B, P, 2)``, ``(B, P, 4)``, ``(B, P, 2K)`` tensors."""
        return (flatten_level_outputs(cls_scores, self.cls_out),
                flatten_level_outputs(bbox_preds, 4),
                flatten_level_outputs(kpt_preds, self.kpt_out))

    def get_priors(self, cls_scores: List[Tensor], cached: bool = True) -> Tensor:
        """(cx, cy, w, h) pixel priors for the feature-map sizes of ``cls_scores``.

        ``cached=False`` builds them with traceable ops (ONNX export with
        dynamic height and width).
        """
        featmap_sizes = [tuple(s.shape[-2:]) for s in cls_scores]
        ref = cls_scores[0]
        if cached:
            return self.prior_generator.grid_priors(featmap_sizes, ref.device, ref.dtype)
        return prior_boxes(featmap_sizes, self.prior_generator.steps,
                           self.prior_generator.min_sizes, ref.device, ref.dtype)

    def decode(self, cls_scores: List[Tensor], bbox_preds: List[Tensor],
               kpt_preds: List[Tensor], cached_priors: bool = True
               ) -> Tuple[Tensor, Tensor, Tensor]:
        """Face scores ``(B, P)``, boxes ``(B, P, 4)`` and landmarks ``(B, P, K, 2)``.

        Coordinates are pixels of the (padded) network input. Pure tensor ops,
        shared by :meth:`predict_by_feat` and ONNX export.
        """
        cls, reg, kpt = self.flatten_outputs(cls_scores, bbox_preds, kpt_preds)
        priors = self.get_priors(cls_scores, cached=cached_priors)
        scores = F.softmax(cls, dim=-1)[..., 1]
        boxes = decode_boxes(reg, priors, self.variances)
        points = decode_landmarks(kpt, priors, self.variances)
        return scores, boxes, points

    # --------------------------------------------------------------------- loss
    def loss_by_feat(self,
                     cls_scores: List[Tensor],
                     bbox_preds: List[Tensor],
                     kpt_preds: List[Tensor],
                     batch_gt_instances: InstanceList,
                     batch_img_metas: List[dict],
                     batch_gt_instances_ignore: OptInstanceList = None) -> Dict[str, Tensor]:
        """MultiBoxLoss: matched box / landmark Smooth-L1 and hard-mined CE."""
        cls, reg, kpt = self.flatten_outputs(cls_scores, bbox_preds, kpt_preds)
        priors = self.get_priors(cls_scores)
        gt_keypoints, gt_visible = [], []
        for gt in batch_gt_instances:
            num = len(gt)
            if 'keypoints' in gt:
                points = gt.keypoints.to(reg)
                if points.shape[1:] != (self.num_keypoints, 2):
                    raise ValueError(
                        f'gt keypoints have shape {tuple(points.shape)}, expected '
                        f'(N, {self.num_keypoints}, 2); set num_keypoints consistently in '
                        'the model and the dataset')
                visible = gt.get('keypoints_visible', points.new_ones(points.shape[:2]))
            else:
                points = reg.new_zeros((num, self.num_keypoints, 2))
                visible = reg.new_zeros((num, self.num_keypoints))
            gt_keypoints.append(points)
            gt_visible.append(visible.to(reg))
        cfg = self.train_cfg
        return multibox_loss(
            cls, reg, kpt, priors,
            gt_bboxes=[gt.bboxes.to(reg) for gt in batch_gt_instances],
            gt_keypoints=gt_keypoints,
            gt_keypoints_visible=gt_visible,
            variances=self.variances,
            pos_iou_thr=cfg['pos_iou_thr'],
            min_best_iou=cfg['min_best_iou'],
            neg_pos_ratio=cfg['neg_pos_ratio'],
            loc_weight=cfg['loc_weight'])

    # ------------------------------------------------------------------ predict
    def predict_by_feat(self,
                        cls_scores: List[Tensor],
                        bbox_preds: List[Tensor],
                        kpt_preds: List[Tensor],
                        batch_img_metas: Optional[List[dict]] = None,
                        cfg: OptConfigType = None,
                        rescale: bool = False,
                        with_nms: bool = True) -> InstanceList:
        """Decode, threshold, top-k, NMS (keeping each box's landmarks), keep top-k.

        Returns one ``InstanceData`` per image with ``bboxes``, ``scores``,
        ``labels`` and ``keypoints`` (N, K, 2); with ``rescale`` they are in
        original-image pixels (divided by ``scale_factor``).
        """
        cfg = ConfigDict(cfg if cfg is not None else self.test_cfg)
        cls, reg, kpt = self.flatten_outputs(cls_scores, bbox_preds, kpt_preds)
        priors = self.get_priors(cls_scores)
        scores = F.softmax(cls, dim=-1)[..., 1]
        batch_img_metas = batch_img_metas or [{} for _ in range(scores.shape[0])]
        score_thr = cfg.get('score_thr', 0.0)
        results = []
        for img_scores, img_reg, img_kpt, meta in zip(scores, reg, kpt, batch_img_metas):
            # Decode only the priors above the score threshold (the same values as
            # :meth:`decode` gives them; typically ~1% of the priors).
            keep = (img_scores > score_thr).nonzero().squeeze(1)
            img_priors = priors[keep]
            results.append(self._predict_single(
                img_scores[keep], decode_boxes(img_reg[keep], img_priors, self.variances),
                decode_landmarks(img_kpt[keep], img_priors, self.variances), meta, cfg,
                rescale, with_nms))
        return results

    def _predict_single(self, scores: Tensor, boxes: Tensor, points: Tensor, img_meta: dict,
                        cfg: ConfigDict, rescale: bool, with_nms: bool) -> InstanceData:
        keep = scores > cfg.get('score_thr', 0.0)
        scores, boxes, points = scores[keep], boxes[keep], points[keep]
        nms_pre = cfg.get('nms_pre', -1)
        if 0 < nms_pre < scores.numel():
            scores, order = scores.topk(nms_pre)
            boxes, points = boxes[order], points[order]
        if with_nms and scores.numel() > 0:
            _, keep = batched_nms(boxes, scores, scores.new_zeros(scores.shape, dtype=torch.long),
                                  cfg.nms)
            scores, boxes, points = scores[keep], boxes[keep], points[keep]
        else:
            scores, order = scores.sort(descending=True)
            boxes, points = boxes[order], points[order]
        max_per_img = cfg.get('max_per_img', -1)
        if max_per_img > 0:
            scores, boxes, points = (scores[:max_per_img], boxes[:max_per_img],
                                     points[:max_per_img])
        if rescale and 'scale_factor' in img_meta:
            scale = boxes.new_tensor(img_meta['scale_factor'])  # (w_scale, h_scale)
            boxes = boxes / scale.repeat(2)
            points = points / scale
        results = InstanceData()
        results.bboxes = boxes
        results.scores = scores
        results.labels = scores.new_zeros(scores.shape, dtype=torch.long)
        results.keypoints = points
        return results
