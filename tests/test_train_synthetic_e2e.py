"""End to end: train RetinaFace MobileNet0.25 from scratch on drawn faces and check it learned.

configs/retinaface_mobilenet0.25_synthetic.py as shipped (320 px, batch 16, SGD
0.05 with warmup + cosine, 250 iterations), run through tools/train.py on a
fresh synthetic WIDER-style set; the run evaluates the held-out val split at
the end (WiderFaceMetric's fallback: AP@0.5 on the split's own labels, landmark
NME and pair direction).

The same training with the flip's left/right landmark swap broken
(``flip_indices`` = identity on the train-time flip) must fail the landmark
bound while detecting faces as well: that is what makes the landmark bound a
real check of the swap. Both runs go in parallel, one thread each (the 2-core
CI machine), with fixed seeds.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / 'configs' / 'retinaface_mobilenet0.25_synthetic.py'

MIN_AP = 0.8
MIN_PAIR_DIRECTION = 0.9
MAX_NME = 0.09
IDENTITY_FLIP = '[0,1,2,3,4]'


def _metrics(work_dir: Path) -> dict:
    """The last validation metrics a run wrote to its scalars.json."""
    logs = list(work_dir.glob('*/vis_data/scalars.json'))
    assert len(logs) == 1, logs
    rows = [json.loads(line) for line in logs[0].read_text().splitlines()]
    val = [row for row in rows if 'widerface/AP50' in row]
    assert val, f'no validation metrics in {logs[0]}'
    return val[-1]


def _flip_step() -> int:
    """Index of the mirror (``MirrorWithLandmarks``) in the config's train pipeline."""
    from mmengine.config import Config
    steps = Config.fromfile(str(CONFIG)).train_dataloader.dataset.pipeline
    return [step.type for step in steps].index('MirrorWithLandmarks')


def _train_both(tmp) -> dict:
    from mmretinaface.datasets.synthetic import write_synthetic_widerface
    data = tmp / 'data'
    summary = write_synthetic_widerface(str(data), 400, seed=0, size=320, val_fraction=0.15)
    assert summary['val']['images'] == 60 and summary['val']['faces'] > 150

    common = [f'data_root={data}/', 'randomness.seed=0']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        common += [f'{loader}.dataset.data_root={data}/', f'{loader}.num_workers=0',
                   f'{loader}.persistent_workers=False']
    variants = {
        'correct': [],
        'broken_swap': [f'train_dataloader.dataset.pipeline.{_flip_step()}.flip_indices='
                        f'{IDENTITY_FLIP}'],
    }
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    procs, logs = {}, {}
    start = time.time()
    for name, extra in variants.items():
        logs[name] = open(tmp / f'{name}.log', 'w')
        procs[name] = subprocess.Popen(
            [sys.executable, str(ROOT / 'tools' / 'train.py'), str(CONFIG),
             '--work-dir', str(tmp / name), '--cfg-options', *common, *extra],
            cwd=str(ROOT), env=env, stdout=logs[name], stderr=subprocess.STDOUT)
    try:
        for name, proc in procs.items():
            code = proc.wait(timeout=1200)
            logs[name].close()
            assert code == 0, (tmp / f'{name}.log').read_text()[-4000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    elapsed = time.time() - start
    result = {name: _metrics(tmp / name) for name in variants}
    print(f'\nsynthetic e2e ({elapsed:.0f} s for both runs): {json.dumps(result)}')
    result['work_dirs'] = {name: tmp / name for name in variants}
    return result


# One test (not a shared fixture): pytest-xdist would run a module fixture once per worker.
@pytest.mark.slow
def test_training_from_scratch_learns_and_a_broken_flip_swap_fails(tmp_path):
    runs = _train_both(tmp_path)
    correct, broken = runs['correct'], runs['broken_swap']
    # the configured recipe learns faces and landmarks
    assert correct['widerface/AP50'] >= MIN_AP
    assert correct['widerface/landmark_pair_direction'] >= MIN_PAIR_DIRECTION
    assert correct['widerface/landmark_NME'] <= MAX_NME
    assert (runs['work_dirs']['correct'] / 'iter_250.pth').is_file()
    # without the swap it still finds the faces: detection AP alone would not notice ...
    assert broken['widerface/AP50'] >= MIN_AP
    # ... but left/right pairs collapse towards their midpoints: the landmark bound fails
    assert broken['widerface/landmark_pair_direction'] < MIN_PAIR_DIRECTION
    assert (broken['widerface/landmark_pair_direction']
            < correct['widerface/landmark_pair_direction'] - 0.3)
    assert broken['widerface/landmark_NME'] > correct['widerface/landmark_NME']
