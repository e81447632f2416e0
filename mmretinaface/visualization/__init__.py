from .face_visualizer import KEYPOINT_COLORS, FaceLocalVisualizer, keypoint_colors

__all__ = ['KEYPOINT_COLORS', 'FaceLocalVisualizer', 'keypoint_colors']
