from .image_io import ImageReadError, exif_orientation, load_image, to_bgr_uint8
from .inference import (DEFAULT_CONFIG, DEFAULT_WEIGHTS, detect_faces, init_face_detector,
                        instances_to_dict)

__all__ = [
    'ImageReadError', 'exif_orientation', 'load_image', 'to_bgr_uint8', 'DEFAULT_CONFIG',
    'DEFAULT_WEIGHTS', 'detect_faces', 'init_face_detector', 'instances_to_dict'
]
