"""Inference-only speed-ups for a built detector, exact up to float rounding.

:func:`optimize_for_inference` rewrites the convolution layers of an eval-mode
detector in place; it stays a normal mmdet detector (``test_step``, the data
preprocessor, ``predict_by_feat`` are untouched), so :class:`FaceInferencer`,
``detect_faces`` and the tools use it as they are. What it does, and why (the
measurements are in docs/benchmarks.md):

- Every BatchNorm is folded into the convolution before it, and the
  activation after it (ReLU, LeakyReLU) becomes a post-op of the convolution.
- On CPU, each convolution calls oneDNN directly
  (``torch.ops.mkldnn._convolution_pointwise``, the kernel ``torch.compile``
  emits for a convolution with a fused activation) with its weight reordered
  once into oneDNN's blocked layout; activations stay channels-last from the
  first convolution on. PyTorch's eager ``Conv2d`` would re-check heuristics
  on each call and send the 1x1 convolutions of a single-thread, batch-1 run
  to its generic im2col path.
- The ReLU after the concatenation in each SSH block is applied by the three
  branch convolutions instead (an element-wise function commutes with
  concatenation), which saves a pass over the SSH output.

Nothing here depends on the input size: one converted model serves every
image size and batch size, with no warm-up (``torch.compile`` does the same
fusions but compiles for minutes on first use and again for new shapes; see
docs/benchmarks.md). The result is for inference only: training it raises,
and its state dict has the folded weights (save checkpoints from an
unoptimized model).
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

#: Optimization levels accepted by :func:`optimize_for_inference`.
MODES = ('auto', 'onednn', 'fold', 'none')


def _onednn_available() -> bool:
    return (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, '_convolution_pointwise'))


def _fold_batch_norm(weight: Tensor, bias: Optional[Tensor],
                     bn: Optional[_BatchNorm]) -> Tuple[Tensor, Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution (eval-mode statistics)."""
    if bias is None:
        bias = weight.new_zeros(weight.shape[0])
    if bn is None:
        return weight.clone(), bias.clone()
    if not bn.track_running_stats or bn.running_var is None:
        raise ValueError(f'{type(bn).__name__} without running statistics cannot be folded')
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.affine:
        shift = shift + bn.bias
    return weight * scale.reshape(-1, 1, 1, 1), bias * scale + shift


def _post_op(act: Optional[nn.Module]) -> Tuple[str, List[float], Optional[nn.Module]]:
    """oneDNN post-op name and scalars for ``act``; unsupported ones stay a module."""
    if act is None or isinstance(act, nn.Identity):
        return 'none', [], None
    if type(act) is nn.ReLU:
        return 'relu', [], None
    if type(act) is nn.LeakyReLU:
        return 'leaky_relu', [float(act.negative_slope)], None
    return 'none', [], act


class FusedConv2d(nn.Module):
    """``act(bn(conv(x)))`` as one convolution with the BatchNorm folded in.

    On CPU (float32, oneDNN available) it runs oneDNN's convolution with the
    activation as a post-op and a weight reordered once for oneDNN (kept
    until ``weight`` changes); elsewhere ``F.conv2d`` and the activation.
    Outputs equal the unfused layers to float rounding.
    """

    def __init__(self, conv: nn.Conv2d, bn: Optional[_BatchNorm] = None,
                 act: Optional[nn.Module] = None) -> None:
        super().__init__()
        if type(conv) is not nn.Conv2d or conv.padding_mode != 'zeros':
            raise TypeError(f'FusedConv2d folds a zero-padded nn.Conv2d, got {conv!r}')
        if isinstance(conv.padding, str):
            raise TypeError(f'FusedConv2d needs numeric padding, got padding={conv.padding!r}')
        with torch.no_grad():
            weight, bias = _fold_batch_norm(conv.weight.detach(), conv.bias, bn)
        self.weight = nn.Parameter(weight.detach(), requires_grad=False)
        self.bias = nn.Parameter(bias.detach(), requires_grad=False)
        self.stride = tuple(conv.stride)
        self.padding = tuple(conv.padding)
        self.dilation = tuple(conv.dilation)
        self.groups = conv.groups
        self.attr, self.scalars, self.post = _post_op(act)
        self._packed: Optional[Tuple[Tensor, int, int]] = None

    def extra_repr(self) -> str:
        out_c, in_c, kh, kw = self.weight.shape
        return (f'{in_c * self.groups}, {out_c}, kernel_size=({kh}, {kw}), '
                f'stride={self.stride}, padding={self.padding}, groups={self.groups}, '
                f'post_op={self.attr}{self.scalars or ""}')

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state['_packed'] = None  # an opaque oneDNN tensor can be neither copied nor pickled
        return state

    def _onednn_weight(self) -> Tensor:
        """The weight in oneDNN's layout, reordered again only when ``weight`` changed."""
        key = (id(self.weight), self.weight._version)
        if self._packed is None or self._packed[1:] != key:
            packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                self.weight.detach().to_mkldnn(), list(self.padding), list(self.stride),
                list(self.dilation), self.groups)
            self._packed = (packed, *key)
        return self._packed[0]

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            raise RuntimeError('this model was optimized for inference (BatchNorm folded); '
                               'build a new one to train')
        if (x.device.type == 'cpu' and x.dtype == torch.float32
                and self.weight.dtype == torch.float32 and _onednn_available()):
            x = torch.ops.mkldnn._convolution_pointwise(
                x, self._onednn_weight(), self.bias, list(self.padding), list(self.stride),
                list(self.dilation), self.groups, self.attr, self.scalars, '')
        else:
            x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                         self.groups)
            if self.attr == 'relu':
                x = F.relu(x, inplace=True)
            elif self.attr == 'leaky_relu':
                x = F.leaky_relu(x, self.scalars[0], inplace=True)
        return self.post(x) if self.post is not None else x


def _conv_module_parts(module: nn.Module
                       ) -> Optional[Tuple[nn.Conv2d, Optional[_BatchNorm], Optional[nn.Module]]]:
    """(conv, bn, act) of an mmcv ``ConvModule`` that :class:`FusedConv2d` can replace."""
    from mmcv.cnn import ConvModule
    if not isinstance(module, ConvModule) or module.order != ('conv', 'norm', 'act'):
        return None
    if module.with_explicit_padding or type(module.conv) is not nn.Conv2d:
        return None
    norm = module.norm
    if isinstance(norm, nn.Identity):  # already folded (mmcv.cnn.fuse_conv_bn)
        norm = None
    if norm is not None and not isinstance(norm, _BatchNorm):
        return None
    return module.conv, norm, (module.activate if module.with_activation else None)


def _fuse_ssh_output_act(model: nn.Module) -> None:
    """Move each SSH block's post-concatenation activation into its branch convs."""
    from ..models.necks.ssh import SSHBlock
    for block in model.modules():
        if not isinstance(block, SSHBlock) or _post_op(block.out_act)[2] is not None:
            continue
        branches = (block.conv3x3, block.conv5x5_2, block.conv7x7_3)
        parts = [_conv_module_parts(b) for b in branches]
        if any(p is None or p[2] is not None for p in parts):
            continue
        for name, (conv, bn, _) in zip(('conv3x3', 'conv5x5_2', 'conv7x7_3'), parts):
            setattr(block, name, FusedConv2d(conv, bn, block.out_act))
        block.out_act = nn.Identity()


def _replace_convs(module: nn.Module, conv_modules: bool) -> None:
    """Replace mmcv ConvModules (``conv_modules``) or plain Conv2d layers by FusedConv2d."""
    for name, child in module.named_children():
        parts = _conv_module_parts(child) if conv_modules else None
        if parts is not None:
            setattr(module, name, FusedConv2d(*parts))
        elif not conv_modules and type(child) is nn.Conv2d \
                and child.padding_mode == 'zeros' and not isinstance(child.padding, str):
            setattr(module, name, FusedConv2d(child))
        else:
            _replace_convs(child, conv_modules)


@torch.no_grad()
def optimize_for_inference(model: nn.Module, mode: str = 'auto') -> nn.Module:
    """Make an eval-mode detector faster for inference, in place; returns ``model``.

    Args:
        model: a built detector (any module with Conv2d/BatchNorm layers);
            set to eval mode here.
        mode: ``'onednn'``: fold BatchNorm, fuse activations, run the
            convolutions through oneDNN channels-last (CPU, float32; on other
            devices the same folded layers run ``F.conv2d``).
            ``'fold'``: only fold BatchNorm into the convolutions
            (``mmcv.cnn.fuse_conv_bn``), any device. ``'none'``: unchanged.
            ``'auto'`` (default): ``'onednn'`` when the model is on the CPU and
            torch has oneDNN, else ``'fold'``.

    Outputs equal the unoptimized model's to float rounding (about 1e-5 on
    the published weights), for every input size. The optimized model is for
    inference only (see the module docstring).
    """
    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    model.eval()
    if mode == 'none':
        return model
    if mode == 'auto':
        param = next(model.parameters(), None)
        on_cpu = param is None or param.device.type == 'cpu'
        mode = 'onednn' if on_cpu and _onednn_available() else 'fold'
    if mode == 'fold':
        from mmcv.cnn import fuse_conv_bn
        fuse_conv_bn(model)
        return model
    from mmcv.cnn import fuse_conv_bn
    _fuse_ssh_output_act(model)
    _replace_convs(model, conv_modules=True)
    fuse_conv_bn(model)  # conv + BN pairs outside ConvModules (e.g. in ResNet blocks)
    _replace_convs(model, conv_modules=False)
    return model.eval()  # the new layers too
