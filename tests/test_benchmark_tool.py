"""tools/benchmark.py: the timing / table helpers and a quick run writing the report."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmretinaface.utils.benchmark_utils import (
    interleaved_timings,
    markdown_table,
    random_faces,
    verdict,
)

ROOT = Path(__file__).resolve().parents[1]
REPORT_SECTIONS = (
    '## Environment', '## Targets', '### Latency per batch', '### Throughput',
    '### Pipeline overhead', '### Inference options', '## 1b. Inference: ResNet50',
    '## 2. Training', '### MultiBox loss vs the per-image reference',
    '### Inference time vs image area', '### Loss time vs faces per image',
    '### Prior generation per input shape', '## Profiles',
    'GPU tables: not measured, no GPU in this session')


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


def test_tables_verdicts_and_faces():
    table = markdown_table(['a', 'b'], [('x|y', 1234.5), ('z', float('nan'))])
    assert table.splitlines() == ['| a | b |', '| :--- | ---: |', '| x\\|y | 1,234 |',
                                  '| z | - |']
    assert verdict(1.02, 1.05) == 'PASS' and verdict(1.2, 1.05) == 'MISS'
    assert verdict(6.0, 5.0, higher_is_better=True) == 'PASS'
    assert verdict(float('nan'), 1.0) == 'not measured'
    boxes, points = random_faces(np.random.default_rng(0), 50, image_size=200)
    assert boxes.shape == (50, 4) and points.shape == (50, 5, 2)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 200).all()
    assert (points >= boxes[:, None, :2]).all() and (points <= boxes[:, None, 2:]).all()


def test_quick_inline_run_writes_every_table(tmp_path):
    from tools.benchmark import main
    out = tmp_path / 'bench.md'
    threads = torch.get_num_threads()
    try:
        code = main(['--quick', '--inline', '--threads', '1', '--out', str(out),
                     '--json', str(tmp_path / 'bench.json')])
    finally:
        torch.set_num_threads(threads)
    text = out.read_text()
    assert code == 0, text
    for heading in REPORT_SECTIONS:
        assert heading in text, heading
    assert 'python tools/benchmark.py --quick --inline --threads 1' in text
    assert '| torch threads | 1 (' in text
    targets = text.split('## Targets')[1].split('\n## ')[0]
    assert targets.count('PASS') + targets.count('MISS') >= 6
    assert (tmp_path / 'bench.json').stat().st_size > 0


@pytest.mark.slow
def test_quick_run_in_child_processes(tmp_path):
    out = tmp_path / 'bench.md'
    proc = subprocess.run(
        [sys.executable, 'tools/benchmark.py', '--quick', '--threads', '1', '--sections',
         'infer', 'priors', '--out', str(out)], cwd=ROOT, capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert '### Throughput' in text and '### Prior generation' in text
    assert 'peak RSS' in text and '(+' in text  # peak RSS measured per child
