"""MobileNetV1 with a width multiplier, laid out like the reference RetinaFace body.

At ``widen_factor=0.25`` this is the reference ``MobileNetV1`` (8..256
channels, LeakyReLU 0.1) and its three taps ``stage1/2/3`` (strides 8/16/32,
64/128/256 channels), so the published weights load by renaming only.
"""
from typing import List, Sequence, Tuple

from mmcv.cnn import ConvModule, DepthwiseSeparableConvModule
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptMultiConfig
from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

# (out_channels at width 1.0, stride) of the depthwise-separable blocks per stage;
# stage 1 starts with a plain 3x3 stride-2 convolution to 32 channels.
STAGE_BLOCKS = (
    ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1)),
    ((512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1)),
    ((1024, 2), (1024, 1)),
)
STEM_CHANNELS = 32


@MODELS.register_module()
class MobileNetV1(BaseModule):
    """MobileNetV1 returning the outputs of ``out_indices`` among its 3 stages.

    Args:
        widen_factor: channel multiplier (0.25 for the reference RetinaFace).
        out_indices: stages to return (0-based; strides 8, 16, 32).
        frozen_stages: stages ``< frozen_stages`` get no gradient (-1: none).
        norm_eval: keep BN layers in eval mode while training.
    """

    def __init__(self,
                 widen_factor: float = 0.25,
                 out_indices: Sequence[int] = (0, 1, 2),
                 frozen_stages: int = -1,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = dict(type='LeakyReLU', negative_slope=0.1),
                 norm_eval: bool = False,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not set(out_indices) <= set(range(len(STAGE_BLOCKS))):
            raise ValueError(f'out_indices must be within 0..{len(STAGE_BLOCKS) - 1}, '
                             f'got {out_indices}')
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        def width(c: int) -> int:
            return max(1, int(c * widen_factor))

        conv_kwargs = dict(norm_cfg=norm_cfg, act_cfg=act_cfg, bias=False)
        in_channels = width(STEM_CHANNELS)
        self.stage_names: List[str] = []
        for stage_idx, blocks in enumerate(STAGE_BLOCKS):
            layers: List[nn.Module] = []
            if stage_idx == 0:
                layers.append(ConvModule(3, in_channels, 3, stride=2, padding=1, **conv_kwargs))
            for out_c, stride in blocks:
                out_channels = width(out_c)
                layers.append(
                    DepthwiseSeparableConvModule(
                        in_channels, out_channels, 3, stride=stride, padding=1, **conv_kwargs))
                in_channels = out_channels
            name = f'stage{stage_idx + 1}'
            self.add_module(name, nn.Sequential(*layers))
            self.stage_names.append(name)
        self.out_channels = [width(STAGE_BLOCKS[i][-1][0]) for i in self.out_indices]

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        outs = []
        for i, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def _freeze_stages(self) -> None:
        for name in self.stage_names[:max(self.frozen_stages, 0)]:
            stage = getattr(self, name)
            stage.eval()
            for param in stage.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'MobileNetV1':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
