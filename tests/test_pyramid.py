"""Image-pyramid inference: level selection and merge checked by hand; on real photos a
close-up gives its one face (single scale gives fragments) and small faces stay as they are."""
import math

import cv2
import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from mmretinaface.apis import FaceInferencer, bundled_photo
from mmretinaface.models.pyramid import (
    FacePyramidTTAModel,
    box_vote,
    face_sizes,
    fragment_mask,
    halve_image,
    level_size_ranges,
    merge_pyramid_levels,
    pyramid_scales,
    resize_data,
)


def instances(boxes, scores) -> InstanceData:
    """Faces with distinct landmarks derived from their boxes (so we can see which survive)."""
    out = InstanceData()
    out.bboxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    out.scores = torch.tensor(scores, dtype=torch.float32)
    out.labels = torch.zeros(len(scores), dtype=torch.long)
    corner = out.bboxes[:, None, :2]
    out.keypoints = corner + torch.arange(10, dtype=torch.float32).reshape(1, 5, 2)
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes ``(N, 4)`` x ``(M, 4)``."""
    a, b = a.reshape(-1, 4), b.reshape(-1, 4)
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a, area_b = np.prod(a[:, 2:] - a[:, :2], axis=1), np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None] - inter)


# ------------------------------------------------------------ pure functions
def test_face_size_is_the_geometric_mean_side():
    sizes = face_sizes(torch.tensor([[0.0, 0.0, 30.0, 120.0], [10.0, 10.0, 10.0, 50.0]]))
    torch.testing.assert_close(sizes, torch.tensor([60.0, 0.0]))


def test_levels_are_added_until_a_face_as_large_as_the_image_fits():
    assert pyramid_scales(480) == [1.0]  # 640x480
    assert pyramid_scales(512) == [1.0]
    assert pyramid_scales(720) == [1.0, 0.5]  # 1280x720
    assert pyramid_scales(1024) == [1.0, 0.5]
    assert pyramid_scales(1025) == [1.0, 0.5, 0.25]
    assert pyramid_scales(2731) == [1.0, 0.5, 0.25, 0.125]  # 4096x2731
    assert pyramid_scales(720, 300) == [1.0, 0.5, 0.25]
    with pytest.raises(ValueError, match='coarsest_side'):
        pyramid_scales(480, 0)


def test_level_size_windows_hand_checked():
    inf = math.inf
    # input: up to 400 px; 1/2: 320 (0.8 x 400) .. 800 (400 of its pixels); 1/4: above 640
    assert level_size_ranges([1.0, 0.5, 0.25], 400, 0.8) == [(0.0, 400.0), (320.0, 800.0),
                                                              (640.0, inf)]
    assert level_size_ranges([1.0], 400) == [(0.0, inf)]
    for scales in ([1.0, 1.0], [0.5, 1.0], [1.0, 0.0]):
        with pytest.raises(ValueError, match='decreasing'):
            level_size_ranges(scales, 400)
    for overlap in (0.0, 1.5):
        with pytest.raises(ValueError, match='overlap'):
            level_size_ranges([1.0, 0.5], 400, overlap)


def test_fragments_are_finer_boxes_inside_a_confident_coarser_face():
    boxes = torch.tensor([
        [0, 0, 100, 100],     # 0: level 1, 0.99 - a large face
        [10, 10, 40, 40],     # 1: level 0, inside 0 -> fragment
        [80, 0, 130, 50],     # 2: level 0, 40% inside 0 -> kept
        [200, 0, 300, 100],   # 3: level 1, 0.3 - not confident
        [210, 10, 240, 40],   # 4: level 0, inside 3 -> kept
        [20, 20, 50, 50],     # 5: level 1, inside 0 but not finer -> kept
    ], dtype=torch.float32)
    scores = torch.tensor([0.99, 0.9, 0.9, 0.3, 0.9, 0.9])
    levels = torch.tensor([1, 0, 0, 1, 0, 1])
    mask = fragment_mask(boxes, scores, levels, claim_score=0.5, min_iof=0.5)
    assert mask.tolist() == [False, True, False, False, False, False]
    assert fragment_mask(boxes[:0], scores[:0], levels[:0]).shape == (0, )


def test_box_vote_hand_checked():
    """A and B overlap (IoU 0.82 > 0.4): one face, the score-weighted mean of both (boxes and
    landmarks), A's score. C overlaps B (IoU 0.48) but not A (0.38): NMS keeps C, so C is
    its own face (groups are NMS's suppressions, not chains of overlaps)."""
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [4.5, 0, 14.5, 10], [40, 40, 50, 50]]
    faces = instances(boxes, [0.9, 0.6, 0.5, 0.7])
    voted = box_vote(faces, iou_thr=0.4)
    torch.testing.assert_close(voted.scores, torch.tensor([0.9, 0.7, 0.5]))
    torch.testing.assert_close(voted.bboxes, torch.tensor(
        [[0.4, 0, 10.4, 10], [40, 40, 50, 50], [4.5, 0, 14.5, 10]]))
    want_points = (0.9 * faces.keypoints[0] + 0.6 * faces.keypoints[1]) / 1.5
    torch.testing.assert_close(voted.keypoints[0], want_points)
    torch.testing.assert_close(voted.keypoints[1:], faces.keypoints[[3, 2]])
    assert len(box_vote(faces[:0])) == 0


def test_merge_keeps_each_level_sizes_then_nms_and_fragments():
    fine = instances([[10, 10, 60, 60],          # a: 50 px face -> kept
                      [600, 600, 800, 800],      # b: 200 px part of the large face
                      [500, 500, 1000, 1000],    # c: 500 px > 400 -> not this level's
                      [1200, 0, 1560, 360]],     # d: 360 px, also seen by the coarser level
                     [0.88, 0.95, 0.97, 0.8])
    coarse = instances([[510, 490, 1010, 1010],  # c': the large face (510 px)
                        [100, 500, 200, 600],    # e: 100 px < 320 -> the finer level's
                        [1204, 2, 1562, 362]],   # d': 359 px, scores higher than d
                       [0.99, 0.85, 0.9])
    merged = merge_pyramid_levels([fine, coarse], [1.0, 0.5], max_face_size=400, overlap=0.8,
                                  merge='nms')
    expected = InstanceData.cat([coarse[[0, 2]], fine[[0]]])  # c', d', a by score
    for key in ('bboxes', 'scores', 'labels', 'keypoints'):
        torch.testing.assert_close(merged[key], expected[key], rtol=0, atol=0)
    top2 = merge_pyramid_levels([fine, coarse], [1.0, 0.5], 400, max_per_img=2, merge='nms')
    torch.testing.assert_close(top2.bboxes, expected.bboxes[:2])
    # box voting (the default): d' and d form one face, their score-weighted mean
    voted = merge_pyramid_levels([fine, coarse], [1.0, 0.5], max_face_size=400, overlap=0.8)
    torch.testing.assert_close(voted.scores, expected.scores)
    d_mean = (0.9 * coarse.bboxes[2] + 0.8 * fine.bboxes[3]) / 1.7
    torch.testing.assert_close(voted.bboxes[1], d_mean)
    torch.testing.assert_close(voted.bboxes[[0, 2]], expected.bboxes[[0, 2]])
    # one level: everything kept, nothing merged away
    alone = merge_pyramid_levels([fine], [1.0], 400)
    torch.testing.assert_close(alone.scores, fine.scores.sort(descending=True).values)
    with pytest.raises(ValueError, match='2 levels but 1 scales'):
        merge_pyramid_levels([fine, coarse], [1.0], 400)


def test_halving_averages_2x2_blocks_and_halves_the_scale():
    image = torch.tensor([[[0, 2, 4, 6, 8], [2, 4, 6, 8, 10], [90, 90, 90, 90, 90]],
                          [[10, 10, 20, 20, 99], [10, 10, 20, 20, 99], [99] * 5]],
                         dtype=torch.uint8)  # 2 channels, 3x5: the last row / column drop
    half = halve_image(image)
    assert half.dtype == torch.uint8
    torch.testing.assert_close(half, torch.tensor([[[2, 6]], [[10, 20]]], dtype=torch.uint8))
    sample = DetDataSample(metainfo=dict(img_shape=(3, 5), scale_factor=(2.0, 4.0),
                                         pyramid_scale=1.0))
    data = resize_data(dict(inputs=[image], data_samples=[sample]), 0.5)
    (small, ), (meta, ) = data['inputs'], data['data_samples']
    torch.testing.assert_close(small, half)
    assert meta.img_shape == (1, 2) and meta.scale_factor == (1.0, 2.0)
    assert meta.pyramid_scale == 0.5
    assert sample.scale_factor == (2.0, 4.0)  # the finer level's sample is untouched


# ------------------------------------------------------------- real photos
@pytest.fixture(scope='module')
def inferencers(mobilenet_detector):
    return (FaceInferencer(mobilenet_detector, show_progress=False),
            FaceInferencer(mobilenet_detector, show_progress=False, pyramid=True))


def detect(inferencer: FaceInferencer, image: np.ndarray, **kwargs) -> InstanceData:
    (sample, ) = inferencer(image, return_datasamples=True, **kwargs)['predictions']
    return sample.pred_instances


def test_registered_and_one_level_is_the_detector_itself(mobilenet_detector, inferencers):
    from mmdet.registry import MODELS
    built = MODELS.build(dict(type='FacePyramidTTAModel', module=mobilenet_detector))
    assert isinstance(built, FacePyramidTTAModel) and built.module is mobilenet_detector
    single, pyramid = inferencers
    image = cv2.resize(cv2.imread(bundled_photo('astronaut')), (640, 480))  # one level
    alone, merged = detect(single, image), detect(pyramid, image)
    assert len(alone) > 1
    for key in ('bboxes', 'scores', 'labels', 'keypoints'):
        torch.testing.assert_close(merged[key], alone[key], rtol=0, atol=0)


def close_up(single: FaceInferencer) -> np.ndarray:
    """Grace Hopper's photo (512x600, face ~200 px) cropped around her face and upscaled:
    a 1500x1800 portrait with a ~1000 px face (the benchmark's builder)."""
    from tests.real_photo_faces import zoomed_portrait
    image, _ = zoomed_portrait(single, 'grace_hopper', 1000, (1500, 1800))
    assert image.shape == (1800, 1500, 3)
    return image


def test_close_up_portrait_gives_its_one_face(inferencers):
    single, pyramid = inferencers
    image = close_up(single)
    # the reference: the same photo downscaled to 600 px for the network, mapped back
    small = detect(single, image, max_size=600)
    face = small[int(small.scores.argmax())]
    face_box = face.bboxes.numpy()
    face_size = float(face_sizes(face.bboxes))
    assert face.scores.item() > 0.99 and 900 < face_size < 1100
    # at the input scale the face is beyond the anchors: its parts are found instead
    parts = detect(single, image)
    parts = parts[parts.scores >= 0.5]
    assert len(parts) >= 3
    assert box_iou(parts.bboxes.numpy(), face_box).max() < 0.5
    # the pyramid and the crowd setting: exactly one face >= 0.5, with the box and
    # landmarks of the downscaled one
    crowd = FaceInferencer(single.model, show_progress=False, scales='crowd')
    for multi in (pyramid, crowd):
        merged = detect(multi, image)
        merged = merged[merged.scores >= 0.5]
        assert len(merged) == 1
        assert box_iou(merged.bboxes.numpy(), face_box)[0, 0] > 0.85  # measured 0.94
        error = (merged.keypoints[0] - face.keypoints[0]).norm(dim=-1).max().item()
        assert error < 0.06 * face_size  # measured 0.025


def small_faces_mosaic() -> np.ndarray:
    """1280x720: the two bundled portraits, alternately, at 12 sizes from 36 to 200 px
    (faces ~8 to 66 px), in two rows of six."""
    photos = [cv2.imread(bundled_photo(name)) for name in ('grace_hopper', 'astronaut')]
    canvas = np.full((720, 1280, 3), 128, np.uint8)
    sides = (36, 44, 52, 62, 74, 88, 104, 124, 148, 176, 200, 200)
    for k, side in enumerate(sides):
        photo = photos[k % 2]
        scale = side / max(photo.shape[:2])
        tile = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        row, col = divmod(k, 6)
        y, x = 80 + row * 360, 5 + col * 213
        canvas[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    return canvas


def test_small_faces_are_the_single_scale_ones(inferencers):
    single, pyramid = inferencers
    image = small_faces_mosaic()
    assert pyramid_scales(min(image.shape[:2])) == [1.0, 0.5]  # a second level runs
    alone, merged = detect(single, image), detect(pyramid, image)
    alone, merged = alone[alone.scores >= 0.3], merged[merged.scores >= 0.3]
    assert len(alone) >= 8
    for key in ('bboxes', 'scores', 'keypoints'):
        torch.testing.assert_close(merged[key], alone[key], rtol=0, atol=0)
    # the crowd setting keeps every face single scale finds >= 0.5 (and may add smaller ones)
    crowd = detect(FaceInferencer(single.model, show_progress=False, scales='crowd'), image)
    crowd = crowd[crowd.scores >= 0.3]
    sure = alone[alone.scores >= 0.5]
    assert len(sure) >= 8
    assert box_iou(sure.bboxes.numpy(), crowd.bboxes.numpy()).max(axis=1).min() > 0.5


# ---------------------------------------------------------------- tools/test.py
def test_test_tool_pyramid_protocol_wraps_the_model(tmp_path):
    from tools.test import build_config, parse_args
    argv = ['configs/retinaface_mobilenet0.25_widerface.py', str(tmp_path / 'x.pth'),
            '--work-dir', str(tmp_path), '--scale-protocol', 'pyramid']
    cfg = build_config(parse_args(argv))
    assert cfg.model.type == 'FacePyramidTTAModel'
    assert cfg.model.module.type == 'SingleStageDetector'
    with pytest.raises(ValueError, match='does not combine with --tta'):
        build_config(parse_args(argv + ['--tta']))


@pytest.mark.slow
def test_test_tool_pyramid_ap_not_below_original(converted_checkpoint, tmp_path):
    """Drawn faces (24-160 px) in 640 px images: two levels run; AP@0.5 not below the
    original-scale protocol's, and the tested weights are the checkpoint's."""
    from tools.make_synthetic_widerface import main as make_data
    from tools.test import build_runner
    data = tmp_path / 'data'
    make_data(['--out', str(data), '--num-images', '20', '--seed', '5', '--size', '640',
               '--val-fraction', '0.5', '--max-faces', '6'])
    options = [f'data_root={data}/', f'test_dataloader.dataset.data_root={data}/',
               'test_evaluator.gt_dir=None', 'test_dataloader.num_workers=0',
               'test_dataloader.persistent_workers=False']
    aps = {}
    for protocol in ('original', 'pyramid'):
        runner = build_runner(['configs/retinaface_mobilenet0.25_widerface.py',
                               converted_checkpoint, '--work-dir', str(tmp_path / protocol),
                               '--scale-protocol', protocol, '--cfg-options', *options])
        aps[protocol] = runner.test()['widerface/AP50']
    assert type(runner.model).__name__ == 'FacePyramidTTAModel'
    saved = torch.load(converted_checkpoint, map_location='cpu')['state_dict']
    tested = runner.model.module.state_dict()
    assert set(tested) == set(saved)
    assert all(torch.equal(tested[k], saved[k]) for k in saved)
    assert aps['original'] > 0.5
    assert aps['pyramid'] >= aps['original']


def test_image_demo_pyramid_option(inferencers, converted_checkpoint, tmp_path):
    import json

    from demo.image_demo import main
    path = tmp_path / 'close_up.png'
    cv2.imwrite(str(path), close_up(inferencers[0]))
    out = tmp_path / 'out'
    assert main([str(path), '--pyramid', '--no-vis', '--out-dir', str(out),
                 '--weights', converted_checkpoint]) == 0
    record = json.loads((out / 'preds' / 'close_up.json').read_text())
    assert len(record['bboxes']) == len(record['keypoints']) == 1  # scores >= 0.5


def test_video_demo_pyramid_option(inferencers, converted_checkpoint, tmp_path):
    """Frames of a close-up: --pyramid writes the one face per frame (single scale: parts)."""
    import json

    from demo.video_demo import main
    frame = close_up(inferencers[0])  # 1500x1800
    source = tmp_path / 'close_up.avi'
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*'MJPG'), 5, (1500, 1800))
    for _ in range(2):
        writer.write(frame)
    writer.release()
    faces = {}
    for option in ([], ['--pyramid']):
        out = tmp_path / f'faces{len(option)}.jsonl'
        assert main([str(source), '--json', str(out), '--weights', converted_checkpoint,
                     '--batch-size', '2', *option]) == 0
        faces[bool(option)] = [json.loads(line) for line in out.read_text().splitlines()]
    assert [len(f['bboxes']) for f in faces[True]] == [1, 1]  # scores >= 0.5
    assert all(len(f['bboxes']) >= 2 for f in faces[False])
