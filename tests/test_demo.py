"""demo/image_demo.py end to end: folders, globs, robustness (grayscale, RGBA, 16-bit, EXIF,
tiny, blank, corrupt), aligned crops, --max-size on a huge image (peak memory)."""
import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from mmretinaface.apis import (
    ARCFACE_TEMPLATE_112,
    bundled_photo,
    detect_faces,
    instances_to_dict,
    load_image,
)
from mmretinaface.visualization import KEYPOINT_COLORS
from tests.conftest import ROOT

SCORE_THR = 0.5
VIS_MAX = 400  # the 512x600 photos are drawn at 341x400


@pytest.fixture(scope='module')
def demo_main():
    from demo.image_demo import main
    return main


@pytest.fixture(autouse=True)
def _reuse_loaded_models(monkeypatch):
    """Every main() call parses, builds and loads normally, but one FaceInferencer per
    (config, weights, device, options) is made per module to keep the tests fast."""
    import mmretinaface.apis as apis
    real = apis.FaceInferencer

    def cached(model=None, weights=None, **kwargs):
        key = (str(model), str(weights), tuple(sorted(kwargs.items())))
        if key not in _MODELS:
            _MODELS[key] = real(model, weights, **kwargs)
        return _MODELS[key]

    monkeypatch.setattr(apis, 'FaceInferencer', cached)


_MODELS: dict = {}


def run_demo(demo_main, *args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = demo_main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def read_json(out_dir: Path, stem: str) -> dict:
    return json.loads((out_dir / 'preds' / f'{stem}.json').read_text())


def top_face(record: dict):
    i = int(np.argmax(record['scores']))
    return np.asarray(record['bboxes'][i]), np.asarray(record['keypoints'][i])


def iou(a, b) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter)


def save_with_orientation(rgb: np.ndarray, orientation: int, path: Path, **kwargs) -> None:
    """Store pixels so that the EXIF ``orientation`` turns them back into ``rgb``."""
    stored = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270,
              3: Image.Transpose.ROTATE_180}[orientation]
    img = Image.fromarray(rgb).transpose(stored)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif, **kwargs)
    with Image.open(path) as check:  # the set-up itself: Pillow sees the upright photo
        assert ImageOps.exif_transpose(check).size == (rgb.shape[1], rgb.shape[0])


@pytest.fixture(scope='module')
def folder_run(tmp_path_factory, converted_checkpoint, demo_main):
    """One demo run over a folder of awkward inputs (batch 3, aligned crops)."""
    src = tmp_path_factory.mktemp('inputs')
    upright = load_image(bundled_photo('grace_hopper'))  # BGR
    rgb = np.ascontiguousarray(upright[..., ::-1])
    cv2.imwrite(str(src / 'grace.png'), upright)
    Image.fromarray(rgb).save(src / 'grace_q95.jpg', quality=95)
    save_with_orientation(rgb, 6, src / 'grace_exif6.jpg', quality=95)
    save_with_orientation(rgb, 8, src / 'grace_exif8.png')
    cv2.imwrite(str(src / 'gray.png'), cv2.cvtColor(upright, cv2.COLOR_BGR2GRAY))
    alpha = np.random.default_rng(0).integers(1, 256, upright.shape[:2], dtype=np.uint8)
    cv2.imwrite(str(src / 'rgba.png'), np.dstack([upright, alpha]))
    cv2.imwrite(str(src / 'deep16.png'), upright.astype(np.uint16) * 257)
    cv2.imwrite(str(src / 'tiny.png'), cv2.resize(upright, (20, 20), interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(src / 'blank.png'), np.full((300, 400, 3), 128, np.uint8))
    (src / 'corrupt.jpg').write_bytes(b'\xff\xd8\xff\xe0 this is not really a jpeg')
    (src / 'notes.txt').write_text('not an image')
    out = tmp_path_factory.mktemp('demo_out')
    code, stdout, stderr = run_demo(demo_main, src, '--out-dir', out, '--weights',
                                    converted_checkpoint, '--batch-size', 3, '--save-aligned',
                                    '--score-thr', SCORE_THR, '--vis-max-size', VIS_MAX)
    return dict(src=src, out=out, code=code, stdout=stdout, stderr=stderr, upright=upright)


READABLE = ['blank', 'deep16', 'grace', 'grace_exif6', 'grace_exif8', 'grace_q95', 'gray',
            'rgba', 'tiny']


def test_corrupt_file_is_reported_and_the_rest_finishes(folder_run):
    assert folder_run['code'] == 0
    assert 'corrupt.jpg' in folder_run['stderr']
    assert 'notes.txt' not in folder_run['stderr'] + folder_run['stdout']
    out = folder_run['out']
    assert sorted(p.stem for p in (out / 'preds').iterdir()) == READABLE
    assert sorted(p.stem for p in (out / 'vis').iterdir()) == READABLE
    assert f'{len(READABLE)} image(s) done' in folder_run['stdout']
    assert f'{len(READABLE) + 1}/{len(READABLE) + 1}' in folder_run['stdout']  # progress bar


def test_json_is_well_formed_and_thresholded(folder_run, mobilenet_detector):
    for stem in READABLE:
        record = read_json(folder_run['out'], stem)
        assert set(record) == {'image', 'width', 'height', 'bboxes', 'scores', 'labels',
                               'keypoints'}
        n = len(record['scores'])
        assert np.asarray(record['bboxes'], np.float64).reshape(-1, 4).shape == (n, 4)
        assert np.asarray(record['keypoints'], np.float64).reshape(-1, 5, 2).shape == (n, 5, 2)
        assert len(record['labels']) == n and all(s >= SCORE_THR for s in record['scores'])
    # batch of 3 mixed sizes: the same faces as the API on the single image
    (faces, ) = detect_faces(mobilenet_detector, [folder_run['src'] / 'grace.png'])
    expected = instances_to_dict(faces, SCORE_THR)
    record = read_json(folder_run['out'], 'grace')
    for key in ('bboxes', 'keypoints', 'scores'):
        np.testing.assert_allclose(record[key], expected[key], atol=1e-3)
    assert (record['width'], record['height']) == (512, 600)


def test_blank_and_tiny_images(folder_run):
    blank = read_json(folder_run['out'], 'blank')
    assert blank['bboxes'] == [] and blank['keypoints'] == [] and blank['scores'] == []
    assert blank['labels'] == [] and (blank['width'], blank['height']) == (400, 300)
    tiny = read_json(folder_run['out'], 'tiny')
    assert (tiny['width'], tiny['height']) == (20, 20)
    assert cv2.imread(str(folder_run['out'] / 'vis' / 'tiny.jpg')).shape == (20, 20, 3)
    assert not list((folder_run['out'] / 'aligned').glob('blank_*'))


def test_rgba_16bit_and_grayscale_give_the_photo_faces(folder_run):
    reference = read_json(folder_run['out'], 'grace')
    assert len(reference['scores']) >= 1
    for stem in ('rgba', 'deep16'):  # decoded to exactly the photo's pixels
        record = read_json(folder_run['out'], stem)
        for key in ('bboxes', 'keypoints', 'scores'):
            np.testing.assert_allclose(record[key], reference[key], atol=1e-3)
    box, points = top_face(read_json(folder_run['out'], 'gray'))
    ref_box, ref_points = top_face(reference)
    assert iou(box, ref_box) > 0.9
    assert np.abs(points - ref_points).max() < 0.05 * (ref_box[2] - ref_box[0])


def test_exif_orientation_is_honoured_end_to_end(folder_run):
    out = folder_run['out']
    # lossless: the upright pixels are exactly the photo's
    png = read_json(out, 'grace_exif8')
    for key in ('bboxes', 'keypoints', 'scores'):
        np.testing.assert_allclose(png[key], read_json(out, 'grace')[key], atol=1e-3)
    # JPEG: the rotated file was encoded on another block grid; within ~1 px of the
    # upright JPEG of the same quality
    jpeg, upright = read_json(out, 'grace_exif6'), read_json(out, 'grace_q95')
    assert (jpeg['width'], jpeg['height']) == (upright['width'], upright['height']) == (512, 600)
    assert len(jpeg['scores']) == len(upright['scores']) >= 1
    np.testing.assert_allclose(jpeg['bboxes'], upright['bboxes'], atol=1.0)
    np.testing.assert_allclose(jpeg['keypoints'], upright['keypoints'], atol=1.0)
    assert cv2.imread(str(out / 'vis' / 'grace_exif6.jpg')).shape == (VIS_MAX, 341, 3)


def test_drawn_images_are_capped_and_show_the_landmarks(folder_run):
    out = folder_run['out']
    assert cv2.imread(str(out / 'vis' / 'blank.jpg')).shape == (300, 400, 3)  # not larger
    drawn = cv2.imread(str(out / 'vis' / 'grace.jpg'))[..., ::-1].astype(int)  # RGB
    assert drawn.shape == (VIS_MAX, 341, 3)
    scale = np.array([341 / 512, VIS_MAX / 600])
    for face in read_json(out, 'grace')['keypoints']:
        for k, point in enumerate(np.asarray(face) * scale):
            x, y = np.round(point).astype(int)
            patch = drawn[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).mean(0)
            assert np.abs(patch - KEYPOINT_COLORS[k]).max() < 70, (k, patch)  # JPEG


def test_aligned_crops_put_the_landmarks_on_the_template(folder_run, mobilenet_detector):
    record = read_json(folder_run['out'], 'grace')
    crops = sorted(p for p in (folder_run['out'] / 'aligned').iterdir()
                   if re.fullmatch(r'grace_\d+\.jpg', p.name))
    assert [p.name for p in crops] == [f'grace_{i}.jpg' for i in range(len(record['scores']))]
    crop = cv2.imread(str(crops[0]))
    assert crop.shape == (112, 112, 3)
    # detect again on the crop (centred in a neutral canvas): the face sits on the ArcFace
    # template. Tolerances: the template is not an exact similarity of this face (the
    # least-squares fit leaves ~6 px residuals) and the detector sees a hard-edged crop,
    # so check the landmark centroid (<= 4 px) and every point (<= 8 px, 7% of the crop);
    # a wrong transform or template scale is off by tens of pixels
    canvas = np.full((224, 224, 3), 128, np.uint8)
    canvas[56:168, 56:168] = crop
    (faces, ) = detect_faces(mobilenet_detector, [canvas])
    assert faces.scores.max() > 0.8
    points = faces.keypoints[faces.scores.argmax()].numpy() - 56
    assert np.linalg.norm(points.mean(0) - ARCFACE_TEMPLATE_112.mean(0)) < 4.0
    assert np.abs(points - ARCFACE_TEMPLATE_112).max() < 8.0


def test_globs_bundled_names_duplicate_stems_and_bad_inputs(tmp_path, converted_checkpoint,
                                                            demo_main):
    (tmp_path / 'a').mkdir()
    photo = load_image(bundled_photo('grace_hopper'))
    cv2.imwrite(str(tmp_path / 'a' / 'grace_hopper.png'), photo[::2, ::2])
    out = tmp_path / 'out'
    code, stdout, stderr = run_demo(
        demo_main, 'bundled:grace_hopper', tmp_path / 'a' / '*.png', tmp_path / 'none*.jpg',
        'bundled:nobody', tmp_path / 'missing.jpg', '--out-dir', out, '--weights',
        converted_checkpoint, '--no-vis')
    assert code == 0
    assert sorted(p.name for p in (out / 'preds').iterdir()) == [
        'grace_hopper.json', 'grace_hopper_1.json']
    assert not (out / 'vis').exists()
    for bad in ('none*.jpg', 'bundled:nobody', 'missing.jpg'):
        assert bad in stderr
    half = read_json(out, 'grace_hopper_1')
    assert half['image'].endswith('grace_hopper.png') and half['width'] == 256
    full_box, _ = top_face(read_json(out, 'grace_hopper'))
    half_box, _ = top_face(half)
    assert iou(half_box * 2, full_box) > 0.85


def test_all_inputs_failing_exits_non_zero(tmp_path, converted_checkpoint, demo_main):
    (tmp_path / 'bad.png').write_bytes(b'nope')
    code, _, stderr = run_demo(demo_main, tmp_path / 'bad.png', tmp_path / 'gone.jpg',
                               '--out-dir', tmp_path / 'o', '--weights', converted_checkpoint)
    assert code == 1
    assert 'bad.png' in stderr and 'gone.jpg' in stderr
    code, _, stderr = run_demo(demo_main, tmp_path / 'nothing*.png', '--out-dir', tmp_path)
    assert code == 1 and 'nothing*.png' in stderr


def test_argument_checks(tmp_path, converted_checkpoint, demo_main):
    from demo.image_demo import parse_args
    for bad in (['--device', 'tpu'], ['--batch-size', '0'], ['--max-size', '-1']):
        with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
            parse_args(['x.jpg', *bad])
    args = parse_args(['x.jpg', '--device', 'cuda:1', '--max-size', '0'])
    assert args.device == 'cuda:1' and args.max_size == 0
    code, _, stderr = run_demo(demo_main, 'bundled:grace_hopper', '--weights',
                               tmp_path / 'no.pth', '--out-dir', tmp_path)
    assert code == 2 and 'no.pth' in stderr
    if not torch.cuda.is_available():
        code, _, stderr = run_demo(demo_main, 'bundled:grace_hopper', '--device', 'cuda',
                                   '--out-dir', tmp_path, '--weights', converted_checkpoint)
        assert code == 2 and 'CUDA' in stderr


# -------------------------------------------------------------------- huge image
PEAK_RSS_SCRIPT = '''
import resource, runpy, sys
sys.argv = ['image_demo.py'] + sys.argv[1:]
code = 0
try:
    runpy.run_path({demo!r}, run_name='__main__')
except SystemExit as exc:
    code = exc.code
print('PEAK_RSS_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'EXIT', code)
'''


def run_measured(*args, env=None):
    script = PEAK_RSS_SCRIPT.format(demo=str(ROOT / 'demo' / 'image_demo.py'))
    proc = subprocess.run([sys.executable, '-c', script, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env=env)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith('PEAK_RSS_MB')]
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    _, rss, _, code = line[-1].split()
    return float(rss), int(code), proc


@pytest.mark.slow
def test_huge_image_runs_within_memory_and_maps_back(tmp_path, converted_checkpoint):
    """6000x4000 noisy photo with grace_hopper inside, default --max-size (4096) and
    --vis-max-size (2048): the network runs at 4096x2731, the drawing at 2048x1365;
    results are in the 6000x4000 pixels; bounded memory (measured: ~1.2 GB, against
    ~1.9 GB with --max-size 0 and ~3.5 GB when also drawing at full size)."""
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 256, (4000, 6000, 3), dtype=np.uint8)
    zoom = 6000 / 4096
    photo = load_image(bundled_photo('grace_hopper'))
    big = cv2.resize(photo, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
    ox, oy = int(64 * 32 * zoom), int(16 * 32 * zoom)  # on the 32-px stride grid
    canvas[oy:oy + big.shape[0], ox:ox + big.shape[1]] = big
    cv2.imwrite(str(tmp_path / 'huge.jpg'), canvas, [cv2.IMWRITE_JPEG_QUALITY, 95])
    del canvas
    env = dict(os.environ, OMP_NUM_THREADS='2')
    rss, code, proc = run_measured(tmp_path / 'huge.jpg', '--out-dir', tmp_path / 'out',
                                   '--weights', converted_checkpoint, env=env)
    print(f'peak RSS, 6000x4000 with --max-size 4096: {rss:.0f} MB')
    assert code == 0, proc.stderr[-2000:]
    assert rss < 2 * 1024
    record = read_json(tmp_path / 'out', 'huge')
    assert (record['width'], record['height']) == (6000, 4000)
    assert cv2.imread(str(tmp_path / 'out' / 'vis' / 'huge.jpg')).shape == (1365, 2048, 3)
    ref_box, ref_points = top_face(
        instances_to_dict(detect_faces(_model(converted_checkpoint), [photo])[0], 0.5))
    box, points = top_face(record)
    offset = np.array([ox, oy])
    # JPEG + two resamplings: within 2 network pixels (x zoom in the original)
    assert np.abs(box - (zoom * ref_box + np.tile(offset, 2))).max() < 2 * zoom
    assert np.abs(points - (zoom * ref_points + offset)).max() < 2 * zoom


def _model(checkpoint):
    import mmretinaface.apis as apis
    return apis.init_face_detector('retinaface_mobilenet0.25_widerface', checkpoint)
