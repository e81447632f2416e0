"""Landmark quality of detected faces: NME and the left/right pair direction.

Both are computed on the predictions that the WIDER FACE protocol counts as
true positives against the data sample's gt (best-IoU gt >= ``iou_thr``, first
hit in descending score order, "+1" IoU), so a face contributes once, through
its highest-scoring detection.

* NME of a face: mean over its visible landmarks of the point error divided by
  ``sqrt(w * h)`` of the gt box.
* Pair direction of a left/right pair (eyes, mouth corners): the predicted
  left-to-right vector projected on the true one, divided by the true length
  squared and clipped to ``[-1, 1]``: 1 correct, 0 collapsed to a point, -1
  swapped. A broken flip swap trains pairs towards their midpoint and barely
  moves NME, but shows here (and not at all in AP).
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .widerface_protocol import classify_matches, match_images, xyxy_to_xywh


def default_landmark_pairs(num_keypoints: int,
                           flip_indices: Optional[Sequence[int]] = None
                           ) -> List[Tuple[int, int]]:
    """Left/right pairs ``(left, right)``: from ``flip_indices`` when given,
    else eyes and mouth corners of the 5-point layout."""
    if flip_indices is not None:
        flip = list(flip_indices)
        return [(i, j) for i, j in enumerate(flip) if i < j and flip[j] == i]
    return [(0, 1), (3, 4)] if num_keypoints == 5 else []


def match_faces(pred_bboxes: np.ndarray, scores: np.ndarray, gt_bboxes: np.ndarray,
                gt_keep: Optional[np.ndarray] = None,
                iou_thr: float = 0.5) -> Tuple[np.ndarray, np.ndarray]:
    """True-positive ``(pred_rows, gt_rows)`` of one image, boxes xyxy.

    ``gt_keep`` marks the gt that count (default all); detections of other gt
    are not returned.
    """
    pred_bboxes = np.asarray(pred_bboxes, dtype=np.float64).reshape(-1, 4)
    gt_bboxes = np.asarray(gt_bboxes, dtype=np.float64).reshape(-1, 4)
    preds = np.concatenate(
        [xyxy_to_xywh(pred_bboxes), np.asarray(scores, dtype=np.float64).reshape(-1, 1)], 1)
    matches = match_images([preds], [xyxy_to_xywh(gt_bboxes)], iou_thr)
    keep = np.ones(len(gt_bboxes), bool) if gt_keep is None else np.asarray(gt_keep, bool)
    true_positive, _ = classify_matches(matches.gt_index, keep)
    return matches.pred_index[true_positive], matches.gt_index[true_positive]


def landmark_nme(pred_kpts: np.ndarray, gt_kpts: np.ndarray, gt_visible: np.ndarray,
                 gt_bboxes: np.ndarray) -> np.ndarray:
    """Per-face NME of matched pairs, ``(F,)``; faces with no visible point or an
    empty gt box are dropped.

    Args:
        pred_kpts, gt_kpts: ``(F, K, 2)`` pixels, row ``f`` of both is one face.
        gt_visible: ``(F, K)``, > 0 where the gt point is annotated.
        gt_bboxes: ``(F, 4)`` gt boxes xyxy (the normaliser ``sqrt(w * h)``).
    """
    pred_kpts = np.asarray(pred_kpts, dtype=np.float64)
    gt_kpts = np.asarray(gt_kpts, dtype=np.float64)
    visible = np.asarray(gt_visible) > 0
    boxes = np.asarray(gt_bboxes, dtype=np.float64).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    n_vis = visible.sum(axis=1)
    valid = (n_vis > 0) & (area > 0)
    err = np.linalg.norm(pred_kpts - gt_kpts, axis=-1) * visible
    with np.errstate(invalid='ignore', divide='ignore'):
        nme = err.sum(axis=1) / np.maximum(n_vis, 1) / np.sqrt(np.where(area > 0, area, 1))
    return nme[valid]


def pair_direction(pred_kpts: np.ndarray, gt_kpts: np.ndarray, gt_visible: np.ndarray,
                   pairs: Sequence[Tuple[int, int]]) -> np.ndarray:
    """Pair-direction scores of every (face, pair) with both gt points visible
    and distinct, ``(n,)`` in ``[-1, 1]``."""
    pred_kpts = np.asarray(pred_kpts, dtype=np.float64)
    gt_kpts = np.asarray(gt_kpts, dtype=np.float64)
    visible = np.asarray(gt_visible) > 0
    if not pairs or len(gt_kpts) == 0:
        return np.zeros(0)
    left, right = np.asarray(pairs).T
    v_true = gt_kpts[:, right] - gt_kpts[:, left]  # (F, P, 2)
    v_pred = pred_kpts[:, right] - pred_kpts[:, left]
    norm2 = (v_true ** 2).sum(-1)
    valid = visible[:, left] & visible[:, right] & (norm2 > 0)
    score = (v_pred * v_true).sum(-1)[valid] / norm2[valid]
    return np.clip(score, -1.0, 1.0)
