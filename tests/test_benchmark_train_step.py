"""The train_step benchmark case: targets, findings and table come from its numbers."""
from tests.benchmark_run import render_results
from tools.benchmarks.cases import CASES
from tools.benchmarks.cases.train_step import TrainStepCase


def _row(threads: int, ours: float, ours_cl: float) -> dict:
    def variant(ratio: float, err=None) -> dict:
        out = dict(ratio=ratio, wall_ratio=ratio + 0.01, ms=1000.0 * ratio,
                   wall_ms=1000.0 * ratio / threads)
        return out if err is None else dict(out, rel_err=err)
    return dict(threads=threads, n=20, clock='thread CPU' if threads == 1 else 'process CPU',
                image_size=640, batch=8, faces=24,
                variants=dict(reference=variant(1.0), ours=variant(ours, 1.5e-5),
                              ours_cl=variant(ours_cl, 1.2e-3)))


def _report(rows: list) -> str:
    return render_results(dict(train_step=dict(rows=rows)))


def test_train_step_targets_findings_and_table():
    assert any(isinstance(case, TrainStepCase) for case in CASES)
    text = _report([_row(1, 0.97, 0.83), _row(2, 0.78, 0.70), dict(error='Traceback: boom')])
    targets = text.split('## Targets')[1].split('\n## ')[0]
    lines = [line for line in targets.splitlines() if 'train step ours / reference-style' in line]
    assert len(lines) == 2  # the failed row has no target
    assert lines[0].startswith('| train step ours / reference-style, 1 thread, thread CPU time | '
                               '0.970x | <= 0.8x | MISS')
    assert '2 threads, process CPU time | 0.780x' in lines[1] and 'PASS' in lines[1]
    findings = text.split('## Findings')[1].split('\n## ')[0]
    assert ('(1 thread, 640 px, batch 8, 24 faces per image): ours 0.97x, ours `channels_last` '
            '0.83x (thread CPU time; wall 0.98x and 0.84x); `channels_last` train-mode outputs '
            '1.2e-03 from float64 (NCHW 1.5e-05).') in findings
    assert '- **MISS: train step ours / reference-style, 1 thread' in findings
    table = text.split('## Train step vs the reference-style step')[1]
    assert table.count('\n| 1 |') == 3 and table.count('\n| 2 |') == 3
    assert '| 970 | 970 | 0.970 | 0.980 | 1.5e-05 | 20 | thread CPU |' in table
    assert '| 700 | 350 | 0.700 | 0.710 | 1.2e-03 | 20 | process CPU |' in table


def test_train_step_renders_nothing_when_every_job_failed():
    case = TrainStepCase()
    result = dict(rows=[dict(error='Traceback: boom')])
    assert case.targets(result) == [] and case.findings(result) == []
    assert case.render(result) == []
