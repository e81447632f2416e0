"""SSH context module per level, with a configurable inner activation.

mmdet's ``SSH`` neck fixes ReLU; the reference uses LeakyReLU 0.1 inside the
64-channel (MobileNet) variant. Branches: 3x3 (out/2), 5x5 as two 3x3 (out/4),
7x7 as three 3x3 sharing the first (out/4); concatenated, then ReLU.
"""
from typing import Sequence, Tuple

import torch
from mmcv.cnn import ConvModule, build_activation_layer
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptMultiConfig
from mmengine.model import BaseModule
from torch import Tensor, nn


class SSHBlock(BaseModule):
    """One SSH context module (the reference ``SSH`` class)."""

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: ConfigType,
                 act_cfg: ConfigType, out_act_cfg: ConfigType,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if out_channels % 4:
            raise ValueError(f'SSH out_channels must be divisible by 4, got {out_channels}')
        quarter = out_channels // 4

        def conv(c_in: int, c_out: int, act: bool) -> ConvModule:
            return ConvModule(c_in, c_out, 3, padding=1, bias=False, norm_cfg=norm_cfg,
                              act_cfg=act_cfg if act else None)

        self.conv3x3 = conv(in_channels, out_channels // 2, act=False)
        self.conv5x5_1 = conv(in_channels, quarter, act=True)
        self.conv5x5_2 = conv(quarter, quarter, act=False)
        self.conv7x7_2 = conv(quarter, quarter, act=True)
        self.conv7x7_3 = conv(quarter, quarter, act=False)
        self.out_act = build_activation_layer(out_act_cfg)

    def forward(self, x: Tensor) -> Tensor:
        branch5_in = self.conv5x5_1(x)
        branch7_in = self.conv7x7_2(branch5_in)
        out = torch.cat(
            [self.conv3x3(x), self.conv5x5_2(branch5_in), self.conv7x7_3(branch7_in)], dim=1)
        return self.out_act(out)


@MODELS.register_module()
class RetinaFaceSSH(BaseModule):
    """Independent SSH blocks on each FPN level.

    Args:
        num_levels: number of input levels.
        in_channels: channels of every input level.
        out_channels: channels of every output level (divisible by 4).
        act_cfg: activation inside the blocks (LeakyReLU 0.1 for <= 64 channels
            in the reference, ReLU otherwise).
        out_act_cfg: activation after concatenation (ReLU in the reference).
    """

    def __init__(self,
                 num_levels: int,
                 in_channels: int,
                 out_channels: int,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = dict(type='ReLU'),
                 out_act_cfg: ConfigType = dict(type='ReLU'),
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.blocks = nn.ModuleList(
            SSHBlock(in_channels, out_channels, norm_cfg, act_cfg, out_act_cfg)
            for _ in range(num_levels))

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        if len(inputs) != len(self.blocks):
            raise ValueError(f'RetinaFaceSSH has {len(self.blocks)} levels but got '
                             f'{len(inputs)} feature maps')
        return tuple(block(x) for block, x in zip(self.blocks, inputs))
