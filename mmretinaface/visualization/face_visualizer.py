"""mmdet's DetLocalVisualizer plus facial landmarks, one colour per point."""
import itertools
from typing import List, Optional, Sequence, Tuple

import numpy as np
from mmdet.registry import VISUALIZERS
from mmdet.visualization import DetLocalVisualizer
from mmengine.structures import InstanceData

from ..utils.misc import to_numpy

# RGB colours for left eye, right eye, nose, left mouth corner, right mouth corner.
KEYPOINT_COLORS: Tuple[Tuple[int, int, int], ...] = (
    (255, 0, 0), (0, 255, 255), (255, 0, 255), (0, 255, 0), (0, 0, 255))


def keypoint_colors(num_keypoints: int) -> List[Tuple[int, int, int]]:
    """One colour per landmark; the five defaults repeat for other counts."""
    return [KEYPOINT_COLORS[i % len(KEYPOINT_COLORS)] for i in range(num_keypoints)]


@VISUALIZERS.register_module()
class FaceLocalVisualizer(DetLocalVisualizer):
    """Draws boxes, scores and landmarks (``instances.keypoints``).

    Args:
        keypoint_radius: circle radius in pixels; ``None`` scales it with the
            face size.
        keypoint_colors: RGB colour per landmark (defaults: :data:`KEYPOINT_COLORS`).
        min_keypoint_visibility: points whose ``keypoints_visible`` is below
            this are not drawn (GT faces without landmarks).
    """

    def __init__(self, name: str = 'visualizer', *, keypoint_radius: Optional[int] = None,
                 keypoint_colors: Optional[Sequence[Sequence[int]]] = None,
                 min_keypoint_visibility: float = 0.5, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.keypoint_radius = keypoint_radius
        self.keypoint_colors = keypoint_colors
        self.min_keypoint_visibility = min_keypoint_visibility

    def _draw_instances(self, image: np.ndarray, instances: InstanceData,
                        classes: Optional[List[str]], palette: Optional[List[tuple]]
                        ) -> np.ndarray:
        drawn = super()._draw_instances(image, instances, classes, palette)
        if 'keypoints' not in instances or len(instances) == 0:
            return drawn
        self.set_image(drawn)
        points = to_numpy(instances.keypoints).reshape(len(instances), -1, 2)
        visible = (to_numpy(instances.keypoints_visible) >= self.min_keypoint_visibility
                   if 'keypoints_visible' in instances else np.ones(points.shape[:2], bool))
        colors = (list(map(tuple, self.keypoint_colors)) if self.keypoint_colors
                  else keypoint_colors(points.shape[1]))
        if 'bboxes' in instances:
            boxes = to_numpy(instances.bboxes)
            sizes = np.sqrt(np.clip((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
                                    1, None))
        else:
            sizes = np.full(len(points), 40.0)
        for face_points, face_visible, size in zip(points, visible, sizes):
            radius = self.keypoint_radius or max(1, int(round(size / 30)))
            for k, (point, vis) in enumerate(zip(face_points, face_visible)):
                if vis:
                    self.draw_circles(point[None], np.array([radius]),
                                      edge_colors=[colors[k % len(colors)]],
                                      face_colors=[colors[k % len(colors)]], alpha=1.0)
        return self.get_image()


_instance_ids = itertools.count()


def build_face_visualizer(cfg: Optional[dict] = None, dataset_meta: Optional[dict] = None,
                          **overrides) -> FaceLocalVisualizer:
    """A :class:`FaceLocalVisualizer` for drawing in memory (demo, inferencer).

    ``cfg`` is a config's ``visualizer`` dict (its drawing options are kept; a
    type that is not a :class:`FaceLocalVisualizer` is replaced by it, so
    landmarks are always drawn). ``vis_backends`` and ``save_dir`` are
    dropped: the caller writes the images, and mmengine then has no
    ``LocalVisBackend`` to warn about ("Failed to add LocalVisBackend, please
    provide save_dir"). Each call gets a fresh instance name (mmengine keeps
    visualizers in a global by-name registry).
    """
    cfg = dict(cfg or {})
    cfg.update(overrides)
    vis_type = cfg.get('type', 'FaceLocalVisualizer')
    vis_cls = VISUALIZERS.get(vis_type) if isinstance(vis_type, str) else vis_type
    if not (isinstance(vis_cls, type) and issubclass(vis_cls, FaceLocalVisualizer)):
        vis_cls = FaceLocalVisualizer
    cfg.pop('type', None)
    cfg.pop('vis_backends', None)
    cfg.pop('save_dir', None)
    cfg['name'] = f"{cfg.get('name', 'face_visualizer')}-{next(_instance_ids)}"
    while vis_cls.check_instance_created(cfg['name']):
        cfg['name'] = f"{cfg['name']}-{next(_instance_ids)}"
    visualizer = vis_cls(**cfg)
    if dataset_meta is not None:
        visualizer.dataset_meta = dataset_meta
    return visualizer
