"""What a benchmark case is: its measurements, its targets, findings and report sections."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List

from ..report import Target


@dataclass
class Context:
    """What a case's :meth:`Case.run` gets.

    ``job(fn, label, **params)`` runs the module-level function ``fn`` on
    the run's base parameters (``device``, ``threads``, ``amp``, ``repeats``,
    ``min_repeats``, ``budget_s``, ``onnx_path``) updated with ``params``,
    in a fresh child process, and returns its result dict (``{'error': ...}``
    when it failed). ``params`` are the case's parameters for this run's mode
    (``Case.modes[mode]``); ``results`` holds the results of the cases that
    ran before, by name.
    """
    job: Callable[..., dict]
    mode: str
    params: dict
    results: Dict[str, Any] = field(default_factory=dict)


class Case:
    """A benchmark case; subclasses are listed in ``tools/benchmarks/cases/__init__.py``.

    ``name`` is its ``--sections`` choice and the key of its result;
    ``modes`` holds its parameters for the ``'full'`` and ``'quick'`` runs.
    :meth:`run` (parent side) calls ``ctx.job`` for each measurement and
    returns a JSON-able result. The report then asks the case for its
    :meth:`targets` (limits with computed verdicts), :meth:`findings` (markdown
    bullets computed from the numbers, never prose written in advance) and
    :meth:`render` (its markdown sections).
    """

    name: str = ''
    modes: Dict[str, dict] = {}

    def run(self, ctx: Context) -> dict:
        raise NotImplementedError

    def targets(self, result: dict) -> List[Target]:
        return []

    def findings(self, result: dict) -> List[str]:
        return []

    def render(self, result: dict) -> List[str]:
        return []
