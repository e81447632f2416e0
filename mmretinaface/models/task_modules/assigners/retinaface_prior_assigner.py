"""RetinaFace prior matching (the reference ``match``) for a whole batch at once.

The reference matches every image in a Python loop (and loops over the ground
truths inside ``match``). Here all images' ground truths are concatenated into
one ``(N, 4)`` tensor matched against the priors in one pass
(:func:`~.prior_overlaps.gt_prior_overlaps`: memory grows with the number of
faces, not with ``batch * max_faces`` as padding would), and the per-prior
choices are made with ``scatter_reduce`` on the few (GT, prior) pairs that reach
the positive threshold. No loop over images or ground truths; everything stays
on the device.

Conventions (``docs/architecture.md``): priors ``(P, 4)`` (cx, cy, w, h) pixels,
boxes xyxy pixels.
"""
from typing import NamedTuple, Sequence

import torch
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy, get_box_tensor
from mmdet.utils import InstanceList
from torch import Tensor

from .prior_overlaps import gt_prior_overlaps


class PriorMatch(NamedTuple):
    """Per-prior assignment of a batch; ``-1`` marks background."""

    pos_mask: Tensor  # (B, P) bool: the prior is a face
    gt_inds: Tensor  # (B, P) long: index into that image's own GT list, or -1
    flat_gt_inds: Tensor  # (B, P) long: index into ``torch.cat(gt_bboxes)``, or -1
    num_pos: Tensor  # (B,) long: positives per image


def matching_dtype(dtype: torch.dtype) -> torch.dtype:
    """Matching and target encoding run in float64 for float64 priors, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def match_priors(gt_bboxes: Sequence[Tensor], priors: Tensor, pos_iou_thr: float = 0.35,
                 min_best_iou: float = 0.2) -> PriorMatch:
    """Assign every prior of every image to a face or to background (reference ``match``).

    Rules, per image:

    - a GT box with ``w <= 0`` or ``h <= 0`` is dropped before matching (its
      encoding would be ``log(0)``);
    - a GT whose best prior IoU is below ``min_best_iou`` ("hard gt") is
      ignored entirely;
    - each prior takes its highest-IoU remaining GT (the first one on ties) and
      is positive iff that IoU is ``>= pos_iou_thr``;
    - each remaining GT is then forced onto its own best prior (first on ties),
      which becomes positive whatever its IoU; when several GTs force the same
      prior, the one listed last wins, as in the reference loop.

    Deliberate deviation from the reference: its forcing loop
    ``for j in range(best_prior_idx.size(0)): best_truth_idx[best_prior_idx[j]] = j``
    also runs for the hard GTs, so a hard GT listed after the owner of its best
    prior steals that prior's regression target whenever the prior is positive
    for another GT. Here hard GTs take part in nothing; everything else is the
    same (``tests/test_multibox_loss.py`` shows both).

    Args:
        gt_bboxes: per image, ``(G_i, 4)`` xyxy boxes (tensors or ``HorizontalBoxes``)
            in the priors' units.
        priors: ``(P, 4)`` priors (cx, cy, w, h).
        pos_iou_thr: IoU from which a prior is a positive (reference 0.35; > 0).
        min_best_iou: GTs whose best prior IoU is lower are ignored (reference 0.2).

    Returns:
        PriorMatch: masks and indices of shape ``(B, P)``.
    """
    if pos_iou_thr <= 0:
        raise ValueError(f'pos_iou_thr must be > 0, got {pos_iou_thr}')
    device = priors.device
    dtype = matching_dtype(priors.dtype)
    num_imgs, num_priors = len(gt_bboxes), priors.size(0)
    gt_bboxes = [get_box_tensor(b).reshape(-1, 4) for b in gt_bboxes]
    counts = [int(b.shape[0]) for b in gt_bboxes]
    num_gts = sum(counts)
    boxes = (torch.cat(gt_bboxes).to(device, dtype)
             if num_imgs else priors.new_zeros((0, 4), dtype=dtype))
    counts_t = torch.tensor(counts, device=device, dtype=torch.long)
    img_of_gt = torch.repeat_interleave(torch.arange(num_imgs, device=device), counts_t)
    first_gt = torch.cumsum(counts_t, 0) - counts_t
    gt_ids = torch.arange(num_gts, device=device)

    # Degenerate (or NaN) boxes become all-zero boxes: IoU 0 everywhere, then invalid.
    proper = (boxes[:, 2:] > boxes[:, :2]).all(dim=1)
    boxes = torch.where(proper[:, None], boxes, torch.zeros_like(boxes))
    # Per GT: its best prior. Per (GT, prior) pair over the threshold: the IoU.
    best_iou, best_prior, pair_gt, pair_prior, pair_iou = gt_prior_overlaps(
        boxes, bbox_cxcywh_to_xyxy(priors.to(dtype)), pos_iou_thr)
    valid = proper & (best_iou >= min_best_iou)

    # Slot ``num_imgs * num_priors`` is a sink for entries that must not count.
    sink = num_imgs * num_priors
    key = torch.where(valid[pair_gt], img_of_gt[pair_gt] * num_priors + pair_prior,
                      torch.full_like(pair_prior, sink))
    best_pair_iou = pair_iou.new_full((sink + 1, ), -1.0).scatter_reduce_(
        0, key, pair_iou, 'amax')
    winner = torch.where(pair_iou == best_pair_iou[key], pair_gt,
                         torch.full_like(pair_gt, num_gts))
    assigned = gt_ids.new_full((sink + 1, ), num_gts).scatter_reduce_(0, key, winner, 'amin')

    # Forced matches: the last valid GT that picks a prior as its best owns it.
    forced_key = torch.where(valid, img_of_gt * num_priors + best_prior,
                             torch.full_like(best_prior, sink))
    forced = gt_ids.new_full((sink + 1, ), -1).scatter_reduce_(0, forced_key, gt_ids, 'amax')
    assigned = torch.where(forced >= 0, forced, assigned)[:sink]
    assigned = torch.where(assigned < num_gts, assigned, torch.full_like(assigned, -1))

    flat_gt_inds = assigned.view(num_imgs, num_priors)
    pos_mask = flat_gt_inds >= 0
    gt_inds = torch.where(pos_mask, flat_gt_inds - first_gt[:, None],
                          torch.full_like(flat_gt_inds, -1))
    return PriorMatch(pos_mask, gt_inds, flat_gt_inds, pos_mask.sum(dim=1))


@TASK_UTILS.register_module()
class RetinaFacePriorAssigner:
    """Batched prior assigner of the reference RetinaFace (see :func:`match_priors`).

    Unlike mmdet's per-image assigners, it assigns a whole batch in one call
    (as mmyolo's batch assigners do), which keeps matching loop-free.

    Args:
        pos_iou_thr: IoU from which a prior is a positive (reference 0.35).
        min_best_iou: GTs whose best prior IoU is lower are ignored (0.2).
    """

    def __init__(self, pos_iou_thr: float = 0.35, min_best_iou: float = 0.2) -> None:
        if pos_iou_thr <= 0:
            raise ValueError(f'pos_iou_thr must be > 0, got {pos_iou_thr}')
        self.pos_iou_thr = float(pos_iou_thr)
        self.min_best_iou = float(min_best_iou)

    @torch.no_grad()
    def assign(self, priors: Tensor, batch_gt_instances: InstanceList) -> PriorMatch:
        """Match ``(P, 4)`` priors to each image's ``gt_instances.bboxes``."""
        return match_priors([gt.bboxes for gt in batch_gt_instances], priors,
                            self.pos_iou_thr, self.min_best_iou)
