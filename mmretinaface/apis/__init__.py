from .alignment import ARCFACE_TEMPLATE_112, align_faces, estimate_similarity
from .image_io import ImageReadError, exif_orientation, load_image, to_bgr_uint8
from .inference import (
    DEFAULT_CONFIG,
    DEFAULT_MAX_SIZE,
    DEFAULT_WEIGHTS,
    build_face_detector,
    detect_faces,
    fit_max_size,
    init_face_detector,
    instances_to_dict,
    load_face_checkpoint,
    rescale_instances,
)

__all__ = [
    'ARCFACE_TEMPLATE_112', 'align_faces', 'estimate_similarity',
    'ImageReadError', 'exif_orientation', 'load_image', 'to_bgr_uint8', 'DEFAULT_CONFIG',
    'DEFAULT_MAX_SIZE', 'DEFAULT_WEIGHTS', 'detect_faces', 'fit_max_size', 'init_face_detector',
    'instances_to_dict', 'rescale_instances', 'FaceInferencer', 'build_face_detector',
    'load_face_checkpoint'
]


def __getattr__(name: str):
    # FaceInferencer pulls in mmdet.apis / mmengine.infer (seconds of imports): load it
    # on first use so that `import mmretinaface` (custom_imports in every config) stays fast
    if name == 'FaceInferencer':
        from .inferencer import FaceInferencer
        return FaceInferencer
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(set(globals()) | {'FaceInferencer'})
