"""Deployment: ONNX export, INT8 quantization, running exported models with onnxruntime.

Names load on first use: the onnxruntime helpers and the quantization need
neither torch nor mmdet (only the export does).
"""
import importlib

# name -> submodule that defines it
_LAZY = {
    'RetinaFaceExportWrapper': 'onnx_export',
    'export_onnx': 'onnx_export',
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


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f'{__name__}.{_LAZY[name]}'), name)
        globals()[name] = value
        return value
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
