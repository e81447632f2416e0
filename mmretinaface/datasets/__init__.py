"""Datasets and transforms. ``mmretinaface.register`` imports them into mmdet's registries;
importing this package alone loads nothing heavy, so that the numpy-only label readers
(:mod:`.label_io`, used by the data tools) start fast."""
from ..utils.lazy import lazy_attributes

__all__ = ['WiderFaceDataset']

__getattr__, __dir__ = lazy_attributes(__name__, {'WiderFaceDataset': 'wider_face'}, globals())
