"""Drawn faces with known landmarks, for tests and quick training runs.

Only numpy and OpenCV are needed. Coordinates follow the rest of the
package: continuous pixels, the centre of pixel ``(i, j)`` is
``(j + 0.5, i + 0.5)``; OpenCV draws in pixel-index coordinates, so every
drawing call is shifted by -0.5.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import List, Tuple, Union

import cv2
import numpy as np

from .label_io import format_retinaface_face

#: Canonical 5 points (left eye, right eye, nose, left/right mouth corner), in
#: units of the face ellipse's half height, x right and y down, about its centre.
CANONICAL_LANDMARKS = np.array(
    [[-0.34, -0.22], [0.34, -0.22], [0.0, 0.12], [-0.27, 0.45], [0.27, 0.45]], dtype=np.float64)
#: Face ellipse half width / half height.
FACE_ASPECT = 0.78
_SHIFT = 4  # OpenCV sub-pixel bits
_ONE = 1 << _SHIFT


@dataclass
class SyntheticSample:
    """A rendered image (BGR uint8) and its faces: xyxy boxes and (N, 5, 2) landmarks."""

    img: np.ndarray
    bboxes: np.ndarray
    keypoints: np.ndarray


def _pt(x: float, y: float) -> Tuple[int, int]:
    """Continuous pixel coordinate -> OpenCV fixed-point pixel index."""
    return int(round((x - 0.5) * _ONE)), int(round((y - 0.5) * _ONE))


def _axes(a: float, b: float) -> Tuple[int, int]:
    return max(int(round(a * _ONE)), 1), max(int(round(b * _ONE)), 1)


def _colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> Tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, size=3))


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Low-frequency colour noise, a gradient and pixel noise."""
    cells = int(rng.integers(3, 12))
    coarse = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.float32)
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    ramp = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :, None]
    img = 0.6 * img + 0.4 * float(rng.uniform(60, 200)) + ramp * float(rng.uniform(-40, 40))
    img += rng.normal(0, rng.uniform(3, 12), size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_distractor(img: np.ndarray, rng: np.random.Generator) -> None:
    """A non-face shape: rectangle, disc, triangle or thick line."""
    height, width = img.shape[:2]
    size = float(rng.uniform(10, max(12.0, 0.3 * min(height, width))))
    cx, cy = float(rng.uniform(0, width)), float(rng.uniform(0, height))
    colour = _colour(rng)
    kind = int(rng.integers(4))
    if kind == 0:
        cv2.rectangle(img, _pt(cx - size / 2, cy - size / 3), _pt(cx + size / 2, cy + size / 3),
                      colour, -1, cv2.LINE_AA, _SHIFT)
    elif kind == 1:
        cv2.circle(img, _pt(cx, cy), _axes(size / 2, 0)[0], colour, -1, cv2.LINE_AA, _SHIFT)
    elif kind == 2:
        angles = rng.uniform(0, 2 * math.pi, size=3)
        pts = np.array([_pt(cx + size / 2 * math.cos(t), cy + size / 2 * math.sin(t))
                        for t in angles], dtype=np.int32)
        cv2.fillPoly(img, [pts], colour, cv2.LINE_AA, _SHIFT)
    else:
        t = float(rng.uniform(0, math.pi))
        dx, dy = size * math.cos(t), size * math.sin(t)
        cv2.line(img, _pt(cx - dx, cy - dy), _pt(cx + dx, cy + dy), colour,
                 int(rng.integers(2, 6)), cv2.LINE_AA, _SHIFT)


def face_geometry(centre: Tuple[float, float], half_height: float, angle_deg: float,
                  jitter: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Box ``(4,)`` xyxy of the rotated face ellipse and its ``(5, 2)`` landmarks."""
    a, b = FACE_ASPECT * half_height, half_height
    t = math.radians(angle_deg)
    cos, sin = math.cos(t), math.sin(t)
    rot = np.array([[cos, -sin], [sin, cos]])
    pts = (CANONICAL_LANDMARKS + jitter) * b @ rot.T + np.asarray(centre)
    half_w = math.sqrt((a * cos) ** 2 + (b * sin) ** 2)
    half_h = math.sqrt((a * sin) ** 2 + (b * cos) ** 2)
    cx, cy = centre
    box = np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h])
    return box, pts


def _draw_face(img: np.ndarray, rng: np.random.Generator, centre: Tuple[float, float],
               half_height: float, angle_deg: float, pts: np.ndarray) -> None:
    b = half_height
    a = FACE_ASPECT * b
    skin = (int(rng.integers(60, 190)), int(rng.integers(110, 210)), int(rng.integers(150, 250)))
    if rng.random() < 0.6:  # hair: the upper half of a slightly larger ellipse
        cv2.ellipse(img, _pt(*centre), _axes(a * 1.08, b * 1.1), angle_deg, 180, 360,
                    _colour(rng, 0, 90), -1, cv2.LINE_AA, _SHIFT)
    cv2.ellipse(img, _pt(*centre), _axes(a, b), angle_deg, 0, 360, skin, -1, cv2.LINE_AA, _SHIFT)
    darker = tuple(int(c * 0.6) for c in skin)
    cv2.ellipse(img, _pt(*centre), _axes(a, b), angle_deg, 0, 360, darker, 1, cv2.LINE_AA, _SHIFT)
    iris = _colour(rng, 0, 120)
    for eye in pts[:2]:
        cv2.ellipse(img, _pt(*eye), _axes(0.13 * b, 0.07 * b), angle_deg, 0, 360,
                    (245, 245, 245), -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(img, _pt(*eye), _axes(max(0.05 * b, 0.8), 0)[0], iris, -1, cv2.LINE_AA,
                   _SHIFT)
    bridge = (pts[0] + pts[1]) / 2
    thick = max(1, int(round(0.04 * b)))
    cv2.line(img, _pt(*bridge), _pt(*pts[2]), darker, thick, cv2.LINE_AA, _SHIFT)
    cv2.circle(img, _pt(*pts[2]), _axes(max(0.06 * b, 0.8), 0)[0], darker, -1, cv2.LINE_AA,
               _SHIFT)
    lip = (int(rng.integers(20, 90)), int(rng.integers(20, 70)), int(rng.integers(120, 220)))
    down = np.array([-math.sin(math.radians(angle_deg)), math.cos(math.radians(angle_deg))])
    mid = (pts[3] + pts[4]) / 2 + down * 0.08 * b * rng.uniform(-1.0, 1.5)
    mouth = np.array([_pt(*pts[3]), _pt(*mid), _pt(*pts[4])], dtype=np.int32)
    cv2.polylines(img, [mouth], False, lip, max(1, int(round(0.06 * b))), cv2.LINE_AA, _SHIFT)


def _iou_any(box: np.ndarray, others: List[np.ndarray], margin: float) -> bool:
    """True when ``box`` grown by ``margin`` overlaps any of ``others``."""
    for o in others:
        if (min(box[2] + margin, o[2]) > max(box[0] - margin, o[0])
                and min(box[3] + margin, o[3]) > max(box[1] - margin, o[1])):
            return True
    return False


def render_synthetic_faces(rng: np.random.Generator,
                           size: Union[int, Tuple[int, int]] = 320,
                           num_faces: Union[int, Tuple[int, int]] = (1, 6),
                           face_size: Tuple[float, float] = (24.0, 160.0),
                           max_rotation: float = 15.0,
                           num_distractors: Tuple[int, int] = (1, 4)) -> SyntheticSample:
    """Render one image of drawn faces with known landmarks.

    Args:
        rng: numpy ``Generator`` (the only source of randomness).
        size: image side, or ``(width, height)``.
        num_faces: exact count or inclusive ``(low, high)`` range.
        face_size: face box height range in pixels (log-uniform, capped to
            90% of the short side).
        max_rotation: in-plane rotation range in degrees (+-).
        num_distractors: inclusive range of non-face shapes drawn under the faces.

    Faces do not overlap and lie fully inside the image, so every landmark
    is inside its box and the left eye is left of the right eye. Fewer faces
    than asked are returned when they do not fit.
    """
    width, height = (size, size) if isinstance(size, int) else size
    img = _background(rng, height, width)
    for _ in range(int(rng.integers(num_distractors[0], num_distractors[1] + 1))):
        _draw_distractor(img, rng)
    wanted = num_faces if isinstance(num_faces, int) else int(
        rng.integers(num_faces[0], num_faces[1] + 1))
    lo, hi = face_size
    hi = min(hi, 0.9 * min(width, height))
    lo = min(lo, hi)
    boxes: List[np.ndarray] = []
    landmarks: List[np.ndarray] = []
    for _ in range(wanted):
        for _attempt in range(50):
            box_h = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            angle = float(rng.uniform(-max_rotation, max_rotation))
            jitter = rng.uniform(-0.03, 0.03, size=(5, 2))
            jitter[:, 0] += rng.uniform(-0.06, 0.06)  # a hint of yaw: shift all points sideways
            t = math.radians(angle)  # half height so that the rotated box is box_h tall
            half_height = box_h / 2 / math.hypot(FACE_ASPECT * math.sin(t), math.cos(t))
            box0, _ = face_geometry((0.0, 0.0), half_height, angle, jitter)
            half_w, half_h = box0[2], box0[3]
            if 2 * half_w >= width - 2 or 2 * half_h >= height - 2:
                continue
            cx = float(rng.uniform(half_w + 1, width - half_w - 1))
            cy = float(rng.uniform(half_h + 1, height - half_h - 1))
            box, pts = face_geometry((cx, cy), half_height, angle, jitter)
            if _iou_any(box, boxes, margin=0.1 * box_h):
                continue
            _draw_face(img, rng, (cx, cy), half_height, angle, pts)
            boxes.append(box)
            landmarks.append(pts)
            break
    return SyntheticSample(
        img=img,
        bboxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        keypoints=np.asarray(landmarks, dtype=np.float32).reshape(-1, 5, 2))


#: Event folders of the synthetic set, chosen by the number of faces.
SYNTHETIC_EVENTS = ((1, '0--Single'), (3, '1--Few'), (10**9, '2--Many'))


def _event_for(num_faces: int) -> str:
    return next(name for limit, name in SYNTHETIC_EVENTS if num_faces <= limit)


def write_synthetic_widerface(out_dir: str, num_images: int, seed: int = 0, size: int = 320,
                              val_fraction: float = 0.2, jpeg_quality: int = 95,
                              **render_kwargs) -> dict:
    """Write a WIDER-style folder of drawn faces, deterministic for ``seed``.

    Layout (RetinaFace format, landmarks in both splits so NME can be
    evaluated; the val split also gets an official-style bbx_gt file)::

        out_dir/train/images/<event>/<name>.jpg   out_dir/train/label.txt
        out_dir/val/images/<event>/<name>.jpg     out_dir/val/label.txt
        out_dir/val/wider_face_val_bbx_gt.txt

    Image ``i`` is rendered from ``np.random.default_rng([seed, i])``; the
    last ``round(num_images * val_fraction)`` images form the val split.
    Returns a summary dict (image and face counts per split).
    """
    if num_images < 1:
        raise ValueError(f'num_images must be >= 1, got {num_images}')
    if not 0 <= val_fraction < 1:
        raise ValueError(f'val_fraction must be in [0, 1), got {val_fraction}')
    num_val = int(round(num_images * val_fraction))
    if num_images > 1 and val_fraction > 0:
        num_val = min(max(num_val, 1), num_images - 1)
    splits = {'train': range(num_images - num_val), 'val': range(num_images - num_val,
                                                                num_images)}
    summary = {'seed': seed, 'size': size}
    for split, indices in splits.items():
        split_dir = os.path.join(out_dir, split)
        os.makedirs(os.path.join(split_dir, 'images'), exist_ok=True)
        label_lines: List[str] = []
        gt_lines: List[str] = []
        num_faces = 0
        for i in indices:
            sample = render_synthetic_faces(np.random.default_rng([seed, i]), size=size,
                                            **render_kwargs)
            event = _event_for(len(sample.bboxes))
            rel = f'{event}/{event.split("--")[0]}_{event.split("--")[1]}_synthetic_{i:06d}.jpg'
            path = os.path.join(split_dir, 'images', rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not cv2.imwrite(path, sample.img, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]):
                raise OSError(f'could not write {path}')
            label_lines.append(f'# {rel}')
            gt_lines += [rel, str(len(sample.bboxes))]
            for box, kps in zip(sample.bboxes, sample.keypoints):
                xywh = (box[0], box[1], box[2] - box[0], box[3] - box[1])
                label_lines.append(format_retinaface_face(xywh, kps, score=1.0))
                gt_lines.append(format_retinaface_face(xywh) + ' 0 0 0 0 0 0')
            if not len(sample.bboxes):
                gt_lines.append('0 0 0 0 0 0 0 0 0 0')
            num_faces += len(sample.bboxes)
        with open(os.path.join(split_dir, 'label.txt'), 'w') as f:
            f.write('\n'.join(label_lines) + ('\n' if label_lines else ''))
        if split == 'val':
            with open(os.path.join(split_dir, 'wider_face_val_bbx_gt.txt'), 'w') as f:
                f.write('\n'.join(gt_lines) + ('\n' if gt_lines else ''))
        summary[split] = {'images': len(indices), 'faces': num_faces}
    return summary
