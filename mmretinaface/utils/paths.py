"""Where things live: the shipped configs (by name) and the per-user cache folder.

The configs ship inside the package (``mmretinaface/.mim/configs``, mmdet's
layout); a source checkout (editable install) uses the repository's
``configs/``. No torch import here.
"""
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, List, Union

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


@contextlib.contextmanager
def atomic_write(path: Union[str, os.PathLike]) -> Iterator[str]:
    """A temporary path beside ``path`` (its folder created) for a writer: renamed to
    ``path`` when the block ends without an error, removed otherwise. Readers never see
    a half-written file, and concurrent writers each rename a whole one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def cache_dir() -> Path:
    """Where default weights are made: ``$MMRETINAFACE_HOME``, else
    ``$XDG_CACHE_HOME/mmretinaface``, else ``~/.cache/mmretinaface``."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser()
    return Path(os.environ.get('XDG_CACHE_HOME') or '~/.cache').expanduser() / 'mmretinaface'
