"""mmdet's DetLocalVisualizer plus facial landmarks, one colour per point.

Drawing is one matplotlib render per image: rendering the canvas (the image
layer above all) is what drawing costs, and mmdet's ``add_datasample`` would
render three times here (boxes, landmarks, then again after it re-sets the
drawn image).
"""
import itertools
from typing import List, Optional, Sequence, Tuple

import numpy as np
from mmdet.registry import VISUALIZERS
from mmdet.visualization import DetLocalVisualizer
from mmengine.dist import master_only
from mmengine.structures import InstanceData

from ..utils.misc import to_numpy

# RGB colours for left eye, right eye, nose, left mouth corner, right mouth corner.
KEYPOINT_COLORS: Tuple[Tuple[int, int, int], ...] = (
    (255, 0, 0), (0, 255, 255), (255, 0, 255), (0, 255, 0), (0, 0, 255))


#: matplotlib zorder of the landmarks: over boxes (collections, 1) and score labels (texts, 3).
LANDMARK_ZORDER = 4


def keypoint_colors(num_keypoints: int) -> List[Tuple[int, int, int]]:
    """One colour per landmark; the five defaults repeat for other counts."""
    return [KEYPOINT_COLORS[i % len(KEYPOINT_COLORS)] for i in range(num_keypoints)]


@VISUALIZERS.register_module()
class FaceLocalVisualizer(DetLocalVisualizer):
    """Draws boxes, scores and landmarks (``instances.keypoints``) in one render.

    The landmarks join mmdet's boxes and scores on the canvas before mmdet's
    ``_draw_instances`` renders it, and a render is reused while the figure is
    unchanged (``add_datasample`` sets the drawing it just got as the image
    again; the canvas already shows it).

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
        self._rendered: Optional[np.ndarray] = None  # last render, valid while not stale
        self._queued: Optional[InstanceData] = None  # faces whose landmarks await the render
        super().__init__(name=name, **kwargs)
        self.keypoint_radius = keypoint_radius
        self.keypoint_colors = keypoint_colors
        self.min_keypoint_visibility = min_keypoint_visibility

    def set_image(self, image: np.ndarray) -> None:
        """mmengine's, except that the canvas stays when it shows these pixels already."""
        if (self._rendered is not None and not self.fig_save.stale
                and np.array_equal(image, self._rendered)):
            self._image = self._rendered.copy()
            return
        super().set_image(image)

    @master_only
    def get_image(self) -> np.ndarray:
        """The drawn RGB image: queued landmarks are drawn, then the canvas is rendered
        unless it has not changed since the last render."""
        if self._queued is not None:
            queued, self._queued = self._queued, None
            self._draw_keypoints(queued)
        if self._rendered is None or self.fig_save.stale:
            self._rendered = super().get_image()
        return self._rendered.copy()

    def _draw_instances(self, image: np.ndarray, instances: InstanceData,
                        classes: Optional[List[str]], palette: Optional[List[tuple]]
                        ) -> np.ndarray:
        """mmdet's boxes and scores; its closing ``get_image`` adds the landmarks."""
        if 'keypoints' in instances and len(instances) > 0:
            self._queued = instances
        try:
            return super()._draw_instances(image, instances, classes, palette)
        finally:
            self._queued = None

    def _draw_keypoints(self, instances: InstanceData) -> None:
        """All visible landmarks as one collection of filled circles."""
        points = to_numpy(instances.keypoints).reshape(len(instances), -1, 2)
        num_faces, num_points = points.shape[:2]
        visible = (to_numpy(instances.keypoints_visible) >= self.min_keypoint_visibility
                   if 'keypoints_visible' in instances
                   else np.ones((num_faces, num_points), bool)).reshape(num_faces, num_points)
        if not visible.any():
            return
        colors = (list(map(tuple, self.keypoint_colors)) if self.keypoint_colors
                  else keypoint_colors(num_points))
        if self.keypoint_radius:
            radii = np.full(num_faces, float(self.keypoint_radius))
        else:
            if 'bboxes' in instances:
                boxes = to_numpy(instances.bboxes).reshape(-1, 4)
                sizes = np.sqrt(np.clip((boxes[:, 2] - boxes[:, 0]) *
                                        (boxes[:, 3] - boxes[:, 1]), 1, None))
            else:
                sizes = np.full(num_faces, 40.0)
            radii = np.maximum(1, np.round(sizes / 30))
        point_colors = [colors[k % len(colors)] for k in range(num_points)] * num_faces
        keep = visible.reshape(-1)
        kept_colors = [c for c, v in zip(point_colors, keep) if v]
        self.draw_circles(points.reshape(-1, 2)[keep],
                          np.repeat(radii, num_points)[keep],
                          edge_colors=kept_colors, face_colors=kept_colors, alpha=1.0)
        # above the score labels (matplotlib draws texts after collections by zorder)
        self.ax_save.collections[-1].set_zorder(LANDMARK_ZORDER)


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
