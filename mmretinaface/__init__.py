"""RetinaFace for MMDetection 3.x.

Importing this package registers every component (models, transforms,
datasets, metrics, visualizer) into mmdet's registries, so
configs only need ``custom_imports = dict(imports=['mmretinaface'])``.
"""
from . import apis, datasets, deploy, evaluation, models, utils, visualization  # noqa: F401

__version__ = '0.1.0'
