"""The reference RetinaFace ``MultiBoxLoss`` on matched targets: hard-negative mined
cross-entropy plus Smooth-L1 on the boxes and landmarks of the positive priors.

Matching (``task_modules/assigners``) and target encoding (the head's coders)
happen before; this module sees the batch's ``(B, P)`` positive mask and the
predictions / targets of its positives, in ``pos_mask.nonzero()`` order.
"""
from typing import Dict

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor, nn


def hard_negative_mask(cls_loss: Tensor, pos_mask: Tensor, neg_pos_ratio: float = 7) -> Tensor:
    """Hard negatives per image (reference mining), ``(B, P)`` bool.

    Negatives are ranked by their classification loss; each image keeps the top
    ``min(neg_pos_ratio * num_pos, P - 1)``. As in the reference, the ranking
    scores positives as 0 and the budget counts them when the image has fewer
    negatives than that; the returned mask never includes positives.
    """
    num_priors = cls_loss.size(1)
    scores = cls_loss.detach().masked_fill(pos_mask, 0)
    order = scores.argsort(dim=1, descending=True)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(num_priors, device=order.device).expand_as(order))
    num_neg = (neg_pos_ratio * pos_mask.sum(dim=1, keepdim=True)).clamp(max=num_priors - 1)
    return (rank < num_neg) & ~pos_mask


def multibox_loss(cls_logits: Tensor,
                  pos_mask: Tensor,
                  bbox_preds: Tensor,
                  bbox_targets: Tensor,
                  kpt_preds: Tensor,
                  kpt_targets: Tensor,
                  kpt_visible: Tensor,
                  neg_pos_ratio: float = 7,
                  loc_weight: float = 2.0) -> Dict[str, Tensor]:
    """RetinaFace MultiBox loss of a batch (reference ``MultiBoxLoss.forward``).

    - ``loss_bbox``: Smooth-L1 (beta 1, summed) of the positives' box deltas,
      divided by the batch's positives (at least 1), times ``loc_weight``;
    - ``loss_cls``: 2-class cross-entropy (index 1 = face) summed over positives
      and hard negatives (:func:`hard_negative_mask`), divided by the positives;
    - ``loss_kpt``: Smooth-L1 of the landmark offsets of the positives whose GT
      has visible landmarks, over visible coordinates only, divided by the
      number of such positives (at least 1). The reference marks a face's
      landmarks all present or all absent; per-point visibility generalises it.

    Images without positives have, as in the reference, no mined negatives.

    Args:
        cls_logits: ``(B, P, 2)`` class logits.
        pos_mask: ``(B, P)`` bool, the positive priors (``N`` of them).
        bbox_preds, bbox_targets: ``(N, 4)`` SSD deltas of the positives.
        kpt_preds, kpt_targets: ``(N, 2K)`` landmark offsets of the positives
            (``K = 0``: no landmark branch, ``loss_kpt`` is 0).
        kpt_visible: ``(N, K)`` bool, annotated landmarks of the positives' GTs.

    Returns:
        dict: ``loss_cls``, ``loss_bbox``, ``loss_kpt``.
    """
    num_imgs, num_priors = pos_mask.shape
    num_pos = pos_mask.sum()
    normaliser = num_pos.clamp(min=1).to(cls_logits.dtype)

    # Classification: positives + hard negatives.
    ce = F.cross_entropy(
        cls_logits.reshape(-1, cls_logits.size(-1)), pos_mask.reshape(-1).long(),
        reduction='none').view(num_imgs, num_priors)
    with torch.no_grad():
        neg = hard_negative_mask(ce, pos_mask, neg_pos_ratio)
    loss_cls = torch.where(pos_mask | neg, ce, torch.zeros_like(ce)).sum() / normaliser

    loss_bbox = F.smooth_l1_loss(bbox_preds, bbox_targets.to(bbox_preds.dtype), reduction='sum',
                                 beta=1.0) / normaliser * loc_weight

    if kpt_preds.size(-1) == 0:  # a model without landmarks
        loss_kpt = kpt_preds.sum() * 0
    else:
        num_kpt_pos = kpt_visible.any(dim=1).sum().clamp(min=1).to(kpt_preds.dtype)
        coord_mask = kpt_visible.repeat_interleave(2, dim=1)
        loss_kpt = F.smooth_l1_loss(kpt_preds[coord_mask],
                                    kpt_targets[coord_mask].to(kpt_preds.dtype),
                                    reduction='sum', beta=1.0) / num_kpt_pos
    return dict(loss_cls=loss_cls, loss_bbox=loss_bbox, loss_kpt=loss_kpt)


@MODELS.register_module()
class MultiBoxLoss(nn.Module):
    """:func:`multibox_loss` with its hyper-parameters, built by ``RetinaFaceHead``.

    Args:
        neg_pos_ratio: hard negatives per positive (reference 7).
        loc_weight: weight of the box term (reference 2.0).
        log_num_pos: also return ``num_pos`` (the batch's positive priors,
            detached; logged, not summed into the loss).
    """

    def __init__(self, neg_pos_ratio: float = 7, loc_weight: float = 2.0,
                 log_num_pos: bool = False) -> None:
        super().__init__()
        self.neg_pos_ratio = neg_pos_ratio
        self.loc_weight = loc_weight
        self.log_num_pos = log_num_pos

    def forward(self, cls_logits: Tensor, pos_mask: Tensor, bbox_preds: Tensor,
                bbox_targets: Tensor, kpt_preds: Tensor, kpt_targets: Tensor,
                kpt_visible: Tensor) -> Dict[str, Tensor]:
        losses = multibox_loss(cls_logits, pos_mask, bbox_preds, bbox_targets, kpt_preds,
                               kpt_targets, kpt_visible, self.neg_pos_ratio, self.loc_weight)
        if self.log_num_pos:
            losses['num_pos'] = pos_mask.sum().detach().to(cls_logits.dtype)
        return losses
