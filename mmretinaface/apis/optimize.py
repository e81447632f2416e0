"""Inference-only speed-ups for a built detector, exact up to float rounding.

:func:`optimize_for_inference` rewrites an eval-mode detector in place; it
stays a normal mmdet detector (``test_step``, ``predict``, ``predict_by_feat``
are untouched), so :class:`FaceInferencer`, ``detect_faces`` and the tools use
it as they are. What the default (``'onednn'`` on CPU) does, and why (the
measurements are in docs/benchmarks.md, "CPU speed"):

- Every BatchNorm is folded into the convolution before it, and the
  activation after it (ReLU, LeakyReLU) becomes a post-op of the convolution.
- On CPU each convolution calls oneDNN directly
  (``torch.ops.mkldnn._convolution_pointwise``, the kernel ``torch.compile``
  emits for a convolution with a fused activation) with its weight reordered
  once into oneDNN's layout for the first input's shape; activations stay
  channels-last. Eager ``Conv2d`` sends the 1x1 convolutions of a
  single-thread batch-1 run to a generic im2col path and runs BatchNorm and
  the activation as passes of their own.
- The ReLU after the concatenation in each SSH block is applied by the three
  branch convolutions instead (an element-wise function commutes with
  concatenation); the head's class, box and landmark 1x1 convolutions of a
  level run as one (bit-identical).
- The data preprocessor writes its batch channels-last (one copy per image,
  normalised in place; bit-identical values), so the first convolution does
  not reorder it; images packed channels-last (``FaceInferencer``'s pipeline,
  ``PackFaceInputs(channels_last=True)``) are read in memory order.
- glibc's trim threshold is raised once (see
  :func:`_raise_malloc_trim_threshold`).

Nothing depends on the input size: one optimized model serves every image and
batch size without warm-up (``torch.compile`` compiles for tens of seconds on
first use and again for new shapes). The result is for inference only:
training it raises, and its state dict holds the folded weights (save
checkpoints from a model as loaded).
"""
import weakref
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule, fuse_conv_bn
from mmdet.models.data_preprocessors import DetDataPreprocessor
from mmdet.models.utils.misc import samplelist_boxtype2tensor
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..models.dense_heads.retinaface_head import RetinaFaceHead
from ..models.layers import unfuse_batchnorm_activation
from ..models.necks.ssh import SSHBlock

#: Optimization levels accepted by :func:`optimize_for_inference`.
MODES = ('auto', 'onednn', 'fold', 'none')


#: glibc's largest dynamic mmap threshold (DEFAULT_MMAP_THRESHOLD_MAX, 64-bit)
_GLIBC_MMAP_THRESHOLD_MAX = 32 * 2**20
_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn,
                                                             '_convolution_pointwise')


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
        # the oneDNN call's arguments, made once (this layer runs ~50 times per image)
        self._args = (list(self.padding), list(self.stride), list(self.dilation), self.groups,
                      self.attr, self.scalars, '')
        self._packed: Optional[tuple] = None  # (oneDNN weight, version, data_ptr)

    def extra_repr(self) -> str:
        out_c, in_c, kh, kw = self.weight.shape
        return (f'{in_c * self.groups}, {out_c}, kernel_size=({kh}, {kw}), '
                f'stride={self.stride}, padding={self.padding}, groups={self.groups}, '
                f'post_op={self.attr}{self.scalars or ""}')

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state['_packed'] = None  # an opaque oneDNN tensor can be neither copied nor pickled
        return state

    def _pack(self, weight: Tensor, x: Tensor) -> tuple:
        """The weight in the layout oneDNN picks for a convolution on ``x``.

        Made at the first call (again only when ``weight`` changes): without
        an input-shape hint oneDNN picks a layout that differs from its
        kernels' for some 1x1 convolutions and reorders the weight on every
        call. The layout does not depend on the spatial size, and inputs of
        any other shape still run correctly.
        """
        packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
            weight.detach().to_mkldnn(), self._args[0], self._args[1], self._args[2],
            self.groups, list(x.shape))
        self._packed = (packed, weight._version, weight.data_ptr())
        return self._packed

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            raise RuntimeError('this model was optimized for inference (BatchNorm folded); '
                               'build a new one to train')
        weight = self.weight
        if _ONEDNN and x.is_cpu and x.dtype is torch.float32 and weight.dtype is torch.float32:
            packed = self._packed
            if packed is None or packed[1] != weight._version \
                    or packed[2] != weight.data_ptr():
                packed = self._pack(weight, x)
            x = torch.ops.mkldnn._convolution_pointwise.default(
                x, packed[0], self.bias, *self._args)
        else:
            x = self._activate(F.conv2d(x, weight, self.bias, self.stride, self.padding,
                                        self.dilation, self.groups))
        return self.post(x) if self.post is not None else x

    def _activate(self, x: Tensor) -> Tensor:
        if self.attr == 'relu':
            return F.relu(x, inplace=True)
        if self.attr == 'leaky_relu':
            return F.leaky_relu(x, self.scalars[0], inplace=True)
        return x


class SharedConv(nn.Module):
    """A :class:`FusedConv2d` whose output channels several :class:`ChannelGroup` s read.

    The convolution runs once per input tensor (the same object: the head
    hands each level's features to its three layers in turn); the result is
    kept until every group has read it or another input arrives, so the
    groups cost one call instead of one each.
    """

    def __init__(self, conv: FusedConv2d, num_groups: int) -> None:
        super().__init__()
        self.conv = conv
        self.num_groups = num_groups
        self._last: Optional[list] = None  # [weakref to input, output, reads]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state['_last'] = None
        return state

    def read(self, x: Tensor) -> Tensor:
        last = self._last
        if last is not None and last[0]() is x:
            last[2] += 1
            if last[2] >= self.num_groups:
                self._last = None
            return last[1]
        out = self.conv(x)
        self._last = [weakref.ref(x), out, 1] if self.num_groups > 1 else None
        return out


class ChannelGroup(nn.Module):
    """Output channels ``[start, stop)`` of a :class:`SharedConv` (one of its merged layers)."""

    def __init__(self, shared: SharedConv, start: int, stop: int) -> None:
        super().__init__()
        self.shared = shared
        self.start, self.stop = start, stop

    def extra_repr(self) -> str:
        return f'channels [{self.start}, {self.stop})'

    def forward(self, x: Tensor) -> Tensor:
        return self.shared.read(x)[:, self.start:self.stop]


def _channels_last_batch(pre: nn.Module, inputs: Sequence[Tensor]) -> Tensor:
    """``ImgDataPreprocessor``'s normalised, padded batch, written channels-last.

    The same float operations as mmengine's (``(x.float() - mean) / std``,
    then padding with ``pad_value``), so the values are bit-identical; only
    the memory layout differs (what oneDNN's first convolution reads). Each
    image is copied into the batch once and normalised there in place.
    """
    divisor = pre.pad_size_divisor
    height = -(-max(t.shape[1] for t in inputs) // divisor) * divisor
    width = -(-max(t.shape[2] for t in inputs) // divisor) * divisor
    channels = inputs[0].shape[0]
    batch = torch.empty((len(inputs), height, width, channels))
    if pre._enable_normalize:
        # mean and std repeated along a row: on (H, W * C) rows the subtraction runs
        # vectorized (broadcasting over a last dimension of C = 3 does not, ~4x slower)
        mean_row = pre.mean.view(-1).expand(channels).repeat(width)
        std_row = (None if bool((pre.std == 1).all())
                   else pre.std.view(-1).expand(channels).repeat(width))
    for image, out in zip(inputs, batch):
        if pre._channel_conversion:
            image = image[[2, 1, 0], ...]
        h, w = image.shape[1:]
        region = out[:h, :w]
        # exact uint8 -> float32; reads memory in order when the image is packed
        # channels-last (PackFaceInputs(channels_last=True), FaceInferencer's pipeline)
        region.copy_(image.permute(1, 2, 0))
        if pre._enable_normalize:
            rows = region.view(h, w * channels)  # a view: out is written in place
            rows.sub_(mean_row[:w * channels])
            if std_row is not None:
                rows.div_(std_row[:w * channels])
        out[h:].fill_(pre.pad_value)
        out[:h, w:].fill_(pre.pad_value)
    return batch.permute(0, 3, 1, 2)


class ChannelsLastDetDataPreprocessor(DetDataPreprocessor):
    """``DetDataPreprocessor`` whose inference batches come out channels-last.

    At test time a batch of uint8 CPU images is copied once per image
    straight into the layout of the oneDNN convolutions, then normalised and
    padded there (mmengine makes five passes and an NCHW batch that the first
    convolution would reorder). Values and metainfo are the same; training
    batches and other inputs take ``DetDataPreprocessor``'s path.
    :func:`optimize_for_inference` sets it as the class of the model's
    ``DetDataPreprocessor`` (no state is added).
    """

    def _fast_path_applies(self, data: dict) -> bool:
        """A list of same-channel uint8 CPU images whose channels the mean/std fit."""
        inputs = data.get('inputs') if isinstance(data, dict) else None
        if not isinstance(inputs, (list, tuple)) or not inputs or any(
                not isinstance(t, Tensor) or t.dtype != torch.uint8 or t.dim() != 3
                or not t.is_cpu for t in inputs):
            return False
        channels = {t.shape[0] for t in inputs}
        if len(channels) != 1:
            return False
        return not self._enable_normalize or (
            self.mean.is_cpu and self.mean.numel() in (1, *channels)
            and self.std.numel() in (1, *channels))

    def forward(self, data: dict, training: bool = False) -> dict:
        if training or not self._fast_path_applies(data):
            return super().forward(data, training)
        inputs = data['inputs']
        pad_shapes = self._get_pad_shape(data)
        batch = _channels_last_batch(self, inputs)
        samples = data.get('data_samples')
        if samples is not None:
            for sample, pad_shape in zip(samples, pad_shapes):
                sample.set_metainfo({'batch_input_shape': tuple(batch.shape[-2:]),
                                     'pad_shape': pad_shape})
            if self.boxtype2tensor:
                samplelist_boxtype2tensor(samples)
        return {'inputs': batch, 'data_samples': samples}


def _conv_module_parts(module: nn.Module
                       ) -> Optional[Tuple[nn.Conv2d, Optional[_BatchNorm], Optional[nn.Module]]]:
    """(conv, bn, act) of an mmcv ``ConvModule`` that :class:`FusedConv2d` can replace."""
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


def _merge_parallel_convs(convs: Sequence[nn.Module]) -> Optional[List[ChannelGroup]]:
    """Plain convolutions of the same geometry as channel groups of one convolution."""
    if not convs or any(type(c) is not nn.Conv2d or c.padding_mode != 'zeros'
                        or isinstance(c.padding, str) for c in convs):
        return None
    first = convs[0]
    attrs = ('in_channels', 'kernel_size', 'stride', 'padding', 'dilation', 'groups')
    if first.groups != 1 or any(getattr(c, a) != getattr(first, a) for c in convs for a in attrs):
        return None
    merged = nn.Conv2d(first.in_channels, sum(c.out_channels for c in convs), first.kernel_size,
                       first.stride, first.padding, first.dilation, device=first.weight.device,
                       dtype=first.weight.dtype)
    merged.weight.copy_(torch.cat([c.weight for c in convs]))
    merged.bias.copy_(torch.cat([c.bias if c.bias is not None else c.weight.new_zeros(
        c.out_channels) for c in convs]))
    shared = SharedConv(FusedConv2d(merged), len(convs))
    bounds = torch.tensor([0] + [c.out_channels for c in convs]).cumsum(0).tolist()
    return [ChannelGroup(shared, a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def _merge_head_convs(model: nn.Module) -> None:
    """One convolution per level for the head's class, box and landmark 1x1 layers.

    ``RetinaFaceHead.forward`` feeds each level's features to the three
    layers in turn; merged, each level costs one oneDNN call instead of three
    (the same dot products: outputs are bit-identical).
    """
    for head in model.modules():
        if not isinstance(head, RetinaFaceHead):
            continue
        branches = (head.cls_convs, head.reg_convs, head.kpt_convs)
        for level, convs in enumerate(zip(*branches)):
            groups = _merge_parallel_convs(convs)
            if groups is None:
                continue
            for branch, group in zip(branches, groups):
                branch[level] = group


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


def _raise_malloc_trim_threshold() -> None:
    """Let glibc keep a forward pass's freed activations instead of returning them to the OS.

    glibc gives heap memory back once more than its trim threshold is free at
    the top of the heap; the threshold is twice the largest block it has
    unmapped so far (at most 32 MiB), so a process that has not freed a large
    block yet trims the several MiB a forward pass frees and faults them in
    again on the next call (measured: ~2400 page faults and +25% per 640x480
    forward, in some processes and not others). Allocating and freeing one
    block just under that maximum raises the threshold the way any large
    temporary a program frees does; with other allocators it is only an
    allocation.
    """
    block = torch.empty(_GLIBC_MMAP_THRESHOLD_MAX - 4096, dtype=torch.uint8)
    del block


@torch.no_grad()
def optimize_for_inference(model: nn.Module, mode: str = 'auto') -> nn.Module:
    """Make an eval-mode detector faster for inference, in place; returns ``model``.

    Args:
        model: a built detector (any module with Conv2d/BatchNorm layers);
            set to eval mode here.
        mode: ``'onednn'``: everything the module docstring lists (BatchNorm
            folded, activations fused, oneDNN channels-last convolutions on
            CPU float32; on other devices the same folded layers run
            ``F.conv2d``).
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
    unfuse_batchnorm_activation(model)  # a model trained with FastTrainingHook, still in memory
    if mode == 'none':
        return model
    if mode == 'auto':
        param = next(model.parameters(), None)
        on_cpu = param is None or param.device.type == 'cpu'
        mode = 'onednn' if on_cpu and _ONEDNN else 'fold'
    if mode == 'fold':
        fuse_conv_bn(model)
        return model
    _raise_malloc_trim_threshold()
    if type(getattr(model, 'data_preprocessor', None)) is DetDataPreprocessor:
        # same values, channels-last batches: the subclass only adds a test-time fast path
        model.data_preprocessor.__class__ = ChannelsLastDetDataPreprocessor
    _fuse_ssh_output_act(model)
    _merge_head_convs(model)
    _replace_convs(model, conv_modules=True)
    fuse_conv_bn(model)  # conv + BN pairs outside ConvModules (e.g. in ResNet blocks)
    _replace_convs(model, conv_modules=False)
    return model.eval()  # the new layers too
