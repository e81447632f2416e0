"""ONNX export: onnxruntime equals PyTorch (raw and decoded, batch 2, sizes other than the
traced one), decoded outputs + numpy NMS equal detect_faces, the documented snippet runs."""
import inspect
import os
import re

import numpy as np
import onnx
import pytest
import torch

from mmretinaface.apis import detect_faces, get_config_path, load_image
from mmretinaface.deploy import RetinaFaceExportWrapper, export_onnx, postprocess_decoded
from tests.conftest import ROOT, bundled_photo

TRACE_HW = (480, 640)
SIZES = [(256, 320), (333, 517)]  # neither is the traced size; odd sizes included

# onnxruntime vs PyTorch. Raw regressions and probabilities: absolute 1e-4 (observed
# ~2e-5: float32 accumulation order differs between the two runtimes' convolutions).
RAW_ATOL = 1e-4
# Decoded pixel coordinates: centre = prior + loc * 0.1 * prior size and size = prior
# size * exp(0.2 * loc), so a raw difference of ~2e-5 becomes ~2e-5 * 0.1 * 512 px
# (largest prior) ~ 1e-3 px absolute, plus float32 rounding relative to the coordinate
# itself (~1e-7 x values up to ~1000 px). Hence rtol 1e-6 + atol 1e-3 px: a thousandth
# of a pixel, far below anything visible or affecting NMS (observed max ~2e-4 px).
PIXEL_RTOL, PIXEL_ATOL = 1e-6, 1e-3


def session_for(path):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = min(2, os.cpu_count() or 1)
    return ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])


@pytest.fixture(scope='module')
def raw_onnx(tmp_path_factory, mobilenet_detector):
    path = tmp_path_factory.mktemp('onnx') / 'raw.onnx'
    export_onnx(mobilenet_detector, str(path), 'raw', sample_hw=TRACE_HW)
    return path


@pytest.fixture(scope='module')
def decoded_onnx(tmp_path_factory, converted_checkpoint):
    """Exported by the command-line tool (with its own onnxruntime check)."""
    from tools.export_onnx import main
    path = tmp_path_factory.mktemp('onnx') / 'retinaface.onnx'
    config = get_config_path('retinaface_mobilenet0.25_widerface')
    assert main([config, converted_checkpoint, '--out', str(path), '--decode',
                 '--verify']) == 0
    return path


def batch_of_two(h, w) -> np.ndarray:
    """A photo and a noise image, (2, 3, H, W) BGR 0..255 float32."""
    import cv2
    photo = cv2.resize(load_image(bundled_photo('astronaut')), (w, h))
    noise = np.random.default_rng(h * w).integers(0, 256, (h, w, 3)).astype(np.uint8)
    return np.stack([photo, noise]).astype(np.float32).transpose(0, 3, 1, 2).copy()


def pytorch_outputs(detector, batch, decode):
    wrapper = RetinaFaceExportWrapper(detector, 'decoded' if decode else 'raw').eval()
    with torch.no_grad():
        return [t.numpy() for t in wrapper(torch.from_numpy(batch))]


def test_axes_are_symbolic(raw_onnx, decoded_onnx):
    for path in (raw_onnx, decoded_onnx):
        graph = onnx.load(str(path)).graph
        (image, ) = graph.input
        dims = image.type.tensor_type.shape.dim
        assert image.name == 'image' and dims[1].dim_value == 3
        assert all(dims[i].dim_param for i in (0, 2, 3)), 'batch, height, width dynamic'
    assert [o.name for o in onnx.load(str(decoded_onnx)).graph.output] == [
        'boxes', 'scores', 'landmarks']


@pytest.mark.parametrize('hw', SIZES, ids=lambda s: f'{s[0]}x{s[1]}')
def test_raw_outputs_match_pytorch(raw_onnx, mobilenet_detector, hw):
    batch = batch_of_two(*hw)
    ours = session_for(raw_onnx).run(None, {'image': batch})
    ref = pytorch_outputs(mobilenet_detector, batch, decode=False)
    for name, got, want in zip(('loc', 'conf', 'landmarks'), ours, ref):
        assert got.shape == want.shape and got.shape[0] == 2, name
        np.testing.assert_allclose(got, want, rtol=0, atol=RAW_ATOL, err_msg=name)


@pytest.mark.parametrize('hw', SIZES, ids=lambda s: f'{s[0]}x{s[1]}')
def test_decoded_outputs_match_pytorch(decoded_onnx, mobilenet_detector, hw):
    batch = batch_of_two(*hw)
    boxes, scores, points = session_for(decoded_onnx).run(None, {'image': batch})
    ref_boxes, ref_scores, ref_points = pytorch_outputs(mobilenet_detector, batch, decode=True)
    num_priors = ref_scores.shape[1]
    assert boxes.shape == (2, num_priors, 4) and scores.shape == (2, num_priors)
    assert points.shape == (2, num_priors, 5, 2)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=RAW_ATOL)
    np.testing.assert_allclose(boxes, ref_boxes, rtol=PIXEL_RTOL, atol=PIXEL_ATOL)
    np.testing.assert_allclose(points, ref_points, rtol=PIXEL_RTOL, atol=PIXEL_ATOL)
    # pixel coordinates of this input size: the priors cover the whole image
    centres = (ref_boxes[..., :2] + ref_boxes[..., 2:]) / 2
    assert centres[..., 0].max() > 0.9 * hw[1] and centres[..., 1].max() > 0.9 * hw[0]


def test_decoded_onnx_with_numpy_nms_equals_detect_faces(decoded_onnx, mobilenet_detector):
    path = bundled_photo('grace_hopper')
    image = load_image(path)
    blob = image.astype(np.float32).transpose(2, 0, 1)[None]
    boxes, scores, points = (o[0] for o in session_for(decoded_onnx).run(None, {'image': blob}))
    cfg = mobilenet_detector.bbox_head.test_cfg
    boxes, scores, points = postprocess_decoded(
        boxes, scores, points, score_thr=cfg.score_thr, iou_thr=cfg.nms.iou_threshold,
        nms_pre=cfg.nms_pre, max_per_img=cfg.max_per_img)
    (expected, ) = detect_faces(mobilenet_detector, [path])
    assert len(scores) == len(expected) >= 2  # the face and a weak one (score_thr 0.02)
    np.testing.assert_allclose(scores, expected.scores.numpy(), rtol=0, atol=RAW_ATOL)
    np.testing.assert_allclose(boxes, expected.bboxes.numpy(), rtol=PIXEL_RTOL, atol=PIXEL_ATOL)
    np.testing.assert_allclose(points, expected.keypoints.numpy(), rtol=PIXEL_RTOL,
                               atol=PIXEL_ATOL)


def test_numpy_nms_matches_mmcv():
    from mmcv.ops import nms

    from mmretinaface.deploy import numpy_nms
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 200, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 60, (300, 2))], 1).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    for thr in (0.3, 0.4, 0.7):
        _, keep = nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr)
        assert numpy_nms(boxes, scores, thr).tolist() == keep.tolist()
    assert numpy_nms(np.zeros((0, 4)), np.zeros(0), 0.4).tolist() == []


def documented_snippet() -> str:
    text = (ROOT / 'docs' / 'inference.md').read_text()
    blocks = re.findall(r'<!-- onnx-snippet -->\s*```python\n(.*?)```', text, re.S)
    assert len(blocks) == 1, 'docs/inference.md: one ```python block after <!-- onnx-snippet -->'
    return blocks[0]


def test_documented_onnxruntime_snippet(decoded_onnx, mobilenet_detector, tmp_path,
                                        monkeypatch):
    from tests import onnx_snippet
    code = documented_snippet()
    # the docs show exactly the kept function (and its imports, and one call)
    assert inspect.getsource(onnx_snippet.detect_faces_onnx) in code
    body = inspect.getsource(onnx_snippet.detect_faces_onnx).splitlines()
    assert len([ln for ln in body[1:] if ln.strip() and not ln.strip().startswith('#')]) <= 10
    # run the documented block verbatim where its file names exist
    (tmp_path / 'retinaface.onnx').symlink_to(decoded_onnx)
    (tmp_path / 'photo.jpg').symlink_to(bundled_photo('grace_hopper'))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, 'docs/inference.md', 'exec'), namespace)
    boxes, scores, landmarks = namespace['boxes'], namespace['scores'], namespace['landmarks']
    (expected, ) = detect_faces(mobilenet_detector, [bundled_photo('grace_hopper')])
    keep = expected.scores >= 0.5
    assert len(scores) == int(keep.sum()) >= 1
    np.testing.assert_allclose(boxes, expected.bboxes[keep].numpy(), rtol=PIXEL_RTOL,
                               atol=PIXEL_ATOL)
    np.testing.assert_allclose(landmarks, expected.keypoints[keep].numpy(), rtol=PIXEL_RTOL,
                               atol=PIXEL_ATOL)
    np.testing.assert_allclose(scores, expected.scores[keep].numpy(), atol=RAW_ATOL)
