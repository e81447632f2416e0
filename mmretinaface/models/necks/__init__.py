from .retinaface_fpn import RetinaFaceFPN
from .retinaface_neck import RetinaFaceNeck
from .ssh import RetinaFaceSSH, SSHBlock

__all__ = ['RetinaFaceFPN', 'RetinaFaceNeck', 'RetinaFaceSSH', 'SSHBlock']
