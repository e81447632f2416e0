"""WIDER FACE evaluation: the official protocol, a registered metric, I/O and plots.

Importing this package registers ``WiderFaceMetric`` in ``mmdet.registry.METRICS``.
"""
from .landmark_metrics import default_landmark_pairs, landmark_nme, match_faces, pair_direction
from .plots import plot_pr_curves
from .widerface_io import (
                           load_widerface_predictions,
                           read_prediction_file,
                           write_widerface_predictions,
)
from .widerface_metric import WiderFaceMetric
from .widerface_protocol import (
                           WIDERFACE_SETTINGS,
                           PRCurve,
                           WiderFaceGT,
                           WiderFaceResult,
                           bbox_overlaps_plus1,
                           evaluate_images,
                           evaluate_widerface,
                           image_key,
                           load_widerface_gt,
                           normalize_scores,
                           voc_ap,
                           xyxy_to_xywh,
)

__all__ = [
    'WiderFaceMetric', 'WiderFaceGT', 'WiderFaceResult', 'PRCurve', 'WIDERFACE_SETTINGS',
    'load_widerface_gt', 'evaluate_widerface', 'evaluate_images', 'bbox_overlaps_plus1',
    'normalize_scores', 'voc_ap', 'xyxy_to_xywh', 'image_key', 'load_widerface_predictions',
    'read_prediction_file', 'write_widerface_predictions', 'plot_pr_curves',
    'default_landmark_pairs', 'landmark_nme', 'match_faces', 'pair_direction',
]
