"""Weight conversion from the reference RetinaFace (state dicts and ONNX)."""
from .reference import (
                        UnsafeCheckpointError,
                        convert_reference_state_dict,
                        detect_reference_body,
                        load_reference_checkpoint,
                        load_state_dict_strict,
                        onnx_to_reference_state_dict,
                        reference_to_mmdet_key,
                        save_mmdet_checkpoint,
)

__all__ = [
    'UnsafeCheckpointError', 'convert_reference_state_dict',
    'detect_reference_body', 'load_reference_checkpoint', 'load_state_dict_strict',
    'onnx_to_reference_state_dict', 'reference_to_mmdet_key', 'save_mmdet_checkpoint'
]
