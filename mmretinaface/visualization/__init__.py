from .face_visualizer import (
    KEYPOINT_COLORS,
    FaceLocalVisualizer,
    build_face_visualizer,
    keypoint_colors,
)

__all__ = ['KEYPOINT_COLORS', 'FaceLocalVisualizer', 'build_face_visualizer', 'keypoint_colors']
