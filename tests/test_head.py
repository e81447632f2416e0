"""RetinaFaceHead: shapes, a 68-point variant, the predict path by hand, its parts built from
config, and the NMS path tensors on a GPU take."""
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

MODEL_CFG = 'configs/_base_/models/retinaface_mobilenet0.25.py'


def build_model(num_keypoints=5):
    cfg = Config.fromfile(MODEL_CFG)
    cfg.model.bbox_head.num_keypoints = num_keypoints
    return MODELS.build(cfg.model).eval()


def test_mobilenet_taps_and_head_layout():
    model = build_model()
    x = torch.randn(2, 3, 96, 160)
    feats = model.backbone(x)
    assert [f.shape[1] for f in feats] == [64, 128, 256]
    assert [tuple(f.shape[-2:]) for f in feats] == [(12, 20), (6, 10), (3, 5)]
    cls, reg, kpt = model.bbox_head.flatten_outputs(*model.bbox_head(model.neck(feats)))
    num_priors = 2 * (12 * 20 + 6 * 10 + 3 * 5)
    assert cls.shape == (2, num_priors, 2)
    assert reg.shape == (2, num_priors, 4)
    assert kpt.shape == (2, num_priors, 10)


def test_68_point_variant_forward_and_predict():
    model = build_model(num_keypoints=68)
    x = torch.randn(1, 3, 64, 96)
    cls, reg, kpt = model.bbox_head(model.extract_feat(x))
    assert kpt[0].shape[1] == 2 * 68 * 2  # 2 priors per cell x 68 points x (x, y)
    sample = DetDataSample(metainfo=dict(img_shape=(64, 96), ori_shape=(64, 96),
                                         scale_factor=(1.0, 1.0)))
    with torch.no_grad():
        (result, ) = model.predict(x, [sample])
    pred = result.pred_instances
    assert pred.keypoints.shape == (len(pred), 68, 2)
    assert pred.bboxes.shape == (len(pred), 4)


def head_outputs_with_hits(head, featmap_sizes, hits):
    """Per-level raw maps that are background everywhere except ``hits``.

    hits: {flat prior index: (face logit, landmark delta value)}.
    """
    num_priors = sum(2 * h * w for h, w in featmap_sizes)
    cls = torch.zeros(1, num_priors, 2)
    cls[..., 0] = 10.0
    kpt = torch.zeros(1, num_priors, 10)
    for idx, (logit, kpt_value) in hits.items():
        cls[0, idx] = torch.tensor([0.0, logit])
        kpt[0, idx] = kpt_value
    reg = torch.zeros(1, num_priors, 4)

    def split(flat, dim):
        outs, start = [], 0
        for h, w in featmap_sizes:
            n = 2 * h * w
            level = flat[:, start:start + n].reshape(1, h, w, 2 * dim).permute(0, 3, 1, 2)
            outs.append(level.contiguous())
            start += n
        return outs

    return split(cls, 2), split(reg, 4), split(kpt, 10)


def test_predict_by_feat_nms_keeps_landmarks_of_kept_boxes():
    head = build_model().bbox_head
    sizes = [(8, 8), (4, 4), (2, 2)]
    priors = head.prior_generator.grid_priors(sizes)
    # priors 2*(r*8+c)+1 are the 32 px boxes of level 0; neighbours overlap with IoU 0.6
    a, b, far = 2 * (3 * 8 + 3) + 1, 2 * (3 * 8 + 4) + 1, 2 * (7 * 8 + 0)
    outs = head_outputs_with_hits(head, sizes, {a: (5.0, 1.0), b: (4.0, -1.0), far: (3.0, 0.5)})
    (res, ) = head.predict_by_feat(*outs, batch_img_metas=[{}], rescale=False)
    assert len(res) == 2  # b suppressed by a (IoU 0.6 > 0.4); far kept
    torch.testing.assert_close(res.scores, torch.softmax(torch.tensor([[0., 5.], [0., 3.]]),
                                                         -1)[:, 1])
    for box, points, idx, delta in ((res.bboxes[0], res.keypoints[0], a, 1.0),
                                    (res.bboxes[1], res.keypoints[1], far, 0.5)):
        cx, cy, w, h = priors[idx].tolist()
        torch.testing.assert_close(box, torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2,
                                                      cy + h / 2]))
        expected = torch.tensor([cx + delta * 0.1 * w, cy + delta * 0.1 * h]).expand(5, 2)
        torch.testing.assert_close(points, expected)


def test_predict_by_feat_rescales_boxes_and_landmarks():
    head = build_model().bbox_head
    sizes = [(8, 8), (4, 4), (2, 2)]
    idx = 2 * (2 * 8 + 5)
    outs = head_outputs_with_hits(head, sizes, {idx: (5.0, 2.0)})
    (raw, ) = head.predict_by_feat(*outs, batch_img_metas=[{'scale_factor': (2.0, 4.0)}],
                                   rescale=False)
    (scaled, ) = head.predict_by_feat(*outs, batch_img_metas=[{'scale_factor': (2.0, 4.0)}],
                                      rescale=True)
    torch.testing.assert_close(scaled.bboxes, raw.bboxes / torch.tensor([2.0, 4.0, 2.0, 4.0]))
    torch.testing.assert_close(scaled.keypoints, raw.keypoints / torch.tensor([2.0, 4.0]))


def test_predict_respects_score_threshold_and_max_per_img():
    head = build_model().bbox_head
    sizes = [(8, 8), (4, 4), (2, 2)]
    # five far-apart hits with decreasing scores
    hits = {2 * (r * 8 + c): (6.0 - r, 0.0) for r, c in [(0, 0), (2, 2), (4, 4), (6, 6), (7, 0)]}
    outs = head_outputs_with_hits(head, sizes, hits)
    cfg = dict(score_thr=0.5, nms_pre=100, nms=dict(type='nms', iou_threshold=0.4),
               max_per_img=3)
    (res, ) = head.predict_by_feat(*outs, batch_img_metas=[{}], cfg=cfg)
    assert len(res) == 3
    assert torch.all(res.scores[:-1] >= res.scores[1:])
    cfg['score_thr'] = 0.999
    (res, ) = head.predict_by_feat(*outs, batch_img_metas=[{}], cfg=cfg)
    assert len(res) == 0 and res.keypoints.shape == (0, 5, 2)


def test_head_rejects_wrong_level_count():
    head = build_model().bbox_head
    with pytest.raises(ValueError, match='expects 3 feature levels, got 2'):
        head((torch.zeros(1, 64, 4, 4), torch.zeros(1, 64, 2, 2)))


def random_outputs(head, sizes, seed):
    """Per-level raw maps with a few hundred overlapping candidates above score_thr."""
    gen = torch.Generator().manual_seed(seed)

    def level(dim):
        return [torch.randn(1, 2 * dim, h, w, generator=gen) for h, w in sizes]

    cls = level(2)
    for c in cls:
        c[:, 1::2] -= 6.0  # face logits: ~7% of the priors above score_thr 0.02
    return cls, level(4), level(10)


def test_predict_on_another_device_runs_nms_on_cpu_with_the_same_results(monkeypatch):
    """The path tensors of a GPU take: candidates go to the CPU for mmcv's NMS (built for
    the CPU only) and the results come back. Forced here on CPU tensors, it must give
    exactly the CPU path's results."""
    import mmretinaface.models.dense_heads.retinaface_head as head_module
    head = build_model().bbox_head
    outs = random_outputs(head, [(20, 24), (10, 12), (5, 6)], seed=0)
    metas = [{'scale_factor': (0.5, 0.75)}]
    (expected, ) = head.predict_by_feat(*outs, batch_img_metas=metas, rescale=True)
    assert len(expected) > 10

    asked, moved = [], []
    monkeypatch.setattr(head_module, 'nms_needs_cpu', lambda device: asked.append(device) or True)
    nms = head_module.single_class_nms

    def spy_nms(bboxes, scores, *args):
        moved.append((len(bboxes), bboxes.device.type, scores.device.type))
        return nms(bboxes, scores, *args)

    monkeypatch.setattr(head_module, 'single_class_nms', spy_nms)
    (got, ) = head.predict_by_feat(*outs, batch_img_metas=metas, rescale=True)
    # all candidates went through the CPU, and NMS removed some of them
    assert asked and len(moved) == 1 and moved[0][0] > len(expected)
    assert moved[0][1:] == ('cpu', 'cpu')
    assert set(got.keys()) == set(expected.keys()) == {'bboxes', 'scores', 'labels', 'keypoints'}
    for key in expected.keys():
        assert torch.equal(got.get(key), expected.get(key)), key


def mmdet_predict(head, outs, metas, cfg, rescale, with_nms):
    """The prediction path as written with mmdet's helpers (the head's code before its
    tensor-level rewrite): ``filter_scores_and_topk``, decode, keypoints rescaled, then
    ``BaseDenseHead._bbox_post_process`` on an ``InstanceData``."""
    import copy

    from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
    from mmdet.models.utils import filter_scores_and_topk
    from mmengine.config import ConfigDict
    cfg = ConfigDict(copy.deepcopy(cfg))
    cls, reg, kpt = head.flatten_outputs(*outs)
    priors = head.get_priors(outs[0])
    scores = torch.sigmoid(cls[..., 1:] - cls[..., :1])
    results = []
    for img_scores, img_reg, img_kpt, meta in zip(scores, reg, kpt, metas):
        nms_pre = cfg.get('nms_pre', -1)
        img_scores, labels, _, kept = filter_scores_and_topk(
            img_scores, cfg.score_thr, nms_pre if nms_pre > 0 else img_scores.numel(),
            dict(priors=priors, reg=img_reg, kpt=img_kpt))
        bboxes, points = head.decode(kept['priors'], kept['reg'], kept['kpt'])
        if rescale:
            points = points * points.new_tensor([1 / s for s in meta['scale_factor']])
        res = InstanceData(bboxes=bboxes, scores=img_scores, labels=labels, keypoints=points)
        results.append(BaseDenseHead._bbox_post_process(head, res, cfg, rescale, with_nms,
                                                        meta))
    return results


PREDICT_CFGS = {
    'default': dict(),
    'nms_pre_and_max_per_img': dict(nms_pre=60, max_per_img=15),
    'all_priors': dict(nms_pre=-1),
    'min_bbox_size': dict(min_bbox_size=12),
    'soft_nms': dict(nms=dict(type='soft_nms', iou_threshold=0.3, min_score=0.01)),
    'split_thr': dict(nms=dict(type='nms', iou_threshold=0.4, split_thr=50)),
    'no_nms': dict(with_nms=False),
}


@pytest.mark.parametrize('case', PREDICT_CFGS, ids=list(PREDICT_CFGS))
def test_predict_by_feat_equals_mmdet_post_processing(case):
    """Candidate selection, decode, rescale, NMS and max_per_img on tensors give exactly
    what mmdet's helpers give, on a batch of two images with hundreds of overlapping
    candidates and many tied scores (the logits are quantised)."""
    head = build_model().bbox_head
    cfg = {**head.test_cfg, **PREDICT_CFGS[case]}
    with_nms = cfg.pop('with_nms', True)
    sizes = [(20, 24), (10, 12), (5, 6)]
    outs = [[torch.cat(pair) for pair in zip(a, b)]
            for a, b in zip(random_outputs(head, sizes, seed=2),
                            random_outputs(head, sizes, seed=3))]
    outs[0] = [(c * 2).round() / 2 for c in outs[0]]  # ties
    metas = [{'scale_factor': (0.5, 0.75)}, {'scale_factor': (1.25, 1.0)}]
    for rescale in (True, False):
        expected = mmdet_predict(head, outs, metas, cfg, rescale, with_nms)
        got = head.predict_by_feat(*outs, batch_img_metas=metas, cfg=cfg, rescale=rescale,
                                   with_nms=with_nms)
        for res, exp in zip(got, expected):
            assert len(exp) > 5
            assert set(res.keys()) == set(exp.keys())
            for key in exp.keys():
                assert torch.equal(res.get(key), exp.get(key)), key


def test_head_builds_its_parts_from_config():
    from mmretinaface.models.losses import MultiBoxLoss
    from mmretinaface.models.task_modules import (
        LandmarkCoder,
        RetinaFacePriorAssigner,
        SSDBoxCoder,
    )
    cfg = Config.fromfile(MODEL_CFG)
    cfg.model.bbox_head.loss_multibox.update(neg_pos_ratio=3, loc_weight=1.5)
    cfg.model.bbox_head.kpt_coder.variances = (0.2, 0.2)
    cfg.model.train_cfg.assigner.pos_iou_thr = 0.5
    head = MODELS.build(cfg.model).bbox_head
    assert isinstance(head.loss_multibox, MultiBoxLoss)
    assert (head.loss_multibox.neg_pos_ratio, head.loss_multibox.loc_weight) == (3, 1.5)
    assert isinstance(head.assigner, RetinaFacePriorAssigner)
    assert (head.assigner.pos_iou_thr, head.assigner.min_best_iou) == (0.5, 0.2)
    assert isinstance(head.bbox_coder, SSDBoxCoder) and head.bbox_coder.variances == (0.1, 0.2)
    assert isinstance(head.kpt_coder, LandmarkCoder) and head.kpt_coder.variances == (0.2, 0.2)
    # the landmark coder's variance is the one decoding uses
    prior = torch.tensor([[100.0, 50.0, 16.0, 32.0]])
    _, points = head.decode(prior, torch.zeros(1, 4), torch.ones(1, 10))
    torch.testing.assert_close(points[0, 0], torch.tensor([100.0 + 0.2 * 16, 50.0 + 0.2 * 32]))


def test_head_config_errors_are_specific():
    cfg = Config.fromfile(MODEL_CFG)
    # the v0.1 train_cfg keys: told where they went
    cfg.model.train_cfg = dict(pos_iou_thr=0.35, min_best_iou=0.2, neg_pos_ratio=7)
    with pytest.raises(ValueError, match="train_cfg needs assigner=.*loss_multibox"):
        MODELS.build(cfg.model)
    cfg.model.train_cfg = None  # an inference-only model predicts but has no loss
    model = MODELS.build(cfg.model)
    head = model.bbox_head
    outs = random_outputs(head, [(4, 4), (2, 2), (1, 1)], seed=1)
    gts = [InstanceData(bboxes=torch.tensor([[4.0, 4.0, 20.0, 20.0]]))]
    with pytest.raises(ValueError, match='needs train_cfg=dict\\(assigner='):
        head.loss_by_feat(*outs, gts, [{}])
    with pytest.raises(ValueError, match='rescale=True needs scale_factor'):
        head.predict_by_feat(*outs, batch_img_metas=[{}], rescale=True)


@pytest.mark.parametrize('anchors,layout', [((2, 2, 2), 'nchw'), ((2, 2, 2), 'channels_last'),
                                            ((2, 2, 2), 'channel_view'), ((2, 3, 1), 'nchw')])
def test_gather_level_rows_is_flatten_then_index(anchors, layout):
    """Prediction's candidate rows equal the rows of the reference layout (NHWC, anchors
    fastest, levels concatenated), for equal and unequal anchor counts, channels-last
    maps and channel views of wider maps (the ONNX Runtime backend's); a hand-checked
    row too."""
    from mmretinaface.models.dense_heads import flatten_level_outputs
    from mmretinaface.models.dense_heads.retinaface_head import gather_level_rows
    dim, sizes = 4, [(6, 5), (3, 3), (2, 1)]
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, a * dim, h, w, generator=g) for a, (h, w) in zip(anchors, sizes)]
    if layout == 'channels_last':
        maps = [m.contiguous(memory_format=torch.channels_last) for m in maps]
    elif layout == 'channel_view':
        maps = [torch.cat([torch.randn(2, 3, *m.shape[2:], generator=g), m], 1)[:, 3:]
                for m in maps]
        assert not any(m.is_contiguous() for m in maps)
    flat = flatten_level_outputs(maps, dim)
    total = flat.shape[1]
    assert total == sum(a * h * w for a, (h, w) in zip(anchors, sizes))
    rows = [torch.tensor([total - 1, 0, 7, 61, 30]), torch.randperm(total, generator=g)[:9]]
    got = gather_level_rows(maps, dim, rows)
    for img, (img_rows, img_got) in enumerate(zip(rows, got)):
        assert torch.equal(img_got, flat[img, img_rows])
    # row 7 of image 0: level 0, anchor 7 % A at position 7 // A, (y, x) = divmod(pos, 5)
    a = anchors[0]
    y, x = divmod(7 // a, 5)
    assert torch.equal(got[0][2], maps[0][0, (7 % a) * dim:(7 % a + 1) * dim, y, x])
