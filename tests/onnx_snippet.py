"""The onnxruntime usage snippet of README.md / docs/inference.md, kept runnable.

test_export_onnx.py checks that the documentation shows exactly the
source of :func:`detect_faces_onnx` and that it gives ``detect_faces``' faces.
"""
import cv2
import numpy as np
import onnxruntime as ort


def detect_faces_onnx(onnx_file, image_file, score_thr=0.5, nms_thr=0.4):
    # onnx_file: exported by tools/export_onnx.py with --decode (boxes, scores, landmarks)
    session = ort.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    image = cv2.imread(image_file, cv2.IMREAD_COLOR)  # BGR uint8, H x W x 3
    blob = image.astype(np.float32).transpose(2, 0, 1)[None]  # 1 x 3 x H x W, 0..255
    boxes, scores, landmarks = (out[0] for out in session.run(None, {'image': blob}))
    keep = scores >= score_thr
    boxes, scores, landmarks = boxes[keep], scores[keep], landmarks[keep]
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    idx = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), score_thr, nms_thr)
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    return boxes[idx], scores[idx], landmarks[idx]  # xyxy, (N,), (N, 5, 2) pixels
