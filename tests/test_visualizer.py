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


# ------------------------------------------------- the canvas: mmengine's pixels, faster
def _shapes(vis, image):
    """Boxes, a score label, circles and a mask, drawn with mmengine's public API."""
    h, w = image.shape[:2]
    vis.set_image(image)
    vis.draw_bboxes(np.array([[0.1 * w, 0.2 * h, 0.5 * w, 0.7 * h], [0.6 * w, 0.1 * h,
                                                                    0.95 * w, 0.4 * h]]),
                    edge_colors=[(0, 255, 0)] * 2, alpha=0.8, line_widths=3)
    vis.draw_texts('face: 99.5', np.array([0.1 * w + 3, 0.2 * h + 3]), colors=(200, 200, 200),
                   font_sizes=13, bboxes=[dict(facecolor='black', alpha=0.8, pad=0.7,
                                               edgecolor='none')])
    vis.draw_circles(np.array([[0.2 * w + 0.4, 0.3 * h + 0.2], [0.3 * w, 0.3 * h]]),
                     np.array([5.0, 3.0]), edge_colors=[(255, 0, 0), (0, 0, 255)],
                     face_colors=[(255, 0, 0), (0, 0, 255)], alpha=1.0)
    mask = np.zeros((h, w), bool)
    mask[h // 2:, w // 2:] = True
    vis.draw_binary_masks(mask, colors=[(255, 255, 0)], alphas=0.5)
    vis.draw_lines(np.array([0.05 * w, 0.9 * w]), np.array([0.9 * h, 0.8 * h]), colors='r')
    return vis.get_image()


@pytest.mark.parametrize('size', [(480, 640), (720, 1280), (257, 333)])
def test_canvas_pixels_equal_mmengines(size):
    """Image copied under the shapes == mmengine's image shown as an axes image."""
    from mmengine.visualization import Visualizer
    image = np.random.default_rng(sum(size)).integers(0, 256, (*size, 3), dtype=np.uint8)
    ours = build_face_visualizer(None, META)
    reference = Visualizer(name=f'mmengine-reference-{size}')
    expected = _shapes(reference, image)
    assert np.array_equal(_shapes(ours, image), expected)
    assert (expected != image).any(-1).mean() > 0.1  # the shapes cover a good part


def test_redrawing_on_a_returned_drawing_and_after_more_shapes():
    vis = build_face_visualizer(None, META)
    image = np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    vis.set_image(image)
    vis.draw_bboxes(np.array([[10., 10., 60., 70.]]), edge_colors=[(0, 255, 0)], alpha=0.8)
    first = vis.get_image()
    first[0, 0] = 7  # the caller's copy: the visualizer's render is not changed
    assert not np.array_equal(vis.get_image()[0, 0], [7, 7, 7])
    first = vis.get_image()
    # drawing on the drawing it returned == drawing on a fresh canvas with those pixels
    vis.set_image(first)
    vis.draw_circles(np.array([[80., 60.]]), np.array([6.]), face_colors=[(255, 0, 255)],
                     edge_colors=[(255, 0, 255)], alpha=0.6)
    fresh = build_face_visualizer(None, META)
    fresh.set_image(first)
    fresh.draw_circles(np.array([[80., 60.]]), np.array([6.]), face_colors=[(255, 0, 255)],
                       edge_colors=[(255, 0, 255)], alpha=0.6)
    second = vis.get_image()
    assert np.array_equal(second, fresh.get_image())
    assert not np.array_equal(second, first)  # the new circle is rendered
    # a new image replaces everything drawn before
    vis.set_image(image)
    assert np.array_equal(vis.get_image(), image)
    with pytest.raises(ValueError, match=r'RGB image of shape \(H, W, 3\)'):
        vis.set_image(image[..., 0])


def test_a_landmark_at_the_border_does_not_rescale_the_picture():
    # mmengine's axes image autoscales to shapes outside it: the whole picture shrank
    vis = build_face_visualizer(dict(type='FaceLocalVisualizer', keypoint_radius=4), META)
    image = np.random.default_rng(5).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    points = [[[1, 100], [40, 95], [25, 110], [10, 130], [35, 128]]]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # mmengine: "circle is out of bounds"
        drawn = draw(vis, faces(points, boxes=[[0, 70, 60, 150]]), image)
    assert np.array_equal(colour_at(drawn, (1, 100)), KEYPOINT_COLORS[0])
    assert np.array_equal(drawn[:, 80:], image[:, 80:])  # far from the face: untouched
