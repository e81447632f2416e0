"""tools/analysis_tools/benchmark.py: a quick run of the inference and eval sections."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_run_measures_every_backend(tmp_path):
    raw = tmp_path / 'bench.json'
    proc = subprocess.run(
        [sys.executable, 'tools/analysis_tools/benchmark.py', '--quick', '--sections',
         'inference,eval', '--json', str(raw)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(raw.read_text())
    assert report['meta']['threads'] == 1 and report['meta']['cpu']['model']
    results = report['results']
    assert set(results) == {'inference', 'eval'}

    from tools.analysis_tools.benchmark import BACKENDS, CALL_TARGETS
    rows = results['inference']['rows']
    assert {row['backend'] for row in rows} == set(BACKENDS)
    for row in rows:
        for part in ('call', 'forward'):
            assert row[f'{part}_ms'] > 0 and row[f'{part}_ref_ms'] > 0, row
            assert 0 < row[f'{part}_ratio'] < 100, row
            assert row[f'{part}_n'] >= 2
        # the network is part of the call: it cannot take longer than the whole call
        assert row['forward_ms'] <= row['call_ms'] * 1.5, row
    targets = results['inference']['targets']
    assert {t['limit'] for t in targets} == set(CALL_TARGETS.values())
    assert all(t['value'] > 0 for t in targets)

    ev = results['eval']
    assert ev['images'] > 0 and ev['seconds'] > 0 and ev['ms_per_image'] > 0
    assert all(0 <= ap <= 100 for ap in ev['aps'].values())
