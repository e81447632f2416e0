"""The benchmark cases, in report order (``--sections`` picks among their names).

To add a case: write a module here with a :class:`~.base.Case` subclass
(``name``, ``modes``, ``run``; ``targets``, ``findings`` and ``render`` as
needed, its measuring functions at module level) and add an instance below.
"""
from .base import Case, Context
from .cpu_speed import CpuSpeedCase
from .inference import InferenceCase, ResNet50Case
from .int8 import Int8Case
from .loss import LossCase
from .profile import ProfileCase
from .pyramid import PyramidCase
from .scaling import PriorsCase, ScalingCase
from .train_step import TrainStepCase
from .training import TrainingCase
from .video import VideoCase

CASES = (InferenceCase(), CpuSpeedCase(), ResNet50Case(), TrainingCase(), TrainStepCase(),
         LossCase(), ScalingCase(), PriorsCase(), VideoCase(), Int8Case(),
         PyramidCase(), ProfileCase())

__all__ = ['CASES', 'Case', 'Context']
