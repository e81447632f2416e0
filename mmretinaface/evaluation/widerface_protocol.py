"""The official WIDER FACE evaluation protocol as vectorised numpy functions.

Semantics follow the official evaluation tools (the widely used python port
``widerface_evaluate/evaluation.py``), result for result:

* predictions are ``(N, 5)`` arrays ``x y w h score`` per image; scores are
  min-max normalised over *all* predictions of all images, with the official
  quirk that the range always includes ``[0, 1]`` (``min(1, min s)`` and
  ``max(0, max s)``);
* IoU uses the "+1" pixel convention (``x2 = x + w``, area ``(w + 1)(h + 1)``);
* per image, predictions in descending score order each take their best-IoU
  ground truth (first one on ties). With IoU >= ``iou_thr``: a gt outside the
  setting's keep list makes the prediction neither TP nor FP, the first hit of a
  kept gt is a TP, a later hit of the same gt is a FP (no fall-back to the
  second-best gt). Below ``iou_thr`` the prediction is a FP;
* images without gt boxes or without predictions add nothing but their kept
  face count;
* precision / recall are sampled at ``num_thresholds`` score thresholds
  ``1 - (t + 1) / T`` and AP is the VOC all-points envelope area.

The official per-image loops are replaced by one IoU matrix per image (computed
once, shared by every setting) and a single ``bincount`` over all predictions
per setting, so the 3226-image val set with hundreds of predictions per image
evaluates in seconds.
"""
import os.path as osp
import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

WIDERFACE_SETTINGS: Tuple[str, ...] = ('easy', 'medium', 'hard')
GT_FILE = 'wider_face_val.mat'
SETTING_FILE = 'wider_{}_val.mat'


# --------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------
@dataclass
class WiderFaceGT:
    """WIDER FACE ground truth in official order.

    Attributes:
        keys: ``'<event>/<image name without extension>'`` per image.
        boxes: per image ``(M, 4)`` float64 ``x y w h``.
        keep: per setting, per image the 0-based indices of the faces that
            count in that setting (the ``gt_list`` minus one).
    """

    keys: List[str]
    boxes: List[np.ndarray]
    keep: Dict[str, List[np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def settings(self) -> Tuple[str, ...]:
        return tuple(self.keep)

    def num_faces(self, setting: Optional[str] = None) -> int:
        """Faces counted by ``setting`` (all boxes when ``None``)."""
        if setting is None:
            return int(sum(len(b) for b in self.boxes))
        return int(sum(len(k) for k in self.keep[setting]))


def _cell_str(cell) -> str:
    """The string inside a loaded MATLAB char cell (``array(['name'])``)."""
    arr = np.asarray(cell).ravel()
    if arr.size == 0:
        return ''
    item = arr[0]
    if isinstance(item, np.ndarray):
        return _cell_str(item)
    return str(item)


def _cells(cell) -> List:
    """Elements of a loaded MATLAB cell array, flattened in MATLAB order."""
    return list(np.asarray(cell, dtype=object).ravel(order='F'))


def _event_images(mat: Mapping) -> Tuple[List[str], List[List[str]]]:
    events = [_cell_str(e) for e in _cells(mat['event_list'])]
    files = [[_cell_str(f) for f in _cells(fl)] for fl in _cells(mat['file_list'])]
    return events, files


def load_widerface_gt(gt_dir: str,
                      settings: Sequence[str] = WIDERFACE_SETTINGS) -> WiderFaceGT:
    """Load ``wider_face_val.mat`` and ``wider_<setting>_val.mat`` from ``gt_dir``.

    The boxes, events and file names come from ``wider_face_val.mat`` and the
    keep lists from the setting files, as in the official tools; the setting
    files' own event / file lists (when present) must agree with it.
    """
    from scipy.io import loadmat

    paths = [osp.join(gt_dir, GT_FILE)] + [
        osp.join(gt_dir, SETTING_FILE.format(s)) for s in settings
    ]
    missing = [p for p in paths if not osp.isfile(p)]
    if missing:
        raise FileNotFoundError(f'WIDER FACE ground truth files not found: {missing}')

    mat = loadmat(paths[0])
    events, files = _event_images(mat)
    bbx_cells = _cells(mat['face_bbx_list'])
    if not (len(events) == len(files) == len(bbx_cells)):
        raise ValueError(f'{paths[0]}: event_list, file_list and face_bbx_list differ in length')

    keys: List[str] = []
    boxes: List[np.ndarray] = []
    for event, names, bbx in zip(events, files, bbx_cells):
        event_boxes = _cells(bbx)
        if len(event_boxes) != len(names):
            raise ValueError(f'{paths[0]}: event {event} has {len(names)} files but '
                             f'{len(event_boxes)} box lists')
        for name, b in zip(names, event_boxes):
            keys.append(f'{event}/{name}')
            boxes.append(np.asarray(b, dtype=np.float64).reshape(-1, 4))

    keep: Dict[str, List[np.ndarray]] = {}
    for setting, path in zip(settings, paths[1:]):
        smat = loadmat(path)
        if 'event_list' in smat and 'file_list' in smat:
            if _event_images(smat) != (events, files):
                raise ValueError(f'{path}: event / file lists differ from {paths[0]}')
        lists = [k for gl in _cells(smat['gt_list']) for k in _cells(gl)]
        if len(lists) != len(keys):
            raise ValueError(f'{path}: gt_list has {len(lists)} images, expected {len(keys)}')
        setting_keep = []
        for key, b, k in zip(keys, boxes, lists):
            idx = np.asarray(k).astype(np.int64).ravel() - 1
            if idx.size and (idx.min() < 0 or idx.max() >= len(b)):
                raise ValueError(f'{path}: keep index out of range for {key} '
                                 f'({len(b)} faces)')
            setting_keep.append(idx)
        keep[setting] = setting_keep
    return WiderFaceGT(keys=keys, boxes=boxes, keep=keep)


# --------------------------------------------------------------------------
# Core protocol
# --------------------------------------------------------------------------
def check_predictions(pred: np.ndarray, name: str = 'prediction') -> np.ndarray:
    """Return ``pred`` as float64 ``(N, 5)``; reject NaN / inf with a ValueError."""
    arr = np.asarray(pred, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 5)
    if arr.ndim != 2 or arr.shape[1] != 5:
        raise ValueError(f'{name}: expected (N, 5) x y w h score, got shape {arr.shape}')
    if not np.isfinite(arr[:, 4]).all():
        raise ValueError(f'{name}: NaN or infinite scores')
    if not np.isfinite(arr[:, :4]).all():
        raise ValueError(f'{name}: NaN or infinite box coordinates')
    return arr


def score_range(scores: Sequence[np.ndarray]) -> Tuple[float, float]:
    """Official normalisation range: ``(min(1, min s), max(0, max s))``."""
    lo, hi = 1.0, 0.0
    for s in scores:
        if len(s):
            lo = min(lo, float(np.min(s)))
            hi = max(hi, float(np.max(s)))
    return lo, hi


def normalize_scores(scores: Sequence[np.ndarray]) -> List[np.ndarray]:
    """Min-max normalise scores over all images (official ``norm_score``).

    The official tool starts the running min / max at 1 / 0, so the range
    always covers ``[0, 1]``. When all scores are equal (zero range) the
    official tool divides by zero and no prediction passes any threshold; we
    map them to 1.0 instead (every prediction counts at every threshold).
    """
    lo, hi = score_range(scores)
    diff = hi - lo
    out = []
    for s in scores:
        s = np.asarray(s, dtype=np.float64)
        out.append((s - lo) / diff if diff > 0 else np.ones_like(s))
    return out


def thresholds(num_thresholds: int = 1000) -> np.ndarray:
    """The official score thresholds ``1 - (t + 1) / T``, descending."""
    return 1 - np.arange(1, num_thresholds + 1) / num_thresholds


def bbox_overlaps_plus1(pred_xywh: np.ndarray, gt_xywh: np.ndarray) -> np.ndarray:
    """IoU ``(N, M)`` of ``x y w h`` boxes with the official "+1" pixel convention.

    Same arithmetic (and so the same floats) as the official ``bbox_overlaps``:
    corners ``x2 = x + w``, extents ``x2 - x1 + 1``, 0 where the boxes do not
    overlap by a positive extent in both axes.
    """
    p = np.asarray(pred_xywh, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gt_xywh, dtype=np.float64).reshape(-1, 4)
    px1, py1 = p[:, 0], p[:, 1]
    px2, py2 = p[:, 2] + p[:, 0], p[:, 3] + p[:, 1]
    gx1, gy1 = g[:, 0], g[:, 1]
    gx2, gy2 = g[:, 2] + g[:, 0], g[:, 3] + g[:, 1]
    iw = np.minimum(px2[:, None], gx2[None]) - np.maximum(px1[:, None], gx1[None]) + 1
    ih = np.minimum(py2[:, None], gy2[None]) - np.maximum(py1[:, None], gy1[None]) + 1
    p_area = (px2 - px1 + 1) * (py2 - py1 + 1)
    g_area = (gx2 - gx1 + 1) * (gy2 - gy1 + 1)
    inter = iw * ih
    union = p_area[:, None] + g_area[None] - inter
    valid = (iw > 0) & (ih > 0)
    out = np.zeros(inter.shape, dtype=np.float64)
    np.divide(inter, union, out=out, where=valid)
    return out


@dataclass
class ImageMatches:
    """Best-gt match of every evaluated prediction, images concatenated.

    Predictions are grouped by image (in the given image order) and sorted by
    descending score inside each image (stable). Images without gt boxes or
    without predictions contribute no rows.

    Attributes:
        scores: ``(P,)`` scores as given (normalised by the caller).
        gt_index: ``(P,)`` global gt index (images' boxes concatenated) of the
            best-IoU gt when IoU >= ``iou_thr``, else -1.
        image_index: ``(P,)`` image of each row.
        pred_index: ``(P,)`` row of the prediction in its image's input array.
        num_gt: total number of gt boxes (length of a global keep mask).
        gt_offsets: ``(I + 1,)`` start of each image's boxes in the global index.
    """

    scores: np.ndarray
    gt_index: np.ndarray
    image_index: np.ndarray
    pred_index: np.ndarray
    num_gt: int
    gt_offsets: np.ndarray


def match_images(preds: Sequence[np.ndarray], gt_boxes: Sequence[np.ndarray],
                 iou_thr: float = 0.5) -> ImageMatches:
    """Match every image's predictions (``(N, 5)`` x y w h score) to its gt (``(M, 4)``).

    One vectorised IoU matrix per image; the result does not depend on any keep
    list, so it is computed once for all settings.
    """
    if len(preds) != len(gt_boxes):
        raise ValueError(f'{len(preds)} prediction arrays for {len(gt_boxes)} images')
    counts = np.array([len(g) for g in gt_boxes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    scores, gt_index, image_index, pred_index = [], [], [], []
    for i, (pred, gt) in enumerate(zip(preds, gt_boxes)):
        if len(pred) == 0 or len(gt) == 0:
            continue
        pred = np.asarray(pred, dtype=np.float64).reshape(-1, 5)
        order = np.argsort(-pred[:, 4], kind='stable')
        pred = pred[order]
        overlaps = bbox_overlaps_plus1(pred[:, :4], gt)
        best = overlaps.argmax(axis=1)
        best_iou = overlaps[np.arange(len(pred)), best]
        scores.append(pred[:, 4])
        gt_index.append(np.where(best_iou >= iou_thr, best + offsets[i], -1))
        image_index.append(np.full(len(pred), i, dtype=np.int64))
        pred_index.append(order)

    def cat(arrs, dtype):
        return np.concatenate(arrs).astype(dtype) if arrs else np.zeros(0, dtype)

    return ImageMatches(
        scores=cat(scores, np.float64),
        gt_index=cat(gt_index, np.int64),
        image_index=cat(image_index, np.int64),
        pred_index=cat(pred_index, np.int64),
        num_gt=int(offsets[-1]),
        gt_offsets=offsets)


def classify_matches(gt_index: np.ndarray,
                     keep_mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Official TP / proposal flags of matched rows (image-grouped, score-sorted).

    Returns ``(true_positive, proposal)`` bool arrays: a row is a proposal
    (counts in the precision denominator) unless it matched a gt outside the
    keep mask; it is a TP when it is the first row to hit a kept gt.
    """
    hit = gt_index >= 0
    hit_kept = np.zeros(len(gt_index), dtype=bool)
    hit_kept[hit] = keep_mask[gt_index[hit]]
    proposal = ~hit | hit_kept
    true_positive = np.zeros(len(gt_index), dtype=bool)
    rows = np.flatnonzero(hit_kept)
    _, first = np.unique(gt_index[rows], return_index=True)
    true_positive[rows[first]] = True
    return true_positive, proposal


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC AP: area under the all-points precision envelope (official ``voc_ap``).

    NaN precisions (thresholds with no proposal) propagate through the
    envelope exactly as in the official loop; they sit where recall is 0, so
    they never enter the sum.
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


@dataclass
class PRCurve:
    """Precision / recall at the official thresholds and the resulting AP.

    ``proposals`` and ``true_positives`` are the raw counts per threshold.
    """

    precision: np.ndarray
    recall: np.ndarray
    ap: float
    num_faces: int
    proposals: np.ndarray
    true_positives: np.ndarray


def pr_curve(matches: ImageMatches, keep_mask: np.ndarray, num_faces: int,
             num_thresholds: int = 1000) -> PRCurve:
    """PR curve and AP of one setting (official ``img_pr_info`` + ``dataset_pr_info``).

    ``matches.scores`` must already be normalised. A row counts at threshold
    ``t`` when its score >= ``1 - (t + 1) / T``; the per-image prefix sums of
    the official code equal plain sums over these rows because rows are sorted
    by score inside each image. ``num_faces == 0`` gives NaN AP (undefined).
    """
    keep_mask = np.asarray(keep_mask, dtype=bool)
    if keep_mask.shape != (matches.num_gt,):
        raise ValueError(f'keep mask of shape {keep_mask.shape}, expected ({matches.num_gt},)')
    true_positive, proposal = classify_matches(matches.gt_index, keep_mask)
    ascending = thresholds(num_thresholds)[::-1]
    num_passed = np.searchsorted(ascending, matches.scores, side='right')
    first_t = num_thresholds - num_passed  # == num_thresholds: passes none
    proposals = np.bincount(first_t, weights=proposal, minlength=num_thresholds + 1)
    tps = np.bincount(first_t, weights=true_positive, minlength=num_thresholds + 1)
    proposals = np.cumsum(proposals[:num_thresholds])
    tps = np.cumsum(tps[:num_thresholds])
    if num_faces == 0:
        nan = np.full(num_thresholds, np.nan)
        return PRCurve(nan, nan.copy(), float('nan'), 0, proposals, tps)
    with np.errstate(invalid='ignore', divide='ignore'):
        precision = tps / proposals
    recall = tps / num_faces
    return PRCurve(precision, recall, voc_ap(recall, precision), int(num_faces),
                   proposals, tps)


def evaluate_images(preds: Sequence[np.ndarray], gt_boxes: Sequence[np.ndarray],
                    keep: Mapping[str, Sequence[np.ndarray]], iou_thr: float = 0.5,
                    num_thresholds: int = 1000, normalize: bool = True) -> Dict[str, PRCurve]:
    """Protocol on aligned per-image lists; one PR curve per keep setting.

    Args:
        preds: per image ``(N, 5)`` x y w h score (raw scores).
        gt_boxes: per image ``(M, 4)`` x y w h.
        keep: setting name -> per image 0-based indices (or bool masks) of the
            faces that count; other faces are "don't care".
        normalize: min-max normalise scores over all images first (official).
    """
    preds = [check_predictions(p, f'image {i}') for i, p in enumerate(preds)]
    gt_boxes = [np.asarray(g, dtype=np.float64).reshape(-1, 4) for g in gt_boxes]
    if normalize:
        norm = normalize_scores([p[:, 4] for p in preds])
        preds = [np.concatenate([p[:, :4], s[:, None]], axis=1) for p, s in zip(preds, norm)]
    matches = match_images(preds, gt_boxes, iou_thr)
    curves = {}
    for setting, per_image in keep.items():
        if len(per_image) != len(gt_boxes):
            raise ValueError(f'setting {setting}: {len(per_image)} keep lists for '
                             f'{len(gt_boxes)} images')
        mask = np.zeros(matches.num_gt, dtype=bool)
        num_faces = 0
        for i, k in enumerate(per_image):
            k = np.asarray(k)
            if k.dtype == bool:
                if k.shape != (len(gt_boxes[i]),):
                    raise ValueError(f'setting {setting}: keep mask of image {i} has shape '
                                     f'{k.shape}, expected ({len(gt_boxes[i])},)')
                k = np.flatnonzero(k)
            k = k.astype(np.int64).ravel()
            num_faces += len(k)
            mask[matches.gt_offsets[i] + k] = True
        curves[setting] = pr_curve(matches, mask, num_faces, num_thresholds)
    return curves


@dataclass
class WiderFaceResult:
    """Per-setting PR curves plus the GT images that had no predictions."""

    curves: Dict[str, PRCurve]
    missing: List[str]

    @property
    def aps(self) -> Dict[str, float]:
        return {s: c.ap for s, c in self.curves.items()}


def _check_known(keys: Iterable[str], gt: WiderFaceGT) -> None:
    unknown = sorted(set(keys).difference(gt.keys))
    if unknown:
        raise ValueError(f'{len(unknown)} predicted images are not in the WIDER FACE ground '
                         f'truth, e.g. {unknown[:5]}; keys must be "<event>/<name>"')


def restrict_gt(gt: WiderFaceGT, keys: Iterable[str]) -> WiderFaceGT:
    """The ground truth of the images ``keys`` only (official order kept).

    Evaluating it is the official protocol restricted to those images: their
    faces and keep lists only, and (with their predictions only) the score
    normalisation and PR thresholds over their predictions. Used to score a
    part of val (e.g. a small data root) without the rest counting as missed.

    Raises:
        ValueError: a key that is not a ``gt`` image.
    """
    wanted = set(keys)
    _check_known(wanted, gt)
    rows = [i for i, k in enumerate(gt.keys) if k in wanted]
    return WiderFaceGT(keys=[gt.keys[i] for i in rows], boxes=[gt.boxes[i] for i in rows],
                       keep={s: [k[i] for i in rows] for s, k in gt.keep.items()})


def subset_message(num_images: int, gt: WiderFaceGT) -> str:
    """The one-line note logged when only part of the val images is evaluated."""
    return (f'evaluating {num_images} of the {len(gt)} val images in {GT_FILE}: '
            'the official protocol restricted to them')


def evaluate_widerface(predictions: Mapping[str, np.ndarray], gt: WiderFaceGT,
                       iou_thr: float = 0.5, num_thresholds: int = 1000,
                       warn_missing: bool = True, subset: bool = False) -> WiderFaceResult:
    """Full WIDER FACE protocol: AP per setting of ``gt``.

    Args:
        predictions: ``'<event>/<name>'`` -> ``(N, 5)`` x y w h score (raw).
        gt: from :func:`load_widerface_gt`.
        warn_missing: ``warnings.warn`` about GT images without predictions
            (they are evaluated as having no detections), or with ``subset``
            about the images left out.
        subset: evaluate only the images in ``predictions`` (see
            :func:`restrict_gt`); ``gt`` as is when they cover all of it.

    Raises:
        ValueError: a prediction key is not a GT image, or NaN scores.
    """
    _check_known(predictions, gt)
    if subset and len(predictions) < len(gt):
        if warn_missing:
            warnings.warn(subset_message(len(predictions), gt), stacklevel=2)
        gt = restrict_gt(gt, predictions)
    empty = np.zeros((0, 5))
    preds = []
    missing = []
    for key in gt.keys:
        pred = predictions.get(key)
        if pred is None:
            missing.append(key)
            pred = empty
        preds.append(check_predictions(pred, key))
    if missing and warn_missing:
        warnings.warn(f'{len(missing)} of {len(gt)} WIDER FACE images have no predictions and '
                      f'are treated as no detections (e.g. {missing[:3]})', stacklevel=2)
    curves = evaluate_images(preds, gt.boxes, gt.keep, iou_thr, num_thresholds)
    return WiderFaceResult(curves=curves, missing=missing)


def xyxy_to_xywh(bboxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` x1 y1 x2 y2 -> x y w h (float64, no +1: the protocol adds it)."""
    b = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def image_key(img_path: str) -> str:
    """``'<event>/<name>'`` from ``.../images/<event>/<name>.jpg`` (parent folder + stem)."""
    path = osp.normpath(str(img_path))
    event = osp.basename(osp.dirname(path))
    name = osp.splitext(osp.basename(path))[0]
    return f'{event}/{name}' if event else name
