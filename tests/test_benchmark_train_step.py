"""The train_step benchmark case: targets, findings and table come from its numbers."""
from tests.benchmark_run import render_results
from tools.benchmarks.cases import CASES
from tools.benchmarks.cases.train_step import TrainStepCase


def _row(threads: int, ours: float, stock_cl: float) -> dict:
    def variant(ratio: float, first: float, err=None, grad=None) -> dict:
        out = dict(ratio=ratio, wall_ratio=ratio + 0.01, ms=1000.0 * ratio,
                   wall_ms=1000.0 * ratio / threads, first_step_s=first)
        return out if err is None else dict(out, rel_err=err, grad_err=grad)
    return dict(threads=threads, n=20, clock='thread CPU' if threads == 1 else 'process CPU',
                image_size=640, batch=8, faces=24, applied='47 layers fused',
                variants=dict(reference=variant(1.0, 1.5), ours=variant(ours, 41.0, 2e-6, 3e-5),
                              stock=variant(1.0, 1.4, 1.5e-5, 6e-3),
                              stock_cl=variant(stock_cl, 1.3, 1.2e-3, 0.4)))


def _report(rows: list) -> str:
    return render_results(dict(train_step=dict(rows=rows)))


def test_train_step_targets_findings_and_table():
    assert any(isinstance(case, TrainStepCase) for case in CASES)
    text = _report([_row(1, 0.83, 0.85), _row(2, 0.71, 0.80), dict(error='Traceback: boom')])
    targets = text.split('## Targets')[1].split('\n## ')[0]
    lines = [line for line in targets.splitlines() if 'train step ours / reference-style' in line]
    assert len(lines) == 2  # the failed row has no target
    assert lines[0].startswith('| train step ours / reference-style, 1 thread, thread CPU time | '
                               '0.830x | <= 0.8x | MISS')
    assert '2 threads, process CPU time | 0.710x' in lines[1] and 'PASS' in lines[1]
    findings = text.split('## Findings')[1].split('\n## ')[0]
    assert ('(1 thread, 640 px, batch 8, 24 faces per image, thread CPU time): ours as configured '
            '0.83x (wall 0.84x; 47 layers fused; first step 41 s, compiling), stock NCHW 1.00x, '
            'stock `channels_last` 0.85x. Parameter gradients vs float64: ours 3.0e-05, stock '
            'NCHW 6.0e-03, stock `channels_last` 4.0e-01.') in findings
    assert '- **MISS: train step ours / reference-style, 1 thread' in findings
    table = text.split('## Train step vs the reference-style step')[1]
    assert table.count('\n| 1 |') == 4 and table.count('\n| 2 |') == 4
    assert '| 830 | 830 | 0.830 | 0.840 | 41.0 | 2.0e-06 | 3.0e-05 | 20 | thread CPU |' in table
    assert '| 400 | 0.800 | 0.810 | 1.3 | 1.2e-03 | 4.0e-01 | 20 | process CPU |' in table
    assert '| 1 | reference-style' in table and '| 1,000 | 1,000 | 1.000 | 1.010 | 1.5 | - | - |' \
        in table


def test_train_step_renders_nothing_when_every_job_failed():
    case = TrainStepCase()
    result = dict(rows=[dict(error='Traceback: boom')])
    assert case.targets(result) == [] and case.findings(result) == []
    assert case.render(result) == []
