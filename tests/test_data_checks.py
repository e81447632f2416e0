"""Data problems surface before training, with messages that say what to fix.

* an evaluation set with images without faces (negative images) evaluates,
  with and without the official .mat ground truth;
* tools/train.py and tools/test.py without their data (or checkpoint) stop
  with a message naming what is missing and docs/data.md, not a traceback.
(Images listed but missing on disk: tests/test_dataset.py.)
"""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData

from tests.test_widerface_eval import keep_array, write_gt_mats

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / 'configs' / 'retinaface_mobilenet0.25_widerface.py')
EVENT = '0--Parade'
FACE_BOX = [20.0, 30.0, 60.0, 80.0]  # x1 y1 x2 y2
FACE_POINTS = [[30, 45], [50, 45], [40, 55], [32, 68], [48, 68]]


@pytest.fixture()
def val_set(tmp_path) -> Path:
    """Two val images in the WIDER layout: one with a face, one without any."""
    images = tmp_path / 'val' / 'images' / EVENT
    images.mkdir(parents=True)
    for name in ('face', 'empty'):
        cv2.imwrite(str(images / f'{name}.jpg'), np.full((100, 120, 3), 128, np.uint8))
    x1, y1, x2, y2 = FACE_BOX
    points = ' '.join(f'{x} {y} 0.0' for x, y in FACE_POINTS)
    (tmp_path / 'val' / 'label.txt').write_text(
        f'# {EVENT}/face.jpg\n{x1} {y1} {x2 - x1} {y2 - y1} {points} 1.0\n'
        f'# {EVENT}/empty.jpg\n')
    return tmp_path


def packed_samples(root: Path) -> list:
    """The val set through the configs' real test pipeline (what the metric receives)."""
    from mmengine.config import Config
    from mmengine.registry import DATASETS
    cfg = Config.fromfile(CONFIG)
    dataset = DATASETS.build(dict(
        type='WiderFaceDataset', data_root=str(root), ann_file='val/label.txt',
        data_prefix=dict(img='val/images/'), test_mode=True,
        pipeline=cfg.test_dataloader.dataset.pipeline))
    return [dataset[i]['data_samples'] for i in range(len(dataset))]


def predict(sample, boxes, scores):
    """Predictions on a packed sample: given boxes, landmarks at the true face's points."""
    pred = InstanceData()
    pred.bboxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    pred.scores = torch.tensor(scores, dtype=torch.float32)
    pred.labels = torch.zeros(len(scores), dtype=torch.long)
    pred.keypoints = torch.tensor(FACE_POINTS, dtype=torch.float32).expand(len(scores), 5, 2)
    sample.pred_instances = pred
    return sample


@pytest.mark.parametrize('with_mat', [False, True])
@pytest.mark.parametrize('empty_detections', [0, 2])
def test_metric_evaluates_images_without_faces(val_set, tmp_path, with_mat, empty_detections):
    from mmretinaface.evaluation import WiderFaceMetric
    face, empty = packed_samples(val_set)
    assert len(empty.gt_instances) == 0 and len(face.gt_instances) == 1
    gt_dir = None
    if with_mat:
        gt_dir = tmp_path / 'ground_truth'
        rng = np.random.default_rng(0)
        x1, y1, x2, y2 = FACE_BOX
        events = {EVENT: {'face': [[x1, y1, x2 - x1, y2 - y1]], 'empty': []}}
        keep = {s: {f'{EVENT}/face': keep_array([0], rng),
                    f'{EVENT}/empty': keep_array([], rng)} for s in ('easy', 'medium', 'hard')}
        write_gt_mats(str(gt_dir), events, keep)
    metric = WiderFaceMetric(gt_dir=None if gt_dir is None else str(gt_dir))
    metric.dataset_meta = dict(flip_indices=[1, 0, 2, 4, 3])
    # the face is found (score 0.9); the negative image gets low-scored false positives
    metric.process({}, [predict(face, [FACE_BOX], [0.9]),
                        predict(empty, [[5, 5, 30, 30], [60, 10, 90, 40]][:empty_detections],
                                [0.3, 0.2][:empty_detections])])
    results = metric.compute_metrics(metric.results)
    for key in (['easy_AP', 'medium_AP', 'hard_AP'] if with_mat else ['AP50']):
        assert results[key] == pytest.approx(1.0)  # the false positives rank below the face
    assert results['landmark_NME'] == pytest.approx(0.0, abs=1e-6)  # one matched face
    assert results['landmark_pair_direction'] == pytest.approx(1.0)

    # even scored above the face, detections on an image without ground-truth faces do
    # not count (the official protocol skips such images), while a second image with a
    # face and a higher-scored false positive does lower AP
    if empty_detections:
        metric.results.clear()
        metric.process({}, [predict(face, [FACE_BOX], [0.5]),
                            predict(empty, [[5, 5, 30, 30]], [0.9])])
        key = 'easy_AP' if with_mat else 'AP50'
        assert metric.compute_metrics(metric.results)[key] == pytest.approx(1.0)
        metric.results.clear()
        metric.process({}, [predict(face, [[5, 5, 15, 15], FACE_BOX], [0.9, 0.5]),
                            predict(empty, [], [])])
        assert metric.compute_metrics(metric.results)[key] == pytest.approx(0.5)


# ----------------------------------------------------------------- the tools
@pytest.fixture()
def empty_cwd(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_train_without_data_says_what_is_missing(empty_cwd):
    from tools.train import build_runner
    with pytest.raises(SystemExit) as err:
        build_runner([CONFIG, '--work-dir', str(empty_cwd / 'work')])
    msg = str(err.value)
    assert 'data/widerface/train/label.txt: label file not found' in msg
    assert 'data/widerface/train/images/: image folder not found' in msg
    assert 'data/widerface/val/label.txt' in msg  # validation runs during training
    assert 'docs/data.md' in msg and 'train_dataloader.dataset.data_root=' in msg
    assert not (empty_cwd / 'work').exists()  # stopped before the Runner


def test_test_tool_without_data_or_checkpoint(empty_cwd):
    from tools.test import build_runner
    with pytest.raises(SystemExit, match='checkpoint not found: missing.pth'):
        build_runner([CONFIG, 'missing.pth'])
    ckpt = empty_cwd / 'model.pth'
    ckpt.write_bytes(b'')
    with pytest.raises(SystemExit) as err:
        build_runner([CONFIG, str(ckpt)])
    msg = str(err.value)
    assert 'data/widerface/val/label.txt: label file not found' in msg
    assert 'train/' not in msg  # testing needs the test split only
    assert 'docs/data.md' in msg and 'test_dataloader.dataset.data_root=' in msg


def test_train_load_from_missing_file(empty_cwd, tmp_path):
    """A wrong load_from path stops before training (with the data present)."""
    from tools.make_synthetic_widerface import main as make_data
    from tools.train import build_runner
    make_data(['--out', str(tmp_path / 'd'), '--num-images', '2', '--size', '64',
               '--val-fraction', '0.5'])
    root = f'{tmp_path / "d"}/'
    opts = [f'{loader}.dataset.data_root={root}' for loader in ('train_dataloader',
                                                              'val_dataloader')]
    with pytest.raises(SystemExit, match='load_from not found: nowhere/ckpt.pth'):
        build_runner([CONFIG, '--cfg-options', 'load_from=nowhere/ckpt.pth', *opts])
    assert os.listdir(empty_cwd) == ['d']
