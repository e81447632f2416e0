"""Vectorised matching and MultiBox loss against the per-image reference.

The loss is the head's (``RetinaFaceHead.loss_by_flat``), built from the model config:
the assigner, the box / landmark coders and ``MultiBoxLoss``.
"""
import math
from typing import List, Tuple

import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy as priors_to_xyxy
from mmengine.config import Config
from mmengine.structures import InstanceData

from mmretinaface.models.losses import hard_negative_mask
from mmretinaface.models.task_modules import (
    box_iou,
    encode_boxes,
    encode_landmarks,
    match_priors,
    prior_boxes,
    reference_featmap_sizes,
)
from tests.conftest import ROOT
from tests.reference import ReferenceMultiBoxLoss, reference_prior_box, to_reference_targets

MODEL_CFG = ROOT / 'configs' / '_base_' / 'models' / 'retinaface_mobilenet0.25.py'

MIN_SIZES = [[16, 32], [64, 128], [256, 512]]
STEPS = [8, 16, 32]
K = 5


def multibox_loss(cls, reg, kpt, priors, boxes, kpts, vis, loc_weight=2.0, return_stats=False):
    """The head's loss on flattened outputs, the head built from the model config."""
    cfg = Config.fromfile(str(MODEL_CFG)).model
    head_cfg = cfg.bbox_head
    head_cfg.update(num_keypoints=kpt.size(-1) // 2, train_cfg=cfg.train_cfg)
    head_cfg.loss_multibox.update(loc_weight=loc_weight, log_num_pos=return_stats)
    head = MODELS.build(head_cfg)
    gts = [InstanceData(bboxes=b, keypoints=k) for b, k in zip(boxes, kpts)]
    if vis is not None:
        for gt, v in zip(gts, vis):
            gt.keypoints_visible = v
    return head.loss_by_flat(cls, reg, kpt, priors, gts)


def pixel_priors(size: int) -> torch.Tensor:
    return prior_boxes(reference_featmap_sizes((size, size), STEPS), STEPS, MIN_SIZES)


def random_faces(gen: torch.Generator, num: int, size: int, no_kpt_prob: float = 0.3
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``num`` faces, 4 px to 0.7 * size, inside a square image; landmarks all or none."""
    side = torch.exp(torch.empty(num).uniform_(math.log(4), math.log(0.7 * size), generator=gen))
    aspect = torch.empty(num).uniform_(0.7, 1.5, generator=gen)
    wh = torch.stack([side, side * aspect], 1).clamp(max=size - 1)
    xy = torch.rand(num, 2, generator=gen) * (size - wh)
    boxes = torch.cat([xy, xy + wh], 1)
    kpts = xy[:, None] + torch.rand(num, K, 2, generator=gen) * wh[:, None]
    has = torch.rand(num, generator=gen) >= no_kpt_prob
    vis = has[:, None].expand(num, K).float()
    kpts = torch.where(has[:, None, None], kpts, torch.full_like(kpts, -1.0))
    return boxes, kpts, vis


def keep_matchable(boxes, kpts, vis, priors, margin=1e-4):
    """Drop GTs whose best prior IoU is below 0.2 (+ margin): the reference lets them steal."""
    best = box_iou(boxes, priors_to_xyxy(priors)).max(1).values if len(boxes) else boxes[:, 0]
    keep = best >= 0.2 + margin
    return boxes[keep], kpts[keep], vis[keep]


def random_batch(seed: int, size: int, counts: List[int]):
    gen = torch.Generator().manual_seed(seed)
    priors = pixel_priors(size)
    boxes, kpts, vis = [], [], []
    for n in counts:
        b, k, v = keep_matchable(*random_faces(gen, n, size), priors)
        boxes.append(b)
        kpts.append(k)
        vis.append(v)
    num_priors = priors.size(0)
    preds = (torch.randn(len(counts), num_priors, 2, generator=gen) * 2,
             torch.randn(len(counts), num_priors, 4, generator=gen),
             torch.randn(len(counts), num_priors, 2 * K, generator=gen) * 2)
    return priors, boxes, kpts, vis, preds


def unit_priors(size: int) -> torch.Tensor:
    return reference_prior_box((size, size), MIN_SIZES, STEPS)


def reference_inputs(size: int, unit: int, boxes, kpts, vis):
    """Priors and targets for the reference, in pixels / ``unit``.

    The reference is scale-invariant. Faces inside several same-size priors
    have exactly tied IoUs; dividing by 640 perturbs those ties differently
    per prior, so exact comparisons use pixels (``unit=1``) or a power-of-two
    image size, where the division is exact.
    """
    priors = pixel_priors(size) if unit == 1 else unit_priors(size)
    assert unit in (1, size)
    return priors, to_reference_targets(boxes, kpts, vis, unit)


def assert_close(ours, ref, rtol=1e-5):
    assert torch.allclose(ours.double(), torch.as_tensor(ref).double(), rtol=rtol, atol=1e-7), \
        (float(ours), float(ref))


def test_reference_priors_are_ours_in_unit_coordinates():
    for size in (320, 512, 640):
        assert torch.allclose(pixel_priors(size) / size, unit_priors(size), atol=1e-7)
    assert torch.equal(pixel_priors(512) / 512, unit_priors(512))


EXACT_CASES = [  # (image size, reference unit, seed, faces drawn per image)
    (640, 1, 0, [0, 1, 37, 200]),
    (512, 512, 1, [150, 3, 0, 64]),
    (256, 256, 2, [120, 0, 9, 200]),
]


@pytest.mark.parametrize('size,unit,seed,counts', EXACT_CASES)
def test_match_equals_reference(size, unit, seed, counts):
    priors, boxes, kpts, vis, _ = random_batch(seed, size, counts)
    ours = match_priors(boxes, priors)
    ref = ReferenceMultiBoxLoss(num_landmarks=K)
    _, conf_t, _, matched = ref.build_targets(*reference_inputs(size, unit, boxes, kpts, vis))
    assert torch.equal(ours.pos_mask, conf_t != 0)
    assert torch.equal(ours.num_pos, (conf_t != 0).sum(1))
    assert int(ours.num_pos.sum()) > 100
    for i, best_truth_idx in enumerate(matched):
        pos = conf_t[i] != 0
        if best_truth_idx is None:
            assert not ours.pos_mask[i].any()
            continue
        assert torch.equal(ours.gt_inds[i][pos], best_truth_idx[pos])
        assert (ours.gt_inds[i][~pos] == -1).all()
        # The reference's landmark flag (label 1 vs -1) is our visibility.
        assert torch.equal(conf_t[i][pos] > 0, vis[i][ours.gt_inds[i][pos], 0] > 0)
    offsets = torch.tensor([0] + [len(b) for b in boxes]).cumsum(0)[:-1]
    expected_flat = torch.where(ours.pos_mask, ours.gt_inds + offsets[:, None], -1)
    assert torch.equal(ours.flat_gt_inds, expected_flat)


def test_match_normalised_by_640_differs_only_on_exact_ties():
    size = 640
    priors, boxes, kpts, vis, _ = random_batch(5, size, [200, 0, 120])
    ours = match_priors(boxes, priors)
    _, conf_t, _, matched = ReferenceMultiBoxLoss(num_landmarks=K).build_targets(
        *reference_inputs(size, size, boxes, kpts, vis))
    assert torch.equal(ours.pos_mask, conf_t != 0)
    num_diff = 0
    for i, best_truth_idx in enumerate(matched):
        ious = box_iou(boxes[i], priors_to_xyxy(priors)) if len(boxes[i]) else None
        for p in ((ours.gt_inds[i] != best_truth_idx) & ours.pos_mask[i]).nonzero()[:, 0]:
            a, b = int(ours.gt_inds[i, p]), int(best_truth_idx[p])
            # either both GTs tie at this prior, or one of them has tied best priors
            assert (ious[a, p] == ious[b, p] or ious[a, p] == ious[a].max()
                    or ious[b, p] == ious[b].max())
            num_diff += 1
    assert num_diff < 0.01 * int(ours.num_pos.sum())


@pytest.mark.parametrize('size,unit,seed,counts', [
    (640, 1, 10, [0, 1, 37, 200]),
    (512, 512, 11, [200, 5, 90]),
    (256, 256, 12, [150, 0, 12, 1]),
])
def test_loss_equals_reference(size, unit, seed, counts):
    priors, boxes, kpts, vis, preds = random_batch(seed, size, counts)
    cls, box, kpt = preds
    ref_l, ref_c, ref_landm = ReferenceMultiBoxLoss(num_landmarks=K)(
        (box, cls, kpt), *reference_inputs(size, unit, boxes, kpts, vis))
    # Degenerate boxes added on our side only: they must change nothing.
    junk = torch.tensor([[50., 50., 50., 90.], [10., 10., 30., 5.]])
    boxes_j = [torch.cat([b, junk]) if i == 0 else b for i, b in enumerate(boxes)]
    kpts_j = [torch.cat([k, torch.zeros(2, K, 2)]) if i == 0 else k for i, k in enumerate(kpts)]
    vis_j = [torch.cat([v, torch.ones(2, K)]) if i == 0 else v for i, v in enumerate(vis)]
    ours = multibox_loss(cls, box, kpt, priors, boxes_j, kpts_j, vis_j, loc_weight=2.0,
                         return_stats=True)
    assert_close(ours['loss_bbox'] / 2.0, ref_l)
    assert_close(ours['loss_cls'], ref_c)
    assert_close(ours['loss_kpt'], ref_landm)
    assert float(ref_landm) > 0 and float(ref_l) > 0
    assert ours['num_pos'] == match_priors(boxes, priors).num_pos.sum()


def steal_case():
    """GT 0 equals a 16 px prior; GT 1 (4 px, best IoU 1/16) has the same best prior."""
    size = 64
    priors = pixel_priors(size)
    owner = torch.tensor([[20., 20., 36., 36.]])  # prior (cx 28, cy 28, 16)
    tiny = torch.tensor([[26., 26., 30., 30.]])
    kpts = torch.stack([owner[:, None, :2].expand(1, K, 2) + 4, tiny[:, None, :2].expand(1, K, 2)])
    return size, priors, owner, tiny, kpts.reshape(2, K, 2)


def test_hard_gt_does_not_steal_a_prior():
    size, priors, owner, tiny, kpts = steal_case()
    prior_id = int(box_iou(owner, priors_to_xyxy(priors)).argmax())
    assert torch.equal(priors[prior_id], torch.tensor([28., 28., 16., 16.]))
    assert float(box_iou(tiny, priors_to_xyxy(priors)).max()) < 0.2
    assert int(box_iou(tiny, priors_to_xyxy(priors)).argmax()) == prior_id
    vis = torch.ones(2, K)
    ref = ReferenceMultiBoxLoss(num_landmarks=K)

    def ref_match(boxes, k, v):
        _, conf_t, _, matched = ref.build_targets(
            unit_priors(size), to_reference_targets([boxes], [k], [v], size))
        return conf_t[0], matched[0]

    # Reference, hard GT listed last: it steals the owner's prior.
    conf_t, matched = ref_match(torch.cat([owner, tiny]), kpts, vis)
    assert conf_t.nonzero().flatten().tolist() == [prior_id]
    assert int(matched[prior_id]) == 1
    # Ours: the prior stays with its owner.
    ours = match_priors([torch.cat([owner, tiny])], priors)
    assert ours.pos_mask[0].nonzero().flatten().tolist() == [prior_id]
    assert int(ours.gt_inds[0, prior_id]) == 0
    # Without the hard GT (or with it listed first) the reference agrees with us.
    for boxes, k in [(owner, kpts[:1]), (torch.cat([tiny, owner]), kpts.flip(0))]:
        conf_t, matched = ref_match(boxes, k, vis[:len(boxes)])
        assert conf_t.nonzero().flatten().tolist() == [prior_id]
        assert int(matched[prior_id]) == len(boxes) - 1

    # The losses differ exactly by the stolen target, and agree without the hard GT.
    gen = torch.Generator().manual_seed(3)
    num_priors = priors.size(0)
    cls = torch.randn(1, num_priors, 2, generator=gen)
    box = torch.randn(1, num_priors, 4, generator=gen)
    kpt = torch.randn(1, num_priors, 2 * K, generator=gen)
    ours = multibox_loss(cls, box, kpt, priors, [torch.cat([owner, tiny])], [kpts], [vis])
    ref_l, ref_c, ref_landm = ref((box, cls, kpt), unit_priors(size),
                                  to_reference_targets([torch.cat([owner, tiny])], [kpts], [vis],
                                                       size))
    assert_close(ours['loss_cls'], ref_c)
    assert not torch.allclose(ours['loss_bbox'] / 2, ref_l, rtol=1e-3)
    assert not torch.allclose(ours['loss_kpt'], ref_landm, rtol=1e-3)
    stolen = F.smooth_l1_loss(box[0, prior_id], encode_boxes(tiny[0], priors[prior_id]),
                              reduction='sum')
    assert_close(ref_l, stolen)
    ref_l, ref_c, ref_landm = ref((box, cls, kpt), unit_priors(size),
                                  to_reference_targets([owner], [kpts[:1]], [vis[:1]], size))
    assert_close(ours['loss_bbox'] / 2, ref_l)
    assert_close(ours['loss_kpt'], ref_landm)


def one_face_setup(visible=None):
    size = 64
    priors = pixel_priors(size)
    prior_id = int((priors == torch.tensor([28., 28., 16., 16.])).all(1).nonzero())
    box = torch.tensor([[20., 20., 36., 36.]])
    deltas = torch.tensor([[0.5, -1.0], [1.5, 0.25], [0., 0.], [-2., 3.], [1., 1.]])
    kpts = (torch.tensor([28., 28.]) + deltas * 0.1 * 16)[None]
    vis = torch.ones(1, K) if visible is None else visible
    return size, priors, prior_id, box, kpts, vis, deltas


def test_one_face_on_one_prior_hand_checked():
    size, priors, prior_id, box, kpts, vis, deltas = one_face_setup()
    num_priors = priors.size(0)
    m = match_priors([box], priors)
    assert m.pos_mask[0].nonzero().flatten().tolist() == [prior_id]
    assert torch.allclose(encode_boxes(box[0], priors[prior_id]), torch.zeros(4))
    assert torch.allclose(encode_landmarks(kpts[0], priors[prior_id]), deltas.flatten())

    cls = torch.zeros(1, num_priors, 2, requires_grad=True)
    bbox = torch.zeros(1, num_priors, 4, requires_grad=True)
    kpt = torch.zeros(1, num_priors, 2 * K)
    kpt[0, prior_id] = deltas.flatten()
    kpt.requires_grad_(True)
    losses = multibox_loss(cls, bbox, kpt, priors, [box], [kpts], [vis], return_stats=True)
    assert float(losses['num_pos']) == 1
    assert losses['loss_bbox'].item() == 0 and losses['loss_kpt'].item() < 1e-12
    # 1 positive + 7 negatives, all at logits 0: 8 * log 2.
    assert_close(losses['loss_cls'], 8 * math.log(2))
    sum(losses[k] for k in ('loss_cls', 'loss_bbox', 'loss_kpt')).backward()
    for t in (cls, bbox, kpt):
        assert torch.isfinite(t.grad).all()
    assert (cls.grad[0].abs().sum(1) > 0).sum() == 8
    assert float(cls.grad[0, prior_id, 1]) < 0  # pushes the face score up

    # Off by one unit in dx and in one landmark coordinate: Smooth-L1 = 0.5 each.
    bbox2 = torch.zeros(1, num_priors, 4)
    bbox2[0, prior_id, 0] = 1.0
    kpt2 = kpt.detach().clone()
    kpt2[0, prior_id, 3] += 3.0
    losses = multibox_loss(cls.detach(), bbox2, kpt2, priors, [box], [kpts], [vis],
                           loc_weight=2.0)
    assert_close(losses['loss_bbox'], 2.0 * 0.5)
    assert_close(losses['loss_kpt'], 2.5)


def test_partial_and_missing_landmarks():
    vis = torch.tensor([[1., 0., 1., 0., 0.]])
    size, priors, prior_id, box, kpts, vis, deltas = one_face_setup(vis)
    num_priors = priors.size(0)
    kpts = kpts.clone()
    kpts[0, 1] = float('nan')  # unannotated points may hold anything
    kpt = torch.zeros(1, num_priors, 2 * K, requires_grad=True)
    cls = torch.zeros(1, num_priors, 2)
    bbox = torch.zeros(1, num_priors, 4)
    losses = multibox_loss(cls, bbox, kpt, priors, [box], [kpts], [vis])
    # Only points 0 and 2 count: |0.5|, |-1|, |0|, |0| -> 0.125 + 0.5; 1 landmark positive.
    assert_close(losses['loss_kpt'], 0.625)
    losses['loss_kpt'].backward()
    assert torch.isfinite(kpt.grad).all()
    assert (kpt.grad[0, prior_id].abs() > 0).tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]

    # No visible landmark: box and class losses only, landmark loss 0 (normaliser 1).
    losses = multibox_loss(cls, bbox, kpt, priors, [box], [kpts], [torch.zeros(1, K)])
    assert losses['loss_kpt'].item() == 0 and losses['loss_cls'].item() > 0


def test_generic_keypoint_count():
    size = 64
    priors = pixel_priors(size)
    num_priors = priors.size(0)
    box = torch.tensor([[20., 20., 36., 36.], [5., 30., 50., 60.]])
    kpts = torch.rand(2, 3, 2) * 40
    losses = multibox_loss(torch.randn(2, num_priors, 2), torch.randn(2, num_priors, 4),
                           torch.randn(2, num_priors, 6), priors, [box, box[1:]],
                           [kpts, kpts[1:]], None)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['loss_kpt'].item() > 0

    # No landmark branch at all (K = 0), boxes as HorizontalBoxes.
    from mmdet.structures.bbox import HorizontalBoxes
    kpt = torch.zeros(2, num_priors, 0, requires_grad=True)
    cls = torch.randn(2, num_priors, 2)
    reg = torch.randn(2, num_priors, 4)
    losses = multibox_loss(cls, reg, kpt, priors, [HorizontalBoxes(box), HorizontalBoxes(box[1:])],
                           [torch.zeros(2, 0, 2), torch.zeros(1, 0, 2)],
                           [torch.zeros(2, 0), torch.zeros(1, 0)])
    assert losses['loss_kpt'].item() == 0 and losses['loss_kpt'].requires_grad
    ref = multibox_loss(cls, reg, torch.zeros(2, num_priors, 6), priors, [box, box[1:]],
                        [kpts, kpts[1:]], None)
    for key in ('loss_cls', 'loss_bbox'):
        assert torch.equal(losses[key], ref[key])


def test_degenerate_and_empty_gts():
    size = 64
    priors = pixel_priors(size)
    num_priors = priors.size(0)
    degenerate = torch.tensor([[20., 20., 20., 36.], [28., 28., 27., 40.], [0., 0., 0., 0.]])
    cls = torch.randn(3, num_priors, 2, requires_grad=True)
    bbox = torch.randn(3, num_priors, 4, requires_grad=True)
    kpt = torch.randn(3, num_priors, 2 * K, requires_grad=True)
    boxes = [degenerate, torch.zeros(0, 4), torch.zeros(0, 4)]
    kpts = [torch.zeros(3, K, 2), torch.zeros(0, K, 2), torch.zeros(0, K, 2)]
    vis = [torch.ones(3, K), torch.zeros(0, K), torch.zeros(0, K)]
    m = match_priors(boxes, priors)
    assert not m.pos_mask.any() and (m.gt_inds == -1).all()
    losses = multibox_loss(cls, bbox, kpt, priors, boxes, kpts, vis)
    assert all(v.item() == 0 for v in losses.values())
    sum(losses.values()).backward()  # connected to the graph, zero gradients
    for t in (cls, bbox, kpt):
        assert torch.equal(t.grad, torch.zeros_like(t))

    # A batch without any ground-truth box at all (every image empty).
    empty = multibox_loss(cls, bbox, kpt, priors, [torch.zeros(0, 4)] * 3,
                          [torch.zeros(0, K, 2)] * 3, [torch.zeros(0, K)] * 3)
    assert all(v.item() == 0 for v in empty.values())

    # Degenerate boxes next to a real face: same result as the face alone.
    face = torch.tensor([[20., 20., 36., 36.]])
    face_kpts = torch.full((1, K, 2), 30.)
    with_junk = multibox_loss(cls, bbox, kpt, priors, [torch.cat([degenerate, face])] + boxes[1:],
                              [torch.cat([kpts[0], face_kpts])] + kpts[1:],
                              [torch.ones(4, K)] + vis[1:])
    alone = multibox_loss(cls, bbox, kpt, priors, [face] + boxes[1:],
                          [face_kpts] + kpts[1:], [torch.ones(1, K)] + vis[1:])
    for k in alone:
        assert torch.isfinite(with_junk[k]) and torch.equal(with_junk[k], alone[k])


def test_forced_match_last_gt_wins_and_hard_negatives():
    size = 64
    priors = pixel_priors(size)
    # Two GTs whose best prior is the same (28, 28, 16) prior; neither reaches 0.35 elsewhere.
    a = torch.tensor([[21., 21., 35., 35.]])
    b = torch.tensor([[20., 21., 36., 35.]])
    m = match_priors([torch.cat([a, b])], priors)
    ious = box_iou(torch.cat([a, b]), priors_to_xyxy(priors))
    prior_id = int(ious[0].argmax())
    assert int(ious[1].argmax()) == prior_id
    assert int(m.gt_inds[0, prior_id]) == 1
    m = match_priors([torch.cat([b, a])], priors)
    assert int(m.gt_inds[0, prior_id]) == 1

    # Mining: budget min(7 * num_pos, P - 1), ranked by loss, positives excluded.
    loss = torch.tensor([[0.1, 5.0, 0.3, 0.2, 9.0, 0.05, 0.4, 0.6, 0.7]])
    pos = torch.zeros_like(loss, dtype=torch.bool)
    pos[0, 4] = True
    assert hard_negative_mask(loss, pos, 1).nonzero()[:, 1].tolist() == [1]
    assert hard_negative_mask(loss, pos, 3).nonzero()[:, 1].tolist() == [1, 7, 8]
    assert hard_negative_mask(loss, pos, 7).sum() == 7
    assert hard_negative_mask(loss, torch.zeros_like(pos), 7).sum() == 0
