"""mmdet's DetLocalVisualizer plus facial landmarks, one colour per point.

Drawing cost is matplotlib's: mmengine shows the image as an axes image, so
every render resamples all its pixels, and mmdet's ``add_datasample`` renders
about three times per image. Here the pixels are written straight into the
canvas under the drawn shapes, and a render is reused while nothing changed.
"""
import itertools
from typing import List, Optional, Sequence, Tuple

import cv2
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
    """Draws boxes, scores and landmarks (``instances.keypoints``).

    The same pixels as mmengine's canvas, drawn faster: the image is copied
    into the canvas under the shapes rather than shown as an axes image
    (rendering that resamples every pixel), and :meth:`get_image` renders only
    when something was drawn since its last render, so setting the drawing it
    returned as the image (``add_datasample`` does) costs nothing. The axes keep
    the image's extent: a shape partly outside the image (a landmark at the
    border) no longer makes matplotlib shrink and resample the whole picture.

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
        self._rendered: Optional[np.ndarray] = None  # the last render, valid while not stale
        self._background: Optional[np.ndarray] = None  # the image as the canvas's RGBA
        super().__init__(name=name, **kwargs)
        self.fig_save.patch.set_visible(False)  # the image is the background
        self.keypoint_radius = keypoint_radius
        self.keypoint_colors = keypoint_colors
        self.min_keypoint_visibility = min_keypoint_visibility

    def set_image(self, image: np.ndarray) -> None:
        """Start a drawing on ``image`` (RGB). Setting the drawing :meth:`get_image` just
        returned keeps the canvas (its shapes over the same pixels): nothing to render."""
        assert image is not None
        if (self._rendered is not None and not self.fig_save.stale
                and np.array_equal(image, self._rendered)):
            return
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f'expected an RGB image of shape (H, W, 3), got {image.shape}')
        self._image = np.array(image, dtype=np.uint8, order='C')  # a copy, as mmengine's
        self._background = cv2.cvtColor(self._image, cv2.COLOR_RGB2RGBA)
        self.width, self.height = image.shape[1], image.shape[0]
        self._default_font_size = max(np.sqrt(self.height * self.width) // 90, 10)
        # as mmengine: 1e-2 against matplotlib's truncation of the canvas size
        self.fig_save.set_size_inches((self.width + 1e-2) / self.dpi,
                                      (self.height + 1e-2) / self.dpi)
        ax = self.ax_save
        for artist in [*ax.collections, *ax.patches, *ax.texts, *ax.lines, *ax.images]:
            artist.remove()
        ax.axis(False)
        ax.set_aspect('equal')  # and the limits imshow(extent=(0, w, h, 0)) would set
        ax.set_xlim(0, self.width)
        ax.set_ylim(self.height, 0)

    @master_only
    def get_image(self) -> np.ndarray:
        """The drawn image (RGB): the image's pixels with the shapes rendered over them."""
        assert self._image is not None, 'Please set image using `set_image`'
        if self._rendered is None or self.fig_save.stale:
            canvas = self.fig_save_canvas
            renderer = canvas.get_renderer()
            pixels = np.asarray(canvas.buffer_rgba())
            pixels[...] = self._background
            self.fig_save.draw(renderer)
            self._rendered = cv2.cvtColor(pixels, cv2.COLOR_RGBA2RGB)
        return self._rendered.copy()

    def _draw_instances(self, image: np.ndarray, instances: InstanceData,
                        classes: Optional[List[str]], palette: Optional[List[tuple]]
                        ) -> np.ndarray:
        """mmdet's boxes and scores, then the landmarks on the same canvas."""
        drawn = super()._draw_instances(image, instances, classes, palette)
        if 'keypoints' not in instances or len(instances) == 0:
            return drawn
        self.set_image(drawn)  # the canvas shows it already: drawn on, not re-rendered
        self._draw_keypoints(instances)
        return self.get_image()

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
