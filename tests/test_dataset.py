"""WiderFaceDataset: both label formats, ignore / empty-image policy, errors."""
from pathlib import Path

import numpy as np
import pytest

from mmretinaface.datasets import WiderFaceDataset

RETINAFACE_LABELS = """\
# 0--Parade/a.jpg
10 20 30 40 15.0 30.0 0.0 35.0 30.0 0.0 25.0 40.0 0.0 18.0 50.0 0.0 32.0 50.0 0.0 0.82
100 100 20 24 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 0.5
# 0--Parade/b.jpg
5 5 0 10 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 0.1
# 1--Handshaking/c.jpg
"""

WIDER_GT = """\
0--Parade/a.jpg
2
10 20 30 40 0 0 0 0 0 0
50 60 8 9 2 0 0 1 0 0
0--Parade/empty.jpg
0
0 0 0 0 0 0 0 0 0 0
1--Handshaking/c.jpg
1
1 2 3 4 0 0 0 0 0 0
"""


def _listed_images(text: str) -> list:
    """Image paths a label text lists (``# path`` lines or official ``*.jpg`` lines)."""
    paths = []
    for line in text.splitlines():
        if line.startswith('#'):
            paths.append(line[1:].split()[0])
        elif line.strip().lower().endswith(('.jpg', '.png')):
            paths.append(line.strip())
    return paths


def _dataset(tmp_path: Path, text: str, name: str = 'label.txt', create_images: bool = True,
             **kwargs) -> WiderFaceDataset:
    """A dataset over ``text``; the listed images exist (empty files) unless told otherwise."""
    (tmp_path / name).write_text(text)
    kwargs.setdefault('data_prefix', dict(img='images/'))
    if create_images:
        for rel in _listed_images(text):
            path = tmp_path / kwargs['data_prefix']['img'] / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    return WiderFaceDataset(data_root=str(tmp_path), ann_file=name, pipeline=[], **kwargs)


def test_metainfo():
    meta = WiderFaceDataset.METAINFO
    assert meta['classes'] == ('face',)
    assert meta['flip_indices'] == [1, 0, 2, 4, 3]
    assert meta['keypoint_names'] == ('left_eye', 'right_eye', 'nose', 'left_mouth',
                                      'right_mouth')


def test_retinaface_labels(tmp_path):
    ds = _dataset(tmp_path, RETINAFACE_LABELS)
    assert len(ds) == 3
    assert ds.metainfo['num_keypoints'] == 5
    info = ds.get_data_info(0)
    assert info['img_path'] == str(tmp_path / 'images' / '0--Parade' / 'a.jpg')
    assert info['img_id'] == '0--Parade/a'
    assert info['flip_indices'] == [1, 0, 2, 4, 3]
    assert info['num_keypoints'] == 5
    face, no_landmarks = info['instances']
    assert face['bbox'] == [10.0, 20.0, 40.0, 60.0]  # x, y, x + w, y + h
    assert face['bbox_label'] == 0 and face['ignore_flag'] == 0
    np.testing.assert_allclose(face['keypoints'],
                               [[15, 30], [35, 30], [25, 40], [18, 50], [32, 50]])
    np.testing.assert_array_equal(face['keypoints_visible'], np.ones(5))
    assert face['keypoints'].shape == (5, 2) and face['keypoints'].dtype == np.float32
    np.testing.assert_array_equal(no_landmarks['keypoints_visible'], np.zeros(5))
    assert no_landmarks['ignore_flag'] == 0
    degenerate = ds.get_data_info(1)['instances'][0]
    assert degenerate['ignore_flag'] == 1  # w = 0
    assert ds.get_data_info(2)['instances'] == []


def test_partial_landmarks_visibility(tmp_path):
    line = '0 0 50 50 10 10 0 -1 -1 -1 25 25 0 12 40 0 38 40 0 1.0'
    ds = _dataset(tmp_path, f'# x.jpg\n{line}\n')
    np.testing.assert_array_equal(ds.get_data_info(0)['instances'][0]['keypoints_visible'],
                                  [1, 0, 1, 1, 1])


def test_val_format_and_image_size(tmp_path):
    ds = _dataset(tmp_path, '# 0--Parade/a.jpg 1024 768\n1 2 3 4\n5 6 7 8\n# b.jpg\n')
    info = ds.get_data_info(0)
    assert (info['width'], info['height']) == (1024, 768)
    assert info['img_path'].endswith('0--Parade/a.jpg')
    assert [i['bbox'] for i in info['instances']] == [[1, 2, 4, 6], [5, 6, 12, 14]]
    for inst in info['instances']:
        np.testing.assert_array_equal(inst['keypoints_visible'], np.zeros(5))
    assert 'width' not in ds.get_data_info(1)


@pytest.mark.parametrize('num_missing', [1, 7])
def test_missing_images_fail_when_the_dataset_is_built(tmp_path, num_missing):
    """Images listed but absent are named (first five) and counted before any training."""
    names = [f'ev/img_{i}.jpg' for i in range(10)]
    text = ''.join(f'# {n}\n1 2 3 4\n' for n in names)
    (tmp_path / 'images' / 'ev').mkdir(parents=True)
    missing = names[-num_missing:]
    for n in names[:-num_missing]:
        (tmp_path / 'images' / n).touch()
    with pytest.raises(FileNotFoundError) as err:
        _dataset(tmp_path, text, create_images=False)
    msg = str(err.value)
    assert f'{num_missing} of 10 images' in msg and 'label.txt' in msg
    for n in missing[:5]:
        assert str(tmp_path / 'images' / n) in msg
    for n in missing[5:] + names[:-num_missing]:
        assert str(tmp_path / 'images' / n) not in msg
    assert msg.count('.jpg') == min(num_missing, 5)
    assert ('...' in msg) == (num_missing > 5)
    # the same label file with every image present builds
    for n in missing:
        (tmp_path / 'images' / n).touch()
    assert len(_dataset(tmp_path, text, create_images=False)) == 10


def test_filter_empty_gt(tmp_path):
    ds = _dataset(tmp_path, RETINAFACE_LABELS, filter_cfg=dict(filter_empty_gt=True))
    # b.jpg only has an ignored (degenerate) face and c.jpg none: both dropped.
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == ['0--Parade/a']
    ds = _dataset(tmp_path, RETINAFACE_LABELS, filter_cfg=dict(filter_empty_gt=True),
                  test_mode=True)
    assert len(ds) == 3


def test_nothing_to_train_on_is_a_clear_error(tmp_path):
    """An empty label file, or one whose faces are all ignored with filter_empty_gt, names
    the file instead of mmengine's 'need at least one array to concatenate'."""
    with pytest.raises(ValueError, match=r'label\.txt: the label file lists no images'):
        _dataset(tmp_path, '')
    only_ignored = '\n'.join(RETINAFACE_LABELS.splitlines()[3:]) + '\n'  # b.jpg and c.jpg
    with pytest.raises(ValueError, match=r'label\.txt: none of its 2 images has a usable face'):
        _dataset(tmp_path, only_ignored, filter_cfg=dict(filter_empty_gt=True))
    assert len(_dataset(tmp_path, only_ignored, filter_cfg=dict(filter_empty_gt=True),
                        test_mode=True)) == 2


def test_official_bbx_gt(tmp_path):
    ds = _dataset(tmp_path, WIDER_GT, name='wider_face_val_bbx_gt.txt')
    assert len(ds) == 3
    first = ds.get_data_info(0)['instances']
    assert [i['bbox'] for i in first] == [[10, 20, 40, 60], [50, 60, 58, 69]]
    assert [i['ignore_flag'] for i in first] == [0, 1]  # the second is `invalid`
    np.testing.assert_array_equal(first[0]['keypoints_visible'], np.zeros(5))
    assert ds.get_data_info(1)['instances'] == []
    assert ds.get_data_info(2)['instances'][0]['bbox'] == [1, 2, 4, 6]


def test_official_count_zero_without_placeholder(tmp_path):
    ds = _dataset(tmp_path, 'a.jpg\n0\nb.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n', label_format='wider')
    assert [len(ds.get_data_info(i)['instances']) for i in range(2)] == [0, 1]


@pytest.mark.parametrize('text, lineno, reason', [
    ('# a.jpg\n1 2 3 4 5 6 7\n', 2, 'fields'),
    ('# a.jpg\n1 2 3 4\n1 2 three 4\n', 3, 'non-numeric'),
    ('1 2 3 4\n# a.jpg\n', 1, 'before any'),
    ('# a.jpg\n\n1 2 3 nan\n', 3, 'non-finite'),
])
def test_retinaface_malformed(tmp_path, text, lineno, reason):
    with pytest.raises(ValueError) as err:
        _dataset(tmp_path, text, name='bad_label.txt', label_format='retinaface')
    msg = str(err.value)
    assert 'bad_label.txt' in msg and f'line {lineno}' in msg and reason in msg


@pytest.mark.parametrize('text, lineno, reason', [
    # count says 2, one face follows, then the next image name
    ('a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\nb.jpg\n0\n', 4, 'face count match'),
    # count says 1, two faces follow
    ('a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n1 2 3 4 0 0 0 0 0 0\n', 4, 'face count match'),
    ('a.jpg\ntwo\n1 2 3 4 0 0 0 0 0 0\n', 2, 'face count'),
    ('a.jpg\n1\n1 2 3 4 0 0 0 x 0 0\n', 3, 'non-numeric'),
    ('a.jpg\n1\n1 2 3 4 0 0\n', 3, 'expected 10 fields'),
    ('a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n', 2, 'file ends'),
    ('a.jpg\n', 1, 'face count'),
    ('1 2 3 4 0 0 0 0 0 0\na.jpg\n0\n', 1, 'before any image line'),
])
def test_official_malformed(tmp_path, text, lineno, reason):
    with pytest.raises(ValueError) as err:
        _dataset(tmp_path, text, name='wider_face_bad_bbx_gt.txt', label_format='wider')
    msg = str(err.value)
    assert 'wider_face_bad_bbx_gt.txt' in msg and f'line {lineno}' in msg and reason in msg


def test_generic_num_keypoints(tmp_path):
    text = '# a.jpg\n0 0 10 10 1 1 0 9 1 0 5 8 0 0.9\n'
    with pytest.raises(ValueError, match='flip_indices'):
        _dataset(tmp_path, text, num_keypoints=3)
    ds = _dataset(tmp_path, text, num_keypoints=3,
                  metainfo=dict(keypoint_names=('l', 'r', 'c'), flip_indices=[1, 0, 2]))
    inst = ds.get_data_info(0)['instances'][0]
    assert inst['keypoints'].shape == (3, 2)
    assert ds.metainfo['num_keypoints'] == 3
    assert ds.get_data_info(0)['flip_indices'] == [1, 0, 2]
