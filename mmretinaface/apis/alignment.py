"""Aligned face crops: the similarity transform onto the ArcFace 5-point template."""
from typing import List

import cv2
import numpy as np

# The standard ArcFace / InsightFace template for 112x112 crops (left eye, right
# eye, nose, left mouth corner, right mouth corner; image-left first).
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
     [70.7299, 92.2041]], dtype=np.float64)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) src -> dst.

    Umeyama's closed form without reflection; returns a 2x3 matrix ``M`` with
    ``dst ~ M[:, :2] @ src + M[:, 2]``.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f'need matching (N>=2, 2) point sets, got {src.shape} and {dst.shape}')
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c ** 2).sum() / len(src)
    if src_var <= 0:
        raise ValueError('source points are all identical; cannot estimate a similarity')
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_faces(image: np.ndarray, keypoints: np.ndarray, size: int = 112,
                template: np.ndarray = ARCFACE_TEMPLATE_112) -> List[np.ndarray]:
    """One ``size x size`` crop per face from its 5 landmarks (``(N, 5, 2)`` pixels).

    The template is defined for 112 px and scaled for other sizes.
    """
    keypoints = np.asarray(keypoints, np.float64).reshape(-1, *template.shape)
    dst = template * (size / 112.0)
    return [
        cv2.warpAffine(image, estimate_similarity(points, dst), (size, size),
                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        for points in keypoints
    ]
