"""A reference-shaped RetinaFace, written from the walkthrough and DESIGN.md.

This is the test oracle for weight conversion: the module names, the state-dict
keys and the forward computation follow the reference implementation
(biubug6/Pytorch_Retinaface) as described in
``shared/reference/retinaface_walkthrough.txt`` and the "Reference checkpoint
layout" section of ``shared/DESIGN.md``. It deliberately shares no code with
``mmretinaface``: it uses plain ``torch.nn`` only.

- ``body``: MobileNetV1-0.25 (``stage1/2/3``) or a hand-written torchvision
  ResNet50 (``conv1, bn1, relu, maxpool, layer1..4``), returning the three taps
  as ``IntermediateLayerGetter`` would (an ordered dict of the tapped outputs;
  modules after the last tap are not part of the body).
- ``fpn``: ``output1..3`` laterals, ``merge1..2``, sequential top-down merge.
- ``ssh1..3``: the SSH context modules.
- ``ClassHead/BboxHead/LandmarkHead``: per-level 1x1 convs, NHWC flatten.
"""
from collections import OrderedDict
from itertools import product
from math import ceil
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NUM_ANCHORS = 2
NUM_LANDMARKS = 5


# ----------------------------------------------------------------- blocks
def conv_bn(inp: int, oup: int, stride: int = 1, leaky: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride, 1, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def conv_bn_no_relu(inp: int, oup: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride, 1, bias=False),
        nn.BatchNorm2d(oup),
    )


def conv_bn1x1(inp: int, oup: int, stride: int = 1, leaky: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, 1, stride, padding=0, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def conv_dw(inp: int, oup: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


# ----------------------------------------------------------------- bodies
class MobileNetV1Body(nn.Module):
    """The reference ``MobileNetV1`` (width 0.25) cut after ``stage3``."""

    return_layers = ('stage1', 'stage2', 'stage3')

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, 2, leaky=0.1),
            conv_dw(8, 16, 1),
            conv_dw(16, 32, 2),
            conv_dw(32, 32, 1),
            conv_dw(32, 64, 2),
            conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(
            conv_dw(64, 128, 2),
            *[conv_dw(128, 128, 1) for _ in range(5)],
        )
        self.stage3 = nn.Sequential(
            conv_dw(128, 256, 2),
            conv_dw(256, 256, 1),
        )

    def forward(self, x: Tensor) -> 'OrderedDict[str, Tensor]':
        out: OrderedDict[str, Tensor] = OrderedDict()
        for i, name in enumerate(self.return_layers, start=1):
            x = getattr(self, name)(x)
            out[str(i)] = x
        return out


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck (stride on the 3x3 conv)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet50Body(nn.Module):
    """torchvision ``resnet50`` through ``IntermediateLayerGetter`` (layer2/3/4)."""

    return_layers = ('layer2', 'layer3', 'layer4')

    def __init__(self) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, stride=2)
        self.layer3 = self._make_layer(256, 6, stride=2)
        self.layer4 = self._make_layer(512, 3, stride=2)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride,
                          bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> 'OrderedDict[str, Tensor]':
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        out: OrderedDict[str, Tensor] = OrderedDict()
        for i, name in enumerate(self.return_layers, start=1):
            x = getattr(self, name)(x)
            out[str(i)] = x
        return out


# ------------------------------------------------------------ FPN and SSH
class FPN(nn.Module):

    def __init__(self, in_channels_list: Sequence[int], out_channels: int) -> None:
        super().__init__()
        leaky = 0.1 if out_channels <= 64 else 0.0
        self.output1 = conv_bn1x1(in_channels_list[0], out_channels, stride=1, leaky=leaky)
        self.output2 = conv_bn1x1(in_channels_list[1], out_channels, stride=1, leaky=leaky)
        self.output3 = conv_bn1x1(in_channels_list[2], out_channels, stride=1, leaky=leaky)
        self.merge1 = conv_bn(out_channels, out_channels, leaky=leaky)
        self.merge2 = conv_bn(out_channels, out_channels, leaky=leaky)

    def forward(self, inputs: Dict[str, Tensor]) -> List[Tensor]:
        inputs = list(inputs.values())
        output1 = self.output1(inputs[0])
        output2 = self.output2(inputs[1])
        output3 = self.output3(inputs[2])

        up3 = F.interpolate(output3, size=[output2.size(2), output2.size(3)], mode='nearest')
        output2 = output2 + up3
        output2 = self.merge2(output2)

        up2 = F.interpolate(output2, size=[output1.size(2), output1.size(3)], mode='nearest')
        output1 = output1 + up2
        output1 = self.merge1(output1)
        return [output1, output2, output3]


class SSH(nn.Module):

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        assert out_channel % 4 == 0
        leaky = 0.1 if out_channel <= 64 else 0.0
        self.conv3X3 = conv_bn_no_relu(in_channel, out_channel // 2, stride=1)
        self.conv5X5_1 = conv_bn(in_channel, out_channel // 4, stride=1, leaky=leaky)
        self.conv5X5_2 = conv_bn_no_relu(out_channel // 4, out_channel // 4, stride=1)
        self.conv7X7_2 = conv_bn(out_channel // 4, out_channel // 4, stride=1, leaky=leaky)
        self.conv7x7_3 = conv_bn_no_relu(out_channel // 4, out_channel // 4, stride=1)

    def forward(self, x: Tensor) -> Tensor:
        conv3x3 = self.conv3X3(x)
        conv5x5_1 = self.conv5X5_1(x)
        conv5x5 = self.conv5X5_2(conv5x5_1)
        conv7x7_2 = self.conv7X7_2(conv5x5_1)
        conv7x7 = self.conv7x7_3(conv7x7_2)
        return F.relu(torch.cat([conv3x3, conv5x5, conv7x7], dim=1))


# ------------------------------------------------------------------ heads
def nhwc_flatten(out: Tensor, dim: int) -> Tensor:
    """The reference head layout: ``(B, A*dim, H, W)`` -> ``(B, H*W*A, dim)``."""
    out = out.permute(0, 2, 3, 1).contiguous()
    return out.view(out.shape[0], -1, dim)


class ClassHead(nn.Module):

    def __init__(self, inchannels: int = 512, num_anchors: int = NUM_ANCHORS) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.conv1x1 = nn.Conv2d(inchannels, num_anchors * 2, kernel_size=(1, 1), stride=1,
                                 padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return nhwc_flatten(self.conv1x1(x), 2)


class BboxHead(nn.Module):

    def __init__(self, inchannels: int = 512, num_anchors: int = NUM_ANCHORS) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(inchannels, num_anchors * 4, kernel_size=(1, 1), stride=1,
                                 padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return nhwc_flatten(self.conv1x1(x), 4)


class LandmarkHead(nn.Module):

    def __init__(self, inchannels: int = 512, num_anchors: int = NUM_ANCHORS) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(inchannels, num_anchors * NUM_LANDMARKS * 2,
                                 kernel_size=(1, 1), stride=1, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return nhwc_flatten(self.conv1x1(x), NUM_LANDMARKS * 2)


# -------------------------------------------------------------- the model
BODY_CFG = {
    'mobilenet0.25': dict(in_channels=[64, 128, 256], out_channel=64),
    'resnet50': dict(in_channels=[512, 1024, 2048], out_channel=256),
}


class RetinaFace(nn.Module):
    """The reference RetinaFace; ``forward`` returns raw logits (train phase)."""

    def __init__(self, body: str = 'mobilenet0.25', phase: str = 'train') -> None:
        super().__init__()
        if body not in BODY_CFG:
            raise ValueError(f'unknown body {body!r}; expected one of {sorted(BODY_CFG)}')
        cfg = BODY_CFG[body]
        self.phase = phase
        self.body = MobileNetV1Body() if body == 'mobilenet0.25' else ResNet50Body()
        out_channels = cfg['out_channel']
        self.fpn = FPN(cfg['in_channels'], out_channels)
        self.ssh1 = SSH(out_channels, out_channels)
        self.ssh2 = SSH(out_channels, out_channels)
        self.ssh3 = SSH(out_channels, out_channels)
        self.ClassHead = nn.ModuleList(ClassHead(out_channels) for _ in range(3))
        self.BboxHead = nn.ModuleList(BboxHead(out_channels) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(LandmarkHead(out_channels) for _ in range(3))

    def forward(self, inputs: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        out = self.body(inputs)
        fpn = self.fpn(out)
        features = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        bbox_regressions = torch.cat(
            [self.BboxHead[i](feature) for i, feature in enumerate(features)], dim=1)
        classifications = torch.cat(
            [self.ClassHead[i](feature) for i, feature in enumerate(features)], dim=1)
        ldm_regressions = torch.cat(
            [self.LandmarkHead[i](feature) for i, feature in enumerate(features)], dim=1)
        if self.phase == 'train':
            return bbox_regressions, classifications, ldm_regressions
        return bbox_regressions, F.softmax(classifications, dim=-1), ldm_regressions


def reference_prior_box(image_size: Tuple[int, int],
                        min_sizes: Sequence[Sequence[int]] = ((16, 32), (64, 128), (256, 512)),
                        steps: Sequence[int] = (8, 16, 32), clip: bool = False) -> Tensor:
    """The reference ``PriorBox.forward``: ``(P, 4)`` (cx, cy, w, h) in [0, 1] units."""
    feature_maps = [[ceil(image_size[0] / step), ceil(image_size[1] / step)] for step in steps]
    anchors: List[float] = []
    for k, f in enumerate(feature_maps):
        for i, j in product(range(f[0]), range(f[1])):
            for min_size in min_sizes[k]:
                s_kx = min_size / image_size[1]
                s_ky = min_size / image_size[0]
                cx = (j + 0.5) * steps[k] / image_size[1]
                cy = (i + 0.5) * steps[k] / image_size[0]
                anchors += [cx, cy, s_kx, s_ky]
    output = torch.tensor(anchors).view(-1, 4)
    if clip:
        output.clamp_(max=1, min=0)
    return output


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0, calib_shape=(2, 3, 64, 96)) -> nn.Module:
    """Random weights and non-trivial BN statistics / affine parameters; eval mode.

    Conv weights keep PyTorch's default random init (re-drawn from ``seed``).
    BN running statistics are first calibrated on one random batch (so
    activations keep a sane scale through 50 layers), then perturbed, and the
    affine parameters are drawn at random, so no BN is an identity.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # leave the global RNG stream alone
        torch.manual_seed(seed)
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.reset_parameters()
                if m.bias is not None:
                    m.bias.uniform_(-0.5, 0.5, generator=gen)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        c = m.num_features
        m.weight.copy_(torch.empty(c).uniform_(0.6, 1.4, generator=gen))
        m.bias.copy_(torch.randn(c, generator=gen) * 0.2)
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration pass
    model.train()
    model(torch.randn(calib_shape, generator=gen) * 50.0)
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
        c = m.num_features
        m.running_mean.add_(torch.randn(c, generator=gen) * 0.05 * m.running_var.sqrt())
        m.running_var.mul_(torch.empty(c).uniform_(0.8, 1.25, generator=gen))
        m.num_batches_tracked.fill_(int(torch.randint(1, 10_000, (1, ), generator=gen)))
    return model.eval()
