"""mmdet's DetInferencer on our configs; FaceInferencer (keypoints in JSON, landmarks drawn,
configs by name, default weights, built models, the fast default path); LimitSize, the one
max-size step (downscale for the network, results in original pixels via scale_factor)."""
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmretinaface.apis import (
    FaceInferencer,
    ImageReadError,
    bundled_photo,
    detect_faces,
    get_config_path,
    init_face_detector,
    instances_to_dict,
    list_configs,
    load_image,
)
from mmretinaface.apis.model_zoo import DEFAULT_MODEL, HOME_ENV
from mmretinaface.datasets.transforms import LimitSize
from mmretinaface.datasets.transforms.limit_size import limited_size
from mmretinaface.visualization import KEYPOINT_COLORS, FaceLocalVisualizer

CONFIG = get_config_path(DEFAULT_MODEL)
CONFIGS = [get_config_path(name) for name in list_configs()]


@pytest.fixture(scope='module')
def grace():
    return bundled_photo('grace_hopper')


@pytest.fixture(scope='module')
def reference(mobilenet_detector, grace):
    """detect_faces with the model as loaded: what every other path must reproduce."""
    (faces, ) = detect_faces(mobilenet_detector, [grace])
    assert (faces.scores >= 0.5).sum() >= 1
    return faces


@pytest.fixture(scope='module')
def inferencer(converted_checkpoint):
    """The model as loaded (optimize=False): the same computation as ``reference``."""
    return FaceInferencer(CONFIG, converted_checkpoint, device='cpu', show_progress=False,
                          backend='pytorch', optimize=False)


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
    inf = DetInferencer(model=CONFIG, weights=converted_checkpoint, device='cpu',
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
    ResizeWithLandmarks, LimitSize and PackFaceInputs then run on an image without labels."""
    from mmdet.apis import DetInferencer
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
    image = load_image(grace)[..., ::-1]  # RGB, as the visualizer returns
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        out = inferencer(grace, return_vis=True, pred_score_thr=0.5)
    assert not [w for w in caught if 'Failed to add' in str(w.message)], \
        'the inferencer visualizer must not warn about vis backends'
    assert isinstance(inferencer.visualizer, FaceLocalVisualizer)
    (drawn, ) = out['visualization']
    assert drawn.shape == image.shape
    kept = reference.scores >= 0.5
    for face in reference.keypoints[kept].numpy():
        for k, (x, y) in enumerate(face):
            x, y = int(round(x)), int(round(y))
            assert np.array_equal(drawn[y, x], KEYPOINT_COLORS[k]), (k, drawn[y, x])
            assert not np.array_equal(image[y, x], KEYPOINT_COLORS[k])
    # vis_max_size: a smaller drawing, the landmarks at the scaled positions
    (small, ) = inferencer(grace, return_vis=True, pred_score_thr=0.5,
                           vis_max_size=300)['visualization']
    assert small.shape == (300, 256, 3)
    scale = np.array([256 / 512, 300 / 600])
    for face in reference.keypoints[kept].numpy():
        for k, point in enumerate(face * scale):
            x, y = np.round(point).astype(int)
            assert np.array_equal(small[y, x], KEYPOINT_COLORS[k])


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
    # data samples: the tensors behind the dicts, in original pixels
    (sample, ) = inferencer(bgr, return_datasamples=True)['predictions']
    assert sample.ori_shape == bgr.shape[:2]
    assert torch.allclose(sample.pred_instances.keypoints, reference.keypoints, atol=1e-4)


def test_face_inferencer_max_size_maps_back_to_original_pixels(inferencer, grace, reference,
                                                               tmp_path):
    big = cv2.resize(load_image(grace), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    (sample, ) = inferencer(big, max_size=600, return_datasamples=True)['predictions']
    assert sample.scale_factor == (512 / 1024, 600 / 1200)  # LimitSize's, in the metainfo
    assert sample.img_shape == (600, 512) and sample.ori_shape == (1200, 1024)
    pred = instances_to_dict(sample.pred_instances)
    top = int(np.argmax(pred['scores']))
    face = reference.scores.argmax()
    # the network saw ~the original photo; results are in the 2x image's pixels
    assert close(pred['bboxes'][top], 2 * reference.bboxes[face], atol=4)
    assert close(pred['keypoints'][top], 2 * reference.keypoints[face], atol=4)
    # the per-call limit is not kept: the next call runs at the configured size
    assert inferencer.max_size == 4096
    (again, ) = inferencer(big, return_datasamples=True)['predictions']
    assert again.img_shape == (1200, 1024) and again.scale_factor == (1.0, 1.0)
    with pytest.raises(ValueError, match='max_size'):
        inferencer(big, max_size=-1)
    with pytest.raises(ImageReadError, match='missing.jpg'):  # a failing call, too
        inferencer([big, tmp_path / 'missing.jpg'], max_size=600, batch_size=2)
    assert inferencer.max_size == 4096
    inferencer.max_size = 600  # the default of later calls
    try:
        (sample, ) = inferencer(big, return_datasamples=True)['predictions']
        assert sample.img_shape == (600, 512)
    finally:
        inferencer.max_size = 4096


def test_max_size_none_is_the_configs_limit_and_zero_is_none(converted_checkpoint):
    """max_size=None: the config's LimitSize (4096); 0: no limit; setting None restores it."""
    common = dict(model=CONFIG, weights=converted_checkpoint, device='cpu',
                  show_progress=False, backend='pytorch')
    tall = np.zeros((5000, 100, 3), np.uint8)

    def network_shape(inferencer):
        return inferencer.pipeline(dict(img=tall))['data_samples'].img_shape

    default = FaceInferencer(max_size=None, **common)
    assert default.max_size == 4096 and network_shape(default) == (4096, 82)
    unlimited = FaceInferencer(max_size=0, **common)
    assert unlimited.max_size == 0 and network_shape(unlimited) == (5000, 100)
    unlimited.max_size = None  # back to the config's
    assert unlimited.max_size == 4096 and network_shape(unlimited) == (4096, 82)


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


def test_the_optimized_pytorch_path_gives_the_same_faces(converted_checkpoint, grace,
                                                        reference):
    """backend='pytorch' with optimize=True (BatchNorm folded) gives the faces of the
    model as loaded."""
    fast = FaceInferencer(CONFIG, converted_checkpoint, device='cpu', show_progress=False,
                          backend='pytorch')
    assert fast.backend == 'pytorch' and fast.network is fast.model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.model.modules())
    (pred, ) = fast(grace)['predictions']
    assert close(pred['scores'], reference.scores, atol=1e-4)
    assert close(pred['bboxes'], reference.bboxes, atol=1e-3)
    assert close(pred['keypoints'], reference.keypoints, atol=1e-3)


def test_the_pipeline_loads_no_labels_and_packs_as_the_config(grace, inferencer):
    """FaceInferencer drops annotation loading (its inputs have none): the batch and the
    faces equal those of the config's own test pipeline (as tools/test.py runs it)."""
    from mmengine.dataset import Compose, pseudo_collate
    names = [type(t).__name__ for t in inferencer.pipeline.transforms]
    assert 'LoadFaceAnnotations' not in names and names[-1] == 'PackFaceInputs'
    image = load_image(grace)
    data = inferencer.collate_fn([inferencer.pipeline(dict(img=image))])
    cfg = Config.fromfile(CONFIG)
    steps = [dict(type='mmdet.LoadImageFromNDArray'), *cfg.test_dataloader.dataset.pipeline[1:]]
    expected = pseudo_collate([Compose(steps)(dict(img=image))])
    assert torch.equal(data['inputs'][0], expected['inputs'][0])
    with torch.no_grad():
        got, want = (inferencer.model.test_step(data)[0],
                     inferencer.model.test_step(expected)[0])
    assert got.metainfo == want.metainfo
    for key in ('bboxes', 'scores', 'labels', 'keypoints'):
        assert torch.equal(got.pred_instances[key], want.pred_instances[key]), key


def test_configs_by_name_and_default_weights(monkeypatch, tmp_path, grace, reference):
    """FaceInferencer() / FaceInferencer(NAME) / NAME.py: the packaged config and the
    default weights, converted into an empty cache; the same faces as the converted
    checkpoint. Missing files are named."""
    monkeypatch.setenv(HOME_ENV, str(tmp_path / 'cache'))
    monkeypatch.chdir(tmp_path)  # names resolve from any directory
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        FaceInferencer(weights=tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='config not found'):
        FaceInferencer(model=tmp_path / 'nope.py')
    with pytest.raises(FileNotFoundError, match='config not found'):
        FaceInferencer('retinaface_nonexistent')
    assert not (tmp_path / 'cache').exists()
    default = FaceInferencer(device='cpu', show_progress=False, backend='pytorch',
                             optimize=False)
    (made, ) = (tmp_path / 'cache').iterdir()
    assert made.name.startswith(DEFAULT_MODEL) and made.suffix == '.pth'
    assert default.model.dataset_meta['classes'] == ('face', )
    assert default.model.bbox_head.num_keypoints == 5
    (pred, ) = default(grace)['predictions']
    assert close(pred['keypoints'], reference.keypoints, atol=1e-3)
    for model in (DEFAULT_MODEL, DEFAULT_MODEL + '.py'):
        named = FaceInferencer(model, device='cpu', show_progress=False, backend='pytorch',
                               optimize=False)
        assert close(named(grace)['predictions'][0]['keypoints'], pred['keypoints'], atol=0)
    assert list((tmp_path / 'cache').iterdir()) == [made]  # converted once
    # mmdet's own inferencer with the packaged config path and those weights
    from mmdet.apis import DetInferencer
    det = DetInferencer(model=get_config_path(DEFAULT_MODEL), weights=str(made), device='cpu',
                        show_progress=False)
    assert close(det(grace)['predictions'][0]['bboxes'], pred['bboxes'], atol=1e-3)


def test_a_built_model_and_a_config_without_limit_size(mobilenet_detector, grace, reference):
    """FaceInferencer wraps a detector from init_face_detector as is; a test pipeline
    without LimitSize gets one, so max_size works with any config."""
    wrapped = FaceInferencer(mobilenet_detector, show_progress=False)
    assert wrapped.model is mobilenet_detector
    with pytest.raises(ValueError, match='weights'):
        FaceInferencer(mobilenet_detector, weights='x.pth')
    cfg = Config.fromfile(CONFIG)
    cfg.test_dataloader.dataset.pipeline = [
        step for step in cfg.test_dataloader.dataset.pipeline if step['type'] != 'LimitSize']
    model = init_face_detector(cfg)  # random weights: only the geometry is checked
    plain = FaceInferencer(model, show_progress=False)
    assert plain.max_size == 0  # None: the config's limit, here none
    assert [type(t).__name__ for t in plain.pipeline.transforms][-2] == 'LimitSize'
    (sample, ) = plain(load_image(grace), max_size=300, return_datasamples=True)['predictions']
    assert sample.img_shape == (300, 256) and sample.ori_shape == (600, 512)
    (faces, ) = detect_faces(wrapped, [grace])
    assert torch.equal(faces.keypoints, reference.keypoints)


# --------------------------------------------------------------- the LimitSize step
def test_limited_size():
    assert limited_size(6000, 4000, 1000) == (1000, 667)
    assert limited_size(6000, 4000, 0) == (6000, 4000)
    assert limited_size(6000, 4000, None) == (6000, 4000)
    assert limited_size(6000, 4000, 6000) == (6000, 4000)
    assert limited_size(500, 1, 100) == (100, 1)


def test_limit_size_composes_the_scale_factor_and_maps_back():
    """After a 2x resize, LimitSize(1000) on 1200x800: scale_factor is the product, and
    dividing network-pixel coordinates by it (mmdet's rescale) gives original pixels."""
    from mmdet.structures.bbox import HorizontalBoxes
    image = np.zeros((800, 1200, 3), np.uint8)
    results = dict(img=image, img_shape=(800, 1200), scale_factor=(2.0, 2.0),
                   gt_bboxes=HorizontalBoxes(torch.tensor([[100., 50., 200., 150.]])),
                   gt_keypoints=np.array([[[150., 100.]] * 5], np.float32))
    out = LimitSize(max_size=1000)(results)
    assert out['img'].shape == (667, 1000, 3) and out['img_shape'] == (667, 1000)
    sx, sy = 1000 / 1200, 667 / 800
    assert out['scale_factor'] == (2.0 * sx, 2.0 * sy)
    torch.testing.assert_close(out['gt_bboxes'].tensor,
                               torch.tensor([[100 * sx, 50 * sy, 200 * sx, 150 * sy]]))
    np.testing.assert_allclose(out['gt_keypoints'][0, 0], [150 * sx, 100 * sy], rtol=1e-6)
    np.testing.assert_allclose(out['homography_matrix'], np.diag([sx, sy, 1]), rtol=1e-6)
    # a point in network pixels divided by the scale factor: the pre-resize original
    network_point = np.array([150 * sx * 2, 100 * sy * 2])  # the original (150, 100) x 2 x s
    np.testing.assert_allclose(network_point / np.array(out['scale_factor']), [150, 100])
    # images that fit pass unchanged (an identity scale factor when none was set)
    small = dict(img=np.zeros((10, 20, 3), np.uint8))
    assert LimitSize(max_size=20)(small)['scale_factor'] == (1.0, 1.0)
    assert small['img'].shape == (10, 20, 3) and 'homography_matrix' not in small
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match='max_size'):
            LimitSize(max_size=bad)


def test_instances_to_dict_empty_is_well_formed(mobilenet_detector):
    (faces, ) = detect_faces(mobilenet_detector, [np.full((64, 64, 3), 200, np.uint8)])
    out = instances_to_dict(faces, score_thr=0.5)
    assert out == {'bboxes': [], 'scores': [], 'labels': [], 'keypoints': []}
