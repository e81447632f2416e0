"""RetinaFaceHead: shapes, a 68-point variant, and the predict path by hand."""
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config

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
