"""Inference API: :class:`FaceInferencer`, the detector builder, configs and weights by
name, image reading and face alignment.

Names load on first use, so ``import mmretinaface.apis`` costs nothing; the
inferencer and the builder import torch and mmdet when first touched.
"""
from ..utils.lazy import lazy_attributes

# name -> submodule that defines it
_LAZY = {
    'ARCFACE_TEMPLATE_112': 'alignment',
    'align_faces': 'alignment',
    'estimate_similarity': 'alignment',
    'ImageReadError': 'mmretinaface.utils.image_io',
    'bundled_photo': 'mmretinaface.utils.image_io',
    'exif_orientation': 'mmretinaface.utils.image_io',
    'load_image': 'mmretinaface.utils.image_io',
    'to_bgr_uint8': 'mmretinaface.utils.image_io',
    'check_weights_path': 'inference',
    'init_face_detector': 'inference',
    'load_face_checkpoint': 'inference',
    'FaceInferencer': 'inferencer',
    'detect_faces': 'inferencer',
    'instances_to_dict': 'inferencer',
    'DEFAULT_MODEL': 'model_zoo',
    'cache_dir': 'model_zoo',
    'get_config_path': 'model_zoo',
    'get_weights_path': 'model_zoo',
    'list_configs': 'model_zoo',
    'StopRequests': 'video',
    'VideoInputError': 'video',
    'VideoRun': 'video',
    'VideoSink': 'video',
    'VideoSource': 'video',
    'anonymize_faces': 'video',
    'frame_record': 'video',
    'grow_boxes': 'video',
    'process_video': 'video',
    'video_codec': 'video',
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
