"""Per-image reference of the RetinaFace ``MultiBoxLoss`` (the walkthrough's code paths).

Written after ``/work/shared/reference/retinaface_walkthrough.txt`` (PriorBox,
match, encode, encode_landm, MultiBoxLoss.forward) plus the SSD ``point_form`` /
``jaccard`` / ``log_sum_exp`` helpers they call, keeping the reference's loops,
[0, 1]-normalised coordinates and quirks (including the hard-GT "stealing" in
``match``). CPU or any device; it shares no code with the rest of ``mmretinaface``
(plain ``torch`` only), so it stays an independent oracle.

Targets per image are ``(G, 4 + 2K + 1)``: xyxy box, K landmarks (x, y), label
(1 = face with landmarks, -1 = face without landmarks, whose landmarks are -1).

Usage (tests and ``tools/benchmark.py``)::

    from tests.reference import ReferenceMultiBoxLoss, to_reference_targets
    loss_l, loss_c, loss_landm = ReferenceMultiBoxLoss(num_landmarks=5)(
        (loc, conf, landm), priors_unit, to_reference_targets(boxes, kpts, vis, 640))
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def point_form(boxes: Tensor) -> Tensor:
    return torch.cat((boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2), 1)


def intersect(box_a: Tensor, box_b: Tensor) -> Tensor:
    a, b = box_a.size(0), box_b.size(0)
    max_xy = torch.min(box_a[:, 2:].unsqueeze(1).expand(a, b, 2),
                       box_b[:, 2:].unsqueeze(0).expand(a, b, 2))
    min_xy = torch.max(box_a[:, :2].unsqueeze(1).expand(a, b, 2),
                       box_b[:, :2].unsqueeze(0).expand(a, b, 2))
    inter = torch.clamp((max_xy - min_xy), min=0)
    return inter[:, :, 0] * inter[:, :, 1]


def jaccard(box_a: Tensor, box_b: Tensor) -> Tensor:
    inter = intersect(box_a, box_b)
    area_a = ((box_a[:, 2] - box_a[:, 0]) *
              (box_a[:, 3] - box_a[:, 1])).unsqueeze(1).expand_as(inter)
    area_b = ((box_b[:, 2] - box_b[:, 0]) *
              (box_b[:, 3] - box_b[:, 1])).unsqueeze(0).expand_as(inter)
    union = area_a + area_b - inter
    return inter / union


def encode(matched: Tensor, priors: Tensor, variances: Sequence[float]) -> Tensor:
    g_cxcy = (matched[:, :2] + matched[:, 2:]) / 2 - priors[:, :2]
    g_cxcy /= (variances[0] * priors[:, 2:])
    g_wh = (matched[:, 2:] - matched[:, :2]) / priors[:, 2:]
    g_wh = torch.log(g_wh) / variances[1]
    return torch.cat([g_cxcy, g_wh], 1)


def encode_landm(matched: Tensor, priors: Tensor, variances: Sequence[float],
                 n_landmarks: int) -> Tensor:
    matched = torch.reshape(matched, (matched.size(0), n_landmarks, 2))
    priors_cx = priors[:, 0].unsqueeze(1).expand(matched.size(0), n_landmarks).unsqueeze(2)
    priors_cy = priors[:, 1].unsqueeze(1).expand(matched.size(0), n_landmarks).unsqueeze(2)
    priors_w = priors[:, 2].unsqueeze(1).expand(matched.size(0), n_landmarks).unsqueeze(2)
    priors_h = priors[:, 3].unsqueeze(1).expand(matched.size(0), n_landmarks).unsqueeze(2)
    priors = torch.cat([priors_cx, priors_cy, priors_w, priors_h], dim=2)
    g_cxcy = matched[:, :, :2] - priors[:, :, :2]
    g_cxcy /= (variances[0] * priors[:, :, 2:])
    return g_cxcy.reshape(g_cxcy.size(0), -1)


def log_sum_exp(x: Tensor) -> Tensor:
    x_max = x.data.max()
    return torch.log(torch.sum(torch.exp(x - x_max), 1, keepdim=True)) + x_max


def match(threshold: float, truths: Tensor, priors: Tensor, variances: Sequence[float],
          labels: Tensor, landms: Tensor, loc_t: Tensor, conf_t: Tensor, landm_t: Tensor,
          idx: int, n_landmarks: int = 5) -> Optional[Tensor]:
    """The reference ``match`` (fills row ``idx`` of the target tensors).

    Addition for the tests: returns ``best_truth_idx`` (the GT each prior
    regresses to; meaningful where ``conf_t[idx] != 0``), or ``None`` when the
    image has no GT with best IoU >= 0.2.
    """
    overlaps = jaccard(truths, point_form(priors))
    best_prior_overlap, best_prior_idx = overlaps.max(1, keepdim=True)

    # ignore hard gt
    valid_gt_idx = best_prior_overlap[:, 0] >= 0.2
    best_prior_idx_filter = best_prior_idx[valid_gt_idx, :]
    if best_prior_idx_filter.shape[0] <= 0:
        loc_t[idx] = 0
        conf_t[idx] = 0
        return None

    best_truth_overlap, best_truth_idx = overlaps.max(0, keepdim=True)
    best_truth_idx.squeeze_(0)
    best_truth_overlap.squeeze_(0)
    best_prior_idx.squeeze_(1)
    best_prior_idx_filter.squeeze_(1)
    best_prior_overlap.squeeze_(1)
    best_truth_overlap.index_fill_(0, best_prior_idx_filter, 2)  # ensure best prior
    # every gt (hard ones included: the quirk) takes its best prior, last one wins
    for j in range(best_prior_idx.size(0)):
        best_truth_idx[best_prior_idx[j]] = j
    matches = truths[best_truth_idx]
    conf = labels[best_truth_idx]
    conf[best_truth_overlap < threshold] = 0
    loc = encode(matches, priors, variances)

    matches_landm = landms[best_truth_idx]
    landm = encode_landm(matches_landm, priors, variances, n_landmarks)
    loc_t[idx] = loc
    conf_t[idx] = conf
    landm_t[idx] = landm
    return best_truth_idx


class ReferenceMultiBoxLoss(nn.Module):
    """``MultiBoxLoss(2, 0.35, True, 0, True, 7, 0.35, False)`` of the reference.

    ``forward((loc, conf, landm), priors, targets)`` with ``loc (B, P, 4)``,
    ``conf (B, P, 2)``, ``landm (B, P, 2K)``, ``priors (P, 4)`` in [0, 1] units
    and ``targets`` a list of ``(G, 4 + 2K + 1)`` tensors; returns
    ``(loss_l, loss_c, loss_landm)`` (``loss_l`` without the 2.0 loc weight).
    """

    def __init__(self, num_classes: int = 2, overlap_thresh: float = 0.35, neg_pos: int = 7,
                 variances: Sequence[float] = (0.1, 0.2), num_landmarks: int = 5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.threshold = overlap_thresh
        self.negpos_ratio = neg_pos
        self.variance = list(variances)
        self.num_landmarks = num_landmarks

    def build_targets(self, priors: Tensor, targets: Sequence[Tensor]
                      ) -> Tuple[Tensor, Tensor, Tensor, List[Optional[Tensor]]]:
        """The matching loop of ``forward``: ``loc_t, conf_t, landm_t, best_truth_idx``."""
        num, num_priors = len(targets), priors.size(0)
        n_coords = 2 * self.num_landmarks
        loc_t = torch.zeros(num, num_priors, 4, device=priors.device)
        landm_t = torch.zeros(num, num_priors, n_coords, device=priors.device)
        conf_t = torch.zeros(num, num_priors, dtype=torch.long, device=priors.device)
        matched = []
        for idx in range(num):
            truths = targets[idx][:, :4]
            labels = targets[idx][:, -1]
            landms = targets[idx][:, 4:4 + n_coords]
            defaults = priors.data
            matched.append(match(self.threshold, truths, defaults, self.variance, labels,
                                 landms, loc_t, conf_t, landm_t, idx, self.num_landmarks))
        return loc_t, conf_t, landm_t, matched

    def forward(self, predictions: Tuple[Tensor, Tensor, Tensor], priors: Tensor,
                targets: Sequence[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        loc_data, conf_data, landm_data = predictions
        num = loc_data.size(0)
        n_coords = 2 * self.num_landmarks
        loc_t, conf_t, landm_t, _ = self.build_targets(priors, targets)

        zeros = torch.tensor(0, device=loc_data.device)
        # landm Loss (Smooth L1)
        pos1 = conf_t > zeros
        num_pos_landm = pos1.long().sum(1, keepdim=True)
        n1 = max(num_pos_landm.data.sum().float(), 1)
        pos_idx1 = pos1.unsqueeze(pos1.dim()).expand_as(landm_data)
        landm_p = landm_data[pos_idx1].view(-1, n_coords)
        landm_t = landm_t[pos_idx1].view(-1, n_coords)
        loss_landm = F.smooth_l1_loss(landm_p, landm_t, reduction='sum')

        pos = conf_t != zeros
        conf_t[pos] = 1

        # Localization Loss (Smooth L1)
        pos_idx = pos.unsqueeze(pos.dim()).expand_as(loc_data)
        loc_p = loc_data[pos_idx].view(-1, 4)
        loc_t = loc_t[pos_idx].view(-1, 4)
        loss_l = F.smooth_l1_loss(loc_p, loc_t, reduction='sum')

        # Compute max conf across batch for hard negative mining
        batch_conf = conf_data.view(-1, self.num_classes)
        loss_c = log_sum_exp(batch_conf) - batch_conf.gather(1, conf_t.view(-1, 1))

        # Hard Negative Mining
        loss_c[pos.view(-1, 1)] = 0  # filter out pos boxes for now
        loss_c = loss_c.view(num, -1)
        _, loss_idx = loss_c.sort(1, descending=True)
        _, idx_rank = loss_idx.sort(1)
        num_pos = pos.long().sum(1, keepdim=True)
        num_neg = torch.clamp(self.negpos_ratio * num_pos, max=pos.size(1) - 1)
        neg = idx_rank < num_neg.expand_as(idx_rank)

        # Confidence Loss Including Positive and Negative Examples
        pos_idx = pos.unsqueeze(2).expand_as(conf_data)
        neg_idx = neg.unsqueeze(2).expand_as(conf_data)
        conf_p = conf_data[(pos_idx + neg_idx).gt(0)].view(-1, self.num_classes)
        targets_weighted = conf_t[(pos + neg).gt(0)]
        loss_c = F.cross_entropy(conf_p, targets_weighted, reduction='sum')

        n = max(num_pos.data.sum().float(), 1)
        loss_l /= n
        loss_c /= n
        loss_landm /= n1
        return loss_l, loss_c, loss_landm


def to_reference_targets(gt_bboxes: Sequence[Tensor], gt_keypoints: Sequence[Tensor],
                         gt_keypoints_visible: Optional[Sequence[Tensor]],
                         image_size: float) -> List[Tensor]:
    """Pixel GTs of square images -> the reference's normalised ``(G, 4 + 2K + 1)`` rows.

    A face must have all landmarks visible (label 1) or none (label -1,
    landmarks -1): that is all the reference can express.
    """
    targets = []
    for i, boxes in enumerate(gt_bboxes):
        kpts = gt_keypoints[i].flatten(1)
        if gt_keypoints_visible is None:
            vis = torch.ones(boxes.size(0), kpts.size(1) // 2, dtype=torch.bool)
        else:
            vis = gt_keypoints_visible[i] > 0
        has = vis.all(dim=1)
        if not bool((has | ~vis.any(dim=1)).all()):
            raise ValueError('the reference needs all or none of a face\'s landmarks')
        kpts = torch.where(has[:, None], kpts.float() / image_size, torch.full_like(kpts, -1.0))
        labels = torch.where(has, 1.0, -1.0)[:, None]
        targets.append(torch.cat([boxes.float() / image_size, kpts, labels], dim=1))
    return targets
