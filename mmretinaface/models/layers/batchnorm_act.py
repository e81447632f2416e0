"""Training-mode BatchNorm + LeakyReLU as one fused, accurate operation.

In training, ``BatchNorm2d`` followed by an activation is a chain of
memory-bound passes (statistics, normalisation, activation; and two more for
each backward) that take about half of a MobileNet0.25 train step on CPU.
:func:`bn_act_forward` and :func:`bn_act_backward` are the math of the pair
as pure tensor functions; :class:`BatchNormAct2d` runs them, compiled by
``torch.compile`` (inductor) into a statistics pass plus one fused pass each
way, under a custom autograd function that saves only the input.

They also fix an accuracy problem: PyTorch 2.13's CPU kernels for
channels-last BatchNorm accumulate in float32 (on a ``8x64x80x80`` batch the
input gradient is off by 37% of its largest value, NCHW by 1e-7), which
makes ``channels_last`` training unusable with stock BatchNorm. Here the
batch statistics are float64 sums (as stock NCHW BatchNorm on CPU), so
outputs and gradients match float64 as closely as stock NCHW does, in
either layout.
"""
import functools
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: The batch statistics accumulate in float64 (as stock NCHW BatchNorm on CPU does): with
#: channel means far above their spread, float32 sums (inductor's Welford too) put ~1e-3
#: errors into a model's gradients.
STATISTICS_DTYPE = torch.float64

#: ``negative_slope`` meaning "no activation" (LeakyReLU with slope 1 is the identity).
NO_ACTIVATION = 1.0


def _per_channel(v: Tensor) -> Tensor:
    return v[None, :, None, None]


def bn_act_forward(x: Tensor, weight: Tensor, bias: Tensor, eps: float,
                   negative_slope: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Train-mode BatchNorm (batch statistics) then LeakyReLU, on ``(N, C, H, W)``.

    Returns:
        ``(out, mean, var, invstd)``: the activation output, the batch mean and
        biased variance per channel, and ``1 / sqrt(var + eps)``.
    """
    # one pass of float64 sums around a per-channel sample of x (less cancellation)
    shift = x[:1, :, :1, :1]
    centred = x - shift
    count = x.numel() // x.shape[1]
    mean_centred = centred.sum(dim=(0, 2, 3), dtype=STATISTICS_DTYPE) / count
    var = ((centred * centred).sum(dim=(0, 2, 3), dtype=STATISTICS_DTYPE) / count
           - mean_centred * mean_centred).clamp_min(0).to(x.dtype)
    mean = (mean_centred + shift.reshape(-1)).to(x.dtype)
    invstd = torch.rsqrt(var + eps)
    scale = weight * invstd
    y = x * _per_channel(scale) + _per_channel(bias - mean * scale)
    if negative_slope != NO_ACTIVATION:
        y = F.leaky_relu(y, negative_slope)
    return y, mean, var, invstd


def bn_act_backward(grad_out: Tensor, x: Tensor, weight: Tensor, bias: Tensor, mean: Tensor,
                    invstd: Tensor, negative_slope: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(grad_x, grad_weight, grad_bias)`` of :func:`bn_act_forward`'s output.

    The pre-activation (whose sign selects the LeakyReLU slope) is recomputed
    from ``x``, so nothing but the input is kept between the passes.
    """
    xhat = (x - _per_channel(mean)) * _per_channel(invstd)
    grad_y = grad_out
    if negative_slope != NO_ACTIVATION:
        pre_act = xhat * _per_channel(weight) + _per_channel(bias)
        grad_y = torch.where(pre_act > 0, grad_out, grad_out * negative_slope)
    count = x.numel() // x.shape[1]
    grad_bias = grad_y.sum(dim=(0, 2, 3))
    grad_weight = (grad_y * xhat).sum(dim=(0, 2, 3))
    grad_x = _per_channel(weight * invstd) * (
        grad_y - _per_channel(grad_bias / count) - xhat * _per_channel(grad_weight / count))
    return grad_x, grad_weight, grad_bias


#: Distinct shapes get their own compiled kernels; a detector has a few dozen
#: (layer shapes x the last, smaller batch of an epoch).
RECOMPILE_LIMIT = 256


@functools.cache
def _compiled(fn):
    """``fn`` compiled once per process for static shapes (recompiled per new shape)."""
    torch.compiler.config.recompile_limit = max(torch.compiler.config.recompile_limit,
                                                RECOMPILE_LIMIT)
    return torch.compile(fn, dynamic=False)


class _BatchNormActFunction(torch.autograd.Function):
    """Autograd wrapper: fused forward, running-statistics update, fused backward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor,
                running_var: Tensor, momentum: float, eps: float, negative_slope: float,
                compiled: bool) -> Tensor:
        forward = _compiled(bn_act_forward) if compiled else bn_act_forward
        out, mean, var, invstd = forward(x, weight, bias, eps, negative_slope)
        count = x.numel() // x.shape[1]
        running_mean.lerp_(mean, momentum)
        running_var.lerp_(var * (count / max(count - 1, 1)), momentum)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.negative_slope, ctx.compiled = negative_slope, compiled
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        backward = _compiled(bn_act_backward) if ctx.compiled else bn_act_backward
        grad_out = grad_out.contiguous(memory_format=_memory_format(x))
        grad_x, grad_weight, grad_bias = backward(grad_out, x, weight, bias, mean, invstd,
                                                  ctx.negative_slope)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None


def _memory_format(x: Tensor) -> torch.memory_format:
    return (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous() else torch.contiguous_format)


def _share_state(source: nn.Module, target: nn.Module) -> None:
    for name, value in [*source.named_parameters(recurse=False),
                        *source.named_buffers(recurse=False)]:
        setattr(target, name, value)
    target.train(source.training)


class BatchNormAct2d(nn.BatchNorm2d):
    """``BatchNorm2d`` followed by ``LeakyReLU(negative_slope)`` (ReLU: 0, none: 1).

    Same parameters, buffers and state-dict keys as ``BatchNorm2d``, so
    checkpoints are interchangeable. In training (batch statistics, affine,
    tracked running statistics with a momentum) it runs the fused
    :func:`bn_act_forward` / :func:`bn_act_backward`, compiled unless
    ``compiled=False``; otherwise (eval mode, frozen statistics) stock
    BatchNorm and activation.
    """

    def __init__(self, num_features: int, negative_slope: float = NO_ACTIVATION,
                 compiled: bool = True, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.negative_slope = float(negative_slope)
        self.compiled = compiled

    @classmethod
    def from_batch_norm(cls, bn: nn.BatchNorm2d, negative_slope: float,
                        compiled: bool = True) -> 'BatchNormAct2d':
        """A ``BatchNormAct2d`` sharing ``bn``'s parameters and buffers (same objects)."""
        fused = cls(bn.num_features, negative_slope, compiled, eps=bn.eps, momentum=bn.momentum,
                    affine=bn.affine, track_running_stats=bn.track_running_stats,
                    device='meta')
        _share_state(bn, fused)
        return fused

    def to_batch_norm(self) -> nn.BatchNorm2d:
        """A stock ``BatchNorm2d`` sharing this layer's parameters and buffers (no activation)."""
        bn = nn.BatchNorm2d(self.num_features, eps=self.eps, momentum=self.momentum,
                            affine=self.affine, track_running_stats=self.track_running_stats,
                            device='meta')
        _share_state(self, bn)
        return bn

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, negative_slope={self.negative_slope}'

    def _fused_applies(self, x: Tensor) -> bool:
        return (self.training and self.affine and self.track_running_stats
                and self.momentum is not None and x.dim() == 4 and x.is_floating_point())

    def forward(self, x: Tensor) -> Tensor:
        if not self._fused_applies(x):
            y = super().forward(x)
            return y if self.negative_slope == NO_ACTIVATION else F.leaky_relu(
                y, self.negative_slope)
        self.num_batches_tracked.add_(1)
        return _BatchNormActFunction.apply(x, self.weight, self.bias, self.running_mean,
                                           self.running_var, self.momentum, self.eps,
                                           self.negative_slope, self.compiled)


def activation_slope(act: Optional[nn.Module]) -> Optional[float]:
    """LeakyReLU slope equivalent to ``act`` (None -> no activation); None if not expressible."""
    if act is None:
        return NO_ACTIVATION
    if type(act) is nn.ReLU:
        return 0.0
    if type(act) is nn.LeakyReLU:
        return float(act.negative_slope)
    return None


def fuse_batchnorm_activation(model: nn.Module, compiled: bool = True) -> int:
    """Replace every plain ``nn.BatchNorm2d`` of ``model`` by :class:`BatchNormAct2d`, in place.

    The BN of an mmcv ``ConvModule`` (``conv -> norm -> act`` order) takes the
    module's ReLU / LeakyReLU with it; any other ``BatchNorm2d`` (e.g. in
    torchvision-style ResNet blocks) is replaced without an activation.
    Parameters and buffers are shared, not copied, so optimizers and DDP keep
    theirs. Subclasses (SyncBN, already fused layers) are left alone. Returns
    the number of replaced layers.
    """
    from mmcv.cnn import ConvModule
    replaced = 0
    for module in model.modules():
        if not isinstance(module, ConvModule) or not module.with_norm or module.order != (
                'conv', 'norm', 'act'):
            continue
        slope = activation_slope(module.activate if module.with_activation else None)
        if type(module.norm) is nn.BatchNorm2d and slope is not None:
            setattr(module, module.norm_name,
                    BatchNormAct2d.from_batch_norm(module.norm, slope, compiled))
            module.with_activation = False
            replaced += 1
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                setattr(parent, name, BatchNormAct2d.from_batch_norm(child, NO_ACTIVATION,
                                                                     compiled))
                replaced += 1
    return replaced


def unfuse_batchnorm_activation(model: nn.Module) -> int:
    """Undo :func:`fuse_batchnorm_activation` in place (stock BN and activation modules again).

    For code that rewrites BN layers itself, e.g. inference optimization of a
    model trained in this process. Returns the number of restored layers.
    """
    from mmcv.cnn import ConvModule
    restored = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if not isinstance(child, BatchNormAct2d):
                continue
            setattr(parent, name, child.to_batch_norm())
            if isinstance(parent, ConvModule) and child.negative_slope != NO_ACTIVATION:
                parent.with_activation = True  # its activation module was kept
            restored += 1
    return restored


def unfused_batchnorm_layers(model: nn.Module) -> List[str]:
    """Names of the BatchNorm layers of ``model`` that are not :class:`BatchNormAct2d`."""
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, BatchNormAct2d)]


def compiled_kernels_error() -> Optional[str]:
    """None if the compiled kernels build here, else why not (no C++ compiler, ...)."""
    x = torch.ones(2, 2, 2, 2)
    one = torch.ones(2)
    try:
        _compiled(bn_act_forward)(x, one, one, 1e-5, 0.1)
    except Exception as error:  # torch.compile reports a missing toolchain in many ways
        return f'{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}'
    return None
