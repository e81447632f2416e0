"""The package's leaf: image reading, paths and the per-user cache, safe checkpoint loading,
CPU distributed set-up and small helpers. Imports nothing else of mmretinaface; names
load on first use (``import mmretinaface.utils`` imports neither torch nor mmdet)."""
from .lazy import lazy_attributes

# name -> submodule that defines it
_LAZY = {
    'init_cpu_distributed': 'distributed',
    'setup_cpu_distributed': 'distributed',
    'allow_runner_checkpoint_globals': 'safe_checkpoint',
    'runner_checkpoint_globals': 'safe_checkpoint',
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
