"""RetinaFace losses: batched MultiBox matching, hard-negative mining and loss."""
from .multibox import (
    MultiBoxLoss,
    PriorMatch,
    box_iou,
    hard_negative_mask,
    match_priors,
    multibox_loss,
    priors_to_xyxy,
)

__all__ = [
    'MultiBoxLoss', 'PriorMatch', 'box_iou', 'hard_negative_mask', 'match_priors',
    'multibox_loss', 'priors_to_xyxy'
]
