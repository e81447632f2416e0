from .alignment import ARCFACE_TEMPLATE_112, align_faces, estimate_similarity
from .image_io import ImageReadError, exif_orientation, load_image, to_bgr_uint8
from .inference import (
                        DEFAULT_CONFIG,
                        DEFAULT_MAX_SIZE,
                        DEFAULT_WEIGHTS,
                        detect_faces,
                        fit_max_size,
                        init_face_detector,
                        instances_to_dict,
                        rescale_instances,
)
from .inferencer import FaceInferencer

__all__ = [
    'ARCFACE_TEMPLATE_112', 'align_faces', 'estimate_similarity',
    'ImageReadError', 'exif_orientation', 'load_image', 'to_bgr_uint8', 'DEFAULT_CONFIG',
    'DEFAULT_MAX_SIZE', 'DEFAULT_WEIGHTS', 'detect_faces', 'fit_max_size', 'init_face_detector',
    'instances_to_dict', 'rescale_instances', 'FaceInferencer'
]
