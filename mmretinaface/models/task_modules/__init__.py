from .coders import (
                     LandmarkCoder,
                     SSDBoxCoder,
                     decode_boxes,
                     decode_landmarks,
                     encode_boxes,
                     encode_landmarks,
)
from .prior_box import (
                     RetinaFacePriorGenerator,
                     level_prior_boxes,
                     prior_boxes,
                     reference_featmap_sizes,
)

__all__ = [
    'LandmarkCoder', 'SSDBoxCoder', 'decode_boxes', 'decode_landmarks', 'encode_boxes',
    'encode_landmarks', 'RetinaFacePriorGenerator', 'level_prior_boxes', 'prior_boxes',
    'reference_featmap_sizes'
]
