"""mmdet's DetInferencer on our configs; FaceInferencer (keypoints in JSON, landmarks drawn);
the max-size path of the API (downscale for the network, results in original pixels)."""
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mmretinaface.apis import (
    DEFAULT_CONFIG,
    DEFAULT_WEIGHTS,
    FaceInferencer,
    detect_faces,
    fit_max_size,
    instances_to_dict,
    load_image,
    rescale_instances,
)
from mmretinaface.visualization import KEYPOINT_COLORS, FaceLocalVisualizer
from tests.conftest import bundled_photo

CONFIGS = sorted(str(p) for p in (Path(DEFAULT_CONFIG).parent).glob('retinaface_*.py'))


@pytest.fixture(scope='module')
def grace():
    return bundled_photo('grace_hopper')


@pytest.fixture(scope='module')
def reference(mobilenet_detector, grace):
    """detect_faces on grace_hopper: what every other path must reproduce."""
    (faces, ) = detect_faces(mobilenet_detector, [grace])
    assert (faces.scores >= 0.5).sum() >= 1
    return faces


@pytest.fixture(scope='module')
def inferencer(converted_checkpoint):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        inf = FaceInferencer(str(DEFAULT_CONFIG), converted_checkpoint, device='cpu',
                             show_progress=False)
    assert not [w for w in caught if 'Failed to add' in str(w.message)], \
        'the inferencer visualizer must not warn about vis backends'
    return inf


def close(a, b, atol=1e-4):
    return np.allclose(np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64)
                       .reshape(-1), atol=atol, rtol=0) and np.shape(a) == np.shape(b)


def iou(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter)


# ----------------------------------------------------------------- DetInferencer
def test_plain_det_inferencer_works_with_our_config(converted_checkpoint, grace, reference):
    from mmdet.apis import DetInferencer
    inf = DetInferencer(model=str(DEFAULT_CONFIG), weights=converted_checkpoint, device='cpu',
                        show_progress=False)
    (pred, ) = inf(grace)['predictions']
    assert set(pred) >= {'bboxes', 'scores', 'labels'}
    # same faces as our API: DetInferencer's loader (InferencerLoader) decodes the JPEG
    # to the same pixels and the test pipeline runs without annotations
    assert close(pred['bboxes'], reference.bboxes, atol=1e-3)
    assert close(pred['scores'], reference.scores)


@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: Path(p).stem)
def test_det_inferencer_pipeline_needs_no_annotations(config):
    """DetInferencer swaps LoadImageFromFile for InferencerLoader; LoadFaceAnnotations,
    ResizeWithLandmarks and PackFaceInputs then run on an image without any label."""
    from mmdet.apis import DetInferencer
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    pipeline = DetInferencer._init_pipeline(object.__new__(DetInferencer), cfg)
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for item in (image, dict(img=image)):
        data = pipeline(item)
        assert tuple(data['inputs'].shape) == (3, 37, 53)
        sample = data['data_samples']
        assert len(sample.gt_instances) == 0 and sample.ori_shape == (37, 53)


# ----------------------------------------------------------------- FaceInferencer
def test_face_inferencer_json_has_the_api_keypoints(inferencer, grace, reference, tmp_path):
    out = inferencer(grace, out_dir=str(tmp_path), no_save_pred=False)
    saved = json.loads((tmp_path / 'preds' / 'grace_hopper.json').read_text())
    assert saved == json.loads(json.dumps(out['predictions'][0]))
    assert set(saved) == {'bboxes', 'scores', 'labels', 'keypoints'}
    assert close(saved['keypoints'], reference.keypoints)
    assert close(saved['bboxes'], reference.bboxes)
    assert close(saved['scores'], reference.scores)
    assert np.asarray(saved['keypoints']).shape == (len(reference), 5, 2)
    drawn = cv2.imread(str(tmp_path / 'vis' / 'grace_hopper.jpg'))
    assert drawn.shape == load_image(grace).shape


def test_face_inferencer_draws_landmark_colours(inferencer, grace, reference):
    assert isinstance(inferencer.visualizer, FaceLocalVisualizer)
    image = load_image(grace)[..., ::-1]  # RGB, as the visualizer returns
    out = inferencer(grace, return_vis=True, pred_score_thr=0.5)
    (drawn, ) = out['visualization']
    assert drawn.shape == image.shape
    kept = reference.scores >= 0.5
    for face in reference.keypoints[kept].numpy():
        for k, (x, y) in enumerate(face):
            x, y = int(round(x)), int(round(y))
            assert np.array_equal(drawn[y, x], KEYPOINT_COLORS[k]), (k, drawn[y, x])
            assert not np.array_equal(image[y, x], KEYPOINT_COLORS[k])


def test_face_inferencer_arrays_batches_and_empty_results(inferencer, grace, reference):
    bgr = load_image(grace)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    blank = np.full((120, 160, 3), 127, np.uint8)
    out = inferencer([bgr, gray, blank], batch_size=2, return_vis=True)
    first, from_gray, empty = out['predictions']
    assert close(first['keypoints'], reference.keypoints, atol=1e-3)  # batched: padding
    assert np.asarray(from_gray['keypoints']).shape[1:] == (5, 2)
    assert max(from_gray['scores']) > 0.9  # the face is found in grayscale too
    top = int(np.argmax(from_gray['scores']))
    assert iou(from_gray['bboxes'][top], reference.bboxes[0]) > 0.9
    # a blank image: every key present, every list empty (the model's own score_thr)
    blank_faces = [s for s in empty['scores'] if s >= 0.5]
    assert not blank_faces
    assert [v.shape for v in map(np.asarray, out['visualization'])] == [
        bgr.shape, bgr.shape, blank.shape]


def test_face_inferencer_max_size_maps_back_to_original_pixels(inferencer, grace, reference):
    big = cv2.resize(load_image(grace), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    (pred, ) = inferencer(big, max_size=600)['predictions']
    top = int(np.argmax(pred['scores']))
    face = reference.scores.argmax()
    # the network saw ~the original photo; results are in the 2x image's pixels
    assert close(pred['bboxes'][top], 2 * reference.bboxes[face], atol=4)
    assert close(pred['keypoints'][top], 2 * reference.keypoints[face], atol=4)


def test_face_inferencer_default_model_and_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        FaceInferencer(weights=tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='config not found'):
        FaceInferencer(model=tmp_path / 'nope.py')
    if not Path(DEFAULT_WEIGHTS).is_file():
        pytest.skip(f'{DEFAULT_WEIGHTS} not converted (make demo)')
    inf = FaceInferencer(show_progress=False)
    assert inf.model.dataset_meta['classes'] == ('face', )
    assert inf.model.bbox_head.num_keypoints == 5


# --------------------------------------------------------------- max size in the API
def test_fit_max_size_and_rescale_are_inverse():
    image = np.zeros((4000, 6000, 3), np.uint8)
    small, (sx, sy) = fit_max_size(image, 1000)
    assert small.shape == (667, 1000, 3)
    assert (sx, sy) == (1000 / 6000, 667 / 4000)
    same, scale = fit_max_size(image, 0)
    assert same is image and scale == (1.0, 1.0)
    assert fit_max_size(image, 6000)[0] is image
    tiny, _ = fit_max_size(np.zeros((1, 500, 3), np.uint8), 100)
    assert tiny.shape == (1, 100, 3)

    from mmengine.structures import InstanceData
    inst = InstanceData(bboxes=torch.tensor([[100., 50., 200., 150.]]),
                        keypoints=torch.tensor([[[150., 100.]] * 5]))
    back = rescale_instances(inst, (sx, sy))
    assert torch.allclose(back.bboxes, torch.tensor([[600., 50 * 4000 / 667, 1200.,
                                                      150 * 4000 / 667]]))
    assert torch.allclose(back.keypoints[0, 0], torch.tensor([900., 100 * 4000 / 667]))
    assert torch.equal(inst.bboxes, torch.tensor([[100., 50., 200., 150.]]))  # not modified


def test_detect_faces_max_size_on_a_large_canvas(mobilenet_detector, grace, reference):
    """grace_hopper enlarged ~5.9x inside a 6000x4000 noisy canvas, max_size 1024: the
    network sees the photo at about its own size; results come back in canvas pixels."""
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 256, (4000, 6000, 3), dtype=np.uint8)
    zoom = 6000 / 1024
    photo = cv2.resize(load_image(grace), None, fx=zoom, fy=zoom,
                       interpolation=cv2.INTER_LINEAR)
    # offsets of 32 network pixels x zoom keep the photo on the detector's stride grid
    # (a convolutional detector is not exactly translation invariant off the grid)
    ox, oy = int(8 * 32 * zoom), int(2 * 32 * zoom)  # 1500, 375
    canvas[oy:oy + photo.shape[0], ox:ox + photo.shape[1]] = photo
    (faces, ) = detect_faces(mobilenet_detector, [canvas], max_size=1024)
    best = faces.scores.argmax()
    face = reference.scores.argmax()
    offset = torch.tensor([ox, oy], dtype=torch.float32)
    # a missing or wrong rescale would be off by a factor ~6 (thousands of pixels); the
    # two resamplings blur the photo, so allow 2 network pixels (x zoom)
    assert faces.scores[best] > 0.9
    assert (faces.bboxes[best] - (zoom * reference.bboxes[face] + offset.repeat(2))).abs().max() \
        < 2 * zoom
    assert (faces.keypoints[best] - (zoom * reference.keypoints[face] + offset)).abs().max() \
        < 2 * zoom


def test_instances_to_dict_empty_is_well_formed(mobilenet_detector):
    (faces, ) = detect_faces(mobilenet_detector, [np.full((64, 64, 3), 200, np.uint8)])
    out = instances_to_dict(faces, score_thr=0.5)
    assert out == {'bboxes': [], 'scores': [], 'labels': [], 'keypoints': []}
