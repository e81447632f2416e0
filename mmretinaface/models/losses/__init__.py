"""RetinaFace losses: the MultiBox loss (hard-negative mined CE + Smooth-L1)."""
from .multibox_loss import MultiBoxLoss, hard_negative_mask, multibox_loss

__all__ = ['MultiBoxLoss', 'hard_negative_mask', 'multibox_loss']
