"""``FaceInferencer``'s ONNX Runtime backend: a detector's network exported on first use
(cached by content), run by ONNX Runtime between the detector's own batching and
post-processing, so that results, JSON and drawings are those of the PyTorch backend.
"""
import contextlib
import hashlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import torch
from mmengine.model import BaseModel
from torch import nn

from .. import __version__
from ..utils.cpu import nchwc_block_size
from ..utils.paths import atomic_write, cache_dir
from .onnx_export import RetinaFaceExportWrapper, export_onnx, input_normalization
from .onnx_runtime import ort_session
from .quantize import DEFAULT_SCHEME, quantize_int8


def model_digest(detector, int8: bool) -> str:
    """A key for ``detector``'s ONNX export: the content of its config (model part) and
    weights, the export / quantization scheme, this CPU's channel block (the graph
    rewrites depend on it) and the package version."""
    digest = hashlib.sha256(f'{__version__} levels-normalised-input-merged-head-maps int8={int8} '
                            f'block={nchwc_block_size()} '.encode())
    if int8:
        digest.update(DEFAULT_SCHEME.describe().encode())
    cfg = getattr(detector, 'cfg', None)
    if cfg is not None:
        digest.update(repr(cfg.get('model')).encode())
    for name, tensor in detector.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class InputBatcher:
    """The data preprocessor's batching in numpy: ``(3, H, W)`` uint8 images -> the
    normalised ``(B, 3, H, W)`` float32 batch, padded at the bottom / right to the
    largest size (a multiple of ``pad_size_divisor``) with ``pad_value``: the same values,
    uint8 converted and mean-subtracted per plane by OpenCV (3x faster than numpy)."""

    def __init__(self, preprocessor: nn.Module) -> None:
        self.flip, mean, std, self.pad_value = input_normalization(preprocessor)
        self.mean = mean.numpy().reshape(3, 1, 1)
        self.std = None if bool((std == 1).all()) else std.numpy().reshape(3, 1, 1)
        self.divisor = int(getattr(preprocessor, 'pad_size_divisor', 1))

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        height, width = (-(-max(img.shape[axis] for img in images) // self.divisor)
                         * self.divisor for axis in (-2, -1))
        out = np.empty((len(images), 3, height, width), np.float32)
        for k, img in enumerate(images):
            img = np.asarray(img)
            h, w = img.shape[-2:]
            if (h, w) != (height, width):
                out[k] = self.pad_value
            view = out[k, :, :h, :w]
            planes = img[::-1] if self.flip else img
            if img.dtype == np.uint8 and len(planes) == len(self.mean):
                for plane, mean, dst in zip(planes, self.mean.ravel(), view):
                    cv2.subtract(plane, float(mean), dst=dst, dtype=cv2.CV_32F)
            else:
                np.subtract(planes, self.mean, out=view)
            if self.std is not None:
                view /= self.std
        return out


def cached_onnx_model(detector: nn.Module, int8: bool = False, folder=None) -> str:
    """Path of ``detector`` exported to ONNX (``'levels'`` outputs; statically quantized
    with ``int8``), made on first use in ``folder`` (default: ``cache_dir()/onnx``, beside
    the default weights) and reused while the config and weights are the same.

    Written to a temporary name and renamed, so concurrent first uses are safe. Each use
    refreshes the file's time; writing a new export removes those unused for
    :data:`STALE_EXPORT_DAYS` days (:func:`prune_stale_exports`).
    """
    folder = Path(folder) if folder is not None else cache_dir() / 'onnx'
    stem = Path(getattr(getattr(detector, 'cfg', None), 'filename', None) or 'model').stem
    path = folder / f'{stem}-{model_digest(detector, int8)}{"-int8" if int8 else ""}.onnx'
    if path.is_file():
        with contextlib.suppress(OSError):  # a read-only cache only misses the refresh
            os.utime(path)
        return str(path)
    with atomic_write(path) as staged:
        if not int8:
            export_onnx(detector, staged, outputs='levels')
        else:
            with tempfile.TemporaryDirectory(dir=folder, prefix='.export-') as tmp:
                fp32 = str(Path(tmp) / 'fp32.onnx')
                export_onnx(detector, fp32, outputs='levels')
                batcher = InputBatcher(detector.data_preprocessor)
                quantize_int8(fp32, staged, to_input=lambda chw: batcher([chw]))
    prune_stale_exports(folder)
    return str(path)


STALE_EXPORT_DAYS = 30  #: days after which an unused cached export is removed


def prune_stale_exports(folder, days: float = STALE_EXPORT_DAYS) -> None:
    """Remove the exports in ``folder`` (only names ``<config>-<key>[-int8].onnx``) that
    were not used for ``days`` days."""
    cutoff = time.time() - days * 86400
    for old in Path(folder).glob('*.onnx'):
        with contextlib.suppress(OSError):  # gone already, or not ours to remove
            if re.fullmatch(r'.+-[0-9a-f]{16}(-int8)?\.onnx', old.name) and \
                    old.stat().st_mtime < cutoff:
                old.unlink()


class OnnxRuntimeDetector(BaseModel):
    """A RetinaFace detector whose network runs in ONNX Runtime (CPU).

    ``test_step`` takes what the PyTorch detector takes (the test pipeline's
    ``inputs`` and ``data_samples``) and returns the same ``DetDataSample`` s:
    images are batched as the detector's data preprocessor would
    (:class:`InputBatcher`), the exported network (``'levels'`` outputs) runs in
    ONNX Runtime, and the detector's own head
    turns its maps into detections (``predict_by_feat``: score threshold,
    decoding, NMS, rescale). ``detector`` provides the head, the
    preprocessor's settings and ``dataset_meta``; its weights are in the ONNX.

    Args:
        detector: the PyTorch detector the ONNX was exported from.
        onnx_file: the export (FP32 or INT8).
        threads: ONNX Runtime's intra-op threads (default: torch's
            ``get_num_threads()``, so ``OMP_NUM_THREADS`` governs both).
    """

    def __init__(self, detector: nn.Module, onnx_file: str,
                 threads: Optional[int] = None) -> None:
        super().__init__()
        self.head = detector.bbox_head
        self.dataset_meta = getattr(detector, 'dataset_meta', None)
        self.batch = InputBatcher(detector.data_preprocessor)
        self.onnx_file = str(onnx_file)
        self.session = ort_session(self.onnx_file, threads or torch.get_num_threads())
        self.input_name = self.session.get_inputs()[0].name

    def test_step(self, data: dict) -> list:
        samples = data['data_samples']
        batch = self.batch([img.numpy() for img in data['inputs']])
        for sample in samples:
            sample.set_metainfo(dict(batch_input_shape=tuple(batch.shape[-2:]),
                                     pad_shape=tuple(batch.shape[-2:])))
        maps = [torch.from_numpy(out) for out in self.session.run(
            None, {self.input_name: batch})]
        results = self.head.predict_by_feat(
            *RetinaFaceExportWrapper.split_levels(self.head, maps),
            [s.metainfo for s in samples], rescale=True)
        for sample, result in zip(samples, results):
            sample.pred_instances = result
        return samples

    def forward(self, *args, **kwargs):
        raise NotImplementedError('OnnxRuntimeDetector only predicts: use test_step')
