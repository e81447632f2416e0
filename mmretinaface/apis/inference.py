"""The one detector builder: config (path, name or Config) + checkpoint, loaded strictly
and weights-only (mmdet's ``init_detector`` without its permissive loading)."""
import os
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
from mmengine.config import Config
from torch import nn

from .. import register  # noqa: F401  (the configs' components in mmdet's registries)
from .model_zoo import DEFAULT_MODEL, get_config_path, get_weights_path, has_default_weights

ConfigLike = Union[str, os.PathLike, Config]


def check_weights_path(weights: Union[str, os.PathLike]) -> str:
    """The weights path as a string; FileNotFoundError naming it when it is not a file."""
    weights = os.fspath(weights)
    if not Path(weights).is_file():
        raise FileNotFoundError(f'weights not found: {weights}')
    return weights


def resolve_model(config: Optional[ConfigLike], weights: Optional[Union[str, os.PathLike]]
                  ) -> tuple:
    """``(config path or Config, weights path or None)`` from what a user passed.

    ``None`` is the default model; a string that is not a file is a shipped
    config's name. A config given by name (or ``None``) gets its default
    weights (:func:`~mmretinaface.apis.get_weights_path`) when ``weights`` is
    ``None``, like a model name in mmdet's ``DetInferencer``; a path or a
    ``Config`` does not (no weights: random initialisation).
    """
    if config is None:
        config = DEFAULT_MODEL
    if isinstance(config, os.PathLike):
        config = os.fspath(config)
    if isinstance(config, str) and not Path(config).is_file():
        name = config
        config = get_config_path(name)
        if weights is None and has_default_weights(name):
            weights = get_weights_path(name)
    elif not isinstance(config, (str, Config)):
        raise TypeError(f'config must be a path, a config name or a Config, '
                        f'got {type(config).__name__}')
    return config, (None if weights is None else check_weights_path(weights))


def load_face_checkpoint(model: nn.Module, weights: Union[str, os.PathLike]) -> dict:
    """Load an mmretinaface checkpoint into ``model``: safely and strictly.

    ``torch.load(weights_only=True)`` (tensors and plain containers only);
    missing, unexpected or mis-shaped keys raise a ValueError that lists them
    (mmengine's loader only warns). Sets ``model.dataset_meta`` from the
    checkpoint and checks its ``num_keypoints`` against the head. Returns the
    checkpoint's ``meta``.
    """
    from ..converters import load_state_dict_strict
    from ..datasets.metainfo import FACE_METAINFO
    from ..utils import allow_runner_checkpoint_globals
    path = check_weights_path(weights)
    allow_runner_checkpoint_globals()  # tools/train.py checkpoints: message_hub, numpy
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:
        raise ValueError(f'{path} is not an mmretinaface checkpoint loadable with '
                         f'weights_only=True ({type(err).__name__}: '
                         f'{str(err).splitlines()[0] if str(err) else ""}). Convert reference '
                         'weights with tools/convert_weights.py.') from err
    state_dict = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
    state_dict = {k[len('module.'):] if k.startswith('module.') else k: v
                  for k, v in state_dict.items()}
    try:
        load_state_dict_strict(model, state_dict)
    except ValueError as err:
        raise ValueError(f'{path}: {err}') from None
    meta = checkpoint.get('meta', {}) or {}
    dataset_meta = dict(meta.get('dataset_meta') or FACE_METAINFO)
    head_points = getattr(getattr(model, 'bbox_head', None), 'num_keypoints', None)
    ckpt_points = dataset_meta.get('num_keypoints', head_points)
    if head_points is not None and ckpt_points != head_points:
        raise ValueError(f'{path} was saved for {ckpt_points} landmarks but the config\'s '
                         f'head has num_keypoints={head_points}')
    model.dataset_meta = dataset_meta
    return meta


def init_face_detector(config: Optional[ConfigLike] = None,
                       weights: Optional[Union[str, os.PathLike]] = None,
                       device: str = 'cpu', cfg_options: Optional[dict] = None,
                       optimize: bool = False) -> nn.Module:
    """Build a config's detector, load ``weights`` strictly and safely, eval mode.

    Args:
        config: a config path, a shipped config's name
            (``'retinaface_mobilenet0.25_widerface'``) or a ``Config``;
            ``None``: that default model with its converted published weights.
        weights: checkpoint path; ``None`` loads the default weights of a
            config given by name, and nothing (random init) otherwise.
        device: ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
        cfg_options: overrides merged into the config (``{'model.x': y}``).
        optimize: ``True`` folds BatchNorm into the convolutions for
            inference only (:func:`~mmretinaface.apis.optimize.optimize_for_inference`;
            same outputs to float rounding); ``False`` keeps the model as
            loaded (trainable, exportable).

    The model keeps its config as ``model.cfg`` (mmdet's ``inference_detector``
    and :class:`FaceInferencer` read the test pipeline from it). Missing files
    raise FileNotFoundError naming them; a checkpoint that needs unpickling or
    does not match the config raises ValueError.
    """
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    config, weights = resolve_model(config, weights)
    config = Config.fromfile(config) if isinstance(config, str) else config.copy()
    if cfg_options:
        config.merge_from_dict(cfg_options)
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise RuntimeError(f'device {device!r} requested but CUDA is not available')
    init_default_scope(config.get('default_scope', 'mmdet'))
    model_cfg = config.model.copy()
    model_cfg.pop('pretrained', None)
    if weights is not None and model_cfg.get('backbone', {}).get('init_cfg') is not None:
        model_cfg.backbone.init_cfg = None  # never read ImageNet weights at inference
    model = MODELS.build(model_cfg)
    if weights is not None:
        load_face_checkpoint(model, weights)
    else:
        from ..datasets.metainfo import FACE_METAINFO
        warnings.warn('no weights given: the detector is randomly initialised (pass weights=, '
                      'or a config name to use its default weights)', stacklevel=2)
        model.dataset_meta = dict(FACE_METAINFO)
    model.cfg = config
    model = model.to(device).eval()
    if optimize:
        from .optimize import optimize_for_inference
        optimize_for_inference(model)
    return model
