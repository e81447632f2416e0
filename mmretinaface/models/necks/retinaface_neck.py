"""The RetinaFace neck as one module: an FPN, then an SSH context module per level.

One config dict instead of a list, so that a config swapping the backbone
overrides only ``in_channels`` (and the FPN's or SSH's own options), the way
mmdet configs override ``neck.in_channels``:
``neck=dict(in_channels=[128, 256, 512])``.
"""
from typing import Sequence

from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptMultiConfig
from mmengine.model import Sequential


@MODELS.register_module()
class RetinaFaceNeck(Sequential):
    """``fpn`` then ``ssh``, their channels and level count set from this neck's.

    A ``Sequential`` of the two, so parameters are named ``0.*`` (FPN) and
    ``1.*`` (SSH), exactly as the two-element list neck mmengine builds:
    converted published checkpoints load unchanged.

    Args:
        in_channels: backbone channels per level, lowest stride first.
        out_channels: channels of every FPN and SSH output (the head's
            ``in_channels``).
        fpn: FPN config without channels: ``RetinaFaceFPN`` (the reference
            FPN, needed by the published weights) or mmdet's ``FPN`` (with
            ``num_outs``, ``norm_cfg``, ``act_cfg``) for new models.
        ssh: SSH config without channels or level count (``RetinaFaceSSH``).
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 out_channels: int,
                 fpn: ConfigType = dict(type='RetinaFaceFPN'),
                 ssh: ConfigType = dict(type='RetinaFaceSSH'),
                 init_cfg: OptMultiConfig = None) -> None:
        for name, cfg, derived in (('fpn', fpn, ('in_channels', 'out_channels')),
                                   ('ssh', ssh, ('num_levels', 'in_channels', 'out_channels'))):
            given = sorted(set(derived) & set(cfg))
            if given:
                raise ValueError(f'neck.{name} sets {given}: they follow neck.in_channels / '
                                 'neck.out_channels; set those instead')
        fpn = dict(fpn, in_channels=list(in_channels), out_channels=out_channels)
        ssh = dict(ssh, num_levels=len(in_channels), in_channels=out_channels,
                   out_channels=out_channels)
        super().__init__(MODELS.build(fpn), MODELS.build(ssh), init_cfg=init_cfg)
