from .prior_overlaps import box_iou, gt_prior_overlaps
from .retinaface_prior_assigner import (
                                        PriorMatch,
                                        RetinaFacePriorAssigner,
                                        match_priors,
                                        matching_dtype,
)

__all__ = [
    'PriorMatch', 'RetinaFacePriorAssigner', 'box_iou', 'gt_prior_overlaps', 'match_priors',
    'matching_dtype'
]
