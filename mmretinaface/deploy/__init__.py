"""Deployment: ONNX export, INT8 quantization, running exported models with onnxruntime.

Names load on first use: the onnxruntime helpers and the quantization need
neither torch nor mmdet (only the export does).
"""
from ..utils.lazy import lazy_attributes

# name -> submodule that defines it
_LAZY = {
    'RetinaFaceExportWrapper': 'onnx_export',
    'export_onnx': 'onnx_export',
    'OnnxRuntimeDetector': 'ort_backend',
    'cached_onnx_model': 'ort_backend',
    'numpy_nms': 'onnx_runtime',
    'postprocess_decoded': 'onnx_runtime',
    'preprocess_bgr': 'onnx_runtime',
    'CalibrationReader': 'calibration',
    'calibration_images': 'calibration',
    'DEFAULT_SCHEME': 'quantize',
    'Int8Scheme': 'quantize',
    'quantize_int8': 'quantize',
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
