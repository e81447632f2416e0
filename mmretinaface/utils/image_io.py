"""Image loading that never crashes deep in torch: clear errors, any common format.

Returns BGR ``uint8`` (the model's input convention) for grayscale, RGBA,
16-bit and palette images, and applies the EXIF orientation. Also the one
reader of a user's image folder (the calibration images of
``tools/convert_weights.py`` and ``tools/export_onnx.py --int8``) and the
public-domain photos bundled in installed packages (demo and tests).
"""
import importlib.util
import os
import warnings
from typing import List, Optional, Tuple, Union

import cv2
import numpy as np


class ImageReadError(OSError):
    """An input image is missing, unreadable or not an image."""


def to_bgr_uint8(image: np.ndarray, source: str = 'array') -> np.ndarray:
    """Convert an H x W (x C) array of any common depth to 3-channel BGR uint8.

    Grayscale is replicated, alpha is dropped (no premultiplication: faces are
    on the opaque parts), 16-bit and float images are scaled to 8 bits.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f'{source}: expected a numpy array, got {type(image).__name__}')
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f'{source}: expected an H x W, H x W x 3 or H x W x 4 image, '
                         f'got shape {image.shape}')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f'{source}: empty image of shape {image.shape}')
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        if not np.isfinite(image).all():
            raise ValueError(f'{source}: image contains NaN or inf')
        scale = 255.0 if image.max() <= 1.0 else 1.0
        image = np.clip(image * scale, 0, 255).round().astype(np.uint8)
    elif image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:
        raise ValueError(f'{source}: unsupported image dtype {image.dtype}')
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def hwc_to_chw(img: np.ndarray) -> np.ndarray:
    """A contiguous ``(C, H, W)`` copy of an ``(H, W, C)`` image, the planes written by OpenCV's
    ``split`` (9x numpy's strided copy); dtypes it cannot split (int64...) by numpy."""
    out = np.empty((img.shape[2], *img.shape[:2]), img.dtype)
    try:
        planes = cv2.split(img, list(out))
    except cv2.error:
        planes = ()
    if [p.ctypes.data for p in planes] != [o.ctypes.data for o in out]:
        np.copyto(out, img.transpose(2, 0, 1))
    return out


# EXIF orientation (tag 0x0112) -> numpy ops turning the stored pixels upright.
_EXIF_TRANSFORMS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
    7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
    8: lambda a: np.swapaxes(a, 0, 1)[::-1],
}


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) of an encoded image, 1 when absent."""
    import io

    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(img.getexif().get(0x0112, 1))
    except Exception:  # no EXIF or a format PIL cannot parse: upright
        return 1


def load_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read an image file as BGR uint8, honouring EXIF orientation.

    Raises :class:`ImageReadError` naming the path when the file is missing,
    unreadable or not a decodable image.
    """
    path = os.fspath(path)
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as err:
        raise ImageReadError(f'cannot read image {path}: {err.strerror or err}') from err
    buf = np.frombuffer(data, np.uint8)
    # IMREAD_UNCHANGED keeps 16-bit and alpha (converted below) and ignores EXIF.
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if image is None:
        raise ImageReadError(f'cannot decode image {path}: not an image or corrupt file')
    image = to_bgr_uint8(image, source=path)
    transform = _EXIF_TRANSFORMS.get(exif_orientation(data))
    return np.ascontiguousarray(transform(image)) if transform else image


#: File name endings (any case) that :func:`read_image_folder` reads; all decode with OpenCV.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
#: Default cap on the image files read from one folder (each is held in memory at full size).
MAX_FOLDER_IMAGES = 200
#: Default smallest shorter side (pixels) of a folder image; smaller ones are skipped.
MIN_IMAGE_SIDE = 32


def _listing(names: List[str], limit: int = 10) -> str:
    """``names`` one per indented line, at most ``limit`` of them."""
    more = f'\n  ... and {len(names) - limit} more' if len(names) > limit else ''
    return '\n  ' + '\n  '.join(names[:limit]) + more


def read_image_folder(folder: Union[str, os.PathLike], max_images: int = MAX_FOLDER_IMAGES,
                      min_side: int = MIN_IMAGE_SIDE, purpose: str = 'image folder',
                      ) -> List[Tuple[str, np.ndarray]]:
    """The images of a user's folder as ``(path relative to folder, BGR uint8)`` pairs.

    Rules: every file under ``folder`` and its sub-folders whose name ends in
    :data:`IMAGE_EXTENSIONS` (any case), sorted by relative path; when there
    are more than ``max_images``, ``max_images`` of them spread evenly over
    the sorted list (a warning says so); each read with :func:`load_image`
    (EXIF orientation applied). Files that cannot be read or whose shorter
    side is under ``min_side`` pixels are skipped with one warning naming
    them. ``purpose`` starts every message.

    Raises:
        FileNotFoundError: ``folder`` is missing or not a directory.
        ValueError: it holds no image file (the other files are named), or
            none of the image files was usable (each is named with the reason).
    """
    folder = os.fspath(folder)
    if max_images < 1 or min_side < 1:
        raise ValueError(f'{purpose}: max_images and min_side must be >= 1, '
                         f'got {max_images} and {min_side}')
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'{purpose}: {folder} is not a folder (missing or a file)')
    files = sorted(os.path.relpath(os.path.join(root, name), folder)
                   for root, _, names in os.walk(folder) for name in names)
    paths = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not paths:
        others = f'; it holds: {", ".join(files[:5])}{" ..." if len(files) > 5 else ""}' \
            if files else ' (it is empty)'
        raise ValueError(f'{purpose}: no image file ({" ".join(IMAGE_EXTENSIONS)}) in '
                         f'{folder}{others}')
    if len(paths) > max_images:
        warnings.warn(f'{purpose}: {folder} holds {len(paths)} image files; reading '
                      f'{max_images} of them, spread evenly over the sorted list', stacklevel=2)
        paths = [paths[i * len(paths) // max_images] for i in range(max_images)]
    images, skipped = [], []
    for rel in paths:
        path = os.path.join(folder, rel)
        try:
            image = load_image(path)
        except (ImageReadError, ValueError, cv2.error) as err:
            skipped.append(str(err) if path in str(err) else f'{path}: {err}')
            continue
        if min(image.shape[:2]) < min_side:
            skipped.append(f'{path}: {image.shape[1]}x{image.shape[0]} px, shorter side '
                           f'under {min_side} px')
            continue
        images.append((rel, image))
    if not images:
        raise ValueError(f'{purpose}: none of the {len(paths)} image files in {folder} could '
                         f'be read as an image of at least {min_side} px:' + _listing(skipped))
    if skipped:
        warnings.warn(f'{purpose}: skipped {len(skipped)} unreadable or too small image '
                      f'file(s) of {folder}:' + _listing(skipped), stacklevel=2)
    return images


#: Public-domain photos with one face each, shipped inside installed packages.
#: Real photographs inside installed packages: name -> (package, path inside the
#: package, whether it shows a face). Only files already on disk are used (nothing is
#: fetched); the demo, BatchNorm calibration and INT8 calibration draw from this list.
PACKAGED_PHOTOS = {
    'grace_hopper': ('matplotlib', 'mpl-data/sample_data/grace_hopper.jpg', True),
    'astronaut': ('skimage', 'data/astronaut.png', True),
    'camera': ('skimage', 'data/camera.png', True),
    'coffee': ('skimage', 'data/coffee.png', False),
    'chelsea': ('skimage', 'data/chelsea.png', False),
    'rocket': ('skimage', 'data/rocket.jpg', False),
    'motorcycle': ('skimage', 'data/motorcycle_left.png', False),
    'present': ('matplotlib', 'mpl-data/sample_data/Minduka_Present_Blue_Pack.png', False),
    'hubble_deep_field': ('skimage', 'data/hubble_deep_field.jpg', False),
    'immunohistochemistry': ('skimage', 'data/ihc.png', False),
    'coins': ('skimage', 'data/coins.png', False),
    'moon': ('skimage', 'data/moon.png', False),
    'brick': ('skimage', 'data/brick.png', False),
    'grass': ('skimage', 'data/grass.png', False),
    'gravel': ('skimage', 'data/gravel.png', False),
}
#: The photos ``bundled:NAME`` names in the demo.
BUNDLED_PHOTOS = ('grace_hopper', 'astronaut')


def _package_dir(package: str) -> Optional[str]:
    """The installed folder of ``package`` without importing it (None if absent)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def packaged_photo_path(name: str) -> Optional[str]:
    """Path of the photo ``name`` of :data:`PACKAGED_PHOTOS`; None when its package or
    file is not installed."""
    package, rel_path, _ = PACKAGED_PHOTOS[name]
    root = _package_dir(package)
    path = None if root is None else os.path.join(root, rel_path)
    return path if path is not None and os.path.isfile(path) else None


def require_packaged_photo(name: str, purpose: str) -> str:
    """:func:`packaged_photo_path`, or an ImportError naming the extra that installs it."""
    path = packaged_photo_path(name)
    if path is None:
        from .extras import require
        require(PACKAGED_PHOTOS[name][0], 'demo', purpose)  # raises when the package is absent
        raise FileNotFoundError(f'{purpose}: {name} not found in the installed '
                                f'{PACKAGED_PHOTOS[name][0]}')
    return path


def bundled_photo(name: str) -> str:
    """Path of a bundled photo: ``grace_hopper`` (matplotlib, 512x600 JPEG) or
    ``astronaut`` (scikit-image, 512x512 PNG); ImportError naming the extra if missing."""
    if name not in BUNDLED_PHOTOS:
        raise ValueError(f'unknown bundled photo {name!r} (choose {" or ".join(BUNDLED_PHOTOS)})')
    return require_packaged_photo(name, f'the bundled photo {name}')
