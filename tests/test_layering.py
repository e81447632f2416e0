"""The package's units import downwards only, with no cycles (imports inside functions count).

Units are the top-level subpackages / modules of ``mmretinaface``; each layer
may import the layers below it (and units of its own layer, without cycles).
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'mmretinaface'

#: unit -> layer, from the bottom (docs/architecture.md, "Layers")
LAYERS = {
    'utils': 0, 'argtypes': 0, '__init__': 0,
    'structures': 1, 'datasets': 1, 'models': 1, 'visualization': 1,
    'engine': 2,
    'evaluation': 3, 'converters': 3, 'deploy': 3,
    'register': 4,
    'apis': 5,
}


def _imported_modules(path: Path, root: Path) -> list:
    """``(line, absolute module name)`` of every mmretinaface import in a file, anywhere."""
    package = list(path.relative_to(root).with_suffix('').parts)[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = '.'.join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ''
            if node.module is None:  # from . import a, b: each name may be a module
                found += [(node.lineno, f'{module}.{alias.name}') for alias in node.names]
            else:
                found.append((node.lineno, module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found
            if name == 'mmretinaface' or name.startswith('mmretinaface.')]


def _unit(module: str) -> str:
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else '__init__'


def unit_imports(package: Path = PACKAGE) -> dict:
    """``{(from_unit, to_unit): ['file:line', ...]}`` over every ``.py`` of the package."""
    edges: dict = {}
    for path in sorted(package.rglob('*.py')):
        here = _unit('.'.join(path.relative_to(package.parent).with_suffix('').parts))
        for line, module in _imported_modules(path, package.parent):
            there = _unit(module)
            if there == '__version__':  # ``from .. import __version__``: the root package
                there = '__init__'
            if there != here:
                edges.setdefault((here, there), []).append(
                    f'{path.relative_to(package)}:{line}')
    return edges


def find_cycle(edges) -> list:
    """One cycle of units (``[a, b, ..., a]``) in the graph, or ``[]``."""
    graph: dict = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict = {}

    def visit(node, stack):
        state[node] = 'open'
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 'open':
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, stack + [nxt])
                if cycle:
                    return cycle
        state[node] = 'done'
        return []

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return []


def test_every_unit_has_a_layer():
    units = {_unit('.'.join(p.relative_to(PACKAGE.parent).with_suffix('').parts))
             for p in PACKAGE.rglob('*.py')}
    assert units - set(LAYERS) == set(), 'add the new unit to LAYERS (and the docs)'


def test_units_import_downwards_only():
    upwards = {f'{a} -> {b}': where for (a, b), where in unit_imports().items()
               if LAYERS.get(b, 99) > LAYERS.get(a, -1)}
    assert upwards == {}


def test_no_import_cycle_between_units():
    assert find_cycle(unit_imports()) == []


def test_the_checks_catch_a_cycle_inside_a_function(tmp_path):
    """Negative control: an upward import hidden in a function is found, and so is the cycle."""
    package = tmp_path / 'mmretinaface'
    for folder, text in (('utils', 'def f():\n    from ..apis import thing\n'),
                         ('apis', 'from ..utils import f\n')):
        (package / folder).mkdir(parents=True)
        (package / folder / '__init__.py').write_text(text)
    edges = unit_imports(package)
    assert edges == {('utils', 'apis'): ['utils/__init__.py:2'],
                     ('apis', 'utils'): ['apis/__init__.py:1']}
    assert find_cycle(edges) in (['apis', 'utils', 'apis'], ['utils', 'apis', 'utils'])


@pytest.mark.parametrize('module', ['mmretinaface.utils', 'mmretinaface.evaluation'])
def test_light_units_import_neither_torch_nor_mmdet(module):
    import subprocess
    import sys
    code = (f'import sys, {module}; '
            "print(sorted(m for m in ('torch', 'mmdet') if m in sys.modules))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == '[]'
