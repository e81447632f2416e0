"""WIDER FACE evaluation: protocol, GT layout, metric, landmark scores, tool.

The reference for the protocol is ``Official``: a plain loop port of the
official python evaluation (``image_eval``, ``img_pr_info``,
``dataset_pr_info``, ``voc_ap``, ``norm_score``, cell indexing of the .mat
files), written here independently of the vectorised implementation.
"""
import glob
import importlib.util
import os
import os.path as osp
import re
import subprocess
import sys
import uuid
import warnings

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from mmretinaface.evaluation import (
    WiderFaceGT,
    bbox_overlaps_plus1,
    evaluate_images,
    evaluate_widerface,
    image_key,
    landmark_nme,
    load_widerface_gt,
    load_widerface_predictions,
    normalize_scores,
    pair_direction,
    plot_pr_curves,
    read_prediction_file,
    restrict_gt,
    voc_ap,
    write_widerface_predictions,
)
from tests.conftest import require_shared

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SETTINGS = ('easy', 'medium', 'hard')


# ==========================================================================
# Loop port of the official evaluation (the independent reference)
# ==========================================================================
class Official:
    """Straight loops, official variable names and control flow."""

    @staticmethod
    def bbox_overlaps(boxes, query_boxes):
        n, k = boxes.shape[0], query_boxes.shape[0]
        overlaps = np.zeros((n, k), dtype=np.float64)
        for kk in range(k):
            box_area = ((query_boxes[kk, 2] - query_boxes[kk, 0] + 1) *
                        (query_boxes[kk, 3] - query_boxes[kk, 1] + 1))
            for nn in range(n):
                iw = (min(boxes[nn, 2], query_boxes[kk, 2]) -
                      max(boxes[nn, 0], query_boxes[kk, 0]) + 1)
                if iw > 0:
                    ih = (min(boxes[nn, 3], query_boxes[kk, 3]) -
                          max(boxes[nn, 1], query_boxes[kk, 1]) + 1)
                    if ih > 0:
                        ua = float((boxes[nn, 2] - boxes[nn, 0] + 1) *
                                   (boxes[nn, 3] - boxes[nn, 1] + 1) + box_area - iw * ih)
                        overlaps[nn, kk] = iw * ih / ua
        return overlaps

    @staticmethod
    def norm_score(pred):
        max_score, min_score = 0, 1
        for _, k in pred.items():
            for _, v in k.items():
                if len(v) == 0:
                    continue
                max_score = max(np.max(v[:, -1]), max_score)
                min_score = min(np.min(v[:, -1]), min_score)
        diff = max_score - min_score
        for _, k in pred.items():
            for _, v in k.items():
                if len(v) == 0:
                    continue
                v[:, -1] = (v[:, -1] - min_score) / diff

    @classmethod
    def image_eval(cls, pred, gt, ignore, iou_thresh):
        _pred, _gt = pred.copy(), gt.copy()
        pred_recall = np.zeros(_pred.shape[0])
        recall_list = np.zeros(_gt.shape[0])
        proposal_list = np.ones(_pred.shape[0])
        _pred[:, 2] = _pred[:, 2] + _pred[:, 0]
        _pred[:, 3] = _pred[:, 3] + _pred[:, 1]
        _gt[:, 2] = _gt[:, 2] + _gt[:, 0]
        _gt[:, 3] = _gt[:, 3] + _gt[:, 1]
        overlaps = cls.bbox_overlaps(_pred[:, :4], _gt)
        for h in range(_pred.shape[0]):
            gt_overlap = overlaps[h]
            max_overlap, max_idx = gt_overlap.max(), gt_overlap.argmax()
            if max_overlap >= iou_thresh:
                if ignore[max_idx] == 0:
                    recall_list[max_idx] = -1
                    proposal_list[h] = -1
                elif recall_list[max_idx] == 0:
                    recall_list[max_idx] = 1
            pred_recall[h] = len(np.where(recall_list == 1)[0])
        return pred_recall, proposal_list

    @staticmethod
    def img_pr_info(thresh_num, pred_info, proposal_list, pred_recall):
        pr_info = np.zeros((thresh_num, 2)).astype('float')
        for t in range(thresh_num):
            thresh = 1 - (t + 1) / thresh_num
            r_index = np.where(pred_info[:, 4] >= thresh)[0]
            if len(r_index) == 0:
                pr_info[t, 0] = 0
                pr_info[t, 1] = 0
            else:
                r_index = r_index[-1]
                p_index = np.where(proposal_list[:r_index + 1] == 1)[0]
                pr_info[t, 0] = len(p_index)
                pr_info[t, 1] = pred_recall[r_index]
        return pr_info

    @staticmethod
    def dataset_pr_info(thresh_num, pr_curve, count_face):
        _pr_curve = np.zeros((thresh_num, 2))
        with np.errstate(invalid='ignore', divide='ignore'):
            for i in range(thresh_num):
                _pr_curve[i, 0] = pr_curve[i, 1] / pr_curve[i, 0]
                _pr_curve[i, 1] = pr_curve[i, 1] / count_face
        return _pr_curve

    @staticmethod
    def voc_ap(rec, prec):
        mrec = np.concatenate(([0.], rec, [1.]))
        mpre = np.concatenate(([0.], prec, [0.]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])

    @classmethod
    def evaluation(cls, pred, gt_dir, iou_thresh=0.5, thresh_num=1000, events=None,
                   max_images=None, images=None):
        """``pred[event][name]`` -> (N, 5); returns ``({setting: ap}, {setting: (T, 2)})``.

        ``images``: a set of ``'event/name'``; the loops skip every other image
        (the official protocol restricted to them; ``pred`` may hold only these).
        """
        pred = {e: {n: np.array(v, dtype=np.float64) for n, v in d.items()}
                for e, d in pred.items()}
        cls.norm_score(pred)
        gt_mat = loadmat(osp.join(gt_dir, 'wider_face_val.mat'))
        facebox_list = gt_mat['face_bbx_list']
        event_list = gt_mat['event_list']
        file_list = gt_mat['file_list']
        aps, curves = {}, {}
        for setting in SETTINGS:
            gt_list = loadmat(osp.join(gt_dir, f'wider_{setting}_val.mat'))['gt_list']
            count_face = 0
            pr_curve = np.zeros((thresh_num, 2)).astype('float')
            for i in range(len(event_list) if events is None else events):
                event_name = str(event_list[i][0][0])
                img_list = file_list[i][0]
                pred_list = pred.get(event_name, {})
                sub_gt_list = gt_list[i][0]
                gt_bbx_list = facebox_list[i][0]
                for j in range(len(img_list) if max_images is None else max_images):
                    if images is not None and f'{event_name}/{img_list[j][0][0]}' not in images:
                        continue
                    pred_info = pred_list[str(img_list[j][0][0])]
                    gt_boxes = gt_bbx_list[j][0].astype('float')
                    keep_index = sub_gt_list[j][0]
                    count_face += len(keep_index)
                    if len(gt_boxes) == 0 or len(pred_info) == 0:
                        continue
                    ignore = np.zeros(gt_boxes.shape[0])
                    if len(keep_index) != 0:
                        ignore[keep_index - 1] = 1
                    pred_recall, proposal_list = cls.image_eval(pred_info, gt_boxes, ignore,
                                                                iou_thresh)
                    pr_curve += cls.img_pr_info(thresh_num, pred_info, proposal_list,
                                                pred_recall)
            pr_curve = cls.dataset_pr_info(thresh_num, pr_curve, count_face)
            aps[setting] = cls.voc_ap(pr_curve[:, 1], pr_curve[:, 0])
            curves[setting] = pr_curve
        return aps, curves


# ==========================================================================
# Synthetic data in the official .mat layout
# ==========================================================================
def _cell(items):
    """MATLAB cell column (n, 1) of arbitrary objects."""
    arr = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        arr[i, 0] = item
    return arr


def write_gt_mats(folder, events, keep):
    """Write the four official .mat files.

    Args:
        events: ``{event: {name: (M, 4) int boxes}}`` (ordered).
        keep: ``{setting: {'event/name': 1-based keep array}}``; the array is
            saved as given (dtype and shape (k, 1) / (0, 1) / (0, 0) kept).
    """
    os.makedirs(folder, exist_ok=True)
    ev_names = list(events)
    event_list = _cell([np.array([e]) for e in ev_names])
    file_list = _cell([_cell([np.array([n]) for n in events[e]]) for e in ev_names])
    bbx_list = _cell([_cell([np.asarray(b, dtype=np.int32).reshape(-1, 4)
                             if len(b) else np.zeros((0, 0), np.int32)
                             for b in events[e].values()]) for e in ev_names])
    base = dict(event_list=event_list, file_list=file_list, face_bbx_list=bbx_list)
    savemat(osp.join(folder, 'wider_face_val.mat'), base)
    for setting in SETTINGS:
        gt_list = _cell([_cell([keep[setting][f'{e}/{n}'] for n in events[e]])
                         for e in ev_names])
        savemat(osp.join(folder, f'wider_{setting}_val.mat'), dict(base, gt_list=gt_list))


def keep_array(indices, rng, empty_shape=(0, 1)):
    """1-based keep list as the official files store it (uint8, or uint16 if large)."""
    indices = np.asarray(sorted(indices), dtype=np.int64) + 1
    if len(indices) == 0:
        return np.zeros(empty_shape, dtype=np.uint8)
    dtype = np.uint16 if indices.max() > 255 or rng.random() < 0.3 else np.uint8
    return indices.astype(dtype).reshape(-1, 1)


def random_dataset(rng, n_events=3, max_images=5, max_faces=12, int_coords=True):
    """Random GT (with degenerate boxes and empty keep lists) and predictions."""
    events, keep = {}, {s: {} for s in SETTINGS}
    preds = {}
    for e in range(n_events):
        event = f'{e}--Event{e}'
        events[event] = {}
        for j in range(rng.integers(1, max_images + 1)):
            name = f'{e}_Event_{j}'
            key = f'{event}/{name}'
            m = int(rng.integers(0, max_faces + 1))
            xy = rng.integers(0, 300, size=(m, 2))
            wh = rng.integers(4, 80, size=(m, 2))
            degenerate = rng.random(m) < 0.1
            wh[degenerate] = rng.integers(-2, 1, size=(int(degenerate.sum()), 2))
            boxes = np.concatenate([xy, wh], 1)
            if m > 1 and rng.random() < 0.3:  # an exact duplicate gt: argmax tie
                boxes[1] = boxes[0]
            events[event][name] = boxes
            hard = [i for i in range(m) if rng.random() < 0.8]
            medium = [i for i in hard if rng.random() < 0.6]
            easy = [i for i in medium if rng.random() < 0.6]
            for s, idx in zip(SETTINGS, (easy, medium, hard)):
                keep[s][key] = keep_array(idx, rng, [(0, 1), (0, 0)][int(rng.integers(2))])
            # predictions: jittered copies, duplicates, false positives
            if rng.random() < 0.15:
                continue  # no prediction file at all
            src = boxes[rng.random(m) < 0.85] if m else np.zeros((0, 4))
            dup = src[rng.random(len(src)) < 0.3]
            jit = np.concatenate([src, dup]).astype(np.float64)
            jit = jit + rng.normal(0, 3, size=jit.shape)
            fp = np.concatenate([rng.uniform(0, 300, (rng.integers(0, 6), 2)),
                                 rng.uniform(2, 60, (0, 2))], 0)
            fp = np.concatenate([fp, rng.uniform(2, 60, (len(fp), 2))], 1)
            p = np.concatenate([jit, fp])
            if int_coords:
                p = np.round(p)
            score = np.round(rng.uniform(0.02, 1.0, len(p)), 2)  # ties happen
            preds[key] = np.concatenate([p, score[:, None]], 1)
    return events, keep, preds


def sort_by_score(pred):
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 5)
    return pred[np.argsort(-pred[:, 4], kind='stable')]


def official_pred_dict(gt: WiderFaceGT, preds, sort=True):
    """``{event: {name: (N, 5)}}`` with empty arrays for images without predictions."""
    out = {}
    for key in gt.keys:
        event, name = key.split('/')
        p = preds.get(key, np.zeros((0, 5)))
        out.setdefault(event, {})[name] = sort_by_score(p) if sort else np.asarray(p, float)
    return out


@pytest.fixture
def random_gt(tmp_path):
    rng = np.random.default_rng(0)
    events, keep, preds = random_dataset(rng)
    write_gt_mats(str(tmp_path / 'gt'), events, keep)
    return str(tmp_path / 'gt'), events, keep, preds


# ==========================================================================
# GT layout
# ==========================================================================
def test_load_gt_official_cell_layout(tmp_path):
    rng = np.random.default_rng(1)
    big = np.concatenate([rng.integers(0, 900, (300, 2)), np.full((300, 2), 10)], 1)
    events = {
        '0--Parade': {'0_Parade_a': np.array([[10, 10, 20, 20], [50, 50, 0, 0],
                                              [80, 80, -1, 5]]),
                      '0_Parade_b': np.zeros((0, 4))},
        '1--Handshaking': {'1_Hand_big': big},
    }
    keep = {
        'easy': {'0--Parade/0_Parade_a': np.array([[1]], np.uint8),
                 '0--Parade/0_Parade_b': np.zeros((0, 0), np.uint8),
                 '1--Handshaking/1_Hand_big': np.zeros((0, 1), np.uint8)},
        'medium': {'0--Parade/0_Parade_a': np.array([[1], [2]], np.uint16),
                   '0--Parade/0_Parade_b': np.zeros((0, 1), np.uint8),
                   '1--Handshaking/1_Hand_big': np.array([[3], [256], [300]], np.uint16)},
        'hard': {'0--Parade/0_Parade_a': np.array([[1], [2], [3]], np.uint8),
                 '0--Parade/0_Parade_b': np.zeros((0, 0), np.uint8),
                 '1--Handshaking/1_Hand_big': np.arange(1, 301, dtype=np.uint16)[:, None]},
    }
    write_gt_mats(str(tmp_path), events, keep)
    # the layout really is nested cells, with the dtypes and empty shapes we wrote
    raw = loadmat(str(tmp_path / 'wider_medium_val.mat'))
    assert raw['gt_list'][1][0][0][0].dtype == np.uint16
    assert raw['gt_list'][0][0][1][0].shape == (0, 1)
    assert loadmat(str(tmp_path / 'wider_easy_val.mat'))['gt_list'][0][0][1][0].shape == (0, 0)

    gt = load_widerface_gt(str(tmp_path))
    assert gt.keys == ['0--Parade/0_Parade_a', '0--Parade/0_Parade_b', '1--Handshaking/1_Hand_big']
    np.testing.assert_array_equal(gt.boxes[0], events['0--Parade']['0_Parade_a'])
    assert gt.boxes[1].shape == (0, 4)
    assert gt.boxes[0].dtype == np.float64
    np.testing.assert_array_equal(gt.keep['medium'][2], [2, 255, 299])
    assert gt.keep['easy'][2].size == 0 and gt.keep['hard'][1].size == 0
    assert gt.num_faces() == 303
    assert [gt.num_faces(s) for s in SETTINGS] == [1, 5, 303]


def test_load_gt_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='wider_face_val.mat'):
        load_widerface_gt(str(tmp_path))
    events = {'0--E': {'a': np.array([[0, 0, 10, 10]])}}
    keep = {s: {'0--E/a': np.array([[2]], np.uint8)} for s in SETTINGS}
    write_gt_mats(str(tmp_path), events, keep)
    with pytest.raises(ValueError, match='out of range'):
        load_widerface_gt(str(tmp_path))


# ==========================================================================
# Hand-checkable protocol cases
# ==========================================================================
def one_image(gt_boxes, preds, keep=None, **kw):
    gt_boxes = np.asarray(gt_boxes, float).reshape(-1, 4)
    keep = np.arange(len(gt_boxes)) if keep is None else np.asarray(keep)
    return evaluate_images([np.asarray(preds, float).reshape(-1, 5)], [gt_boxes],
                           {'all': [keep]}, **kw)['all']


def test_iou_plus1_convention():
    # 10x10 px box (x=0..9): w=9 in the +1 convention; shifted by 5 px
    iou = bbox_overlaps_plus1(np.array([[0, 0, 9, 9.]]), np.array([[5, 0, 9, 9.], [0, 0, 9, 9]]))
    np.testing.assert_allclose(iou, [[50 / 150, 1.0]])
    # a w=0 box is one pixel wide and matches itself; w=-1 has zero extent
    assert bbox_overlaps_plus1(np.array([[3, 3, 0, 0.]]), np.array([[3, 3, 0, 0.]]))[0, 0] == 1
    assert bbox_overlaps_plus1(np.array([[3, 3, -1, 5.]]), np.array([[3, 3, -1, 5.]]))[0, 0] == 0
    assert bbox_overlaps_plus1(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)
    # exactly 0.5 (5x10 px inside 10x10 px) is a match: IoU >= 0.5
    assert bbox_overlaps_plus1(np.array([[0, 0, 4, 9.]]), np.array([[0, 0, 9, 9.]]))[0, 0] == 0.5
    assert one_image([[0, 0, 9, 9]], [[0, 0, 4, 9, 1.0]]).true_positives[-1] == 1
    assert one_image([[0, 0, 9, 9]], [[0, 0, 3, 9, 1.0]]).true_positives[-1] == 0


def test_perfect_predictions_ap_one(tmp_path):
    events = {'0--E': {'a': np.array([[0, 0, 20, 20], [100, 0, 30, 30], [200, 0, 0, 0]]),
                       'b': np.array([[0, 100, 50, 40]])},
              '1--F': {'c': np.array([[10, 10, 15, 15], [60, 60, 40, 40]])}}
    rng = np.random.default_rng(0)
    keep = {'easy': {'0--E/a': keep_array([1], rng), '0--E/b': keep_array([0], rng),
                     '1--F/c': keep_array([], rng, (0, 0))},
            'medium': {'0--E/a': keep_array([0, 1], rng), '0--E/b': keep_array([0], rng),
                       '1--F/c': keep_array([1], rng)},
            'hard': {'0--E/a': keep_array([0, 1, 2], rng), '0--E/b': keep_array([0], rng),
                     '1--F/c': keep_array([0, 1], rng)}}
    write_gt_mats(str(tmp_path), events, keep)
    preds = {f'{e}/{n}': np.concatenate([b, rng.uniform(0.1, 1, (len(b), 1))], 1)
             for e, d in events.items() for n, b in d.items()}
    result = evaluate_widerface(preds, load_widerface_gt(str(tmp_path)))
    assert result.aps == {'easy': 1.0, 'medium': 1.0, 'hard': 1.0}
    assert result.missing == []


def test_duplicate_detection_is_false_positive():
    gt = [[0, 0, 20, 20], [100, 0, 20, 20]]
    preds = [[0, 0, 20, 20, 0.9], [1, 0, 20, 20, 0.8], [100, 0, 20, 20, 0.7]]
    # normalised scores 1, 0.5, 0: at threshold 0.5 one TP + one FP, at 0: 2 TP / 3
    curve = one_image(gt, preds)
    assert curve.proposals[-1] == 3 and curve.true_positives[-1] == 2
    assert curve.ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert one_image(gt, [preds[0], preds[2]]).ap == 1.0


def test_taken_gt_does_not_fall_back_to_second_best():
    gt = [[0, 0, 20, 20], [4, 0, 20, 20]]  # two overlapping faces
    # the second detection overlaps both at IoU >= 0.5, best with the taken one
    preds = [[0, 0, 20, 20, 0.9], [1, 0, 20, 20, 0.8]]
    assert bbox_overlaps_plus1(np.array(preds)[1:, :4], np.array(gt, float)).min() >= 0.5
    curve = one_image(gt, preds)
    assert curve.true_positives[-1] == 1 and curve.proposals[-1] == 2


def test_match_outside_keep_list_is_neither_tp_nor_fp():
    gt = [[0, 0, 20, 20], [100, 0, 20, 20]]
    preds = [[100, 0, 20, 20, 0.9],  # hits the face that does not count
             [0, 0, 20, 20, 0.5],  # TP
             [300, 300, 20, 20, 0.1]]  # FP
    curve = one_image(gt, preds, keep=[0])
    assert curve.num_faces == 1
    assert curve.proposals[-1] == 2 and curve.true_positives[-1] == 1
    assert curve.ap == 1.0  # had the ignored hit counted as FP, AP would be 0.5
    # scores 1 / 0.5 / 0 after normalisation: above 0.5 nothing counts (0/0 precision)
    assert np.isnan(curve.precision[0]) and curve.recall[0] == 0


def test_unmatched_predictions_in_image_without_kept_faces_are_fp():
    gt = [[0, 0, 20, 20]]
    curve = evaluate_images([np.array([[300, 300, 20, 20, 0.9], [0, 0, 20, 20, 0.8]]),
                             np.array([[0, 0, 20, 20, 1.0]])],
                            [np.array(gt, float), np.array(gt, float)],
                            {'all': [np.zeros(0, int), np.array([0])]})['all']
    # image 0 keeps no face: its FP counts, its hit on the ignored face does not
    assert curve.proposals[-1] == 2 and curve.true_positives[-1] == 1


def test_images_without_gt_boxes_add_no_false_positives():
    curve = evaluate_images([np.array([[0, 0, 20, 20, 1.0]]), np.array([[5, 5, 9, 9, 0.2]])],
                            [np.array([[0, 0, 20, 20.]]), np.zeros((0, 4))],
                            {'all': [np.array([0]), np.zeros(0, int)]})['all']
    assert curve.proposals[-1] == 1 and curve.ap == 1.0


def test_scores_normalised_with_official_range():
    # official running min / max start at 1 / 0: the range always covers [0, 1]
    out = normalize_scores([np.array([5.0, 3.0]), np.array([-2.0]), np.zeros(0)])
    np.testing.assert_allclose(np.concatenate(out), [1.0, 5 / 7, 0.0])
    out = normalize_scores([np.array([2.0, 10.0])])
    np.testing.assert_allclose(out[0], [1 / 9, 1.0])
    out = normalize_scores([np.array([0.3, 0.6])])
    np.testing.assert_allclose(out[0], [0.0, 1.0])
    # zero range (all equal): every prediction counts at every threshold
    np.testing.assert_array_equal(normalize_scores([np.array([0.5, 0.5])])[0], [1.0, 1.0])


def test_logit_scores_match_official():
    gt = [[0, 0, 20, 20], [100, 0, 20, 20], [200, 0, 20, 20]]
    preds = np.array([[0, 0, 20, 20, 7.0], [300, 0, 20, 20, 3.0], [100, 0, 20, 20, -1.0],
                      [201, 0, 20, 20, -4.0]])
    curve = one_image(gt, preds)
    official = official_single_image(gt, preds, keep=[0, 1, 2])
    assert curve.ap == official


def official_single_image(gt, preds, keep):
    pred = {'e': {'a': sort_by_score(preds)}}
    Official.norm_score(pred)
    p = pred['e']['a']
    ignore = np.zeros(len(gt))
    ignore[np.asarray(keep, int)] = 1
    recall, proposal = Official.image_eval(p, np.asarray(gt, float), ignore, 0.5)
    info = Official.img_pr_info(1000, p, proposal, recall)
    curve = Official.dataset_pr_info(1000, info, len(keep))
    return Official.voc_ap(curve[:, 1], curve[:, 0])


def test_voc_ap_envelope():
    # recall 0.5 at precision 0.5 then 1.0 at precision 1.0: envelope lifts the first step
    assert voc_ap(np.array([0.5, 1.0]), np.array([0.5, 1.0])) == 1.0
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == 0.75
    rec, prec = np.array([0.0, 0.0, 0.4, 0.8]), np.array([np.nan, np.nan, 1.0, 0.5])
    assert voc_ap(rec, prec) == Official.voc_ap(rec, prec) == pytest.approx(0.4 + 0.4 * 0.5)


def test_nan_scores_rejected():
    with pytest.raises(ValueError, match='NaN'):
        one_image([[0, 0, 10, 10]], [[0, 0, 10, 10, np.nan]])
    gt = WiderFaceGT(keys=['e/a'], boxes=[np.zeros((1, 4))], keep={'easy': [np.array([0])]})
    with pytest.raises(ValueError, match='e/a'):
        evaluate_widerface({'e/a': np.array([[0, 0, 1, 1, np.nan]])}, gt)


def test_unknown_and_missing_images(random_gt):
    gt_dir, _, _, preds = random_gt
    gt = load_widerface_gt(gt_dir)
    with pytest.raises(ValueError, match='not in the WIDER FACE ground truth'):
        evaluate_widerface(dict(preds, **{'9--Nope/x': np.zeros((0, 5))}), gt)
    missing = [k for k in gt.keys if k not in preds]
    assert missing, 'the random data set should leave some images without predictions'
    with pytest.warns(UserWarning, match=f'{len(missing)} of {len(gt)}'):
        result = evaluate_widerface(preds, gt)
    assert result.missing == missing
    # treated exactly like empty prediction arrays
    filled = dict(preds, **{k: np.zeros((0, 5)) for k in missing})
    assert evaluate_widerface(filled, gt).aps == result.aps


# ==========================================================================
# Equality with the loop port on random data
# ==========================================================================
@pytest.mark.parametrize('seed', range(6))
def test_matches_official_loop_port_on_random_data(tmp_path, seed):
    rng = np.random.default_rng(seed)
    events, keep, preds = random_dataset(rng, n_events=3, int_coords=seed % 2 == 0)
    if seed == 5:  # logits: exercises the official normalisation range quirk
        preds = {k: np.concatenate([v[:, :4], 10 * v[:, 4:] - 3], 1) for k, v in preds.items()}
    write_gt_mats(str(tmp_path), events, keep)
    gt = load_widerface_gt(str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ours = evaluate_widerface(preds, gt)
    ref_aps, ref_curves = Official.evaluation(official_pred_dict(gt, preds), str(tmp_path))
    for s in SETTINGS:
        assert ours.curves[s].ap == ref_aps[s], s  # bit-exact
        np.testing.assert_array_equal(ours.curves[s].precision, ref_curves[s][:, 0])
        np.testing.assert_array_equal(ours.curves[s].recall, ref_curves[s][:, 1])


def test_unsorted_input_equals_official_on_sorted_files(random_gt):
    gt_dir, _, _, preds = random_gt
    gt = load_widerface_gt(gt_dir)
    rng = np.random.default_rng(3)
    shuffled = {k: v[rng.permutation(len(v))] for k, v in preds.items()}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ours = evaluate_widerface(shuffled, gt).aps
    ref_aps, _ = Official.evaluation(official_pred_dict(gt, preds), gt_dir)
    assert ours == ref_aps


# ==========================================================================
# Real val GT (../shared/data/widerface_val_gt: skipped when absent, a failure in CI)
# ==========================================================================
@pytest.fixture(scope='module')
def real_gt_dir() -> str:
    return str(require_shared('data/widerface_val_gt/wider_face_val.mat').parent)


@pytest.fixture(scope='module')
def real(real_gt_dir):
    return load_widerface_gt(real_gt_dir)


def synthetic_predictions(gt: WiderFaceGT, rng, num_fp=20, miss=0.1):
    """GT boxes jittered (some missed, some duplicated) plus random false positives."""
    preds = {}
    for key, boxes in zip(gt.keys, gt.boxes):
        src = boxes[rng.random(len(boxes)) >= miss]
        src = np.concatenate([src, src[rng.random(len(src)) < 0.1]])
        scale = np.maximum(src[:, 2:], 1)
        jit = src + rng.normal(0, 0.08, src.shape) * np.concatenate([scale, scale], 1)
        fp_xy = rng.uniform(0, 1000, (num_fp, 2))
        fp = np.concatenate([fp_xy, rng.uniform(5, 200, (num_fp, 2))], 1)
        box = np.concatenate([jit, fp])
        score = np.concatenate([rng.uniform(0.3, 1.0, len(jit)), rng.uniform(0.0, 0.7, num_fp)])
        preds[key] = np.concatenate([box, score[:, None]], 1)
    return preds


def test_real_gt_layout(real):
    # figures from the GT folder's README, not from this implementation
    assert len(real) == 3226
    assert real.num_faces() == 39708
    assert [real.num_faces(s) for s in SETTINGS] == [7211, 13319, 31958]
    assert all(k.count('/') == 1 for k in real.keys)


def test_real_gt_matches_official_port_on_first_event(real, real_gt_dir):
    rng = np.random.default_rng(0)
    preds = synthetic_predictions(real, rng, num_fp=5)
    n = 20  # the first images of the first event: the loop port is slow
    sub = WiderFaceGT(keys=real.keys[:n], boxes=real.boxes[:n],
                      keep={s: real.keep[s][:n] for s in SETTINGS})
    assert len({k.split('/')[0] for k in sub.keys}) == 1
    sub_preds = {k: preds[k] for k in sub.keys}
    ours = evaluate_widerface(sub_preds, sub)
    ref_aps, _ = Official.evaluation(official_pred_dict(sub, sub_preds), real_gt_dir, events=1,
                                     max_images=n)
    assert ours.aps == ref_aps
    assert all(0.2 < ap < 1.0 for ap in ours.aps.values()), ours.aps


def test_real_gt_boxes_as_predictions_score_almost_one(real):
    rng = np.random.default_rng(0)
    preds = {k: np.concatenate([b, rng.uniform(0, 1, (len(b), 1))], 1)
             for k, b in zip(real.keys, real.boxes)}
    # not exactly 1: a few boxes are degenerate (w < 0) or duplicated
    assert all(0.999 < ap <= 1.0 for ap in evaluate_widerface(preds, real).aps.values())


def test_real_gt_full_protocol_with_many_false_positives(real):
    rng = np.random.default_rng(1)
    preds = synthetic_predictions(real, rng, num_fp=200)
    result = evaluate_widerface(preds, real)
    assert all(0.2 < ap < 1 for ap in result.aps.values()), result.aps


@pytest.mark.slow
def test_real_gt_full_protocol_matches_official_port(real, real_gt_dir):
    rng = np.random.default_rng(2)
    preds = synthetic_predictions(real, rng, num_fp=15)
    ours = evaluate_widerface(preds, real)
    ref_aps, _ = Official.evaluation(official_pred_dict(real, preds), real_gt_dir)
    assert ours.aps == ref_aps


# ==========================================================================
# Prediction files and the tool
# ==========================================================================
def load_tool():
    spec = importlib.util.spec_from_file_location(
        'eval_widerface_tool', osp.join(REPO, 'tools', 'eval_widerface.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_write_read_roundtrip(tmp_path):
    preds = {'0--E/a': np.array([[1.5, 2, 3, 4, 0.2], [5, 6, 7, 8, 0.9]]),
             '1--F/b': np.zeros((0, 5))}
    assert write_widerface_predictions(str(tmp_path), preds) == 2
    lines = (tmp_path / '0--E' / 'a.txt').read_text().splitlines()
    assert lines[0] == 'a' and lines[1] == '2'
    assert [float(v) for v in lines[2].split()] == [5, 6, 7, 8, 0.9]  # score order
    back = load_widerface_predictions(str(tmp_path))
    assert set(back) == set(preds)
    np.testing.assert_allclose(back['0--E/a'], preds['0--E/a'][[1, 0]])
    assert back['1--F/b'].shape == (0, 5)


def test_reader_accepts_official_variants(tmp_path):
    path = tmp_path / 'img_1.txt'
    # reference writer: trailing space; official WIDER style: path + extension in line 1
    path.write_text('0--Parade/img_1.jpg\n2\n1 2 3 4 0.5 \n5 6 7 8 0.25\n\n')
    name, boxes = read_prediction_file(str(path))
    assert name == 'img_1'
    np.testing.assert_array_equal(boxes, [[1, 2, 3, 4, 0.5], [5, 6, 7, 8, 0.25]])


@pytest.mark.parametrize('content, match', [
    ('other\n1\n1 2 3 4 0.5\n', "names image 'other'"),
    ('img_1\n2\n1 2 3 4 0.5\n1 2 3 x 0.5\n', 'line 4'),
    ('img_1\n1\n1 2 3 4\n', 'line 3'),
    ('img_1\n1\n1 2 3 4 nan\n', 'line 3: NaN'),
    ('img_1\nabc\n', 'line 2'),
    ('img_1\n3\n1 2 3 4 0.5\n', 'count line says 3'),
    ('img_1\n', 'count line'),
])
def test_reader_errors_name_file_and_line(tmp_path, content, match):
    path = tmp_path / 'img_1.txt'
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        read_prediction_file(str(path))
    assert str(path) in str(err.value)


def test_tool_on_written_folder(random_gt, tmp_path, capsys):
    gt_dir, _, _, preds = random_gt
    gt = load_widerface_gt(gt_dir)
    pred_dir = tmp_path / 'pred'
    write_widerface_predictions(str(pred_dir), preds, box_fmt='{:.4f}', score_fmt='{:.2f}')
    plot = tmp_path / 'pr.png'
    aps = load_tool().main(['--pred', str(pred_dir), '--gt', gt_dir, '--plot', str(plot)])
    # coordinates are multiples of 1e-4 or less precise, scores have 2 decimals: exact.
    # Some images have no file: the official protocol restricted to those with one
    assert len(preds) < len(gt)
    ref_aps, _ = Official.evaluation(official_pred_dict(gt, preds), gt_dir, images=set(preds))
    assert aps == ref_aps
    out = capsys.readouterr()
    assert 'Easy   Val AP' in out.out and 'Hard   Val AP' in out.out
    assert out.err.count(f'evaluating {len(preds)} of the {len(gt)} val images') == 1
    assert 'treated as no detections' not in out.err
    assert plot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    # --all-images: every val image, those without a file as no detections
    aps = load_tool().main(['--pred', str(pred_dir), '--gt', gt_dir, '--all-images'])
    ref_all, _ = Official.evaluation(official_pred_dict(gt, preds), gt_dir)
    assert aps == ref_all != ref_aps
    err = capsys.readouterr().err
    assert 'treated as no detections' in err and 'restricted' not in err


def test_tool_full_folder_is_the_official_protocol(random_gt, tmp_path, capsys):
    gt_dir, _, _, preds = random_gt
    gt = load_widerface_gt(gt_dir)
    full = dict({k: np.zeros((0, 5)) for k in gt.keys}, **preds)
    write_widerface_predictions(str(tmp_path), full)
    assert load_tool().main(['--pred', str(tmp_path), '--gt', gt_dir]) == \
        Official.evaluation(official_pred_dict(gt, preds), gt_dir)[0]
    assert 'warning' not in capsys.readouterr().err


def test_tool_missing_event_folder_with_all_images(random_gt, tmp_path, capsys):
    gt_dir, events, _, preds = random_gt
    gt = load_widerface_gt(gt_dir)
    first = next(iter(events))
    write_widerface_predictions(str(tmp_path), preds)
    for f in os.listdir(tmp_path / first):
        os.remove(tmp_path / first / f)
    os.rmdir(tmp_path / first)
    aps = load_tool().main(['--pred', str(tmp_path), '--gt', gt_dir, '--all-images'])
    kept = {k: v for k, v in preds.items() if not k.startswith(first + '/')}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert aps == evaluate_widerface(kept, gt).aps
    n_missing = sum(1 for k in gt.keys if k not in kept)
    assert f'{n_missing} of {len(gt)} images have no prediction file' in capsys.readouterr().err


def test_tool_bad_inputs(random_gt, tmp_path):
    gt_dir, _, _, preds = random_gt
    tool = load_tool()
    event, name = next(iter(preds)).split('/')

    def run(case, content):
        os.makedirs(tmp_path / case / event)
        path = tmp_path / case / event / f'{name}.txt'
        path.write_text(content)
        return ['--pred', str(tmp_path / case), '--gt', gt_dir], str(path)

    argv, path = run('malformed', f'{name}\n2\n1 2 3 4 0.5\n1 2 3 0.5\n')
    with pytest.raises(ValueError, match=re.escape(path) + ', line 4'):
        tool.main(argv)
    argv, path = run('mismatch', 'another_image\n0\n')
    with pytest.raises(ValueError, match=re.escape(path) + '.*another_image'):
        tool.main(argv)
    argv, path = run('nan', f'{name}\n1\n1 2 3 4 nan\n')
    with pytest.raises(ValueError, match='NaN'):
        tool.main(argv)
    write_widerface_predictions(str(tmp_path / 'unknown'), {'9--Nope/x': np.zeros((0, 5))})
    with pytest.raises(ValueError, match='9--Nope/x'):
        tool.main(['--pred', str(tmp_path / 'unknown'), '--gt', gt_dir])


@pytest.mark.slow  # a fresh interpreter importing torch + mmdet: ~7-14 s
def test_tool_command_line(random_gt, tmp_path):
    gt_dir, _, _, preds = random_gt
    write_widerface_predictions(str(tmp_path), preds)
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'eval_widerface.py'),
                           '--pred', str(tmp_path), '--gt', gt_dir],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                              [REPO, os.environ.get('PYTHONPATH', '')])))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('Val AP') == 3


def test_plot_pr_curves(tmp_path):
    curves = {'easy': (np.array([np.nan, 1.0, 0.8]), np.array([0.0, 0.5, 0.9]))}
    out = plot_pr_curves(curves, str(tmp_path / 'sub' / 'pr.png'))
    assert open(out, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'


# ==========================================================================
# Landmark scores
# ==========================================================================
def test_landmark_nme_and_pair_direction_by_hand():
    gt = np.array([[[10, 10], [30, 10], [20, 20], [12, 30], [28, 30.]]])
    box = np.array([[0, 0, 40, 10.]])  # sqrt(w*h) = 20
    vis = np.ones((1, 5))
    np.testing.assert_allclose(landmark_nme(gt + [3, 4], gt, vis, box), [5 / 20])
    vis_part = vis.copy()
    vis_part[0, 1:] = 0
    shifted = gt.copy()
    shifted[0, 0] += [6, 8]
    shifted[0, 1:] += 100  # invisible points do not count
    np.testing.assert_allclose(landmark_nme(shifted, gt, vis_part, box), [10 / 20])
    assert landmark_nme(gt, gt, np.zeros((1, 5)), box).size == 0
    pairs = [(0, 1), (3, 4)]
    np.testing.assert_allclose(pair_direction(gt, gt, vis, pairs), [1, 1])
    swapped = gt[:, [1, 0, 2, 4, 3]]
    np.testing.assert_allclose(pair_direction(swapped, gt, vis, pairs), [-1, -1])
    collapsed = gt.copy()
    collapsed[0, [0, 1]] = gt[0, [0, 1]].mean(0)
    collapsed[0, [3, 4]] = gt[0, [3, 4]].mean(0)
    np.testing.assert_allclose(pair_direction(collapsed, gt, vis, pairs), [0, 0], atol=1e-12)


# ==========================================================================
# Metric (mmdet data samples)
# ==========================================================================
def make_sample(img_path, bboxes, scores, gt=None, kpts=None, gt_kpts=None, as_dict=True,
                ignored=None):
    import torch
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmengine.structures import InstanceData

    sample = DetDataSample(metainfo=dict(img_path=img_path))
    pred = InstanceData()
    pred.bboxes = torch.as_tensor(np.asarray(bboxes, np.float32).reshape(-1, 4))
    pred.scores = torch.as_tensor(np.asarray(scores, np.float32))
    pred.labels = torch.zeros(len(pred.scores), dtype=torch.long)
    if kpts is not None:
        pred.keypoints = torch.as_tensor(np.asarray(kpts, np.float32))
    sample.pred_instances = pred
    if gt is not None:
        inst = InstanceData()
        inst.bboxes = HorizontalBoxes(torch.as_tensor(np.asarray(gt, np.float32).reshape(-1, 4)))
        inst.labels = torch.zeros(len(inst.bboxes), dtype=torch.long)
        if gt_kpts is not None:
            inst.keypoints = torch.as_tensor(np.asarray(gt_kpts, np.float32))
            inst.keypoints_visible = torch.ones(inst.keypoints.shape[:2])
        sample.gt_instances = inst
    if ignored is not None:
        ign = InstanceData()
        ign.bboxes = HorizontalBoxes(torch.as_tensor(np.asarray(ignored, np.float32)))
        sample.ignored_instances = ign
    return sample.to_dict() if as_dict else sample


def build_metric(**kwargs):
    from mmdet.registry import METRICS

    import mmretinaface.evaluation  # noqa: F401  (registers the metric)
    metric = METRICS.build(dict(type='WiderFaceMetric', **kwargs))
    metric.dataset_meta = dict(classes=('face',), flip_indices=[1, 0, 2, 4, 3])
    return metric


def xywh_to_xyxy(b):
    b = np.asarray(b, float)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:4]], 1)


def test_metric_with_gt_dir(random_gt, tmp_path):
    gt_dir, _, _, preds = random_gt
    gt = load_widerface_gt(gt_dir)
    keys = list(preds)
    samples = [make_sample(f'/data/WIDER_val/images/{k}.jpg', xywh_to_xyxy(preds[k][:, :4]),
                           preds[k][:, 4], as_dict=i % 2 == 0) for i, k in enumerate(keys)]
    plot = tmp_path / 'pr.png'
    metric = build_metric(gt_dir=gt_dir, out_dir=str(tmp_path / 'txt'), plot_file=str(plot))
    for i in range(0, len(samples), 3):
        metric.process({}, samples[i:i + 3])
    res = metric.evaluate(len(samples))
    assert set(res) == {'widerface/easy_AP', 'widerface/medium_AP', 'widerface/hard_AP'}
    # float32 boxes in the data samples: compare with the protocol on the same numbers
    p32 = {k: np.concatenate([xywh_to_xyxy(v[:, :4]).astype(np.float32).astype(float),
                              v[:, 4:].astype(np.float32)], 1) for k, v in preds.items()}
    p32 = {k: np.concatenate([v[:, :2], v[:, 2:4] - v[:, :2], v[:, 4:]], 1)
           for k, v in p32.items()}
    # the data set lacks some val images: the official protocol restricted to the others
    assert len(keys) < len(gt)
    ref_aps, _ = Official.evaluation(official_pred_dict(gt, p32), gt_dir, images=set(keys))
    for s in SETTINGS:
        assert res[f'widerface/{s}_AP'] == ref_aps[s]
    assert plot.read_bytes()[:4] == b'\x89PNG'
    assert set(load_widerface_predictions(str(tmp_path / 'txt'))) == set(keys)


def test_metric_errors(random_gt):
    gt_dir, _, _, preds = random_gt
    metric = build_metric(gt_dir=gt_dir)
    metric.process({}, [make_sample('/x/images/9--Nope/img.jpg', [[0, 0, 5, 5]], [0.5])])
    with pytest.raises(ValueError, match='9--Nope/img'):
        metric.evaluate(1)
    metric = build_metric(gt_dir=gt_dir)
    with pytest.raises(ValueError, match='NaN'):
        metric.process({}, [make_sample('/x/images/0--Event0/a.jpg', [[0, 0, 5, 5]],
                                        [float('nan')])])
    metric = build_metric()  # no gt anywhere
    metric.process({}, [make_sample('/x/images/0--Event0/a.jpg', [[0, 0, 5, 5]], [0.5])])
    with pytest.raises(ValueError, match='no ground truth'):
        metric.evaluate(1)


def test_metric_fallback_and_landmarks(tmp_path):
    rng = np.random.default_rng(4)
    offsets = np.array([[.3, .35], [.7, .35], [.5, .55], [.35, .75], [.65, .75]])
    samples, preds, gts, keeps, nme = [], [], [], [], []
    for i in range(6):
        n = int(rng.integers(1, 5))
        xy = np.stack([np.arange(n) * 100.0 + 10, np.full(n, 10.0)], 1)  # no overlaps
        wh = rng.uniform(20, 80, (n, 2))
        gt = np.concatenate([xy, xy + wh], 1)
        gt_k = xy[:, None] + wh[:, None] * offsets
        ignored = np.array([[500, 500, 540, 540.]])
        fp = np.array([[900, 900, 950, 950.]])
        boxes = np.concatenate([gt + rng.normal(0, 1, gt.shape), ignored + 1, fp])
        # the hit on the ignored face outranks every TP; the FP is last
        scores = np.concatenate([rng.uniform(0.5, 0.8, n), [0.9, 0.4]])
        kpts = np.concatenate([gt_k + [3.0, 4.0], np.zeros((2, 5, 2))])  # 5 px per point
        samples.append(make_sample(f'/d/images/0--E/img{i}.jpg', boxes, scores, gt=gt,
                                   kpts=kpts, gt_kpts=gt_k, ignored=ignored, as_dict=i > 2))
        preds.append(np.concatenate([xyxy_to_xywh_np(boxes), scores[:, None]], 1))
        gts.append(xyxy_to_xywh_np(np.concatenate([gt, ignored])))
        keeps.append(np.arange(n))
        nme.extend(5 / np.sqrt(np.prod(wh, 1)))
    metric = build_metric(gt_dir=str(tmp_path / 'nothing_here'), plot_file=str(tmp_path / 'p.png'))
    metric.process({}, samples)
    res = metric.evaluate(len(samples))
    assert set(res) == {'widerface/AP50', 'widerface/landmark_NME',
                        'widerface/landmark_pair_direction'}
    # had the ignored hits counted as FP, precision would start at 0.5
    assert res['widerface/AP50'] == 1.0
    ref = evaluate_images(preds, gts, {'all': keeps})['all']
    assert ref.ap == 1.0
    assert res['widerface/landmark_NME'] == pytest.approx(np.mean(nme), rel=1e-4)
    assert res['widerface/landmark_pair_direction'] == pytest.approx(1.0, abs=1e-5)
    assert (tmp_path / 'p.png').exists()


def xyxy_to_xywh_np(b):
    b = np.asarray(b, float)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1)


def test_metric_without_any_gt_only_writes_predictions(tmp_path):
    from mmengine.structures import InstanceData

    sample = make_sample('/d/images/0--E/a.jpg', [[0, 0, 10, 10]], [0.7], as_dict=False)
    sample.gt_instances = InstanceData()  # what packing gives in test mode without labels
    metric = build_metric(out_dir=str(tmp_path))
    metric.process({}, [sample, make_sample('/d/images/1--F/b.jpg', np.zeros((0, 4)), [])])
    assert metric.evaluate(2) == {}
    preds = load_widerface_predictions(str(tmp_path))
    np.testing.assert_allclose(preds['0--E/a'], [[0, 0, 10, 10, 0.7]], rtol=1e-6)
    assert preds['1--F/b'].shape == (0, 5)


def test_metric_swapped_landmarks_pair_direction():
    gt = np.array([[100, 100, 160, 180.]])
    gt_k = np.array([[[120, 130], [140, 130], [130, 150], [122, 165], [138, 165.]]])
    swapped = gt_k[:, [1, 0, 2, 4, 3]]
    metric = build_metric()
    metric.process({}, [make_sample('/d/images/0--E/a.jpg', gt, [0.9], gt=gt, kpts=swapped,
                                    gt_kpts=gt_k)])
    res = metric.evaluate(1)
    assert res['widerface/AP50'] == 1.0
    assert res['widerface/landmark_pair_direction'] == -1.0
    assert res['widerface/landmark_NME'] > 0


def test_metric_through_mmengine_evaluator(random_gt):
    from mmengine.evaluator import Evaluator

    import mmretinaface.evaluation  # noqa: F401
    gt_dir, _, _, preds = random_gt
    from mmdet.registry import METRICS
    evaluator = Evaluator(METRICS.build(dict(type='WiderFaceMetric', gt_dir=gt_dir)))
    samples = [make_sample(f'/d/images/{k}.jpg', xywh_to_xyxy(v[:, :4]), v[:, 4], as_dict=False)
               for k, v in preds.items()]
    evaluator.process(samples)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        res = evaluator.evaluate(len(samples))
    assert set(res) == {'widerface/easy_AP', 'widerface/medium_AP', 'widerface/hard_AP'}


def test_image_key():
    assert image_key('/data/WIDER_val/images/0--Parade/0_Parade_1.jpg') == '0--Parade/0_Parade_1'
    assert image_key('0--Parade/x.png') == '0--Parade/x'


# ==========================================================================
# Part of val: the official protocol restricted to the images present
# ==========================================================================
def test_subset_equals_ground_truth_of_those_images_by_hand(tmp_path):
    events = {'0--E': {'a': np.array([[0, 0, 20, 20], [100, 0, 30, 30]]),
                       'b': np.array([[0, 100, 50, 40]])},
              '1--F': {'c': np.array([[10, 10, 15, 15]])}}
    rng = np.random.default_rng(0)
    keep = {'easy': {'0--E/a': keep_array([0], rng), '0--E/b': keep_array([0], rng),
                     '1--F/c': keep_array([0], rng)},
            'medium': {'0--E/a': keep_array([0, 1], rng), '0--E/b': keep_array([0], rng),
                       '1--F/c': keep_array([0], rng)},
            'hard': {'0--E/a': keep_array([0, 1], rng), '0--E/b': keep_array([0], rng),
                     '1--F/c': keep_array([0], rng)}}
    write_gt_mats(str(tmp_path / 'all'), events, keep)
    two = {'0--E': events['0--E']}
    write_gt_mats(str(tmp_path / 'two'), two, {s: {k: v for k, v in d.items() if k != '1--F/c'}
                                                for s, d in keep.items()})
    # a: both faces (0.9, 0.6), b: its face (0.8) and a false positive (0.3); c is absent
    preds = {'0--E/a': np.array([[0, 0, 20, 20, 0.9], [100, 0, 30, 30, 0.6]]),
             '0--E/b': np.array([[0, 100, 50, 40, 0.8], [300, 300, 20, 20, 0.3]])}
    gt_all = load_widerface_gt(str(tmp_path / 'all'))
    with pytest.warns(UserWarning, match='evaluating 2 of the 3 val images'):
        sub = evaluate_widerface(preds, gt_all, subset=True)
    ref = evaluate_widerface(preds, load_widerface_gt(str(tmp_path / 'two')))
    assert sub.missing == ref.missing == []
    for s in SETTINGS:
        assert sub.curves[s].ap == ref.curves[s].ap, s
        np.testing.assert_array_equal(sub.curves[s].precision, ref.curves[s].precision)
        np.testing.assert_array_equal(sub.curves[s].recall, ref.curves[s].recall)
        np.testing.assert_array_equal(sub.curves[s].proposals, ref.curves[s].proposals)
    # by hand: every face of a and b is found before the false positive (the lowest
    # score), so AP 1 in every setting (easy: a's second face is "don't care")
    assert sub.aps == {'easy': 1.0, 'medium': 1.0, 'hard': 1.0}
    # all 3 images: c's face is missed, recall stops at 2/3 (easy) and 3/4 (medium, hard)
    with pytest.warns(UserWarning, match='1 of 3 WIDER FACE images have no predictions'):
        full = evaluate_widerface(preds, gt_all)
    assert full.aps == pytest.approx({'easy': 2 / 3, 'medium': 3 / 4, 'hard': 3 / 4})
    # restrict_gt itself: official order, the images' boxes and keep lists only
    part = restrict_gt(gt_all, ['1--F/c', '0--E/a'])
    assert part.keys == ['0--E/a', '1--F/c'] and part.num_faces() == 3
    assert [part.num_faces(s) for s in SETTINGS] == [2, 3, 3]
    with pytest.raises(ValueError, match='9--Nope/x'):
        restrict_gt(gt_all, ['9--Nope/x'])
    # all images present: exactly the full protocol, no warning, no restriction
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        every = dict(preds, **{'1--F/c': np.array([[10, 10, 15, 15, 0.7]])})
        assert evaluate_widerface(every, gt_all, subset=True).aps == \
            evaluate_widerface(every, gt_all).aps == {'easy': 1.0, 'medium': 1.0, 'hard': 1.0}


class _Records(list):
    """Collects the messages of an mmengine logger (mmengine loggers do not propagate)."""

    def __enter__(self):
        import logging

        from mmengine.logging import MMLogger
        self.logger = MMLogger.get_current_instance()
        self.handler = logging.Handler()
        self.handler.emit = lambda record: self.append(record.getMessage())
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)


def test_metric_subset_warns_once_with_the_counts(random_gt):
    gt_dir, _, _, preds = random_gt
    gt = load_widerface_gt(gt_dir)
    keys = list(preds)[:4]
    metric = build_metric(gt_dir=gt_dir)
    results = []
    with _Records() as records:
        for _ in range(2):  # e.g. two validation epochs
            metric.process({}, [make_sample(f'/d/images/{k}.jpg', xywh_to_xyxy(preds[k][:, :4]),
                                            preds[k][:, 4]) for k in keys])
            results.append(metric.evaluate(len(keys)))
    assert results[0] == results[1]
    note = f'evaluating 4 of the {len(gt)} val images in wider_face_val.mat: the official ' \
           'protocol restricted to them'
    assert sum(note in r for r in records) == 1, records
    assert not any('no predictions' in r for r in records)
    # every val image in the data set: no note
    metric = build_metric(gt_dir=gt_dir)
    with _Records() as records:
        metric.process({}, [make_sample(f'/d/images/{k}.jpg', np.zeros((0, 4)), [])
                            for k in gt.keys])
        metric.evaluate(len(gt))
    assert not any('evaluating' in r for r in records), records


# ---------------------------------------------------------------- real val sample
@pytest.fixture(scope='module')
def sample_root() -> str:
    return str(require_shared('data/wider_val_sample/val/images').parents[1])


@pytest.fixture(scope='module')
def sample_keys(sample_root):
    paths = sorted(glob.glob(osp.join(sample_root, 'val', 'images', '*', '*.jpg')))
    assert len(paths) == 8
    return [image_key(p) for p in paths]


def metric_on(keys, preds, gt_dir):
    """``WiderFaceMetric`` on data samples of ``keys`` with ``preds`` (x y w h score)."""
    metric = build_metric(gt_dir=gt_dir)
    metric.process({}, [make_sample(f'/data/val/images/{k}.jpg', xywh_to_xyxy(preds[k][:, :4]),
                                    preds[k][:, 4]) for k in keys])
    res = metric.evaluate(len(keys))
    return {s: res[f'widerface/{s}_AP'] for s in SETTINGS}


def test_real_sample_perfect_predictions(real, real_gt_dir, sample_keys):
    sub = restrict_gt(real, sample_keys)
    # the numbers of the data root's README, not of this implementation
    assert sub.num_faces() == 487 and [sub.num_faces(s) for s in SETTINGS] == [54, 115, 475]
    perfect = {k: np.concatenate([b, np.ones((len(b), 1))], 1) for k, b in zip(sub.keys, sub.boxes)}
    # no duplicate or degenerate boxes among these 487: the maximum is exactly 1
    assert metric_on(sample_keys, perfect, real_gt_dir) == {s: 1.0 for s in SETTINGS}
    # distinct scores (the official tool divides by zero when all are equal): the loop
    # port of the official tool on these 8 images agrees
    rng = np.random.default_rng(0)
    ranked = {k: np.concatenate([p[:, :4], rng.uniform(0, 1, (len(p), 1))], 1)
              for k, p in perfect.items()}
    ref_aps, _ = Official.evaluation(official_pred_dict(sub, ranked), real_gt_dir,
                                     images=set(sample_keys))
    assert metric_on(sample_keys, ranked, real_gt_dir) == ref_aps == {s: 1.0 for s in SETTINGS}
    # without the restriction the other 3218 images count as missed
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        unrestricted = evaluate_widerface(perfect, real).aps
    # (precision 1 up to recall = their share of the faces: 54 / 7211 easy faces, ...)
    assert unrestricted == pytest.approx({s: sub.num_faces(s) / real.num_faces(s)
                                          for s in SETTINGS})


def test_real_sample_wrong_predictions_score_low(real, real_gt_dir, sample_keys):
    sub = restrict_gt(real, sample_keys)
    rng = np.random.default_rng(0)
    # each image gets the next image's faces, or its own faces moved by half a box
    rolled = {k: np.concatenate([b, rng.uniform(0, 1, (len(b), 1))], 1)
              for k, b in zip(sub.keys, sub.boxes[1:] + sub.boxes[:1])}
    shifted = {k: np.concatenate([b + np.concatenate([b[:, 2:] / 2 + 2, 0 * b[:, 2:]], 1),
                                  rng.uniform(0, 1, (len(b), 1))], 1)
               for k, b in zip(sub.keys, sub.boxes)}
    for preds in (rolled, shifted):
        aps = metric_on(sample_keys, preds, real_gt_dir)
        assert all(ap < 0.01 for ap in aps.values()), aps


def jittered_predictions(gt: WiderFaceGT, rng):
    """Gt boxes jittered by ~10 %, some missed, plus false positives; random scores."""
    preds = {}
    for key, boxes in zip(gt.keys, gt.boxes):
        src = boxes[rng.random(len(boxes)) < 0.8]
        wh = np.maximum(src[:, 2:], 1)
        jit = np.round(src + rng.normal(0, 0.1, src.shape) * np.concatenate([wh, wh], 1))
        fp = np.concatenate([rng.uniform(0, 900, (15, 2)), rng.uniform(5, 100, (15, 2))], 1)
        box = np.concatenate([jit, np.round(fp)])
        score = np.concatenate([rng.uniform(0.2, 1, len(jit)), rng.uniform(0, 0.6, len(fp))])
        preds[key] = np.concatenate([box, np.round(score, 4)[:, None]], 1)
    return preds


def test_real_sample_matches_official_loop_port_restricted(real, real_gt_dir, sample_keys):
    sub = restrict_gt(real, sample_keys)
    preds = jittered_predictions(sub, np.random.default_rng(7))
    ref_aps, _ = Official.evaluation(official_pred_dict(sub, preds), real_gt_dir,
                                     images=set(sample_keys))
    assert all(0.3 < ap < 0.95 for ap in ref_aps.values()), ref_aps
    with pytest.warns(UserWarning, match='evaluating 8 of the 3226 val images'):
        assert evaluate_widerface(preds, real, subset=True).aps == ref_aps
    # through the metric (float32 data samples): the same numbers
    aps = metric_on(sample_keys, preds, real_gt_dir)
    assert aps == pytest.approx(ref_aps, abs=0.002)


@pytest.mark.slow  # the published MobileNet0.25 on the 8 photos at original size: ~1 min
def test_test_tool_on_real_sample_matches_published(converted_checkpoint, sample_root,
                                                    real_gt_dir, tmp_path, capsys):
    from tools.test import main
    u = uuid.uuid4().hex[:8]
    loader = 'test_dataloader'
    options = [f'{loader}.dataset.data_root={sample_root}/',
               f'{loader}.dataset.ann_file=val/wider_face_val_bbx_gt.txt',
               f'{loader}.dataset.data_prefix.img=val/images/', f'{loader}.num_workers=0',
               f'{loader}.persistent_workers=False', f'test_evaluator.gt_dir={real_gt_dir}',
               f'experiment_name=e{u}', f'visualizer.name=v{u}']
    assert main(['configs/retinaface_mobilenet0.25_widerface.py', converted_checkpoint,
                 '--work-dir', str(tmp_path), '--cfg-options', *options]) == 0
    printed = capsys.readouterr().out
    aps = {s: float(re.search(rf'^widerface/{s}_AP: ([\d.]+)$', printed, re.M).group(1))
           for s in SETTINGS}
    published = {'easy': 0.860, 'medium': 0.815, 'hard': 0.808}  # DESIGN.md, = reference ONNX
    assert aps == pytest.approx(published, abs=0.01), aps
    log = ''.join(open(f).read() for f in glob.glob(str(tmp_path / '*' / '*.log')))
    assert log.count('evaluating 8 of the 3226 val images in wider_face_val.mat') == 1


def test_box_only_labels_report_no_landmark_metrics(tmp_path):
    """Ground truth without visible landmarks (the official box files, loaded with
    keypoints_visible 0) gives AP and no NaN landmark metrics; one visible face brings
    them back."""
    gt = [[10, 10, 60, 70]]
    gt_k = np.array([[[25, 30], [45, 30], [35, 45], [28, 55], [42, 55]]], np.float32)

    import torch

    def evaluate(visible):
        sample = make_sample('/d/images/0--E/a.jpg', gt, [0.9], gt=gt, kpts=gt_k + 1,
                             gt_kpts=gt_k, as_dict=False)
        sample.gt_instances.keypoints_visible = torch.full((1, 5), float(visible))
        metric = build_metric(gt_dir=str(tmp_path / 'nothing_here'))
        metric.process({}, [sample.to_dict()])
        return metric.evaluate(1)

    assert set(evaluate(visible=False)) == {'widerface/AP50'}
    res = evaluate(visible=True)
    assert res['widerface/landmark_NME'] == pytest.approx(np.sqrt(2) / np.sqrt(50 * 60))
