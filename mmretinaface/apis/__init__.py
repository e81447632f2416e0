from .alignment import ARCFACE_TEMPLATE_112, align_faces, estimate_similarity
from .image_io import ImageReadError, exif_orientation, load_image, to_bgr_uint8
from .inference import (DEFAULT_CONFIG, DEFAULT_WEIGHTS, detect_faces, init_face_detector,
                        instances_to_dict)

__all__ = [
    'ARCFACE_TEMPLATE_112', 'align_faces', 'estimate_similarity',
    'ImageReadError', 'exif_orientation', 'load_image', 'to_bgr_uint8', 'DEFAULT_CONFIG',
    'DEFAULT_WEIGHTS', 'detect_faces', 'init_face_detector', 'instances_to_dict'
]
