"""Package attributes imported on first use (PEP 562), so that light imports stay light."""
import importlib
from typing import Callable, Dict, List, Tuple


def lazy_attributes(package: str, table: Dict[str, str],
                    namespace: dict) -> Tuple[Callable[[str], object], Callable[[], List[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` for ``package``.

    ``table`` maps an attribute name to the module that defines it: a
    submodule of ``package`` or a full ``mmretinaface.`` name; the first access imports
    that module and caches the value in ``namespace`` (the package's ``globals()``).
    """

    def __getattr__(name: str) -> object:
        if name in table:
            value = getattr(importlib.import_module(
                table[name] if table[name].startswith('mmretinaface.')
                else f'{package}.{table[name]}'), name)
            namespace[name] = value
            return value
        raise AttributeError(f'module {package!r} has no attribute {name!r}')

    def __dir__() -> List[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
