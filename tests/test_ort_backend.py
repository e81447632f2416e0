"""FaceInferencer's ONNX Runtime backend: the same faces as the PyTorch model, exported once
per content (config + weights) into the cache, INT8 close to FP32, clear errors."""
import os

import cv2
import numpy as np
import pytest
import torch

from mmretinaface.apis import FaceInferencer, bundled_photo, init_face_detector, load_image
from mmretinaface.apis.model_zoo import DEFAULT_MODEL, HOME_ENV, get_config_path

CONFIG = get_config_path(DEFAULT_MODEL)


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp('mmretinaface_home')


@pytest.fixture(scope='module')
def photos():
    grace, astronaut = (load_image(bundled_photo(n)) for n in ('grace_hopper', 'astronaut'))
    group = np.concatenate([cv2.resize(grace, (256, 300)), cv2.resize(astronaut, (300, 300))],
                           axis=1)
    return [grace, astronaut, cv2.resize(grace, (333, 517)), group]


@pytest.fixture(scope='module')
def backends(converted_checkpoint, cache):
    """(PyTorch as loaded, ONNX Runtime FP32, ONNX Runtime INT8), all from the same files."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(HOME_ENV, str(cache))
        common = dict(model=CONFIG, weights=converted_checkpoint, device='cpu',
                      show_progress=False)
        return (FaceInferencer(backend='pytorch', optimize=False, **common),
                FaceInferencer(**common), FaceInferencer(int8=True, **common))


def predict(inferencer, images, batch_size=1):
    out = inferencer(images, batch_size=batch_size, return_datasamples=True)['predictions']
    return [sample.pred_instances for sample in out]


def test_cpu_default_is_onnxruntime_and_the_export_is_cached(backends, cache,
                                                            converted_checkpoint):
    torch_inf, ort_inf, int8_inf = backends
    assert (torch_inf.backend, ort_inf.backend, int8_inf.backend) == (
        'pytorch', 'onnxruntime', 'onnxruntime')
    files = sorted(p.name for p in (cache / 'onnx').iterdir())
    assert len(files) == 2 and sum(f.endswith('-int8.onnx') for f in files) == 1
    assert {ort_inf.network.onnx_file, int8_inf.network.onnx_file} == {
        str(cache / 'onnx' / f) for f in files}
    assert int8_inf.network.onnx_file.endswith('-int8.onnx')
    stamp = os.stat(ort_inf.network.onnx_file).st_ino  # a new export is a new file (renamed)
    os.environ[HOME_ENV] = str(cache)
    try:  # the same config and weights: the cached file, not a new export
        again = FaceInferencer(CONFIG, converted_checkpoint, device='cpu', show_progress=False)
        assert again.network.onnx_file == ort_inf.network.onnx_file
        assert os.stat(again.network.onnx_file).st_ino == stamp
        # other weights (one bias changed): another file
        model = init_face_detector(CONFIG, converted_checkpoint)
        with torch.no_grad():
            model.bbox_head.cls_convs[0].bias[1] += 1.0
        other = FaceInferencer(model, backend='onnxruntime', show_progress=False)
        assert other.network.onnx_file != ort_inf.network.onnx_file
    finally:
        del os.environ[HOME_ENV]


@pytest.mark.parametrize('batch_size', [1, 4])
def test_onnxruntime_gives_the_pytorch_faces(backends, photos, batch_size):
    """Every image (one at a time, and as one padded batch of mixed sizes)."""
    torch_inf, ort_inf, _ = backends
    for want, got in zip(predict(torch_inf, photos, batch_size),
                         predict(ort_inf, photos, batch_size)):
        keep = want.scores > 0.05  # the borderline ones may cross the 0.02 threshold
        assert keep.sum() >= 1
        n = int(keep.sum())
        torch.testing.assert_close(got.scores[:n], want.scores[:n], atol=1e-4, rtol=0)
        torch.testing.assert_close(got.bboxes[:n], want.bboxes[:n], atol=2e-3, rtol=0)
        torch.testing.assert_close(got.keypoints[:n], want.keypoints[:n], atol=2e-3, rtol=0)
        assert abs(len(got) - len(want)) <= max(2, len(want) // 20)


def iou(a, b) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter)


def test_int8_finds_the_same_faces(backends, photos):
    _, ort_inf, int8_inf = backends
    for fp32, int8 in zip(predict(ort_inf, photos), predict(int8_inf, photos)):
        faces = fp32.bboxes[fp32.scores > 0.5].numpy()
        found = int8.bboxes[int8.scores > 0.3].numpy()
        assert len(faces) >= 1
        for face in faces:
            assert max(iou(face, box) for box in found) > 0.8
        assert (int8.scores > 0.5).sum() <= len(faces) + 1


def test_drawings_and_json_are_the_pytorch_ones(backends, photos, tmp_path):
    torch_inf, ort_inf, _ = backends
    outs = []
    for name, inferencer in (('torch', torch_inf), ('ort', ort_inf)):
        result = inferencer(photos[:1], out_dir=str(tmp_path / name), no_save_pred=False,
                            pred_score_thr=0.5, return_vis=True)
        outs.append(result)
        assert (tmp_path / name / 'preds' / '0.json').is_file()
    (a, ), (b, ) = (o['predictions'] for o in outs)
    assert set(a) == set(b) == {'bboxes', 'scores', 'labels', 'keypoints'}
    assert np.allclose(a['keypoints'][:1], b['keypoints'][:1], atol=2e-3)
    diff = np.abs(outs[0]['visualization'][0].astype(int) - outs[1]['visualization'][0])
    assert (diff > 0).mean() < 0.01  # the same drawing (text and lines to rounding)


def test_backend_choices_are_checked(converted_checkpoint):
    common = dict(model=CONFIG, weights=converted_checkpoint, show_progress=False)
    with pytest.raises(ValueError, match='backend must be one of'):
        FaceInferencer(backend='tensorrt', **common)
    with pytest.raises(ValueError, match="needs backend='onnxruntime'"):
        FaceInferencer(backend='pytorch', int8=True, **common)
    with pytest.raises(ValueError, match='runs on the CPU'):
        FaceInferencer(backend='onnxruntime', device='cuda', **common)


def test_a_model_that_does_not_export_falls_back_to_pytorch(converted_checkpoint, monkeypatch,
                                                            tmp_path):
    """Without an explicit backend a failed export warns and runs PyTorch (optimized);
    with backend='onnxruntime' the error is raised."""
    from mmretinaface.deploy import ort_backend

    def broken(*args, **kwargs):
        raise RuntimeError('Unsupported ONNX op: MyCustomOp')

    monkeypatch.setattr(ort_backend, 'cached_onnx_model', broken)
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    with pytest.warns(UserWarning, match='MyCustomOp.*PyTorch backend'):
        inferencer = FaceInferencer(CONFIG, converted_checkpoint, device='cpu',
                                    show_progress=False)
    assert inferencer.backend == 'pytorch' and inferencer.network is inferencer.model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in inferencer.model.modules())
    with pytest.warns(UserWarning, match='PyTorch backend'):  # optimize=False is kept
        as_loaded = FaceInferencer(CONFIG, converted_checkpoint, device='cpu',
                                   show_progress=False, optimize=False)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in as_loaded.model.modules())
    with pytest.raises(RuntimeError, match='MyCustomOp'):
        FaceInferencer(CONFIG, converted_checkpoint, device='cpu', backend='onnxruntime')


@pytest.mark.parametrize('dtype', [np.uint8, np.float32])
@pytest.mark.parametrize('settings', [
    dict(mean=[104, 117, 123], std=[1, 1, 1], bgr_to_rgb=False, pad_size_divisor=1),
    dict(mean=[123.7, 116.3, 103.5], std=[58.4, 57.1, 57.4], bgr_to_rgb=True,
         pad_size_divisor=32, pad_value=7)])
def test_input_batcher_is_the_data_preprocessor(settings, dtype):
    """The numpy / OpenCV batching equals mmdet's DetDataPreprocessor: channel flip, mean,
    std, padding to the largest image and to the divisor, with the pad value."""
    from mmdet.models.data_preprocessors import DetDataPreprocessor

    from mmretinaface.deploy.ort_backend import InputBatcher
    preprocessor = DetDataPreprocessor(**settings)
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.integers(0, 256, (3, h, w)).astype(dtype))
              for h, w in ((50, 70), (64, 33), (64, 70))]
    for batch in (images[:1], images):
        want = preprocessor(dict(inputs=batch), False)['inputs'].numpy()
        got = InputBatcher(preprocessor)([img.numpy() for img in batch])
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
        if settings['std'] == [1, 1, 1]:
            assert np.array_equal(got, want)


@pytest.mark.parametrize('shape,dtype', [((48, 64, 3), np.uint8), ((5, 7, 3), np.float32),
                                         ((5, 7, 1), np.uint8), ((4, 6, 3), np.int64),
                                         ((3, 4, 6), np.uint16)])
def test_hwc_to_chw_is_the_transpose(shape, dtype):
    """PackFaceInputs' layout change equals numpy's transpose, also where OpenCV cannot
    split (int64) and for strided views."""
    from mmretinaface.utils.image_io import hwc_to_chw
    img = np.random.default_rng(1).integers(0, 200, shape).astype(dtype)
    for view in (img, img[:, ::2], img[::-1]):
        got = hwc_to_chw(view)
        assert got.flags.c_contiguous and got.dtype == view.dtype
        assert np.array_equal(got, view.transpose(2, 0, 1))


def test_stale_exports_are_pruned_when_a_new_one_is_written(converted_checkpoint, tmp_path):
    """Exports unused for STALE_EXPORT_DAYS go when a new export is written; a used one is
    refreshed and kept, and files that are not exports are never touched."""
    from mmretinaface.deploy.ort_backend import STALE_EXPORT_DAYS, cached_onnx_model
    model = init_face_detector(CONFIG, converted_checkpoint, device='cpu')
    old_time = os.stat(tmp_path).st_mtime - (STALE_EXPORT_DAYS + 1) * 86400
    names = ['retinaface_mobilenet0.25_widerface-0123456789abcdef.onnx',
             'other-fedcba9876543210-int8.onnx', 'my_model.onnx', 'notes-0123456789abcdef.txt']
    for name in names:
        (tmp_path / name).write_bytes(b'x')
        os.utime(tmp_path / name, (old_time, old_time))
    path = cached_onnx_model(model, folder=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [os.path.basename(path)] + names[2:])
    os.utime(path, (old_time, old_time))
    assert cached_onnx_model(model, folder=tmp_path) == path  # a use refreshes the time
    assert os.stat(path).st_mtime > old_time + STALE_EXPORT_DAYS * 86400
