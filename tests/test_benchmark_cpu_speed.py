"""The cpu_speed benchmark case: targets, findings and table come from its numbers."""
from tests.benchmark_run import render_results
from tools.benchmarks.cases import CASES
from tools.benchmarks.cases.cpu_speed import CpuSpeedCase


def _row(size: str, default: float) -> dict:
    def variant(ratio: float, diff: float) -> dict:
        return dict(ratio=ratio, n=40, ms=20.0 * ratio, ort_ms=20.0, clock='CPU',
                    max_abs_diff=diff)
    return dict(size=size, result=dict(default=variant(default, 3e-5),
                                       as_loaded=variant(1.9, 0.0),
                                       fold=variant(1.6, 3e-5), fold_cl=variant(1.35, 3e-5)))


def _report(rows: list) -> str:
    return render_results(dict(cpu_speed=dict(rows=rows)))


def test_cpu_speed_targets_and_findings():
    assert any(isinstance(case, CpuSpeedCase) for case in CASES)
    text = _report([_row('640x480', 1.08), _row('1280x720', 1.02)])
    targets = text.split('## Targets')[1].split('\n## ')[0]
    assert '| default-path forward / reference ONNX (ORT), 640x480, CPU time | 1.080x' in targets
    lines = [line for line in targets.splitlines() if 'default-path forward' in line]
    assert len(lines) == 2
    assert 'PASS' in lines[0] and 'MISS' in lines[1]  # limits 1.10x and 1.00x
    findings = text.split('## Findings')[1].split('\n## ')[0]
    assert ('(640x480, one thread): 1.08x (as_loaded 1.90x, fold 1.60x, fold_cl 1.35x); '
            'outputs within 3.0e-05') in findings
    table = text.split('## CPU speed: the default inference path')[1]
    assert table.count('| 640x480 |') == 4 and '| 1.080 | 40 | CPU | 3.0e-05 |' in table
