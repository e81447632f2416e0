"""The parts of ``tools/benchmark.py``: cases, the process runner and the report.

- ``cases/``: one module per concern (inference, training, loss, scaling,
  profiles); each :class:`~.cases.base.Case` measures, states its targets and
  renders its report sections. ``cases/__init__.py`` lists them.
- ``runner.py``: runs each measurement in a fresh child process.
- ``report.py``: markdown tables, targets and verdicts, the document, and
  writing it between the markers of ``docs/benchmarks.md``.
- ``common.py`` / ``timing.py``: what the measuring side shares.
"""
