"""Model components; importing registers them into mmdet's MODELS / TASK_UTILS."""
from . import backbones, dense_heads, losses, necks, pyramid, task_modules, tta  # noqa: F401
