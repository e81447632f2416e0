"""A benchmark run record made by hand, for testing what the report computes from numbers."""
from tools.benchmarks.cases import CASES
from tools.benchmarks.report import render_report


def render_results(results: dict) -> str:
    """The report of a full-mode run whose case results are ``results`` (name -> result)."""
    run = dict(mode='full', date='today', elapsed_s=1.0, command='python tools/benchmark.py',
               device='cpu', amp=False, threads=1, repeats=10, budget_s=8.0,
               load_start=(0.0, 0.0, 0.0), load_end=(0.0, 0.0, 0.0), errors=[], git='abc',
               setup=dict(torch_threads=1, torch_default_threads=2, ort_threads=1,
                          ort_providers=['CPUExecutionProvider']),
               results=results)
    return render_report(run, CASES)
