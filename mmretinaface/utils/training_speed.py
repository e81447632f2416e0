"""Make a detector train faster on CPU: fused BatchNorm + activation, channels-last tensors."""
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from torch import nn


@dataclass
class TrainingOptimization:
    """What :func:`optimize_for_training` did."""

    fused_layers: int = 0
    channels_last: bool = False
    compiled: bool = False
    #: why nothing was changed (None: applied)
    skipped: Optional[str] = None
    #: BatchNorm layers left as they were (their type is not plain ``BatchNorm2d``)
    unfused: List[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.skipped:
            return f'training with stock BatchNorm, NCHW: {self.skipped}'
        kernels = 'compiled' if self.compiled else 'uncompiled (slow)'
        text = (f'{self.fused_layers} BatchNorm(+activation) layers fused ({kernels} kernels), '
                f'{"channels-last" if self.channels_last else "NCHW"} tensors')
        if self.unfused:
            text += (f'; {len(self.unfused)} BatchNorm layers of other types left as they are '
                     f'(e.g. {self.unfused[0]}), so the tensors stay NCHW')
        return text


def optimize_for_training(model: nn.Module, channels_last: bool = True,
                          compile: bool = True) -> TrainingOptimization:
    """Replace ``model``'s BatchNorm layers by fused ones and, if all were, go channels-last.

    In place, before or after the optimizer and DDP are built (parameters
    stay the same objects). :class:`~mmretinaface.models.layers.BatchNormAct2d`
    runs BatchNorm and the following ReLU / LeakyReLU as two compiled passes
    each way; channels-last then speeds the convolutions up (oneDNN). Stock
    channels-last BatchNorm is inaccurate on CPU (float32 accumulation), so
    channels-last is only used when every BatchNorm layer was replaced. Needs
    ``torch.compile`` to work here (a C++ compiler); otherwise the model is
    left as it is and the reason is returned.

    Measured (docs/benchmarks.md, train step): MobileNet0.25, 640 px, batch 8:
    0.78x the stock NCHW step with one thread, 0.71x with two; the first step
    compiles for about 40 s.
    """
    from mmretinaface.models.layers import (
        compiled_kernels_error,
        fuse_batchnorm_activation,
        unfused_batchnorm_layers,
    )
    result = TrainingOptimization(compiled=compile)
    if compile:
        error = compiled_kernels_error()
        if error is not None:
            result.skipped = f'torch.compile is not available here ({error})'
            return result
    result.fused_layers = fuse_batchnorm_activation(model, compiled=compile)
    result.unfused = unfused_batchnorm_layers(model)
    if channels_last and not result.unfused:
        model.to(memory_format=torch.channels_last)
        result.channels_last = True
    return result
