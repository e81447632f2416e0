from .retinaface_fpn import RetinaFaceFPN
from .ssh import RetinaFaceSSH, SSHBlock

__all__ = ['RetinaFaceFPN', 'RetinaFaceSSH', 'SSHBlock']
