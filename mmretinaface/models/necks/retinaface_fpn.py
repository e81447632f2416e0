"""The reference RetinaFace FPN (not mmdet's FPN).

Laterals are 1x1 conv + BN + activation; the top-down path merges one level at
a time and runs a 3x3 conv + BN + activation after each merge
(``out[i] = merge_i(lat[i] + up(out[i + 1]))``); the top level gets no 3x3.
"""
from typing import List, Sequence, Tuple

import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptMultiConfig
from mmengine.model import BaseModule
from torch import Tensor, nn


@MODELS.register_module()
class RetinaFaceFPN(BaseModule):
    """Sequential top-down FPN with conv+BN(+act) laterals.

    Args:
        in_channels: channels of each backbone tap, lowest stride first.
        out_channels: channels of every output level.
        act_cfg: LeakyReLU 0.1 when ``out_channels <= 64`` in the reference,
            ReLU otherwise.
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 out_channels: int,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = dict(type='ReLU'),
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        conv_kwargs = dict(norm_cfg=norm_cfg, act_cfg=act_cfg, bias=False)
        self.lateral_convs = nn.ModuleList(
            ConvModule(c, out_channels, 1, **conv_kwargs) for c in in_channels)
        self.merge_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3, padding=1, **conv_kwargs)
            for _ in range(len(in_channels) - 1))

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        laterals: List[Tensor] = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        outs = [laterals[-1]]
        for i in range(len(laterals) - 2, -1, -1):
            up = F.interpolate(outs[0], size=laterals[i].shape[-2:], mode='nearest')
            outs.insert(0, self.merge_convs[i](laterals[i] + up))
        return tuple(outs)
