"""Model components; importing registers them into mmdet.registry.MODELS/TASK_UTILS."""
from . import backbones, dense_heads, detectors, losses, necks, task_modules  # noqa: F401
