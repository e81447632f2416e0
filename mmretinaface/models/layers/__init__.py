"""Building blocks shared by the models."""
from .batchnorm_act import (
    BatchNormAct2d,
    bn_act_backward,
    bn_act_forward,
    compiled_kernels_error,
    fuse_batchnorm_activation,
    unfuse_batchnorm_activation,
    unfused_batchnorm_layers,
)

__all__ = ['BatchNormAct2d', 'bn_act_backward', 'bn_act_forward', 'compiled_kernels_error',
           'fuse_batchnorm_activation', 'unfuse_batchnorm_activation',
           'unfused_batchnorm_layers']
