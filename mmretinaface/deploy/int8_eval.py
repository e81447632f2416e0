"""Held-out real-face images and the FP32-vs-INT8 comparison of detections.

None of these images is in the default calibration set
(:mod:`.calibration`): the faces come from scikit-image's LFW subset (100
real faces, 25x25 grey crops) and from the three bundled face photos placed
at other scales and positions. Offline there is no real group photo, so
:func:`group_photo` builds a group-like one: rows of LFW faces on a photo
background.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .calibration import NUM_FACE_PHOTOS, bundled_photo_paths, photo_mosaic

Faces = Tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (N, 4), scores (N,), landmarks (N, K, 2)


def lfw_faces() -> List[np.ndarray]:
    """The 100 face crops of scikit-image's LFW subset (25x25 grey) as BGR uint8."""
    import os

    from ..utils.extras import require
    data = require('skimage.data', 'demo', 'the held-out LFW faces')
    faces = np.load(os.path.join(data.data_dir, 'lfw_subset.npy'))[:100]
    return [cv2.cvtColor(np.round(f * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR) for f in faces]


def group_photo(seed: int = 0, size: Tuple[int, int] = (1280, 720), rows: int = 3,
                per_row: int = 6, face_sides: Tuple[int, int] = (80, 120)) -> np.ndarray:
    """A group-like photo: ``rows x per_row`` LFW faces (different people), side by side
    in rows with some jitter, on a blurred photo background; BGR ``size`` (w, h)."""
    rng = np.random.default_rng(seed)
    width, height = size
    background = cv2.imread(bundled_photo_paths()[NUM_FACE_PHOTOS + 1], cv2.IMREAD_COLOR)
    canvas = cv2.GaussianBlur(cv2.resize(background, size), (0, 0), 6)
    faces = lfw_faces()
    people = rng.permutation(len(faces))[:rows * per_row]
    cell_w, cell_h = width // per_row, height // rows
    for k, person in enumerate(people):
        side = int(rng.integers(face_sides[0], face_sides[1] + 1))
        side = min(side, cell_w - 4, cell_h - 4)
        face = cv2.resize(faces[person], (side, side), interpolation=cv2.INTER_CUBIC)
        row, col = divmod(k, per_row)
        x = col * cell_w + int(rng.integers(0, cell_w - side + 1))
        y = row * cell_h + int(rng.integers(0, cell_h - side + 1))
        canvas[y:y + side, x:x + side] = face
    return canvas


def face_mosaics(num: int = 12, seed: int = 1) -> List[np.ndarray]:
    """Mosaics of real faces at several scales: the bundled face photos (whole, 24 to
    400 px) and LFW faces, on 320x240, 640x480 and 1280x720 photo canvases in turn."""
    rng = np.random.default_rng(seed)
    photos = [cv2.imread(path, cv2.IMREAD_COLOR) for path in bundled_photo_paths()]
    lfw = lfw_faces()
    sizes = ((320, 240), (640, 480), (1280, 720))
    out = []
    for k in range(num):
        tiles = photos[:NUM_FACE_PHOTOS] + [lfw[i] for i in rng.permutation(len(lfw))[:6]]
        rng.shuffle(tiles)
        out.append(photo_mosaic(tiles, rng, size=sizes[k % 3], tile_sides=(24, 400),
                                background=photos[NUM_FACE_PHOTOS + k % 7]))
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes ``(N, 4)`` x ``(M, 4)`` (continuous pixels, no +1)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-12)


def compare_faces(reference: Sequence[Faces], candidate: Sequence[Faces],
                  score_thr: float = 0.5,
                  candidate_thr: Optional[float] = None) -> Dict[str, float]:
    """How well ``candidate`` detections reproduce the ``reference`` faces (score >= thr).

    For each reference face, the candidate face (score >= ``candidate_thr``,
    default ``score_thr``: a lower one forgives faces near the threshold) of
    highest IoU: ``faces`` (reference count), ``found`` (IoU >= 0.5),
    ``min_iou``, ``mean_iou``, ``landmark_nme`` (mean point distance over
    ``sqrt(w * h)`` of the reference box, over found faces), ``max_score_diff``
    and ``extra`` (candidate faces >= ``score_thr`` overlapping no reference face).
    """
    candidate_thr = score_thr if candidate_thr is None else candidate_thr
    ious, nmes, score_diffs, extra = [], [], [], 0
    for (rb, rs, rk), (cb, cs, ck) in zip(reference, candidate):
        rmask, cmask = rs >= score_thr, cs >= candidate_thr
        rb, rs, rk, cb, cs, ck = rb[rmask], rs[rmask], rk[rmask], cb[cmask], cs[cmask], ck[cmask]
        iou = box_iou(rb, cb)
        extra += int(((iou.max(axis=0, initial=0) < 0.5) & (cs >= score_thr)).sum())
        for i in range(len(rb)):
            j = int(iou[i].argmax()) if len(cb) else -1
            ious.append(iou[i, j] if j >= 0 else 0.0)
            if j >= 0 and iou[i, j] >= 0.5:
                wh = rb[i, 2:] - rb[i, :2]
                nmes.append(np.linalg.norm(ck[j] - rk[i], axis=-1).mean() / np.sqrt(wh.prod()))
                score_diffs.append(abs(float(cs[j]) - float(rs[i])))
    ious = np.asarray(ious)
    return dict(faces=len(ious), found=int((ious >= 0.5).sum()),
                min_iou=float(ious.min()) if len(ious) else float('nan'),
                mean_iou=float(ious.mean()) if len(ious) else float('nan'),
                landmark_nme=float(np.mean(nmes)) if nmes else float('nan'),
                max_score_diff=float(max(score_diffs)) if score_diffs else float('nan'),
                extra=extra)

