from .assigners import (
                        PriorMatch,
                        RetinaFacePriorAssigner,
                        box_iou,
                        gt_prior_overlaps,
                        match_priors,
                        matching_dtype,
)
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
    'LandmarkCoder', 'PriorMatch', 'RetinaFacePriorAssigner', 'RetinaFacePriorGenerator',
    'SSDBoxCoder', 'box_iou', 'decode_boxes', 'decode_landmarks', 'encode_boxes',
    'encode_landmarks', 'gt_prior_overlaps', 'level_prior_boxes', 'match_priors',
    'matching_dtype', 'prior_boxes', 'reference_featmap_sizes'
]
