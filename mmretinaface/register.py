"""Importing this module registers every mmretinaface component in mmdet's registries.

Configs name it: ``custom_imports = dict(imports=['mmretinaface.register'])``.
``import mmretinaface`` alone registers nothing: it stays cheap (no torch, no
mmdet), so that numpy-only parts such as :mod:`mmretinaface.evaluation` load fast.
"""
from . import engine, models, visualization  # noqa: F401
from .datasets import transforms, wider_face  # noqa: F401
from .evaluation import widerface_metric  # noqa: F401
