"""Drawn faces: geometry invariants, determinism, and the WIDER-style writer round trip."""
import filecmp
from pathlib import Path

import numpy as np
import pytest

from mmretinaface.datasets import WiderFaceDataset
from mmretinaface.datasets.synthetic import render_synthetic_faces


def _check_geometry(bboxes, keypoints, width, height):
    assert (bboxes[:, 0] >= 0).all() and (bboxes[:, 1] >= 0).all()
    assert (bboxes[:, 2] <= width).all() and (bboxes[:, 3] <= height).all()
    assert (keypoints[..., 0] >= bboxes[:, None, 0]).all()
    assert (keypoints[..., 0] <= bboxes[:, None, 2]).all()
    assert (keypoints[..., 1] >= bboxes[:, None, 1]).all()
    assert (keypoints[..., 1] <= bboxes[:, None, 3]).all()
    assert (keypoints[:, 0, 0] < keypoints[:, 1, 0]).all()  # left eye left of right eye
    assert (keypoints[:, 3, 0] < keypoints[:, 4, 0]).all()  # same for the mouth corners
    # eyes above the nose above the mouth (rotation is at most 15 degrees)
    assert (keypoints[:, :2, 1].max(1) < keypoints[:, 2, 1]).all()
    assert (keypoints[:, 2, 1] < keypoints[:, 3:, 1].min(1)).all()


@pytest.mark.parametrize('seed', range(8))
def test_render_geometry(seed):
    sample = render_synthetic_faces(np.random.default_rng(seed), size=320)
    assert sample.img.shape == (320, 320, 3) and sample.img.dtype == np.uint8
    n = len(sample.bboxes)
    assert 1 <= n <= 6
    assert sample.bboxes.shape == (n, 4) and sample.keypoints.shape == (n, 5, 2)
    heights = sample.bboxes[:, 3] - sample.bboxes[:, 1]
    assert (heights >= 24 - 1e-3).all() and (heights <= 160 + 1e-3).all()
    _check_geometry(sample.bboxes, sample.keypoints, 320, 320)


def test_render_is_deterministic_and_varied():
    a = render_synthetic_faces(np.random.default_rng(3), size=(200, 160), num_faces=4)
    b = render_synthetic_faces(np.random.default_rng(3), size=(200, 160), num_faces=4)
    c = render_synthetic_faces(np.random.default_rng(4), size=(200, 160), num_faces=4)
    assert a.img.shape == (160, 200, 3)
    np.testing.assert_array_equal(a.img, b.img)
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    assert not np.array_equal(a.img, c.img)


def test_landmarks_are_drawn_where_labelled():
    """The pupils (darkest spots inside each eye white) sit on the eye landmarks."""
    sample = render_synthetic_faces(np.random.default_rng(0), size=320, num_faces=1,
                                    face_size=(120, 120), num_distractors=(0, 0))
    grey = sample.img.astype(np.float32).mean(-1)
    for x, y in sample.keypoints[0, :2]:
        j, i = int(x), int(y)
        patch = grey[i - 2:i + 3, j - 2:j + 3]
        assert patch.mean() < grey[i - 12:i + 13, j - 12:j + 13].mean()


def _write(out: Path, seed: int = 5):
    from tools.make_synthetic_widerface import main
    return main(['--out', str(out), '--num-images', '6', '--seed', str(seed), '--size', '160',
                 '--val-fraction', '0.34'])


def test_writer_round_trip(tmp_path):
    summary = _write(tmp_path / 'a')
    assert summary['train']['images'] == 4 and summary['val']['images'] == 2
    for split, indices in (('train', range(4)), ('val', range(4, 6))):
        ds = WiderFaceDataset(data_root=str(tmp_path / 'a' / split), ann_file='label.txt',
                              data_prefix=dict(img='images/'), pipeline=[])
        assert len(ds) == len(indices)
        for k, i in enumerate(indices):
            expected = render_synthetic_faces(np.random.default_rng([5, i]), size=160)
            info = ds.get_data_info(k)
            assert Path(info['img_path']).is_file()
            got_boxes = np.array([inst['bbox'] for inst in info['instances']])
            got_kps = np.stack([inst['keypoints'] for inst in info['instances']])
            np.testing.assert_allclose(got_boxes, expected.bboxes, atol=0.011)
            np.testing.assert_allclose(got_kps, expected.keypoints, atol=0.006)
            for inst in info['instances']:
                assert inst['ignore_flag'] == 0
                np.testing.assert_array_equal(inst['keypoints_visible'], np.ones(5))
            _check_geometry(got_boxes, got_kps, 160, 160)
    gt = WiderFaceDataset(data_root=str(tmp_path / 'a' / 'val'),
                          ann_file='wider_face_val_bbx_gt.txt', data_prefix=dict(img='images/'),
                          pipeline=[])
    assert [gt.get_data_info(k)['img_path'] for k in range(2)] == [
        ds.get_data_info(k)['img_path'] for k in range(2)]
    np.testing.assert_allclose([i['bbox'] for i in gt.get_data_info(0)['instances']],
                               [i['bbox'] for i in ds.get_data_info(0)['instances']])


def test_writer_is_deterministic(tmp_path):
    _write(tmp_path / 'a')
    _write(tmp_path / 'b')
    _write(tmp_path / 'c', seed=6)
    files = sorted(p.relative_to(tmp_path / 'a') for p in (tmp_path / 'a').rglob('*')
                   if p.is_file())
    assert len(files) == 6 + 3
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / 'a', tmp_path / 'b',
                                               [str(f) for f in files], shallow=False)
    assert not mismatch and not errors
    assert (tmp_path / 'a/train/label.txt').read_text() != (
        tmp_path / 'c/train/label.txt').read_text()
