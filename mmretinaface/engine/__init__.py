"""Training-loop pieces (mmdet's ``engine`` layout): hooks."""
from .hooks import AverageLossAcrossRanksHook, BatchNormStatisticsCheckHook

__all__ = ['AverageLossAcrossRanksHook', 'BatchNormStatisticsCheckHook']
