"""Face transforms (landmark aware); importing registers them into mmdet's TRANSFORMS."""
from .crop import PadToSquareIfCropFailed, RandomSquareCrop
from .flip import MirrorWithLandmarks
from .formatting import PackFaceInputs
from .limit_size import LimitSize
from .loading import LoadFaceAnnotations
from .resize import RandomInterpResize, ResizeWithLandmarks

__all__ = [
    'LoadFaceAnnotations', 'RandomSquareCrop', 'PadToSquareIfCropFailed',
    'MirrorWithLandmarks', 'RandomInterpResize', 'ResizeWithLandmarks', 'PackFaceInputs',
    'LimitSize',
]
