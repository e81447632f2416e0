"""tools/analysis_tools/browse_dataset.py and face_size_stats.py on hand-made and real data."""
import json
from pathlib import Path

import cv2
import numpy as np

from mmretinaface.datasets.label_io import parse_wider_bbx_gt
from mmretinaface.visualization import KEYPOINT_COLORS
from tests.conftest import require_shared
from tools.analysis_tools import browse_dataset, face_size_stats

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / 'configs' / 'retinaface_mobilenet0.25_widerface.py'
BACKGROUND = 20
#: image-left eye, image-right eye, nose, left / right mouth corner of the face at 40..160
POINTS = [(70, 80), (130, 80), (100, 110), (75, 135), (125, 135)]


def _config(tmp_path: Path, label: str, extra: str = '', pipeline: str = '') -> str:
    """A config over ``tmp_path`` (images written for the label), the base model otherwise."""
    (tmp_path / 'label.txt').write_text(label)
    for name in ('a.png', 'b.png'):
        cv2.imwrite(str(tmp_path / name), np.full((200, 240, 3), BACKGROUND, np.uint8))
    pipeline = pipeline or ("dict(type='LoadImageFromFile'), dict(type='LoadFaceAnnotations'), "
                            "dict(type='PackFaceInputs')")
    path = tmp_path / 'config.py'
    path.write_text(f"_base_ = [{str(CONFIG)!r}]\n"
                    f"train_dataloader = dict(dataset=dict(data_root={str(tmp_path)!r}, "
                    "ann_file='label.txt', data_prefix=dict(img=''), "
                    f"pipeline=[{pipeline}]))\n{extra}")
    return str(path)


def _face_line(points) -> str:
    return '40 40 120 120 ' + ' '.join(f'{x} {y} 0.0' for x, y in points) + ' 1.0'


def _colour_at(image: np.ndarray, xy) -> np.ndarray:
    return image[xy[1], xy[0], ::-1].astype(int)  # BGR on disk -> RGB


def test_browse_draws_landmarks_in_their_colours(tmp_path, capsys):
    mirrored = [POINTS[1], POINTS[0], POINTS[2], POINTS[4], POINTS[3]]
    cfg = _config(tmp_path, f'# a.png\n{_face_line(POINTS)}\n# b.png\n{_face_line(mirrored)}\n')
    out = tmp_path / 'out'
    assert browse_dataset.main([cfg, '--not-show', '--output-dir', str(out)]) == 0
    assert 'drew 2 samples' in capsys.readouterr().out
    right, swapped = (cv2.imread(str(out / n)) for n in ('a.png', 'b.png'))
    for k, xy in enumerate(POINTS):
        np.testing.assert_allclose(_colour_at(right, xy), KEYPOINT_COLORS[k], atol=10)
        # the mirrored labels: the image-left eye carries the right eye's colour, and so on
        np.testing.assert_allclose(_colour_at(swapped, xy), KEYPOINT_COLORS[[1, 0, 2, 4, 3][k]],
                                   atol=10)
    np.testing.assert_allclose(_colour_at(right, (40, 100)), (0, 255, 0), atol=60)  # the box
    assert (right[190:, :, :] == BACKGROUND).all()  # away from the face: untouched


def test_browse_draws_ignored_faces_dashed_and_no_landmarks_when_there_are_none(tmp_path,
                                                                                  capsys):
    gt = 'a.png\n2\n40 40 120 120 0 0 0 0 0 0\n170 100 50 60 0 0 0 1 0 0\n'  # 2nd: invalid
    out = tmp_path / 'out'
    assert browse_dataset.main([_config(tmp_path, gt), '--not-show',
                                '--output-dir', str(out)]) == 0
    assert 'no landmarks: boxes only' in capsys.readouterr().out
    drawn = cv2.imread(str(out / 'a.png')).astype(int)
    ignored_edge = drawn[110:160, 170]  # the ignored face's left edge, below its label
    grey = (np.abs(ignored_edge - 160) < 30).all(axis=1)
    gap = (np.abs(ignored_edge - BACKGROUND) < 30).all(axis=1)
    assert grey.mean() > 0.2 and gap.mean() > 0.1  # dashed: grey and background alternate
    kept_edge = drawn[70:150, 40]
    assert (np.abs(kept_edge - [0, 255, 0]) < 60).all()  # solid green (BGR)
    for colour in KEYPOINT_COLORS:  # no landmark anywhere (green is the boxes' colour too)
        if colour != (0, 255, 0):
            assert not (np.abs(drawn - colour[::-1]) < 30).all(axis=2).any()


def test_browse_without_display_needs_an_output_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(browse_dataset, 'has_display', lambda: False)
    assert browse_dataset.main([_config(tmp_path, '# a.png\n')]) == 1
    assert '--output-dir' in capsys.readouterr().err


def test_browse_reports_a_malformed_label_file_in_one_line(tmp_path, capsys):
    cfg = _config(tmp_path, '# a.png\n1 2 3\n')
    assert browse_dataset.main([cfg, '--not-show', '--output-dir', str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'label.txt, line 2' in err


def test_browse_wider_val_sample(tmp_path, capsys):
    """The real training pipeline over the 8 WIDER FACE val photos (boxes only)."""
    root = require_shared('data/wider_val_sample')
    out = tmp_path / 'out'
    assert browse_dataset.main([
        str(CONFIG), '--not-show', '--output-dir', str(out), '--cfg-options',
        f'train_dataloader.dataset.data_root={root}/',
        'train_dataloader.dataset.ann_file=val/wider_face_val_bbx_gt.txt',
        'train_dataloader.dataset.data_prefix.img=val/images/']) == 0
    drawn = sorted(out.glob('*.jpg'))
    assert len(drawn) == 8 and 'drew 8 samples' in capsys.readouterr().out
    for path in drawn:
        image = cv2.imread(str(path))
        assert image.shape == (640, 640, 3)  # after the crop and the resize
        green = (image[..., 1] > 200) & (image[..., 0] < 60) & (image[..., 2] < 60)
        assert green.sum() > 50, path.name  # boxes drawn


def test_face_size_stats_against_the_configs_priors(tmp_path, capsys):
    sizes = [8, 12, 20, 100, 300, 600]  # square faces, one line each
    faces = '\n'.join(f'0 0 {s} {s}' + ' 10 10 0.0' * 5 * (s < 50) + ' -1 -1 -1' * 5 * (s >= 50)
                      for s in sizes)
    label = f'# a.png 1000 800\n{faces}\n5 5 0 9\n# b.png\n'  # 5 5 0 9: degenerate, ignored
    pipeline = ("dict(type='LoadImageFromFile'), dict(type='LoadFaceAnnotations'), "
                "dict(type='RandomSquareCrop', scales=[0.5, 1.0]), "
                "dict(type='RandomInterpResize', img_dim=400), dict(type='PackFaceInputs')")
    priors = ('model = dict(bbox_head=dict(prior_generator=dict('
              'min_sizes=[[10, 20], [40, 80], [160, 320]])))\n')
    cfg = _config(tmp_path, label, priors, pipeline)
    out = tmp_path / 'stats'
    assert face_size_stats.main([cfg, '--out-dir', str(out)]) == 0
    text = capsys.readouterr().out
    stats = json.loads((out / 'face_size_stats.json').read_text())
    assert stats['images'] == 1  # b.png has no face: filter_empty_gt drops it
    assert (stats['faces'], stats['ignored'], stats['with_landmarks']) == (6, 1, 3)
    # 8 < 10 px; 12, 20 -> level 0; 100 -> 80 (level 1); 300 -> 320 (level 2); 600 > 320
    assert (stats['below_smallest'], stats['per_level'], stats['above_largest']) == \
        (1, [2, 1, 1], 1)
    # in training a face appears at size * 400 / (s * 800), s in 0.5..1: size in the tightest
    # crop, size / 2 in the widest: below 10 px 8 (tightest), 8 and 12 (widest); above
    # 320 px 600 (tightest), none (widest: 300)
    assert stats['train_crops'] == dict(below_widest=2, below_tightest=1, above_tightest=1,
                                        above_widest=0)
    assert 'below the smallest prior (10 px): 1 (16.7%)' in text
    assert 'FaceInferencer(pyramid=True)' in text and 'scales=' in text
    plot = cv2.imread(str(out / 'face_sizes.png'))
    assert plot.shape == (450, 800, 3) and plot.std() > 10


def test_face_size_stats_on_the_wider_val_sample(tmp_path, capsys):
    root = require_shared('data/wider_val_sample')
    gt = root / 'val' / 'wider_face_val_bbx_gt.txt'
    out = tmp_path / 'stats'
    assert face_size_stats.main([
        str(CONFIG), '--split', 'val', '--out-dir', str(out), '--cfg-options',
        f'val_dataloader.dataset.data_root={root}/',
        'val_dataloader.dataset.ann_file=val/wider_face_val_bbx_gt.txt']) == 0
    assert 'below the smallest prior (16 px)' in capsys.readouterr().out
    stats = json.loads((out / 'face_size_stats.json').read_text())
    faces = [f for im in parse_wider_bbx_gt(gt.read_text().splitlines()) for f in im.faces]
    usable = [f for f in faces if not f.invalid and f.xywh[2] > 0 and f.xywh[3] > 0]
    assert stats['images'] == 8 and stats['faces'] + stats['ignored'] == len(faces) == 487
    assert stats['below_smallest'] == sum(np.sqrt(f.xywh[2] * f.xywh[3]) < 16 for f in usable)
    assert (out / 'face_sizes.png').stat().st_size > 10_000


def test_face_size_stats_without_faces_says_so(tmp_path, capsys):
    cfg = _config(tmp_path, '# a.png\n# b.png\n5 5 0 9\n')  # only an ignored (degenerate) face
    assert face_size_stats.main([cfg, '--out-dir', str(tmp_path / 'stats')]) == 1
    # the last line: mmengine's logger (the dropped images) may write to an earlier
    # test's closed stderr, and logging prints that error
    last = capsys.readouterr().err.strip().splitlines()[-1]
    said = (f'{tmp_path / "label.txt"}: none of its 2 images has a usable face (every face is '
            'ignored or the images have none), so filter_empty_gt=True leaves nothing to '
            'train on: check the labels (docs/data.md)')
    assert last == f'face_size_stats: {said}'
    assert not (tmp_path / 'stats').exists()
    assert browse_dataset.main([cfg, '--not-show', '--output-dir', str(tmp_path / 'b')]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f'browse_dataset: {said}'
