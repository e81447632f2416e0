"""``WiderFaceMetric``: WIDER FACE easy/medium/hard AP and landmark quality.

Usage in a config::

    val_evaluator = dict(type='WiderFaceMetric', gt_dir='data/widerface/ground_truth')

``process()`` keeps compact numpy arrays per image (boxes, scores, and when the
pipeline packs gt: gt boxes and the per-face landmark errors), so mmengine's
``collect_results`` can pickle them across ranks: the metric is
distributed-safe and ``compute_metrics()`` runs once on rank 0.
"""
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from ..utils.misc import to_numpy
from .landmark_metrics import default_landmark_pairs, landmark_nme, match_faces, pair_direction
from .plots import plot_pr_curves
from .widerface_io import write_widerface_predictions
from .widerface_protocol import (
    GT_FILE,
    SETTING_FILE,
    WIDERFACE_SETTINGS,
    WiderFaceGT,
    evaluate_images,
    evaluate_widerface,
    image_key,
    load_widerface_gt,
    subset_message,
    xyxy_to_xywh,
)


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """``obj[key]`` for dicts and mmengine data elements, ``default`` if absent."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default) if key in obj else default


def _to_numpy(value: Any) -> np.ndarray:
    """Tensor / mmdet boxes / array-like -> float32 numpy array."""
    return to_numpy(value, np.float32)


@METRICS.register_module()
class WiderFaceMetric(BaseMetric):
    """WIDER FACE val protocol (official semantics) plus landmark NME.

    Args:
        gt_dir: folder with ``wider_face_val.mat`` and
            ``wider_{easy,medium,hard}_val.mat``. When the data set holds only
            part of val, the images present are evaluated (the official
            protocol restricted to them; warned once). Without ``gt_dir`` (or when files
            are missing: a warning) the metric falls back to AP@0.5 on the data
            samples' gt boxes (key ``AP50``), all non-ignored faces counting.
        iou_thr: IoU for a match ("+1" pixel convention), 0.5 officially.
        num_thresholds: score thresholds of the PR curve, 1000 officially.
        out_dir: if set, predictions are also written there in the official
            layout (``<event>/<name>.txt``).
        plot_file: if set, a PNG of the PR curves is saved there.
        landmark_pairs: left/right landmark index pairs for the pair-direction
            score; default from ``dataset_meta['flip_indices']``, else eyes and
            mouth corners of the 5-point layout.
        collect_device, prefix, collect_dir: see ``mmengine.evaluator.BaseMetric``.

    Output keys (under the ``widerface/`` prefix): ``easy_AP``, ``medium_AP``,
    ``hard_AP`` (or ``AP50`` in the fallback), and when matched faces have
    visible gt landmarks: ``landmark_NME`` and ``landmark_pair_direction``. APs are in
    ``[0, 1]`` like the official tool prints them.
    """

    default_prefix: Optional[str] = 'widerface'

    def __init__(self,
                 gt_dir: Optional[str] = None,
                 iou_thr: float = 0.5,
                 num_thresholds: int = 1000,
                 out_dir: Optional[str] = None,
                 plot_file: Optional[str] = None,
                 landmark_pairs: Optional[Sequence[Sequence[int]]] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        self.gt_dir = gt_dir
        self.iou_thr = iou_thr
        self.num_thresholds = num_thresholds
        self.out_dir = out_dir
        self.plot_file = plot_file
        self.landmark_pairs = None if landmark_pairs is None else [
            (int(i), int(j)) for i, j in landmark_pairs]
        self._gt: Optional[WiderFaceGT] = None
        self._subset_warned = False

    # ------------------------------------------------------------------ process
    def _pairs(self, num_keypoints: int) -> List[Tuple[int, int]]:
        if self.landmark_pairs is not None:
            return self.landmark_pairs
        flip = (self.dataset_meta or {}).get('flip_indices')
        if flip is not None and len(flip) != num_keypoints:
            flip = None
        return default_landmark_pairs(num_keypoints, flip)

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Keep per image: key, boxes (xyxy), scores, gt boxes and landmark errors."""
        for sample in data_samples:
            img_path = _get(sample, 'img_path')
            if img_path is None:
                raise KeyError('WiderFaceMetric needs data_sample["img_path"] to identify images')
            pred = _get(sample, 'pred_instances')
            if pred is None:
                raise KeyError(f'{img_path}: data sample has no pred_instances')
            bboxes = _to_numpy(_get(pred, 'bboxes')).reshape(-1, 4)
            scores = _to_numpy(_get(pred, 'scores')).reshape(-1)
            if not np.isfinite(scores).all():
                raise ValueError(f'{img_path}: NaN or infinite prediction scores')
            if not np.isfinite(bboxes).all():
                raise ValueError(f'{img_path}: NaN or infinite predicted boxes')
            result: Dict[str, Any] = dict(key=image_key(img_path), bboxes=bboxes, scores=scores)
            self._add_gt(sample, pred, result)
            self.results.append(result)

    def _add_gt(self, sample: Any, pred: Any, result: Dict[str, Any]) -> None:
        """Gt boxes (ignored faces appended with keep False) and landmark errors."""
        gt = _get(sample, 'gt_instances')
        if gt is None or _get(gt, 'bboxes') is None:
            return
        gt_boxes = _to_numpy(_get(gt, 'bboxes')).reshape(-1, 4)
        ignored = _get(_get(sample, 'ignored_instances'), 'bboxes')
        ign_boxes = (np.zeros((0, 4), np.float32) if ignored is None
                     else _to_numpy(ignored).reshape(-1, 4))
        result['gt_bboxes'] = np.concatenate([gt_boxes, ign_boxes])
        result['gt_keep'] = np.concatenate(
            [np.ones(len(gt_boxes), bool), np.zeros(len(ign_boxes), bool)])

        gt_kpts, pred_kpts = _get(gt, 'keypoints'), _get(pred, 'keypoints')
        if gt_kpts is None or pred_kpts is None:
            return
        gt_kpts, pred_kpts = _to_numpy(gt_kpts), _to_numpy(pred_kpts)
        if not len(gt_boxes) or not len(result['bboxes']):
            # an image without faces (or without detections) matches nothing; the
            # point count cannot be inferred from an empty array, so none is reshaped
            result['nme'] = np.zeros(0, np.float32)
            result['pair_direction'] = np.zeros(0, np.float32)
            return
        gt_kpts = gt_kpts.reshape(len(gt_boxes), -1, 2)
        pred_kpts = pred_kpts.reshape(len(result['bboxes']), -1, 2)
        vis = _get(gt, 'keypoints_visible')
        vis = (np.ones(gt_kpts.shape[:2], np.float32) if vis is None
               else _to_numpy(vis).reshape(gt_kpts.shape[:2]))
        p_rows, g_rows = match_faces(result['bboxes'], result['scores'], gt_boxes,
                                     iou_thr=self.iou_thr)
        result['nme'] = landmark_nme(pred_kpts[p_rows], gt_kpts[g_rows], vis[g_rows],
                                     gt_boxes[g_rows]).astype(np.float32)
        result['pair_direction'] = pair_direction(
            pred_kpts[p_rows], gt_kpts[g_rows], vis[g_rows],
            self._pairs(gt_kpts.shape[1])).astype(np.float32)

    # ---------------------------------------------------------- compute_metrics
    def _load_gt(self, logger: MMLogger) -> Optional[WiderFaceGT]:
        if self.gt_dir is None:
            return None
        if self._gt is None:
            files = [GT_FILE] + [SETTING_FILE.format(s) for s in WIDERFACE_SETTINGS]
            missing = [f for f in files if not osp.isfile(osp.join(self.gt_dir, f))]
            if missing:
                logger.warning(f'WiderFaceMetric: {missing} not found in gt_dir={self.gt_dir!r}; '
                               'falling back to AP@0.5 on the data samples\' gt boxes')
                return None
            self._gt = load_widerface_gt(self.gt_dir)
        return self._gt

    def compute_metrics(self, results: List[Dict[str, Any]]) -> Dict[str, float]:
        logger = MMLogger.get_current_instance()
        per_image: Dict[str, Dict[str, Any]] = {}
        for r in results:
            per_image.setdefault(r['key'], r)
        if len(per_image) < len(results):
            logger.warning(f'WiderFaceMetric: {len(results) - len(per_image)} duplicate images '
                           '(same <event>/<name>) ignored; the first result of each is kept')
        preds = {k: np.concatenate([xyxy_to_xywh(r['bboxes']),
                                    r['scores'].astype(np.float64)[:, None]], axis=1)
                 for k, r in per_image.items()}

        if self.out_dir:
            n = write_widerface_predictions(self.out_dir, preds)
            logger.info(f'WiderFaceMetric: wrote {n} prediction files to {self.out_dir}')

        metrics: Dict[str, float] = {}
        curves = None
        gt = self._load_gt(logger)
        if gt is not None:
            res = evaluate_widerface(preds, gt, self.iou_thr, self.num_thresholds,
                                     warn_missing=False, subset=True)
            if len(preds) < len(gt) and not self._subset_warned:
                self._subset_warned = True
                logger.warning(f'WiderFaceMetric: {subset_message(len(preds), gt)}')
            curves = res.curves
            metrics.update({f'{s}_AP': c.ap for s, c in curves.items()})
        else:
            with_gt = [k for k, r in per_image.items() if 'gt_bboxes' in r]
            if with_gt:
                logger.info('WiderFaceMetric: no WIDER FACE .mat ground truth; computing AP@0.5 '
                            'on the data samples\' gt boxes (WIDER FACE matching rules, all '
                            'non-ignored faces count)')
                if len(with_gt) < len(per_image):
                    logger.warning(f'WiderFaceMetric: {len(per_image) - len(with_gt)} images '
                                   'have no gt boxes; their detections are not counted')
                keys = list(per_image)
                empty = np.zeros((0, 4))
                gt_boxes = [xyxy_to_xywh(per_image[k].get('gt_bboxes', empty)) for k in keys]
                keep = [per_image[k].get('gt_keep', np.zeros(0, bool)) for k in keys]
                curves = evaluate_images([preds[k] for k in keys], gt_boxes, {'all': keep},
                                         self.iou_thr, self.num_thresholds)
                metrics['AP50'] = curves['all'].ap
            elif self.out_dir:
                logger.warning('WiderFaceMetric: no ground truth (no gt_dir .mat files and no gt '
                               'in the data samples); predictions were only written')
            else:
                raise ValueError('WiderFaceMetric: no ground truth. Set gt_dir to the folder of '
                                 'the WIDER FACE .mat files, or load annotations in the test '
                                 'pipeline, or set out_dir to only write predictions.')

        nme = [r['nme'] for r in per_image.values() if 'nme' in r]
        nme_all = np.concatenate(nme) if nme else np.zeros(0)
        if len(nme_all):
            pairs = np.concatenate([r['pair_direction'] for r in per_image.values()
                                    if 'pair_direction' in r])
            metrics['landmark_NME'] = float(nme_all.mean())
            metrics['landmark_pair_direction'] = (float(pairs.mean()) if len(pairs)
                                                  else float('nan'))
            logger.info(f'WiderFaceMetric: landmark NME over {len(nme_all)} matched faces, '
                        f'pair direction over {len(pairs)} pairs')
        elif nme:  # e.g. the official box-only files: no NaN metric for hooks to compare
            logger.info('WiderFaceMetric: no matched face has visible gt landmarks (box-only '
                        'labels?): landmark_NME and landmark_pair_direction are not reported')

        if self.plot_file and curves:
            plot_pr_curves(curves, self.plot_file)
            logger.info(f'WiderFaceMetric: PR curves saved to {self.plot_file}')
        return metrics
