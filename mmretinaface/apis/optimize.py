"""Inference-only speed-ups of a built PyTorch detector, on public torch / mmcv APIs.

:func:`optimize_for_inference` folds every BatchNorm into the convolution
before it (mmcv's ``fuse_conv_bn``: one pass less per layer, the same outputs
to float rounding) and, on CPU, stores the weights channels-last (oneDNN's
preferred layout; activations follow it from the first convolution on). The
detector stays a normal mmdet detector: ``test_step``, ``predict`` and
``predict_by_feat`` are untouched, so :class:`FaceInferencer` and the tools use
it as they are.

The result is for inference only: its state dict lacks the BatchNorm entries
(save checkpoints from a model as loaded). On CPU the fastest path is not this
one but ONNX Runtime (``FaceInferencer(backend='onnxruntime')``, the CPU
default; docs/benchmarks.md).
"""
from typing import Optional

import torch
from mmcv.cnn import fuse_conv_bn
from torch import nn


def optimize_for_inference(model: nn.Module,
                           channels_last: Optional[bool] = None) -> nn.Module:
    """Fold BatchNorm into the convolutions of an eval-mode ``model``, in place.

    Args:
        model: the detector (eval mode, running statistics loaded).
        channels_last: store 4-D weights channels-last; ``None``: on CPU only.

    Returns ``model``. Calling it again is a no-op (nothing left to fold).
    """
    if model.training:
        raise RuntimeError('optimize_for_inference expects an eval-mode model (model.eval())')
    fuse_conv_bn(model)  # a BatchNorm not right after a convolution stays (still exact)
    if channels_last is None:
        param = next(model.parameters(), None)
        channels_last = param is not None and param.device.type == 'cpu'
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model
