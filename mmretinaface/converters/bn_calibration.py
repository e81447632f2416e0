"""Real BatchNorm statistics for weights whose BN was folded away, same eval function.

A checkpoint converted from a BN-folded export holds ``running_mean 0,
running_var 1`` (BN is the identity plus bias). Exact in eval mode, but in
train mode BatchNorm normalises with batch statistics, and fine-tuning starts
from a different function. Calibration measures each BN's input statistics
on real images and re-parameterises the layer so that

* ``running_mean``/``running_var`` are those statistics (what batches in
  train mode will show), and
* ``weight``/``bias`` are rescaled so the eval-mode function is unchanged:
  with ``a = w / sqrt(rv + eps)`` and ``c = b - a * rm`` (the layer is
  ``y = a * x + c``), the new layer has ``w' = a * sqrt(v + eps)`` and
  ``b' = c + a * m``.

Because every eval-mode layer computes the same function before and after,
the input of every BN in eval mode is the same too: one eval-mode pass over
the calibration images, recording every BN's input moments, gives all layers'
statistics at once (no layer-by-layer passes are needed; the tests check the
result against a layer-by-layer recalibration).

Default calibration images are the real photographs that installed packages
ship (matplotlib's and scikit-image's sample photos; people first), cut into
square crops at several scales and 2x2 / 3x3 mosaics with flips and
brightness/contrast changes, like RetinaFace's training crops.
"""
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..models.utils import batchnorm_layers
from ..utils.image_io import (
    PACKAGED_PHOTOS,
    hwc_to_chw,
    load_image,
    packaged_photo_path,
    read_image_folder,
)

#: Photos with faces are drawn this many times as often as the others.
FACE_WEIGHT = 3.0

#: Defaults: 32 views of 640 px (the training crop size), 8 per forward pass.
NUM_VIEWS = 32
VIEW_SIZE = 640
BATCH_SIZE = 8
CROP_SCALES = (0.3, 1.0)  # side of a square crop / shorter image side (RandomSquareCrop)


class Photo:
    """A calibration image: its name, BGR pixels, whether it shows a face, sampling weight."""

    def __init__(self, name: str, image: np.ndarray, has_face: bool = False,
                 weight: float = 1.0) -> None:
        self.name, self.image, self.has_face, self.weight = name, image, has_face, float(weight)


def packaged_photos() -> List[Photo]:
    """The real photographs of :data:`~mmretinaface.utils.image_io.PACKAGED_PHOTOS` found
    on disk (may be empty)."""
    photos = []
    for name, (_, _, has_face) in PACKAGED_PHOTOS.items():
        path = packaged_photo_path(name)
        if path is not None:
            photos.append(Photo(name, load_image(path), has_face,
                                FACE_WEIGHT if has_face else 1.0))
    return photos


def folder_photos(folder: str) -> List[Photo]:
    """The images of ``folder`` by the rules of
    :func:`~mmretinaface.utils.image_io.read_image_folder` (named by relative path)."""
    return [Photo(name, image)
            for name, image in read_image_folder(folder, purpose='calibration images')]


# ----------------------------------------------------------------------- views
def _random_crop(rng: np.random.Generator, photo: Photo, out_size: int) -> np.ndarray:
    """A random square crop (side = scale x shorter side), resized, maybe mirrored."""
    image = photo.image
    h, w = image.shape[:2]
    side = max(8, int(round(rng.uniform(*CROP_SCALES) * min(h, w))))
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    crop = image[y:y + side, x:x + side]
    interp = cv2.INTER_AREA if side > out_size else cv2.INTER_LINEAR
    crop = cv2.resize(crop, (out_size, out_size), interpolation=interp)
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def _photometric(rng: np.random.Generator, view: np.ndarray) -> np.ndarray:
    """Brightness and contrast changes in the ranges of ``PhotoMetricDistortion``."""
    out = view.astype(np.float32)
    if rng.random() < 0.5:
        out += rng.uniform(-32, 32)
    if rng.random() < 0.5:
        out *= rng.uniform(0.5, 1.5)
    return np.clip(out, 0, 255).astype(np.uint8)


def calibration_views(photos: Sequence[Photo], num_views: int = NUM_VIEWS,
                      size: int = VIEW_SIZE, seed: int = 0) -> Iterator[np.ndarray]:
    """``num_views`` BGR ``size x size`` uint8 views of ``photos``, deterministic for a seed.

    Half the views are single crops, a quarter 2x2 mosaics and a quarter 3x3
    mosaics of crops (faces at several scales, several images per view); photos
    are drawn in proportion to their weight.
    """
    if not photos:
        raise ValueError('no calibration photos')
    rng = np.random.default_rng(seed)
    weights = np.array([p.weight for p in photos], np.float64)
    weights /= weights.sum()
    for i in range(num_views):
        grid = (1, 1, 2, 3)[i % 4]
        cell = size // grid
        view = np.zeros((size, size, 3), np.uint8)
        for r in range(grid):
            for c in range(grid):
                photo = photos[int(rng.choice(len(photos), p=weights))]
                view[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = _random_crop(
                    rng, photo, cell)
        yield _photometric(rng, view)


# ------------------------------------------------------------------ statistics
class _Moments:
    """Per-channel mean and variance over (N, H, W), merged batch by batch in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Optional[Tensor] = None
        self.m2: Optional[Tensor] = None

    def update(self, x: Tensor) -> None:
        if x.dim() == 4 and x.shape[2] * x.shape[3] >= 64 * 64:
            x = x[:, :, ::2, ::2]  # every 4th position of large maps: a quarter of the cost
        dims = [d for d in range(x.dim()) if d != 1]
        n = x.numel() // x.shape[1]
        var, mean = torch.var_mean(x.detach().float(), dim=dims, unbiased=False)
        mean, m2 = mean.double(), var.double() * n
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * n / total)
        self.count = total

    @property
    def var(self) -> Tensor:
        return self.m2 / max(self.count - 1, 1)  # unbiased, as BatchNorm's running_var


def _to_batch(model: nn.Module, views: Sequence[np.ndarray]) -> Tensor:
    """BGR uint8 views -> the detector's normalised input batch (its data preprocessor)."""
    inputs = [torch.from_numpy(hwc_to_chw(v)) for v in views]
    return model.data_preprocessor(dict(inputs=inputs), False)['inputs']


@torch.no_grad()
def batchnorm_input_moments(model: nn.Module, views: Iterable[np.ndarray],
                            batch_size: int = BATCH_SIZE,
                            layers: Optional[Sequence[str]] = None) -> Dict[str, _Moments]:
    """Input mean/variance of each BN (or of ``layers``) over ``views``, eval mode."""
    bns = dict(batchnorm_layers(model))
    names = list(bns) if layers is None else list(layers)
    moments = {name: _Moments() for name in names}
    handles = [bns[name].register_forward_pre_hook(
        lambda _m, args, acc=moments[name]: acc.update(args[0])) for name in names]
    was_training = model.training
    model.eval()
    try:
        batch: List[np.ndarray] = []
        for view in views:
            batch.append(view)
            if len(batch) == batch_size:
                model._forward(_to_batch(model, batch))
                batch = []
        if batch:
            model._forward(_to_batch(model, batch))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    empty = [name for name, acc in moments.items() if acc.mean is None]
    if empty:
        raise RuntimeError(f'BatchNorm layers not reached by the forward pass: {empty[:5]}')
    return moments


def _eval_scale(weight: Tensor, var: Tensor, eps: float) -> Tensor:
    """The float32 ``scale`` of ``y = scale * x + shift`` that eval-mode
    ``F.batch_norm`` computes from ``weight`` and ``var``, read off its output
    (``x = 1`` with zero mean and bias gives it exactly)."""
    zeros = torch.zeros_like(weight)
    probe = torch.ones(1, weight.numel(), 1, 1, dtype=weight.dtype)
    return F.batch_norm(probe, zeros, var, weight, zeros, False, 0.0, eps).flatten()


def _nudge(value: Tensor, got: Tensor, want: Tensor, increasing: Tensor) -> Tensor:
    """Move ``value`` one float step where ``got != want``, in the direction that helps."""
    up = (got < want) == increasing
    step = torch.where(up, torch.full_like(value, float('inf')),
                       torch.full_like(value, float('-inf')))
    return torch.where(got == want, value, torch.nextafter(value, step))


@torch.no_grad()
def set_batchnorm_statistics_(bn: _BatchNorm, mean: Tensor, var: Tensor,
                              max_steps: int = 16) -> None:
    """Give ``bn`` running statistics ``mean``/``var`` keeping its eval-mode function.

    The new ``weight``/``bias`` are solved in float64. ``weight`` is then
    moved by a few float32 steps until eval-mode ``F.batch_norm`` computes the
    same float32 scale as before (bit-identical); the shift
    ``bias - mean * scale`` is then off by at most one float32 rounding of
    ``bias`` (which a change of the statistics cannot avoid).
    """
    if bn.weight is None or bn.bias is None:
        raise ValueError('recalibrating a BatchNorm needs affine=True (weight and bias)')
    eps = bn.eps
    w32, b32 = bn.weight.detach().clone(), bn.bias.detach().clone()
    want_scale = _eval_scale(w32, bn.running_var, eps)
    scale = w32.double() / torch.sqrt(bn.running_var.double() + eps)
    shift = b32.double() - scale * bn.running_mean.double()
    mean32 = mean.to(w32.dtype)
    var32 = var.clamp_min(0).to(w32.dtype)
    weight = (scale * torch.sqrt(var32.double() + eps)).to(w32.dtype)
    bias = (shift + scale * mean32.double()).to(w32.dtype)
    for _ in range(max_steps):  # scale depends on weight only (increasing in it if > 0)
        got_scale = _eval_scale(weight, var32, eps)
        if torch.equal(got_scale, want_scale):
            break
        weight = _nudge(weight, got_scale, want_scale, weight >= 0)
    bn.running_mean.copy_(mean32)
    bn.running_var.copy_(var32)
    bn.weight.copy_(weight)
    bn.bias.copy_(bias)


def calibrate_batchnorm_(model: nn.Module, views: Iterable[np.ndarray],
                         batch_size: int = BATCH_SIZE) -> int:
    """Measure every BN's input statistics on ``views`` and set them (eval function kept).

    Returns the number of views seen.
    """
    counted = []

    def counting(it):
        for v in it:
            counted.append(1)
            yield v

    moments = batchnorm_input_moments(model, counting(views), batch_size)
    bns = dict(batchnorm_layers(model))
    for name, acc in moments.items():
        set_batchnorm_statistics_(bns[name], acc.mean, acc.var)
    return len(counted)
