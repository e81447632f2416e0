"""Calibration images for static INT8 quantization: real photos, several scales, mosaics.

The default set is built offline from public-domain photos that installed
packages ship (matplotlib's Grace Hopper, scikit-image's astronaut,
cameraman, coffee, cat, rocket, motorcycle, coins and two textures): each
photo at two scales (longer side 640 and 320 px, the sizes the model usually
runs at) plus mosaics of the three face photos at several scales, so the
activation ranges cover small and large faces, indoor and outdoor scenes.
``--calib-images DIR`` replaces it with the user's photos (same scaling), read
by :func:`~mmretinaface.utils.image_io.read_image_folder`.
"""
from typing import Callable, Iterator, List, Optional, Sequence

import cv2
import numpy as np

from ..utils.image_io import hwc_to_chw, load_image, require_packaged_photo

#: Photos of the default calibration set (names in
#: :data:`~mmretinaface.utils.image_io.PACKAGED_PHOTOS`); the first three show a face.
BUNDLED_CALIBRATION_PHOTOS = ('grace_hopper', 'astronaut', 'camera', 'coffee', 'chelsea',
                              'rocket', 'motorcycle', 'coins', 'grass', 'gravel')
NUM_FACE_PHOTOS = 3
#: Longer sides (pixels) every calibration photo is resized to.
CALIBRATION_SIDES = (640, 320)


def bundled_photo_paths() -> List[str]:
    """Paths of :data:`BUNDLED_CALIBRATION_PHOTOS` (ImportError naming the extra if missing)."""
    purpose = 'the default INT8 calibration photos (or pass --calib-images DIR)'
    return [require_packaged_photo(name, purpose) for name in BUNDLED_CALIBRATION_PHOTOS]


def resize_longer_side(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` resized (aspect kept) so that its longer side is ``side`` pixels."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp)


def photo_mosaic(photos: Sequence[np.ndarray], rng: np.random.Generator,
                 size: Sequence[int] = (640, 480), tile_sides: Sequence[int] = (48, 320),
                 max_tiles: int = 24, background: Optional[np.ndarray] = None) -> np.ndarray:
    """Tiles of ``photos`` at random scales on a ``(width, height)`` canvas, none overlapping.

    Tile longer sides are drawn log-uniformly from ``tile_sides``; a tile that
    does not fit without overlapping the placed ones after 30 tries is skipped.
    The canvas is ``background`` resized to ``size`` or mid-grey.
    """
    width, height = size
    canvas = (np.full((height, width, 3), 128, np.uint8) if background is None
              else cv2.resize(background, (width, height), interpolation=cv2.INTER_AREA))
    placed: List[tuple] = []
    lo, hi = np.log(tile_sides[0]), np.log(min(tile_sides[1], width, height))
    for k in range(max_tiles):
        tile = resize_longer_side(photos[k % len(photos)], int(round(np.exp(rng.uniform(lo, hi)))))
        th, tw = tile.shape[:2]
        for _ in range(30):
            x, y = int(rng.integers(0, width - tw + 1)), int(rng.integers(0, height - th + 1))
            if all(x + tw <= px or px + pw <= x or y + th <= py or py + ph <= y
                   for px, py, pw, ph in placed):
                canvas[y:y + th, x:x + tw] = tile
                placed.append((x, y, tw, th))
                break
    return canvas


def calibration_images(images: Optional[Sequence[np.ndarray]] = None,
                       sides: Sequence[int] = CALIBRATION_SIDES,
                       num_mosaics: int = 4, seed: int = 0) -> List[np.ndarray]:
    """The BGR uint8 images a model is calibrated on.

    ``images`` (the user's photos) or, by default, the bundled photos, each
    resized to every longer side of ``sides``; for the default set also
    ``num_mosaics`` 640x480 mosaics of the face photos at several scales.
    """
    mosaics = 0
    if images is None:
        images = [load_image(path) for path in bundled_photo_paths()]
        mosaics = num_mosaics
    out = [resize_longer_side(img, side) for img in images for side in sides]
    rng = np.random.default_rng(seed)
    faces = list(images[:NUM_FACE_PHOTOS])
    out += [photo_mosaic(faces, rng, background=images[(k + 3) % len(images)])
            for k in range(mosaics)]
    return out


class CalibrationReader:
    """onnxruntime ``CalibrationDataReader``: feeds ``images`` one at a time as the
    exported model's input (``(1, 3, H, W)`` float32 BGR 0..255, or what
    ``to_input`` makes of the ``(3, H, W)`` uint8 image)."""

    def __init__(self, images: Sequence[np.ndarray], input_name: str = 'image',
                 to_input: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> None:
        self.images = list(images)
        self.input_name = input_name
        self.to_input = to_input
        self._iter: Iterator[np.ndarray] = iter(self.images)

    def get_next(self) -> Optional[dict]:
        image = next(self._iter, None)
        if image is None:
            return None
        chw = hwc_to_chw(image)
        blob = self.to_input(chw) if self.to_input else chw.astype(np.float32)[None]
        return {self.input_name: blob}

    def rewind(self) -> None:
        self._iter = iter(self.images)
