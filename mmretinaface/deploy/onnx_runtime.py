"""Running a ``--decode`` export with onnxruntime: preprocessing, numpy NMS, post-processing.

No torch / mmdet needed at run time: numpy, OpenCV (for reading images) and
onnxruntime. The model's reference test settings are the defaults (score 0.02,
top 5000 before NMS, IoU 0.4, keep 750); the demo threshold is 0.5.
(``FaceInferencer``'s ONNX Runtime backend is :mod:`.ort_backend`.)
"""
from typing import Optional, Sequence, Tuple

import numpy as np


def preprocess_bgr(images: Sequence[np.ndarray]) -> np.ndarray:
    """BGR uint8 ``H x W x 3`` images (one size) -> ``(B, 3, H, W)`` float32 input.

    The exported graph subtracts the mean itself: pixels stay 0..255 BGR.
    """
    shapes = {img.shape for img in images}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[2] != 3:
        raise ValueError(f'expected BGR H x W x 3 images of one size, got shapes {shapes}')
    batch = np.stack([np.asarray(img, np.float32) for img in images])
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def numpy_nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> np.ndarray:
    """Greedy NMS (mmcv semantics: xyxy, no +1, a box is dropped when IoU > ``iou_thr``).

    Returns kept indices in descending score order.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores), kind='stable')
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        xy1 = np.maximum(boxes[i, :2], boxes[rest, :2])
        xy2 = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(xy2 - xy1, 0, None), axis=1)
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, np.finfo(np.float64).eps)
        order = rest[iou <= iou_thr]
    return np.asarray(keep, dtype=np.int64)


def postprocess_decoded(boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray,
                        score_thr: float = 0.02, iou_thr: float = 0.4, nms_pre: int = 5000,
                        max_per_img: int = 750) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's decoded outputs (``(P, 4)``, ``(P,)``, ``(P, K, 2)``) -> detections.

    Threshold, keep the ``nms_pre`` best, NMS, keep ``max_per_img``: the
    model's ``test_cfg`` steps (defaults = the reference test settings).
    Returns ``(boxes (N, 4) xyxy, scores (N,), landmarks (N, K, 2))`` sorted by score.
    """
    keep = np.nonzero(scores > score_thr)[0]
    keep = keep[np.argsort(-scores[keep], kind='stable')][:nms_pre if nms_pre > 0 else None]
    boxes, scores, landmarks = boxes[keep], scores[keep], landmarks[keep]
    keep = numpy_nms(boxes, scores, iou_thr)[:max_per_img if max_per_img > 0 else None]
    return boxes[keep], scores[keep], landmarks[keep]


def ort_session(onnx_file: str, threads: Optional[int] = None):
    """An onnxruntime CPU session; ``threads`` sets ``intra_op_num_threads`` (default: ORT's)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_file), options, providers=['CPUExecutionProvider'])


class OnnxFaceDetector:
    """A ``--decode`` export (FP32 or INT8, same inputs and outputs) as a face detector.

    ``detector(bgr_image)`` returns ``(boxes (N, 4) xyxy, scores (N,),
    landmarks (N, K, 2))`` in pixels after the model's test settings
    (:func:`postprocess_decoded`; ``score_thr`` default 0.02 like the model).
    """

    def __init__(self, onnx_file: str, threads: Optional[int] = None, score_thr: float = 0.02,
                 iou_thr: float = 0.4) -> None:
        self.session = ort_session(onnx_file, threads)
        outputs = [out.name for out in self.session.get_outputs()]
        if outputs != ['boxes', 'scores', 'landmarks']:
            raise ValueError(f'{onnx_file}: outputs {outputs}, expected boxes, scores, landmarks '
                             '(export with tools/export_onnx.py --decode)')
        self.input_name = self.session.get_inputs()[0].name
        self.score_thr, self.iou_thr = score_thr, iou_thr

    def __call__(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes, scores, landmarks = (out[0] for out in self.session.run(
            None, {self.input_name: preprocess_bgr([image])}))
        return postprocess_decoded(boxes, scores, landmarks, self.score_thr, self.iou_thr)

