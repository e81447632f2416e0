"""FaceLocalVisualizer draws landmarks (one colour per point); the in-memory builder."""
import warnings

import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from mmretinaface.visualization import (
    KEYPOINT_COLORS,
    FaceLocalVisualizer,
    build_face_visualizer,
    keypoint_colors,
)

META = dict(classes=('face', ), palette=[(0, 255, 0)])


def faces(points, boxes=None, scores=None, visible=None) -> InstanceData:
    points = torch.as_tensor(points, dtype=torch.float32)
    n = len(points)
    inst = InstanceData()
    if boxes is None:  # a box around each face's points, 20 px margin
        boxes = torch.cat([points.amin(1) - 20, points.amax(1) + 20], dim=1)
    inst.bboxes = torch.as_tensor(boxes, dtype=torch.float32)
    inst.scores = torch.as_tensor(scores if scores is not None else [0.9] * n)
    inst.labels = torch.zeros(n, dtype=torch.long)
    inst.keypoints = points
    if visible is not None:
        inst.keypoints_visible = torch.as_tensor(visible, dtype=torch.float32)
    return inst


def draw(visualizer, instances, image=None, thr=0.3) -> np.ndarray:
    image = np.full((200, 300, 3), 128, np.uint8) if image is None else image
    visualizer.add_datasample('x', image, DetDataSample(pred_instances=instances),
                              draw_gt=False, pred_score_thr=thr)
    return visualizer.get_image()


def colour_at(drawn: np.ndarray, point) -> np.ndarray:
    x, y = (int(round(v)) for v in point)
    return drawn[y, x].astype(int)


FIVE = [[[100, 80], [140, 80], [120, 100], [105, 120], [135, 120]]]


def test_each_landmark_gets_its_colour_at_its_pixel():
    vis = build_face_visualizer(dict(type='FaceLocalVisualizer', keypoint_radius=4), META)
    drawn = draw(vis, faces(FIVE))
    assert drawn.shape == (200, 300, 3)
    for k, point in enumerate(FIVE[0]):
        assert np.array_equal(colour_at(drawn, point), KEYPOINT_COLORS[k])
        # a filled disc: the neighbours within the radius share the colour
        for dx, dy in ((-2, 0), (2, 0), (0, -2), (0, 2)):
            assert np.array_equal(colour_at(drawn, (point[0] + dx, point[1] + dy)),
                                  KEYPOINT_COLORS[k])
    # the five colours are distinct, so the order of the points is visible
    assert len(set(KEYPOINT_COLORS)) == 5
    # away from boxes and points the image is untouched
    assert np.array_equal(drawn[5, 5], [128, 128, 128])


def test_invisible_points_low_scores_and_custom_colours():
    vis = build_face_visualizer(dict(type='FaceLocalVisualizer', keypoint_radius=3,
                                     keypoint_colors=[(10, 20, 30)] * 5), META)
    second = [[200, 60], [230, 60], [215, 75], [205, 90], [225, 90]]
    inst = faces([FIVE[0], second], scores=[0.9, 0.1],
                 visible=[[1, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    drawn = draw(vis, inst, thr=0.5)
    assert np.array_equal(colour_at(drawn, FIVE[0][0]), [10, 20, 30])
    assert np.array_equal(colour_at(drawn, FIVE[0][1]), [128, 128, 128])  # not visible
    for point in second:  # face under the score threshold: nothing drawn
        assert np.array_equal(colour_at(drawn, point), [128, 128, 128])


@pytest.mark.parametrize('num_points', [3, 7])
def test_other_landmark_counts_cycle_the_colours(num_points):
    points = [[[40 + 30 * k, 100] for k in range(num_points)]]
    vis = build_face_visualizer(dict(type='FaceLocalVisualizer', keypoint_radius=3), META)
    drawn = draw(vis, faces(points))
    assert len(keypoint_colors(num_points)) == num_points
    for k in range(num_points):  # the five defaults repeat
        assert np.array_equal(colour_at(drawn, points[0][k]), KEYPOINT_COLORS[k % 5])


def test_no_faces_and_no_keypoints_draw_like_mmdet():
    vis = build_face_visualizer(None, META)
    empty = faces(torch.zeros((0, 5, 2)), boxes=torch.zeros((0, 4)), scores=[])
    image = np.full((50, 60, 3), 77, np.uint8)
    assert np.array_equal(draw(vis, empty, image), image)

    from mmdet.visualization import DetLocalVisualizer
    plain = DetLocalVisualizer(name='plain-det-visualizer-for-test')
    plain.dataset_meta = META
    inst = faces(FIVE)
    del inst.keypoints
    assert np.array_equal(draw(vis, inst), draw(plain, inst))


def test_builder_drops_backends_keeps_options_and_names_uniquely():
    cfg = dict(type='DetLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')],
               name='visualizer', line_width=7)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # "Failed to add LocalVisBackend" would raise
        first = build_face_visualizer(cfg, META)
        second = build_face_visualizer(cfg, META)
    for vis in (first, second):
        assert isinstance(vis, FaceLocalVisualizer)  # DetLocalVisualizer upgraded
        assert vis.line_width == 7 and vis.dataset_meta == META
        assert not vis._vis_backends
    assert first.instance_name != second.instance_name
    assert cfg['vis_backends'] == [dict(type='LocalVisBackend')]  # caller's dict untouched


def test_the_runtime_config_builds_the_face_visualizer():
    from mmengine.config import Config

    from mmretinaface.apis import get_config_path
    cfg = Config.fromfile(get_config_path('retinaface_mobilenet0.25_widerface'))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        vis = build_face_visualizer(cfg.visualizer, META)
    assert type(vis) is FaceLocalVisualizer
