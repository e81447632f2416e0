"""Optional dependencies (pip extras): import them with a message naming the extra."""
import importlib
from types import ModuleType


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``; if it is missing, an ImportError saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f'{purpose} needs {module.split(".")[0]}, which is not installed: '
                          f'pip install "mmretinaface[{extra}]"') from err
