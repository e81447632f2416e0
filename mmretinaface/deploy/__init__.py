from .onnx_export import RetinaFaceExportWrapper, export_onnx
from .onnx_runtime import numpy_nms, postprocess_decoded, preprocess_bgr

__all__ = [
    'RetinaFaceExportWrapper', 'export_onnx', 'numpy_nms', 'postprocess_decoded', 'preprocess_bgr'
]
