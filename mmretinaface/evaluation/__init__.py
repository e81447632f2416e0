"""WIDER FACE evaluation: the official protocol, a registered metric, I/O and plots.

The protocol, I/O, landmark metrics and plots need numpy and scipy only:
``import mmretinaface.evaluation`` imports neither torch nor mmdet (the
stand-alone ``tools/eval_widerface.py`` starts in a fraction of a second).
``WiderFaceMetric`` (mmengine / mmdet) loads on first use; configs register it
through ``custom_imports = dict(imports=['mmretinaface.register'])``.
"""
from .landmark_metrics import default_landmark_pairs, landmark_nme, match_faces, pair_direction
from .plots import plot_pr_curves
from .widerface_io import (
    load_widerface_predictions,
    read_prediction_file,
    write_widerface_predictions,
)
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
    restrict_gt,
    subset_message,
    voc_ap,
    xyxy_to_xywh,
)

__all__ = [
    'WiderFaceMetric', 'WiderFaceGT', 'WiderFaceResult', 'PRCurve', 'WIDERFACE_SETTINGS',
    'load_widerface_gt', 'evaluate_widerface', 'restrict_gt', 'subset_message',
    'evaluate_images', 'bbox_overlaps_plus1', 'normalize_scores', 'voc_ap', 'xyxy_to_xywh',
    'image_key', 'load_widerface_predictions', 'read_prediction_file',
    'write_widerface_predictions', 'plot_pr_curves',
    'default_landmark_pairs', 'landmark_nme', 'match_faces', 'pair_direction',
]


def __getattr__(name: str):
    if name == 'WiderFaceMetric':  # imports mmengine and mmdet: only when asked for
        from .widerface_metric import WiderFaceMetric
        return WiderFaceMetric
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(set(globals()) | {'WiderFaceMetric'})
