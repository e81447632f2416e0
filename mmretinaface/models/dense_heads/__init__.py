from .retinaface_head import RetinaFaceHead, flatten_level_outputs

__all__ = ['RetinaFaceHead', 'flatten_level_outputs']
