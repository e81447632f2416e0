"""tools/benchmark.py: timing, tables, targets and findings from numbers, the report file.

The fast tests feed hand-made numbers to the report (so the expected verdicts
and ratios are known); the slow one runs the whole tool in quick mode.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.benchmark_run import render_results
from tools.benchmarks.cases import CASES
from tools.benchmarks.cases.loss import random_faces
from tools.benchmarks.report import (
    BEGIN_MARK,
    END_MARK,
    Target,
    markdown_table,
    write_report,
)
from tools.benchmarks.timing import interleaved_timings

ROOT = Path(__file__).resolve().parents[1]
REPORT_SECTIONS = (
    '## Environment', '## Targets', '## Findings', '### Latency per batch', '### Throughput',
    '### What the inference path adds', '### Forward options', '## 1b. Inference: ResNet50',
    '## 2. Training', '## Train step vs the reference-style step',
    '### Training loss vs the per-image reference',
    '### Inference time vs image area', '### Loss time vs faces per image',
    '### Prior generation per input shape', '## Profiles', 'GPU: not measured')


def test_interleaved_timings_rotates_and_respects_budget():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in 'abc'}
    times = interleaved_timings(fns, repeats=3, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {'a': 3, 'b': 3, 'c': 3}
    assert calls == list('abc') + list('abc') + list('bca') + list('cab')
    ticks = iter(range(1000))  # a fake clock: every reading advances one second
    times = interleaved_timings(fns, repeats=50, warmup=0, min_repeats=2, budget_s=0.5,
                                clock=lambda: next(ticks))
    assert all(len(v) == 2 for v in times.values())
    with pytest.raises(ValueError):
        interleaved_timings(fns, repeats=0)


def test_tables_targets_and_faces():
    table = markdown_table(['a', 'b'], [('x|y', 1234.5), ('z', float('nan'))])
    assert table.splitlines() == ['| a | b |', '| :--- | ---: |', '| x\\|y | 1,234 |',
                                  '| z | - |']
    assert Target('r', 1.02, 1.05).row() == ('r', '1.020x', '<= 1.05x', 'PASS')
    assert Target('r', 1.2, 1.05).verdict == 'MISS'
    assert Target('s', 0.123, 0.1, unit='%').row() == ('s', '12.3%', '<= 10%', 'MISS')
    assert Target('l', 6.0, 5.0, higher_is_better=True, digits=1).row() == (
        'l', '6.0x', '>= 5x', 'PASS')
    assert Target('n', float('nan'), 1.0).verdict == 'not measured'
    boxes, points = random_faces(np.random.default_rng(0), 50, image_size=200)
    assert boxes.shape == (50, 4) and points.shape == (50, 5, 2)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 200).all()
    assert (points >= boxes[:, None, :2]).all() and (points <= boxes[:, None, 2:]).all()


def _inference_result(onnx_ratio: float) -> dict:
    latency = dict(ms=dict(pipeline=2.0, preprocess=1.0, forward=40.0, postprocess=3.0,
                           pack=0.5, e2e=50.0, ort_ref=20.0, ort_ref_sub=21.0, ort_ours=24.0,
                           ref_post=4.0),
                   n=5, num_priors=12600, candidates=100.0, detections=10.0, detections_09=2.0,
                   ort_pair=dict(ratio=onnx_ratio, n=10, ms={}), onnx_max_abs_diff=1e-5,
                   preprocess_vs_reference_max_abs=0.0)
    options = dict(ms={'forward': 25.0, 'forward_unoptimized': 40.0, 'forward@1': 25.0}, n=5)
    memory = {v: dict(start_mib=300.0, peak_mib=400.0) for v in ('torch', 'ort_ref', 'ort_ours')}
    return dict(quick=False, cases=[dict(width=640, height=480, batch=1, latency=latency,
                                         memory=memory, options=options)])


def _loss_result(ours_ms: float) -> dict:
    return dict(batch=32, image_size=640, num_priors=16800, profile=None, rows=[
        dict(label='1..200', main=True, batch=32, faces=3200, ms=dict(ours=ours_ms,
                                                                       reference=40.0),
             n=3, max_rel_diff=1e-6)])


def test_report_verdicts_and_findings_come_from_the_numbers():
    text = render_results(dict(infer=_inference_result(1.2), loss=_loss_result(10.0)))
    targets = text.split('## Targets')[1].split('\n## ')[0]
    rows = {line.split(' | ')[0].strip('| '): line.split(' | ')[1:]
            for line in targets.splitlines() if line.startswith('| ') and 'target' not in line}
    onnx = rows['our ONNX / reference ONNX latency, 640x480 b1']
    assert onnx[0] == '1.200x' and onnx[2].startswith('MISS')
    post = rows['post-processing share of PyTorch forward + post-processing, 640x480 b1']
    assert post[0] == f'{100 * 3 / 43:.1f}%' and post[2].startswith('PASS')
    overhead = rows['pipeline + preprocessor + packing vs forward, 640x480 b1']
    assert overhead[0] == f'{100 * 3.5 / 40:.1f}%' and overhead[2].startswith('PASS')
    loss = next(v for k, v in rows.items() if k.startswith('batched loss speed-up'))
    assert loss[0] == '4.0x' and loss[2].startswith('MISS')
    findings = text.split('## Findings')[1].split('\n## ')[0]
    assert '40.0 ms vs 20.0 ms, 2.00x' in findings
    # forward options: the inferencer's model 25 ms, as loaded 40 ms
    assert '25.0 ms vs 40.0 ms, 1.60x faster' in findings
    assert ('**MISS: our ONNX / reference ONNX latency, 640x480 b1**: measured 1.200x, '
            'limit <= 1.05x') in findings
    assert findings.count('**MISS') == 2
    # the same numbers within the limits: no missed target is reported
    text = render_results(dict(infer=_inference_result(1.01), loss=_loss_result(4.0)))
    assert 'MISS' not in text and text.count('| PASS |') == 4
    for heading in ('### Latency per batch', '### Throughput', '### Forward options',
                    '### Training loss vs the per-image reference'):
        assert heading in text


def test_write_report_replaces_only_the_generated_block(tmp_path):
    out = tmp_path / 'new' / 'bench.md'
    write_report(out, 'first run\n')
    assert out.read_text() == f'# Benchmarks\n\n{BEGIN_MARK}\n\nfirst run\n\n{END_MARK}\n'
    out.write_text('# Mine\n\nhand-written intro\n\n' + out.read_text().split('\n\n', 1)[1]
                   + '\n## Hand-written notes\n\nkept\n')
    write_report(out, 'second run\n')
    text = out.read_text()
    assert text.startswith('# Mine\n\nhand-written intro\n\n' + BEGIN_MARK)
    assert 'second run' in text and 'first run' not in text
    assert text.endswith(f'{END_MARK}\n\n## Hand-written notes\n\nkept\n')
    hand = tmp_path / 'notes.md'
    hand.write_text('only hand-written text\n')
    with pytest.raises(ValueError, match='not overwriting'):
        write_report(hand, 'run\n')
    assert hand.read_text() == 'only hand-written text\n'


@pytest.mark.slow
def test_quick_run_writes_every_table(tmp_path):
    out, raw = tmp_path / 'bench.md', tmp_path / 'bench.json'
    proc = subprocess.run(
        [sys.executable, 'tools/benchmark.py', '--quick', '--out', str(out), '--json', str(raw)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for heading in REPORT_SECTIONS:
        assert heading in text, heading
    assert 'python tools/benchmark.py --quick --out' in text
    assert '| torch threads | 1 (' in text
    assert 'peak RSS' in text and '(+' in text  # peak RSS measured per child process
    targets = text.split('## Targets')[1].split('\n## ')[0]
    assert targets.count('PASS') + targets.count('MISS') >= 6
    assert set(json.loads(raw.read_text())['results']) == {case.name for case in CASES}
