"""RetinaFace (face boxes + 5 landmarks) for MMDetection 3.x.

``import mmretinaface`` is cheap: it imports neither torch nor mmdet.
Configs register the components with
``custom_imports = dict(imports=['mmretinaface.register'])``; the inference
API (:class:`~mmretinaface.apis.FaceInferencer`, ...) loads on first use.
"""
from .utils.lazy import lazy_attributes

__version__ = '0.2.0'

# name -> submodule that defines it, imported on first attribute access
_LAZY = {
    'FaceInferencer': 'apis',
    'init_face_detector': 'apis',
    'get_config_path': 'apis',
    'get_weights_path': 'apis',
    'list_configs': 'apis',
}

__all__ = ['__version__', *_LAZY]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
