"""IoU kernels between ground-truth boxes and the prior grid, for prior matching.

:func:`gt_prior_overlaps` returns, per GT, its best IoU and best prior, plus the
(GT, prior) pairs whose IoU reaches a threshold: all that matching needs, without
keeping a ``(G, P)`` matrix. Two ways to get there, with identical values:

- dense (:func:`dense_overlaps`): every GT x prior IoU, in row blocks of bounded
  size (one or a few large kernels; used off the CPU);
- windowed (:func:`windowed_overlaps`): per grid of equal priors, only the rows
  and columns a GT can intersect (4-5x faster on CPU with many faces).

Both use :func:`box_iou`'s arithmetic (the reference ``jaccard``), so values, ties
and the first-index choice of the best prior agree bit for bit.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor

# GT x prior IoUs are computed in blocks of at most this many elements, in
# reused buffers: on GPU (2**26 float32 = 256 MiB) a batch of 32 images x 120
# faces x 16800 priors is one block; on CPU smaller, cache-sized blocks are faster.
IOU_BLOCK = {'cpu': 1 << 20}
IOU_BLOCK_DEFAULT = 1 << 26
# The windowed path holds at most this many padded (GT, prior) IoUs at once.
PAIR_BLOCK = {'cpu': 1 << 20}
PAIR_BLOCK_DEFAULT = 1 << 24
WINDOWED_DEVICES = ('cpu', )

#: ``(x1 per column, x2 per column, y1 per row, y2 per row, (H, W) prior indices)``
PriorGrid = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]
#: best IoU per GT, best prior per GT, and the (GT, prior, IoU) pairs over the threshold
Overlaps = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]


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


def prior_grids(priors_xyxy: Tensor) -> Optional[List[PriorGrid]]:
    """Split xyxy priors into grids of equal boxes, for :func:`windowed_overlaps`.

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


def _collect(best_iou: Tensor, best_prior: Tensor, pair_gt: List[Tensor],
             pair_prior: List[Tensor], pair_iou: List[Tensor]) -> Overlaps:
    if not pair_gt:
        empty = best_prior.new_zeros(0)
        return best_iou, best_prior, empty, empty, best_iou.new_zeros(0)
    return best_iou, best_prior, torch.cat(pair_gt), torch.cat(pair_prior), torch.cat(pair_iou)


def dense_overlaps(boxes: Tensor, priors_xyxy: Tensor, pos_iou_thr: float) -> Overlaps:
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
    return _collect(best_iou, best_prior, pair_gt, pair_prior, pair_iou)


def windowed_overlaps(boxes: Tensor, grids: List[PriorGrid], pos_iou_thr: float) -> Overlaps:
    """:func:`dense_overlaps` evaluating only the priors that can intersect each GT.

    Per grid, the priors overlapping a GT form a window of rows and columns
    (``searchsorted`` on the sorted prior extents); every other IoU is 0. GTs
    sorted by window size are processed in chunks padded to the chunk's largest
    window.
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
    return _collect(best_iou, best_prior, pair_gt, pair_prior, pair_iou)


def gt_prior_overlaps(boxes: Tensor, priors_xyxy: Tensor, pos_iou_thr: float) -> Overlaps:
    """Per GT its best IoU and prior; the (GT, prior, IoU) pairs ``>= pos_iou_thr``.

    On CPU only the intersecting pairs are evaluated (:func:`windowed_overlaps`);
    elsewhere, or for priors that do not form grids, all of them
    (:func:`dense_overlaps`).
    """
    grids = (prior_grids(priors_xyxy)
             if boxes.size(0) and boxes.device.type in WINDOWED_DEVICES else None)
    if grids is None:
        return dense_overlaps(boxes, priors_xyxy, pos_iou_thr)
    return windowed_overlaps(boxes, grids, pos_iou_thr)
