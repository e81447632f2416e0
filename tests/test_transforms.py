"""Landmark-aware transforms: properties, alignment, rendered-image agreement, full pipeline."""
import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmdet.registry import TRANSFORMS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.config import Config
from mmengine.dataset import Compose

from mmretinaface.datasets.transforms import (
    LoadFaceAnnotations,
    MirrorWithLandmarks,
    PackFaceInputs,
    PadToSquareIfCropFailed,
    RandomInterpResize,
    RandomSquareCrop,
    ResizeWithLandmarks,
)

ROOT = Path(__file__).resolve().parents[1]
FLIP = [1, 0, 2, 4, 3]


def seed_np(seed: int) -> None:
    """The transforms draw from the global np.random state (as mmdet's do)."""
    np.random.seed(seed)  # noqa: NPY002


def frontal_face(x1, y1, size):
    """Box and 5 landmarks of an upright frontal face (left eye on the image's left)."""
    rel = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]])
    return [x1, y1, x1 + size, y1 + size], (rel * size + [x1, y1]).astype(np.float32)


def make_results(img_shape=(200, 300), faces=(), ignore=None, visible=None):
    """Results as after LoadImageFromFile + LoadFaceAnnotations."""
    instances = []
    for i, (box, kps) in enumerate(faces):
        instances.append(dict(
            bbox=list(map(float, box)), bbox_label=0,
            ignore_flag=int(ignore[i]) if ignore is not None else 0,
            keypoints=np.asarray(kps, np.float32),
            keypoints_visible=(np.asarray(visible[i], np.float32) if visible is not None
                               else np.ones(len(kps), np.float32))))
    img = np.random.default_rng(0).integers(0, 255, img_shape + (3,), dtype=np.uint8)
    results = dict(img=img, img_shape=img_shape, ori_shape=img_shape, instances=instances,
                   flip_indices=FLIP, num_keypoints=5)
    return LoadFaceAnnotations()(results)


def boxes(results):
    return results['gt_bboxes'].numpy()


def test_load_face_annotations():
    res = make_results(faces=[frontal_face(10, 10, 40), frontal_face(100, 50, 60)],
                       ignore=[0, 1], visible=[np.ones(5), [1, 1, 0, 1, 1]])
    assert isinstance(res['gt_bboxes'], HorizontalBoxes)
    assert res['gt_keypoints'].shape == (2, 5, 2) and res['gt_keypoints'].dtype == np.float32
    assert res['gt_keypoints_visible'].shape == (2, 5)
    np.testing.assert_array_equal(res['gt_ignore_flags'], [False, True])
    np.testing.assert_array_equal(res['gt_keypoints_visible'][1], [1, 1, 0, 1, 1])
    empty = make_results(faces=[])
    assert empty['gt_keypoints'].shape == (0, 5, 2)
    assert empty['gt_keypoints_visible'].shape == (0, 5)


def test_flip_twice_is_identity():
    res = make_results(faces=[frontal_face(10, 10, 40), frontal_face(150, 60, 80)],
                       visible=[[1, 0, 1, 1, 0], np.ones(5)])
    before = copy.deepcopy(res)
    flip = MirrorWithLandmarks(prob=1.0)
    once = flip(copy.deepcopy(res))
    assert once['flip'] and once['flip_direction'] == 'horizontal'
    assert not np.allclose(once['gt_keypoints'], before['gt_keypoints'])
    twice = flip(once)
    np.testing.assert_array_equal(twice['img'], before['img'])
    np.testing.assert_allclose(boxes(twice), boxes(before))
    np.testing.assert_allclose(twice['gt_keypoints'], before['gt_keypoints'])
    np.testing.assert_array_equal(twice['gt_keypoints_visible'], before['gt_keypoints_visible'])


def test_flip_keeps_left_eye_left_and_uses_w_minus_x():
    res = make_results(img_shape=(100, 200), faces=[frontal_face(20, 10, 50)],
                       visible=[[1, 0, 1, 1, 1]])
    kps0 = res['gt_keypoints'].copy()
    out = MirrorWithLandmarks(prob=1.0)(res)
    kps = out['gt_keypoints'][0]
    assert kps[0, 0] < kps[1, 0] and kps[3, 0] < kps[4, 0]
    np.testing.assert_allclose(boxes(out)[0], [200 - 70, 10, 200 - 20, 60])
    np.testing.assert_allclose(kps[:, 0], 200 - kps0[0, FLIP, 0])
    np.testing.assert_allclose(kps[:, 1], kps0[0, FLIP, 1])
    np.testing.assert_array_equal(out['gt_keypoints_visible'][0], [0, 1, 1, 1, 1])


def test_flip_needs_flip_indices():
    res = make_results(faces=[frontal_face(20, 10, 50)])
    del res['flip_indices']
    with pytest.raises(KeyError, match='flip_indices'):
        MirrorWithLandmarks(prob=1.0)(res)
    out = MirrorWithLandmarks(prob=1.0, flip_indices=FLIP)(res)
    assert out['gt_keypoints'][0, 0, 0] < out['gt_keypoints'][0, 1, 0]


def test_flip_probability_zero_leaves_results():
    res = make_results(faces=[frontal_face(20, 10, 50)])
    kps = res['gt_keypoints'].copy()
    out = MirrorWithLandmarks(prob=0.0)(res)
    assert out['flip'] is False
    np.testing.assert_array_equal(out['gt_keypoints'], kps)


def test_crop_keeps_centre_inside_faces_aligned():
    seed_np(0)
    # A small face that always fits, plus big faces around it that may be cut.
    faces = [frontal_face(140, 90, 20), frontal_face(0, 0, 120), frontal_face(200, 120, 90),
             frontal_face(60, 150, 60)]
    ignore = [0, 0, 1, 0]
    for seed in range(30):
        seed_np(seed)
        res = make_results(img_shape=(220, 300), faces=faces, ignore=ignore)
        src_boxes = boxes(res).copy()
        src_kps = res['gt_keypoints'].copy()
        # tag each face: its label is its index, so alignment can be checked after the crop
        res['gt_bboxes_labels'] = np.arange(4)
        res['gt_keypoints_visible'] = np.tile(np.arange(4, dtype=np.float32)[:, None], (1, 5))
        out = RandomSquareCrop()(res)
        assert out['crop_failed'] is False
        h, w = out['img'].shape[:2]
        assert h == w and out['img_shape'] == (h, w)
        left, top = -out['homography_matrix'][:2, 2]
        ids = out['gt_bboxes_labels']
        assert len(ids) == len(out['gt_bboxes']) == len(out['gt_keypoints'])
        np.testing.assert_array_equal(out['gt_ignore_flags'], np.asarray(ignore, bool)[ids])
        np.testing.assert_array_equal(out['gt_keypoints_visible'][:, 0], ids)
        centres = (src_boxes[:, :2] + src_boxes[:, 2:]) / 2
        inside = ((centres[:, 0] > left) & (centres[:, 0] < left + w)
                  & (centres[:, 1] > top) & (centres[:, 1] < top + h))
        np.testing.assert_array_equal(np.flatnonzero(inside), ids)
        expected = np.clip(src_boxes[ids] - [left, top, left, top], 0, w)
        np.testing.assert_allclose(boxes(out), expected, atol=1e-4)
        np.testing.assert_allclose(out['gt_keypoints'],
                                   np.clip(src_kps[ids] - [left, top], 0, w), atol=1e-4)
        # some usable face lies fully inside the window
        usable = boxes(out)[~out['gt_ignore_flags']]
        full = src_boxes[ids][~out['gt_ignore_flags']] - [left, top, left, top]
        assert np.any(np.all(np.isclose(usable, full), axis=1))


def test_crop_invisible_outside_landmarks():
    for seed in range(40):
        seed_np(seed)
        res = make_results(img_shape=(300, 300),
                           faces=[frontal_face(100, 100, 30), frontal_face(10, 10, 200)])
        res['gt_bboxes_labels'] = np.arange(2)
        src_kps = res['gt_keypoints'].copy()
        out = RandomSquareCrop(outside_landmarks='invisible')(res)
        left, top = -out['homography_matrix'][:2, 2]
        side = out['img'].shape[0]
        for face_id, kept, vis in zip(out['gt_bboxes_labels'], out['gt_keypoints'],
                                      out['gt_keypoints_visible']):
            src = src_kps[face_id] - [left, top]
            outside = ((src < 0) | (src > side)).any(-1)
            np.testing.assert_array_equal(vis, (~outside) * 1.0)
            np.testing.assert_allclose(kept, np.clip(src, 0, side), atol=1e-4)


def test_crop_fails_then_pad_to_square():
    # The only usable face is wider than the short side: no square window can hold it.
    res = make_results(img_shape=(100, 300), faces=[frontal_face(0, 0, 90)])
    res['gt_bboxes'] = HorizontalBoxes(torch.tensor([[10., 5., 200., 95.]]))
    img = res['img'].copy()
    out = RandomSquareCrop(max_tries=20)(res)
    assert out['crop_failed'] is True
    np.testing.assert_array_equal(out['img'], img)
    out = PadToSquareIfCropFailed()(out)
    assert out['img'].shape == (300, 300, 3) and out['img_shape'] == (300, 300)
    np.testing.assert_array_equal(out['img'][:100], img)
    np.testing.assert_array_equal(out['img'][100:], np.broadcast_to([104, 117, 123],
                                                                    (200, 300, 3)))
    np.testing.assert_allclose(boxes(out), [[10, 5, 200, 95]])  # pads bottom/right only


def test_crop_with_only_ignored_faces_fails_and_no_pad_after_success():
    res = make_results(img_shape=(100, 150), faces=[frontal_face(10, 10, 30)], ignore=[1])
    assert RandomSquareCrop()(res)['crop_failed'] is True
    seed_np(1)
    res = make_results(img_shape=(100, 150), faces=[frontal_face(10, 10, 30)])
    out = PadToSquareIfCropFailed()(RandomSquareCrop()(res))
    assert out['crop_failed'] is False and out['pad_to_square'] is False
    side = out['img'].shape[0]
    assert out['img'].shape[:2] == (side, side)
    # no crop transform at all: nothing is padded
    res = make_results(img_shape=(100, 150), faces=[])
    assert PadToSquareIfCropFailed()(res)['img'].shape[:2] == (100, 150)


def test_crop_scales_follow_the_reference():
    seed_np(0)
    res = make_results(img_shape=(200, 400), faces=[frontal_face(99, 99, 2)])
    sides = set()
    for _ in range(400):
        sides.add(RandomSquareCrop()(copy.copy(res))['img'].shape[0])
    assert sides == {int(s * 200) for s in (0.3, 0.45, 0.6, 0.8, 1.0)}


def test_random_interp_resize():
    seed_np(0)
    seen = set()
    for _ in range(40):
        res = make_results(img_shape=(150, 200), faces=[frontal_face(20, 30, 60)])
        kps = res['gt_keypoints'].copy()
        out = RandomInterpResize(img_dim=100)(res)
        seen.add(out['interpolation'])
        assert out['img'].shape == (100, 100, 3) and out['img_shape'] == (100, 100)
        sx, sy = out['scale_factor']
        assert (sx, sy) == (0.5, 100 / 150)
        np.testing.assert_allclose(boxes(out), [[20 * sx, 30 * sy, 80 * sx, 90 * sy]],
                                   rtol=1e-6)
        np.testing.assert_allclose(out['gt_keypoints'], kps * [sx, sy], rtol=1e-6)
    assert seen == {'bilinear', 'bicubic', 'area', 'nearest', 'lanczos'}


def test_resize_with_landmarks_keep_ratio():
    res = make_results(img_shape=(150, 200), faces=[frontal_face(20, 30, 60)])
    kps = res['gt_keypoints'].copy()
    out = ResizeWithLandmarks(scale=(400, 400), keep_ratio=True)(res)
    assert out['img'].shape[:2] == (300, 400)
    np.testing.assert_allclose(out['gt_keypoints'], kps * 2, rtol=1e-6)
    np.testing.assert_allclose(boxes(out), [[40, 60, 160, 180]], rtol=1e-6)


@pytest.mark.parametrize('keep_ratio', [True, False])
def test_resize_to_the_same_size_equals_mmdet_resize_without_a_copy(keep_ratio):
    """scale_factor=1.0 (the test pipelines): the image is passed on as is, every key as
    mmdet's Resize (which copies it through cv2.resize) sets it."""
    from mmdet.datasets.transforms import Resize
    img = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    kwargs = (dict(scale_factor=1.0, keep_ratio=True) if keep_ratio
              else dict(scale=(53, 37), keep_ratio=False))
    out = ResizeWithLandmarks(**kwargs)(dict(img=img))
    expected = Resize(**kwargs)(dict(img=img.copy()))
    assert out['img'] is img
    assert set(out) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(out[key], value, err_msg=key)
    # a size change still resizes (and copies)
    out = ResizeWithLandmarks(scale_factor=0.5, keep_ratio=True)(dict(img=img))
    assert out['img'].shape[:2] == (19, 27) and out['scale_factor'] == (27 / 53, 19 / 37)


def test_pack_face_inputs_splits_ignored():
    res = make_results(faces=[frontal_face(10, 10, 40), frontal_face(100, 50, 60),
                              frontal_face(200, 20, 30)], ignore=[0, 1, 0])
    res.update(flip=False, flip_direction=None, crop_failed=False, scale_factor=(1.0, 1.0),
               img_id='x', img_path='x.jpg')
    kps = res['gt_keypoints'].copy()
    packed = PackFaceInputs()(res)
    sample = packed['data_samples']
    assert isinstance(sample, DetDataSample)
    assert packed['inputs'].shape == (3, 200, 300)
    gt, ign = sample.gt_instances, sample.ignored_instances
    assert gt.keypoints.shape == (2, 5, 2) and gt.keypoints.dtype == torch.float32
    assert gt.keypoints_visible.shape == (2, 5)
    np.testing.assert_allclose(gt.keypoints.numpy(), kps[[0, 2]])
    np.testing.assert_allclose(ign.keypoints.numpy(), kps[[1]])
    assert len(gt.bboxes) == 2 and len(ign.bboxes) == 1
    assert sample.metainfo['crop_failed'] is False and sample.metainfo['flip'] is False


def _draw_dots(img, kps, colours, radius=4):
    for pts in kps:
        for (x, y), colour in zip(pts, colours):
            cv2.circle(img, (int(round((x - 0.5) * 16)), int(round((y - 0.5) * 16))),
                       radius * 16, colour, -1, cv2.LINE_8, 4)


def _find_dot(img, colour, tol=70.0):
    dist = np.linalg.norm(img.astype(np.float32) - np.asarray(colour, np.float32), axis=-1)
    ys, xs = np.nonzero(dist < tol)
    if len(xs) == 0:
        return None
    weights = tol - dist[ys, xs]
    return np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)]) + 0.5


DOT_COLOURS = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 0, 255)]


CASES = {  # face size range, crop arguments
    'reference': ((60, 110), dict()),
    'zoom': ((25, 45), dict(scales=(0.3, 0.45))),
    'crop_failed': ((60, 110), dict(max_tries=0)),  # -> pad to square, flip, resize
}


@pytest.mark.parametrize('case', sorted(CASES))
@pytest.mark.parametrize('seed', range(6))
def test_geometry_agrees_with_rendered_image(seed, case):
    """Crop + pad + flip + resize move landmarks exactly where the image content moves."""
    (lo, hi), crop_args = CASES[case]
    rng = np.random.default_rng(seed)
    seed_np(seed)
    height, width = 240, 320
    size = float(rng.uniform(lo, hi))
    x1, y1 = rng.uniform(5, width - size - 5), rng.uniform(5, height - size - 5)
    box, kps = frontal_face(x1, y1, size)
    kps = kps + rng.uniform(-3, 3, size=kps.shape).astype(np.float32) * size / 100
    res = make_results(img_shape=(height, width), faces=[(box, kps)])
    res['img'][:] = 128
    _draw_dots(res['img'], [kps], DOT_COLOURS, radius=3 if size < 50 else 4)
    pipeline = Compose([RandomSquareCrop(outside_landmarks='invisible', **crop_args),
                        PadToSquareIfCropFailed(), MirrorWithLandmarks(prob=0.5),
                        RandomInterpResize(img_dim=200)])
    out = pipeline(res)
    assert out['img'].shape == (200, 200, 3)
    assert out['crop_failed'] is (case == 'crop_failed')
    order = FLIP if out['flip'] else list(range(5))
    checked = 0
    margin = 5 * out['scale_factor'][0] + 1
    for i, (pt, vis) in enumerate(zip(out['gt_keypoints'][0], out['gt_keypoints_visible'][0])):
        if not vis or (pt < margin).any() or (pt > 200 - margin).any():
            continue  # clamped or near the border: its dot may be cut
        found = _find_dot(out['img'], DOT_COLOURS[order[i]])
        assert found is not None
        np.testing.assert_allclose(found, pt, atol=1.5)
        checked += 1
    assert checked >= 2


def child_config(tmp_path, base: str, body: str) -> Config:
    """A config file in ``tmp_path`` inheriting ``configs/<base>``, loaded."""
    path = tmp_path / 'child.py'
    path.write_text(f"_base_ = '{ROOT / 'configs' / base}'\n{body}")
    return Config.fromfile(str(path))


def test_crop_size_is_set_in_one_place(tmp_path):
    """Configs change the crop size with ``img_dim`` alone; the rest is the base pipeline."""
    base = Config.fromfile(str(ROOT / 'configs' / 'retinaface_mobilenet0.25_widerface.py'))
    base_steps = base.train_dataloader.dataset.pipeline
    assert base_steps[0].get('backend_args', 'missing') is None
    configs = {'retinaface_mobilenet0.25_widerface.py': 640, 'retinaface_r50_widerface.py': 840,
               'retinaface_mobilenet0.25_synthetic.py': 320}
    for name, size in configs.items():
        cfg = Config.fromfile(str(ROOT / 'configs' / name))
        steps = cfg.train_dataloader.dataset.pipeline
        assert cfg.img_dim == size
        assert [s for s in steps if s.type != 'RandomInterpResize'] == [
            s for s in base_steps if s.type != 'RandomInterpResize'], name
        resize = Compose(steps).transforms[[s.type for s in steps].index('RandomInterpResize')]
        assert isinstance(resize, RandomInterpResize) and resize.size == (size, size), name
    # a new config: one value, the documented two lines (as in retinaface_r50_widerface.py)
    cfg = child_config(tmp_path, 'retinaface_mobilenet0.25_widerface.py', (
        "img_dim = 512\n"
        "train_pipeline = [dict(step, img_dim=img_dim) if step.type == 'RandomInterpResize' "
        "else step for step in _base_.train_pipeline]\n"
        "train_dataloader = dict(dataset=dict(pipeline=train_pipeline))\n"))
    sizes = [s.get('img_dim') for s in cfg.train_dataloader.dataset.pipeline]
    assert [s for s in sizes if s is not None] == [512]


def test_full_train_pipeline_from_config(tmp_path):
    from mmengine.registry import init_default_scope

    import mmretinaface.datasets  # noqa: F401 (registers the transforms)

    init_default_scope('mmdet')
    img = np.full((240, 320, 3), 90, np.uint8)
    path = str(tmp_path / 'img.jpg')
    cv2.imwrite(path, img)
    faces = [frontal_face(40, 40, 60), frontal_face(200, 100, 50), frontal_face(5, 200, 30)]
    instances = [dict(bbox=list(map(float, b)), bbox_label=0, ignore_flag=0, keypoints=k,
                      keypoints_visible=np.ones(5, np.float32)) for b, k in faces]
    instances[2]['ignore_flag'] = 1
    cfg = child_config(tmp_path, 'retinaface_mobilenet0.25_widerface.py', (
        "img_dim = 160\n"
        "train_pipeline = [dict(step, img_dim=img_dim) if step.type == 'RandomInterpResize' "
        "else step for step in _base_.train_pipeline]\n"))
    pipeline = Compose(cfg.train_pipeline)
    for seed in range(5):
        seed_np(seed)
        data = pipeline(dict(img_path=path, img_id='img', instances=copy.deepcopy(instances),
                             flip_indices=FLIP, num_keypoints=5))
        sample = data['data_samples']
        assert isinstance(sample, DetDataSample)
        assert data['inputs'].shape == (3, 160, 160)
        gt = sample.gt_instances
        n = len(gt)
        assert n >= 1
        assert gt.keypoints.shape == (n, 5, 2) and gt.keypoints_visible.shape == (n, 5)
        assert gt.bboxes.tensor.shape == (n, 4) and (gt.labels == 0).all()
        assert sample.ignored_instances.keypoints.shape[1:] == (5, 2)
        for key in ('flip', 'crop_failed', 'scale_factor', 'img_shape'):
            assert key in sample.metainfo
        assert torch.isfinite(gt.keypoints).all() and torch.isfinite(gt.bboxes.tensor).all()


def test_registered_names():
    for name in ('LoadFaceAnnotations', 'RandomSquareCrop', 'PadToSquareIfCropFailed',
                 'MirrorWithLandmarks', 'RandomInterpResize', 'ResizeWithLandmarks',
                 'PackFaceInputs'):
        assert TRANSFORMS.get(name) is not None, name
    assert TRANSFORMS.get('RandomSquareCrop') is RandomSquareCrop
    assert TRANSFORMS.get('MirrorWithLandmarks') is MirrorWithLandmarks
    # the name of earlier configs still builds the same transform
    assert TRANSFORMS.get('RandomFlipWithLandmarks') is MirrorWithLandmarks
    assert TRANSFORMS.get('RandomCrop') is not RandomSquareCrop
