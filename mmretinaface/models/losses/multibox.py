"""The reference RetinaFace ``MultiBoxLoss`` as batched, vectorised tensor functions.

The reference matches every image in a Python loop (and loops over the ground
truths inside ``match``). Here all images' ground truths are concatenated into
one ``(N, 4)`` tensor whose ``(N, P)`` IoUs are computed for the whole batch at
once (in row blocks of bounded size; memory grows with the number of faces, not
with ``batch * max_faces`` as padding would), and the per-prior choices are made
with ``scatter_reduce`` on the few (GT, prior) pairs that reach the positive
threshold. No loop over images or ground truths; everything stays on the device.

Conventions (``docs/architecture.md``): priors ``(P, 4)`` (cx, cy, w, h) pixels,
boxes xyxy pixels, landmarks ``(G, K, 2)`` pixels with visibility ``(G, K)``.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.structures.bbox import get_box_tensor
from torch import Tensor, nn

from ..task_modules.coders import DEFAULT_VARIANCES, encode_boxes, encode_landmarks

# GT x prior IoUs are computed in blocks of at most this many elements, in
# reused buffers: on GPU (2**26 float32 = 256 MiB) a batch of 32 images x 120
# faces x 16800 priors is one block; on CPU smaller, cache-sized blocks are faster.
IOU_BLOCK = {'cpu': 1 << 20}
IOU_BLOCK_DEFAULT = 1 << 26
# The windowed path (see ``_windowed_overlaps``) holds at most this many padded
# (GT, prior) IoUs at once.
PAIR_BLOCK = {'cpu': 1 << 20}
PAIR_BLOCK_DEFAULT = 1 << 24
WINDOWED_DEVICES = ('cpu', )


class PriorMatch(NamedTuple):
    """Per-prior assignment of a batch; ``-1`` marks background."""

    pos_mask: Tensor  # (B, P) bool: the prior is a face
    gt_inds: Tensor  # (B, P) long: index into that image's own GT list, or -1
    flat_gt_inds: Tensor  # (B, P) long: index into ``torch.cat(gt_bboxes)``, or -1
    num_pos: Tensor  # (B,) long: positives per image


def priors_to_xyxy(priors: Tensor) -> Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2) (the reference ``point_form``)."""
    half = priors[..., 2:] / 2
    return torch.cat([priors[..., :2] - half, priors[..., :2] + half], dim=-1)


def box_iou(boxes: Tensor, others: Tensor,
            out: Optional[Tuple[Tensor, Tensor, Tensor]] = None) -> Tensor:
    """Plain IoU (no +1) between ``(n, 4)`` and ``(m, 4)`` xyxy boxes -> ``(n, m)``.

    Same arithmetic as the reference ``jaccard`` (so exact ties stay ties).
    ``out`` takes three ``(n, m)`` buffers to work in; the first one is
    returned. Reusing buffers matters on CPU, where touching freshly allocated
    memory costs several times the arithmetic.
    """
    if out is None:
        out = tuple(boxes.new_empty((boxes.size(0), others.size(0))) for _ in range(3))
    inter, buf_a, buf_b = out
    torch.minimum(boxes[:, None, 2], others[None, :, 2], out=inter)
    inter.sub_(torch.maximum(boxes[:, None, 0], others[None, :, 0], out=buf_a)).clamp_(min=0)
    torch.minimum(boxes[:, None, 3], others[None, :, 3], out=buf_a)
    buf_a.sub_(torch.maximum(boxes[:, None, 1], others[None, :, 1], out=buf_b)).clamp_(min=0)
    inter.mul_(buf_a)
    area_a = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_b = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    torch.add(area_a[:, None], area_b[None, :], out=buf_a).sub_(inter)
    return inter.div_(buf_a)


PriorGrid = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]


def prior_grids(priors_xyxy: Tensor) -> Optional[List[PriorGrid]]:
    """Split xyxy priors into grids of equal boxes, for :func:`_windowed_overlaps`.

    Each grid is ``(x1, x2)`` per column, ``(y1, y2)`` per row (both
    non-decreasing) and the ``(H, W)`` prior indices, increasing in row-major
    order: a prior's x extent depends on its column only, its y extent on its
    row only. The reference priors (one grid per level and box size) split this
    way; ``None`` when some priors do not (they then take the dense path).
    """
    _, w_ids = torch.unique(priors_xyxy[:, 2] - priors_xyxy[:, 0], return_inverse=True)
    h_vals, h_ids = torch.unique(priors_xyxy[:, 3] - priors_xyxy[:, 1], return_inverse=True)
    _, group = torch.unique(w_ids * h_vals.numel() + h_ids, return_inverse=True)
    grids = []
    for k in range(int(group.max()) + 1 if group.numel() else 0):
        idx = (group == k).nonzero().squeeze(1)
        xs, col = torch.unique(priors_xyxy[idx, 0], return_inverse=True)
        ys, row = torch.unique(priors_xyxy[idx, 1], return_inverse=True)
        if xs.numel() * ys.numel() != idx.numel():
            return None
        table = idx.new_full((ys.numel(), xs.numel()), -1)
        table[row, col] = idx
        flat = table.view(-1)
        if bool((flat < 0).any()) or bool((flat[1:] <= flat[:-1]).any()):
            return None
        cells = priors_xyxy[table]  # (H, W, 4)
        x2, y2 = cells[0, :, 2], cells[:, 0, 3]
        if not (bool((cells[..., 0] == cells[:1, :, 0]).all())
                and bool((cells[..., 2] == cells[:1, :, 2]).all())
                and bool((cells[..., 1] == cells[:, :1, 1]).all())
                and bool((cells[..., 3] == cells[:, :1, 3]).all())
                and bool((x2[1:] >= x2[:-1]).all()) and bool((y2[1:] >= y2[:-1]).all())):
            return None
        grids.append((xs, x2.contiguous(), ys, y2.contiguous(), table))
    return grids


def _dense_overlaps(boxes: Tensor, priors_xyxy: Tensor, pos_iou_thr: float, grids=None):
    """Best IoU / prior per GT and the pairs ``>= pos_iou_thr``, from all GT x prior IoUs."""
    num_gts, num_priors = boxes.size(0), priors_xyxy.size(0)
    best_iou = boxes.new_zeros(num_gts)
    best_prior = torch.zeros(num_gts, dtype=torch.long, device=boxes.device)
    pair_gt, pair_prior, pair_iou = [], [], []
    block = IOU_BLOCK.get(boxes.device.type, IOU_BLOCK_DEFAULT)
    rows = max(min(block // max(num_priors, 1), num_gts), 1)
    buffers = boxes.new_empty((3, rows, num_priors)) if num_gts else None
    for start in range(0, num_gts, rows):  # blocks of GT rows (memory / cache), not per GT
        end = min(start + rows, num_gts)
        overlaps = box_iou(boxes[start:end], priors_xyxy,
                           out=tuple(b[:end - start] for b in buffers))
        best_iou[start:end], best_prior[start:end] = overlaps.max(dim=1)
        g, p = (overlaps >= pos_iou_thr).nonzero(as_tuple=True)
        pair_gt.append(g + start)
        pair_prior.append(p)
        pair_iou.append(overlaps[g, p])
    del buffers
    if not pair_gt:
        empty = best_prior.new_zeros(0)
        return best_iou, best_prior, empty, empty, boxes.new_zeros(0)
    return best_iou, best_prior, torch.cat(pair_gt), torch.cat(pair_prior), torch.cat(pair_iou)


def _windowed_overlaps(boxes: Tensor, priors_xyxy: Tensor, pos_iou_thr: float, grids):
    """:func:`_dense_overlaps` evaluating only the priors that can intersect each GT.

    Per grid, the priors overlapping a GT form a window of rows and columns
    (``searchsorted`` on the sorted prior extents); every other IoU is 0. GTs
    sorted by window size are processed in chunks padded to the chunk's largest
    window. IoUs use :func:`box_iou`'s arithmetic, so values, ties and the
    first-index choice of the best prior are the dense path's.
    """
    num_gts = boxes.size(0)
    device = boxes.device
    x1, y1, x2, y2 = (c.contiguous() for c in boxes.unbind(1))
    area_a = (x2 - x1) * (y2 - y1)
    best_iou = boxes.new_zeros(num_gts)
    best_prior = torch.zeros(num_gts, dtype=torch.long, device=device)
    pair_gt, pair_prior, pair_iou = [], [], []
    budget = PAIR_BLOCK.get(device.type, PAIR_BLOCK_DEFAULT)
    for gx1, gx2, gy1, gy2, table in grids:
        height, width = table.shape
        c0 = torch.searchsorted(gx2, x1, right=True)  # first column with px2 > x1
        r0 = torch.searchsorted(gy2, y1, right=True)
        nc = (torch.searchsorted(gx1, x2) - c0).clamp_(min=0)  # ... and px1 < x2
        nr = (torch.searchsorted(gy1, y2) - r0).clamp_(min=0)
        order = torch.argsort(nr * nc)
        sizes = torch.stack([nr[order], nc[order]], 1).tolist()
        start = next((i for i, (r, c) in enumerate(sizes) if r * c), num_gts)
        while start < num_gts:  # chunks of GTs with similar windows
            end, rows, cols = start, 0, 0
            while end < num_gts:
                r, c = max(rows, sizes[end][0]), max(cols, sizes[end][1])
                if end > start and (end + 1 - start) * r * c > budget:
                    break
                rows, cols, end = r, c, end + 1
            ids = order[start:end]
            start = end
            ri = r0[ids, None] + torch.arange(rows, device=device)
            ci = c0[ids, None] + torch.arange(cols, device=device)
            row_ok, col_ok = ri < (r0 + nr)[ids, None], ci < (c0 + nc)[ids, None]
            ri, ci = ri.clamp_(max=height - 1), ci.clamp_(max=width - 1)
            ih = torch.minimum(y2[ids, None], gy2[ri]).sub_(
                torch.maximum(y1[ids, None], gy1[ri])).clamp_(min=0).mul_(row_ok)
            iw = torch.minimum(x2[ids, None], gx2[ci]).sub_(
                torch.maximum(x1[ids, None], gx1[ci])).clamp_(min=0).mul_(col_ok)
            inter = iw[:, None, :] * ih[:, :, None]  # (m, rows, cols)
            area_b = (gx2 - gx1)[ci][:, None, :] * (gy2 - gy1)[ri][:, :, None]
            iou = inter.div_(area_b.add_(area_a[ids, None, None]).sub_(inter))
            value, flat = iou.view(iou.size(0), -1).max(dim=1)
            prior = table[torch.gather(ri, 1, (flat // cols)[:, None]).squeeze(1),
                          torch.gather(ci, 1, (flat % cols)[:, None]).squeeze(1)]
            current, current_prior = best_iou[ids], best_prior[ids]
            tie = (value == current) & (value > 0)
            best_prior[ids] = torch.where(value > current, prior, torch.where(
                tie, torch.minimum(prior, current_prior), current_prior))
            best_iou[ids] = torch.maximum(value, current)
            k, i, j = (iou >= pos_iou_thr).nonzero(as_tuple=True)
            pair_gt.append(ids[k])
            pair_prior.append(table[ri[k, i], ci[k, j]])
            pair_iou.append(iou[k, i, j])
    if not pair_gt:
        empty = best_prior.new_zeros(0)
        return best_iou, best_prior, empty, empty, boxes.new_zeros(0)
    return best_iou, best_prior, torch.cat(pair_gt), torch.cat(pair_prior), torch.cat(pair_iou)


def _matching_dtype(dtype: torch.dtype) -> torch.dtype:
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
    dtype = _matching_dtype(priors.dtype)
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
    priors_xyxy = priors_to_xyxy(priors.to(dtype))

    # Per GT: its best prior. Per (GT, prior) pair over the threshold: the IoU.
    # CPU: only the intersecting pairs (4-5x faster with many faces). Elsewhere the
    # dense blocks (one or a few large kernels) are kept.
    grids = prior_grids(priors_xyxy) if num_gts and device.type in WINDOWED_DEVICES else None
    overlaps = _windowed_overlaps if grids is not None else _dense_overlaps
    best_iou, best_prior, pair_gt, pair_prior, pair_iou = overlaps(
        boxes, priors_xyxy, pos_iou_thr, grids)
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
                  bbox_deltas: Tensor,
                  kpt_deltas: Tensor,
                  priors: Tensor,
                  gt_bboxes: Sequence[Tensor],
                  gt_keypoints: Sequence[Tensor],
                  gt_keypoints_visible: Optional[Sequence[Tensor]] = None,
                  variances: Sequence[float] = DEFAULT_VARIANCES,
                  pos_iou_thr: float = 0.35,
                  min_best_iou: float = 0.2,
                  neg_pos_ratio: float = 7,
                  loc_weight: float = 2.0,
                  return_stats: bool = False) -> Dict[str, Tensor]:
    """RetinaFace MultiBox loss of a batch (reference ``MultiBoxLoss.forward``).

    - ``loss_bbox``: Smooth-L1 (beta 1, summed) of the SSD deltas of every
      positive prior, divided by the batch's positives (at least 1), times
      ``loc_weight``;
    - ``loss_cls``: 2-class cross-entropy (index 1 = face) summed over positives
      and hard negatives (:func:`hard_negative_mask`), divided by the positives;
    - ``loss_kpt``: Smooth-L1 of the landmark offsets of the positives whose GT
      has visible landmarks, over visible coordinates only, divided by the
      number of such positives (at least 1). The reference marks a face's
      landmarks all present or all absent; per-point visibility generalises it.

    Matching is :func:`match_priors` (see its note on hard GTs). Images without
    a usable GT have no positives and, as in the reference, no mined negatives.

    Args:
        cls_logits: ``(B, P, 2)`` class logits.
        bbox_deltas: ``(B, P, 4)`` predicted box deltas.
        kpt_deltas: ``(B, P, 2K)`` predicted landmark offsets (``K = 0``: no
            landmark branch, ``loss_kpt`` is 0).
        priors: ``(P, 4)`` priors (cx, cy, w, h) in pixels.
        gt_bboxes: per image ``(G_i, 4)`` xyxy pixel boxes (or ``HorizontalBoxes``).
        gt_keypoints: per image ``(G_i, K, 2)`` landmarks in pixels.
        gt_keypoints_visible: per image ``(G_i, K)``, > 0 = annotated;
            ``None`` = all annotated.
        return_stats: also return ``num_pos`` (positives in the batch, float,
            detached) for logging.

    Returns:
        dict: ``loss_cls``, ``loss_bbox``, ``loss_kpt`` (and ``num_pos``).
    """
    num_imgs, num_priors = cls_logits.shape[:2]
    if kpt_deltas.size(-1) % 2:
        raise ValueError(f'kpt_deltas has {kpt_deltas.size(-1)} channels; expected 2K')
    if not len(gt_bboxes) == len(gt_keypoints) == num_imgs:
        raise ValueError(f'{num_imgs} images in the predictions but {len(gt_bboxes)} box and '
                         f'{len(gt_keypoints)} keypoint GT lists')
    if priors.size(0) != num_priors:
        raise ValueError(f'{priors.size(0)} priors for {num_priors} predictions per image')
    device = cls_logits.device
    priors = priors.to(device)
    dtype = _matching_dtype(priors.dtype)

    with torch.no_grad():
        match = match_priors(gt_bboxes, priors, pos_iou_thr, min_best_iou)
    pos = match.pos_mask
    num_pos = match.pos_mask.sum()
    normaliser = num_pos.clamp(min=1).to(cls_logits.dtype)

    # Classification: positives + hard negatives.
    ce = F.cross_entropy(
        cls_logits.reshape(-1, cls_logits.size(-1)), pos.reshape(-1).long(),
        reduction='none').view(num_imgs, num_priors)
    with torch.no_grad():
        neg = hard_negative_mask(ce, pos, neg_pos_ratio)
    loss_cls = torch.where(pos | neg, ce, torch.zeros_like(ce)).sum() / normaliser

    # Boxes: every positive, regressed towards its matched GT.
    img_idx, prior_idx = pos.nonzero(as_tuple=True)
    gt_idx = match.flat_gt_inds[img_idx, prior_idx]
    pos_priors = priors[prior_idx].to(dtype)
    all_boxes = torch.cat([get_box_tensor(b).reshape(-1, 4) for b in gt_bboxes]).to(device, dtype)
    box_targets = encode_boxes(all_boxes[gt_idx], pos_priors, variances)
    box_preds = bbox_deltas[img_idx, prior_idx]
    loss_bbox = F.smooth_l1_loss(box_preds, box_targets.to(box_preds.dtype), reduction='sum',
                                 beta=1.0) / normaliser * loc_weight

    losses = dict(loss_cls=loss_cls, loss_bbox=loss_bbox,
                  loss_kpt=_landmark_loss(kpt_deltas, img_idx, prior_idx, gt_idx, pos_priors,
                                          gt_keypoints, gt_keypoints_visible, variances))
    if return_stats:
        losses['num_pos'] = num_pos.detach().to(cls_logits.dtype)
    return losses


def _landmark_loss(kpt_deltas: Tensor, img_idx: Tensor, prior_idx: Tensor, gt_idx: Tensor,
                   pos_priors: Tensor, gt_keypoints: Sequence[Tensor],
                   gt_keypoints_visible: Optional[Sequence[Tensor]],
                   variances: Sequence[float]) -> Tensor:
    """Smooth-L1 over the visible points of positives, per landmark-bearing positive."""
    num_kpts = kpt_deltas.size(-1) // 2
    if num_kpts == 0:  # a model without landmarks
        return kpt_deltas.sum() * 0
    device, dtype = kpt_deltas.device, pos_priors.dtype
    all_kpts = torch.cat([k.reshape(-1, num_kpts, 2) for k in gt_keypoints]).to(device, dtype)
    if gt_keypoints_visible is None:
        all_vis = torch.ones(all_kpts.shape[:2], dtype=torch.bool, device=device)
    else:
        all_vis = torch.cat([v.reshape(-1, num_kpts) for v in gt_keypoints_visible]).to(device) > 0
    pos_vis = all_vis[gt_idx]
    num_kpt_pos = pos_vis.any(dim=1).sum().clamp(min=1).to(kpt_deltas.dtype)
    coord_mask = pos_vis.repeat_interleave(2, dim=1)
    kpt_targets = encode_landmarks(all_kpts[gt_idx], pos_priors, variances)
    kpt_preds = kpt_deltas[img_idx, prior_idx]
    return F.smooth_l1_loss(kpt_preds[coord_mask], kpt_targets[coord_mask].to(kpt_preds.dtype),
                            reduction='sum', beta=1.0) / num_kpt_pos


@MODELS.register_module()
class MultiBoxLoss(nn.Module):
    """Config-facing wrapper of :func:`multibox_loss` holding its hyper-parameters."""

    def __init__(self,
                 variances: Sequence[float] = DEFAULT_VARIANCES,
                 pos_iou_thr: float = 0.35,
                 min_best_iou: float = 0.2,
                 neg_pos_ratio: float = 7,
                 loc_weight: float = 2.0,
                 return_stats: bool = False) -> None:
        super().__init__()
        self.variances = tuple(float(v) for v in variances)
        self.pos_iou_thr = pos_iou_thr
        self.min_best_iou = min_best_iou
        self.neg_pos_ratio = neg_pos_ratio
        self.loc_weight = loc_weight
        self.return_stats = return_stats

    def forward(self, cls_logits: Tensor, bbox_deltas: Tensor, kpt_deltas: Tensor,
                priors: Tensor, gt_bboxes: Sequence[Tensor], gt_keypoints: Sequence[Tensor],
                gt_keypoints_visible: Optional[Sequence[Tensor]] = None) -> Dict[str, Tensor]:
        return multibox_loss(cls_logits, bbox_deltas, kpt_deltas, priors, gt_bboxes,
                             gt_keypoints, gt_keypoints_visible, self.variances,
                             self.pos_iou_thr, self.min_best_iou, self.neg_pos_ratio,
                             self.loc_weight, self.return_stats)
