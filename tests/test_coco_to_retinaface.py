"""tools/coco_to_retinaface.py: conversion, bad inputs, degenerate boxes, the landmark order."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmretinaface.datasets import WiderFaceDataset
from mmretinaface.datasets.label_io import parse_retinaface_labels
from tools.coco_to_retinaface import convert_coco, main, mirrored_pairs

ROOT = Path(__file__).resolve().parents[1]
COCO_NAMES = ['left_eye', 'right_eye', 'nose', 'mouth_left', 'mouth_right']


def _dataset(root: Path, label: Path) -> WiderFaceDataset:
    """The label file as the dataset reads it (the images exist as empty files)."""
    for image in parse_retinaface_labels(label.read_text().splitlines()):
        (root / 'images' / image.path).parent.mkdir(parents=True, exist_ok=True)
        (root / 'images' / image.path).touch()
    return WiderFaceDataset(data_root=str(root), ann_file=str(label),
                            data_prefix=dict(img='images/'), pipeline=[])


def _write(tmp_path: Path, coco, name: str = 'coco.json') -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(coco))
    return path


def _coco(faces, names=COCO_NAMES, **extra) -> dict:
    """One image per 10 faces; ``faces`` are ``(bbox, (K, 3) keypoints)``."""
    anns = [dict(id=i + 1, image_id=i // 10 + 1, category_id=1, bbox=list(bbox),
                 keypoints=np.asarray(kps, float).reshape(-1).tolist(), iscrowd=0)
            for i, (bbox, kps) in enumerate(faces)]
    images = [dict(id=i + 1, file_name=f'ev/{i}.jpg', width=640, height=480)
              for i in range((len(faces) + 9) // 10)]
    category = dict(id=1, name='face', **({'keypoints': names} if names else {}))
    return dict(dict(images=images, annotations=anns, categories=[category]), **extra)


def _frontal_faces(num: int, subject_left_first: bool, seed: int = 0, turned: int = 0):
    """Frontal faces; with ``subject_left_first`` each left/right pair is stored as COCO's
    person keypoints are (the subject's left, on the image's right, first). The last
    ``turned`` faces have their pairs the other way round (e.g. heads turned away)."""
    rng = np.random.default_rng(seed)
    faces = []
    for k in range(num):
        cx, cy, d = rng.uniform(100, 500), rng.uniform(100, 380), rng.uniform(20, 60)
        eyes = [(cx - d / 2, cy - d / 3), (cx + d / 2, cy - d / 3)]  # image-left first
        mouth = [(cx - d / 3, cy + d / 2), (cx + d / 3, cy + d / 2)]
        if subject_left_first != (k >= num - turned):
            eyes, mouth = eyes[::-1], mouth[::-1]
        pts = [*eyes, (cx, cy), *mouth]
        faces.append(((cx - d, cy - d, 2 * d, 2.2 * d), [(x, y, 2) for x, y in pts]))
    return faces


def _fraction_first_left(label: Path, i: int, j: int) -> float:
    faces = [f for im in parse_retinaface_labels(label.read_text().splitlines())
             for f in im.faces]
    return float(np.mean([f.landmarks[i, 0] < f.landmarks[j, 0] for f in faces]))


def test_coco_to_retinaface(tmp_path, capsys):
    kps_full = [12, 14, 2, 28, 14, 2, 20, 20, 2, 14, 27, 1, 26, 27, 2]
    kps_part = [0, 0, 0, 70, 64, 2, 66, 68, 2, 61, 73, 2, 69, 73, 2]
    coco = dict(
        images=[dict(id=2, file_name='ev/b.jpg', width=100, height=100),
                dict(id=1, file_name='ev/a.jpg', width=100, height=100)],
        annotations=[
            dict(id=1, image_id=1, category_id=1, bbox=[10, 10, 20, 22], keypoints=kps_full,
                 num_keypoints=5, iscrowd=0),
            dict(id=2, image_id=1, category_id=1, bbox=[58, 58, 14, 20], keypoints=kps_part,
                 num_keypoints=4, iscrowd=0),
            dict(id=3, image_id=1, category_id=1, bbox=[0, 0, 99, 99], keypoints=[0] * 15,
                 iscrowd=1),
        ],
        categories=[dict(id=1, name='face', keypoints=['left_eye', 'right_eye', 'nose',
                                                       'left_mouth', 'right_mouth'])])
    out = tmp_path / 'new' / 'train' / 'label.txt'  # the folders do not exist yet
    assert main([str(_write(tmp_path, coco)), str(out)]) == 0
    ds = _dataset(tmp_path, out)
    assert [ds.get_data_info(i)['img_id'] for i in range(2)] == ['ev/a', 'ev/b']
    full, part = ds.get_data_info(0)['instances']  # the crowd face is skipped
    assert full['bbox'] == [10, 10, 30, 32]
    np.testing.assert_allclose(full['keypoints'], np.reshape(kps_full, (5, 3))[:, :2])
    np.testing.assert_array_equal(full['keypoints_visible'], np.ones(5))
    np.testing.assert_array_equal(part['keypoints_visible'], [0, 1, 1, 1, 1])
    np.testing.assert_allclose(part['keypoints'][1:], np.reshape(kps_part, (5, 3))[1:, :2])
    assert ds.get_data_info(1)['instances'] == []
    assert capsys.readouterr().out.strip().endswith(
        '2 images, 2 faces, 0 faces without landmarks, 0 degenerate boxes skipped')


def test_coco_keypoint_order():
    coco = dict(images=[dict(id=1, file_name='a.jpg')],
                annotations=[dict(id=1, image_id=1, category_id=1, bbox=[0, 0, 10, 10],
                                  keypoints=[5, 5, 2, 1, 1, 2, 9, 1, 2])],
                categories=[dict(id=1, name='face', keypoints=['nose', 'l', 'r'])])
    conv = convert_coco(coco, num_keypoints=3, keypoint_order=['l', 'r', 'nose'],
                        with_score=False)
    assert conv.lines == ['# a.jpg', '0 0 10 10 1 1 0 9 1 0 5 5 0']
    # indices work as names do
    assert convert_coco(coco, 3, keypoint_order=['1', '2', '0'], with_score=False).lines == \
        conv.lines


def test_degenerate_boxes_are_skipped_and_counted(tmp_path, capsys):
    good = ([10, 10, 20, 20], [(12, 14, 2), (28, 14, 2), (20, 20, 2), (14, 27, 2), (26, 27, 2)])
    bad_boxes = [[10, 10, -5, 20], [10, 10, 20, 0], [10, 10, 20], [1, 1, 1, 1]]
    coco = _coco([good] + [(box, good[1]) for box in bad_boxes]
                 + [([40, 40, 10, 10], [(0, 0, 0)] * 5)])
    coco['annotations'][4].pop('bbox')  # no box at all
    out = tmp_path / 'label.txt'
    assert main([str(_write(tmp_path, coco)), str(out)]) == 0
    faces = parse_retinaface_labels(out.read_text().splitlines())[0].faces
    assert [f.xywh for f in faces] == [(10, 10, 20, 20), (40, 40, 10, 10)]
    assert capsys.readouterr().out.strip().endswith(
        '1 images, 2 faces, 1 faces without landmarks, 4 degenerate boxes skipped')


BODY_NAMES = ['nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder',
              'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist',
              'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle']


def _bad_inputs(tmp_path: Path) -> dict:
    """name -> (file, extra args, expected phrase)."""
    face = _coco(_frontal_faces(3, subject_left_first=False))
    truncated = tmp_path / 'truncated.json'
    truncated.write_text(json.dumps(face)[:200])
    body = dict(face, categories=[dict(id=1, name='person', keypoints=BODY_NAMES)])
    no_names = _coco([([0, 0, 9, 9], [(1, 1, 2)] * 17)], names=None)
    binary = tmp_path / 'binary.json'
    binary.write_bytes(b'\xff\xfe\x00garbage')
    return {
        'truncated': (truncated, [], 'invalid JSON'),
        'body': (_write(tmp_path, body, 'body.json'), [],
                 "category 1 ('person') has 17 keypoints"),
        'no annotations': (_write(tmp_path, {k: v for k, v in face.items()
                                             if k != 'annotations'}, 'noann.json'), [],
                           "no 'annotations' list"),
        'no images': (_write(tmp_path, {k: v for k, v in face.items() if k != 'images'},
                             'noimg.json'), [], "no 'images' list"),
        'no categories': (_write(tmp_path, {k: v for k, v in face.items()
                                            if k != 'categories'}, 'nocat.json'), [],
                          "no 'categories' list"),
        'a list': (_write(tmp_path, [face], 'list.json'), [], 'not a COCO annotation file'),
        'missing': (tmp_path / 'missing.json', [], 'No such file'),
        'binary': (binary, [], 'invalid JSON'),
        'unknown names': (_write(tmp_path, face, 'face.json'),
                          ['--keypoint-order', 'left_eye,right_eye,nose,lm,rm'],
                          'has no keypoints named lm, rm'),
        'points without names': (_write(tmp_path, no_names, 'nonames.json'), [],
                                 'annotation 1 (category 1) of image ev/0.jpg has 17 keypoints'),
        'unknown category': (_write(tmp_path, dict(face, categories=[dict(id=7, name='x')]),
                                    'cat7.json'), [], 'category_id 1, which "categories"'),
    }


BAD_INPUT_NAMES = ['truncated', 'body', 'no annotations', 'no images', 'no categories',
                   'a list', 'missing', 'binary', 'unknown names', 'points without names',
                   'unknown category']


@pytest.mark.parametrize('name', BAD_INPUT_NAMES)
def test_bad_input_gives_one_line_naming_the_file(tmp_path, capsys, name):
    path, extra, phrase = _bad_inputs(tmp_path)[name]
    out = tmp_path / 'out' / 'label.txt'
    assert main([str(path), str(out), *extra]) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith(f'error: {path}: '), err
    assert phrase in err
    assert not out.exists()


@pytest.mark.slow
def test_bad_input_from_the_command_line_has_no_traceback(tmp_path):
    """As a user runs it: exit code 1 and one line, for each input the issue names."""
    cases = _bad_inputs(tmp_path)
    for name in ('truncated', 'body', 'no annotations'):
        path, _, phrase = cases[name]
        proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'coco_to_retinaface.py'),
                               str(path), str(tmp_path / 'out.txt')],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert proc.returncode == 1, proc.stderr
        assert 'Traceback' not in proc.stderr and phrase in proc.stderr
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]


def test_mirrored_pairs_counts_faces_with_both_points_visible():
    # point 0 / 1 of four faces: two right of, one left of, one with point 1 invisible
    points = np.zeros((4, 5, 2))
    points[:, 0, 0] = [30, 30, 10, 30]
    points[:, 1, 0] = [10, 10, 30, 0]
    points[:, 3, 0], points[:, 4, 0] = 10, 30  # mouth corners in the right order
    visible = np.ones((4, 5), bool)
    visible[3, 1] = False
    assert mirrored_pairs(points, visible) == [(0, 1, 2, 3)]
    visible[0, 0] = False  # now one of two: not a majority
    assert mirrored_pairs(points, visible) == []


def test_subject_left_first_file_is_stopped_and_the_fix_works(tmp_path, capsys):
    src = _write(tmp_path, _coco(_frontal_faces(54, subject_left_first=True, turned=3)))
    out = tmp_path / 'label.txt'
    assert main([str(src), str(out)]) == 1
    err = capsys.readouterr().err
    assert 'in 51 of 54 faces with both visible' in err and not out.exists()
    fix = re.search(r'--keypoint-order (\S+)', err).group(1)
    assert fix == 'right_eye,left_eye,nose,mouth_right,mouth_left'  # the file's own names
    assert main([str(src), str(out), '--keypoint-order', fix]) == 0
    assert _fraction_first_left(out, 0, 1) >= 0.9 and _fraction_first_left(out, 3, 4) >= 0.9
    # written anyway on request, as stored (so mostly mirrored)
    assert main([str(src), str(out), '--allow-mirrored-order']) == 0
    assert 'mirrored' in capsys.readouterr().err
    assert _fraction_first_left(out, 0, 1) < 0.1


def test_correct_order_passes_and_only_mirrored_pairs_are_swapped(tmp_path, capsys):
    faces = _frontal_faces(20, subject_left_first=False)
    assert main([str(_write(tmp_path, _coco(faces))), str(tmp_path / 'ok.txt')]) == 0
    # only the mouth corners stored the other way round; a category without names
    for _, kps in faces:
        kps[3], kps[4] = kps[4], kps[3]
    src = _write(tmp_path, _coco(faces, names=None), 'mouth.json')
    assert main([str(src), str(tmp_path / 'mouth.txt')]) == 1
    err = capsys.readouterr().err
    assert 'point 3 (3) lies right of point 4 (4) in 20 of 20' in err and 'point 0' not in err
    fix = re.search(r'--keypoint-order (\S+)', err).group(1)
    assert fix == '0,1,2,4,3'
    assert main([str(src), str(tmp_path / 'mouth.txt'), '--keypoint-order', fix]) == 0
    assert _fraction_first_left(tmp_path / 'mouth.txt', 3, 4) == 1.0


def test_invisible_points_do_not_vote(tmp_path):
    """Faces with one eye unannotated (stored at x=0) must not count as mirrored."""
    faces = _frontal_faces(30, subject_left_first=False)
    for _, kps in faces[10:]:
        kps[1] = (0, 0, 0)  # x 0 < the first eye's x: "mirrored" if it were read
    points, visible = _as_arrays(faces)
    assert mirrored_pairs(points, visible) == []
    assert mirrored_pairs(points, np.ones_like(visible)) == [(0, 1, 20, 30)]  # if they voted
    assert main([str(_write(tmp_path, _coco(faces))), str(tmp_path / 'l.txt')]) == 0


def _as_arrays(faces):
    kps = np.asarray([k for _, k in faces], float)
    return kps[..., :2], kps[..., 2] > 0
