"""Training hooks, registered in mmdet's HOOKS."""
from .training_hooks import AverageLossAcrossRanksHook, BatchNormStatisticsCheckHook

__all__ = ['AverageLossAcrossRanksHook', 'BatchNormStatisticsCheckHook']
