"""Datasets and transforms; importing registers them into mmdet's registries."""
from . import transforms  # noqa: F401
from .wider_face import WiderFaceDataset

__all__ = ['WiderFaceDataset']
