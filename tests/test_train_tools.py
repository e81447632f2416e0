"""tools/train.py and tools/test.py on a tiny drawn-face set: train, resume, test, TTA.

Runs in-process (each run gets its own experiment and visualizer name, since
mmengine keeps those as process-wide singletons). Resuming goes through
torch.load's weights-only default with the runner-checkpoint allow-list: the
tests check that nothing loads with ``weights_only=False`` and that arbitrary
pickled objects are still refused.
"""
import io
import os
import re
import uuid
from pathlib import Path

import pytest
import torch
from mmengine.hooks import Hook

ROOT = Path(__file__).resolve().parents[1]
WIDERFACE_CONFIG = str(ROOT / 'configs' / 'retinaface_mobilenet0.25_widerface.py')
SYNTHETIC_CONFIG = str(ROOT / 'configs' / 'retinaface_mobilenet0.25_synthetic.py')
IMG_DIM = 160  # training crop size of the tiny runs
BATCH = 2


@pytest.fixture(scope='module', autouse=True)
def _few_threads():
    """Two threads at most (CI has 2 cores; more only adds contention)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory) -> Path:
    """10 drawn-face images of 160 px: 8 train, 2 val (WIDER layout, landmarks)."""
    from tools.make_synthetic_widerface import main
    out = tmp_path_factory.mktemp('tiny_widerface')
    summary = main(['--out', str(out), '--num-images', '10', '--seed', '3', '--size', '160',
                    '--val-fraction', '0.2', '--max-faces', '3'])
    assert summary['train']['images'] == 8 and summary['val']['images'] == 2
    return out


def _unique(prefix: str) -> str:
    return f'{prefix}_{uuid.uuid4().hex[:8]}'


def data_options(data: Path, train_pipeline_resize_index: int = 6) -> list:
    """--cfg-options that point a config at ``data`` and keep every run small."""
    root = f'{data}/'
    opts = [f'data_root={root}', 'val_evaluator.gt_dir=None', 'test_evaluator.gt_dir=None',
            f'train_dataloader.batch_size={BATCH}',
            f'train_dataloader.dataset.pipeline.{train_pipeline_resize_index}.img_dim={IMG_DIM}',
            'val_dataloader.batch_size=1', 'test_dataloader.batch_size=1',
            f'experiment_name={_unique("exp")}', f'visualizer.name={_unique("vis")}',
            'default_hooks.logger.interval=1', 'log_processor.window_size=1',
            'randomness.seed=0', 'model.backbone.init_cfg=None']  # from scratch on tiny data
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={root}', f'{loader}.num_workers=0',
                 f'{loader}.persistent_workers=False']
    return opts


class Probe(Hook):
    """Records the runner state when training starts and each epoch / iteration."""

    priority = 'LOWEST'

    def __init__(self):
        self.start = None
        self.lrs = []

    def before_train(self, runner):
        self.start = dict(
            epoch=runner.epoch, iter=runner.iter,
            lr=runner.optim_wrapper.get_lr()['lr'][0],
            optimizer=_clone(runner.optim_wrapper.state_dict()),
            weights=_clone(runner.model.state_dict()))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.lrs.append(runner.optim_wrapper.get_lr()['lr'][0])


def _clone(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj


@pytest.fixture()
def weights_only_guard(monkeypatch):
    """Fail any torch.load that turns weights-only loading off; record the calls."""
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ
    calls = []
    real_load = torch.load

    def guarded_load(*args, **kwargs):
        calls.append(kwargs.get('weights_only'))
        if kwargs.get('weights_only') is False:
            raise AssertionError('torch.load(weights_only=False) was used')
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', guarded_load)
    return calls


def train(argv, probe=None):
    from tools.train import build_runner
    runner = build_runner(argv)
    if probe is not None:
        runner.register_hook(probe)
    runner.train()
    return runner


@pytest.fixture(scope='module')
def trained_epoch(tiny_data, tmp_path_factory):
    """One epoch of the reference (epoch-based) config, lr auto-scaled to batch 2."""
    work_dir = tmp_path_factory.mktemp('work_epoch')
    probe = Probe()
    train([WIDERFACE_CONFIG, '--work-dir', str(work_dir), '--auto-scale-lr', '--cfg-options',
           *data_options(tiny_data), 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
           'default_hooks.checkpoint.interval=1'], probe)
    return work_dir, probe


def test_train_writes_checkpoint_and_scales_lr(trained_epoch, tiny_data):
    work_dir, probe = trained_epoch
    # --auto-scale-lr: the reference lr 1e-3 for a total batch of 32, scaled to 1 x 2
    assert probe.start['lr'] == pytest.approx(1e-3 * BATCH / 32)
    ckpt_path = work_dir / 'epoch_1.pth'
    assert ckpt_path.is_file()
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith('epoch_1.pth')
    from mmretinaface.utils import allow_runner_checkpoint_globals
    allow_runner_checkpoint_globals()
    ckpt = torch.load(ckpt_path, map_location='cpu')  # weights-only default
    assert ckpt['meta']['epoch'] == 1 and ckpt['meta']['iter'] == 8 // BATCH
    assert ckpt['meta']['dataset_meta']['flip_indices'] == [1, 0, 2, 4, 3]
    assert ckpt['message_hub']['log_scalars']['train/loss'].current() > 0
    # validation ran after the epoch with the fallback metric (no .mat ground truth)
    logs = list(work_dir.glob('*/vis_data/scalars.json'))
    assert logs and '"widerface/AP50"' in logs[0].read_text()


def test_runner_checkpoint_globals_are_exactly_what_a_checkpoint_needs(trained_epoch):
    from mmretinaface.utils import runner_checkpoint_globals
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()  # what torch alone would refuse
    try:
        needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(
            str(trained_epoch[0] / 'epoch_1.pth')))
    finally:
        torch.serialization.add_safe_globals(saved)
    names = set()
    for item in runner_checkpoint_globals():
        names.add(item[1] if isinstance(item, tuple) else f'{item.__module__}.{item.__qualname__}')
    assert needed <= names, f'not allow-listed: {needed - names}'
    assert 'builtins.getattr' in needed  # HistoryBuffer pickles its statistics methods so


class _Payload:
    """Any object that is not a tensor or a plain container."""

    def __init__(self):
        self.value = 42


class _GetattrEscape:
    """Tries to use the allow-listed ``getattr`` for something else."""

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer
        return getattr, (HistoryBuffer, '__init__')


class _CallsSystem:
    def __reduce__(self):
        return os.system, ('echo should-not-run',)


@pytest.mark.parametrize('payload', [_Payload, _GetattrEscape, _CallsSystem])
def test_allow_list_still_refuses_arbitrary_objects(payload):
    from mmretinaface.utils import allow_runner_checkpoint_globals
    allow_runner_checkpoint_globals()
    buf = io.BytesIO()
    torch.save({'state_dict': {'w': torch.zeros(2)}, 'extra': payload()}, buf)
    buf.seek(0)
    with pytest.raises(Exception, match='(?i)weights only load failed'):
        torch.load(buf)
    buf.seek(0)  # the same file loads when the caller opts out explicitly
    assert torch.load(buf, weights_only=False)['state_dict']['w'].shape == (2,)


def _assert_same_tensors(a, b, what):
    assert a.keys() == b.keys(), what
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), f'{what}: {key} differs'
        elif isinstance(a[key], dict):
            _assert_same_tensors(a[key], b[key], f'{what}.{key}')
        else:
            assert a[key] == b[key], f'{what}: {key} differs'


def test_resume_epoch_based(trained_epoch, tiny_data, tmp_path, weights_only_guard):
    src_dir, _ = trained_epoch
    work_dir = tmp_path / 'resumed'
    work_dir.mkdir()
    ckpt_path = src_dir / 'epoch_1.pth'
    probe = Probe()
    runner = train([WIDERFACE_CONFIG, '--work-dir', str(work_dir), '--resume', str(ckpt_path),
                    '--cfg-options', *data_options(tiny_data), 'train_cfg.max_epochs=2',
                    'train_cfg.val_interval=10', 'default_hooks.checkpoint.interval=1'], probe)
    assert weights_only_guard, 'resume did not go through torch.load'
    ckpt = torch.load(ckpt_path, map_location='cpu')
    # continues after the saved epoch, with the saved weights and optimizer state
    assert probe.start['epoch'] == 1 and probe.start['iter'] == 8 // BATCH
    _assert_same_tensors(probe.start['weights'], ckpt['state_dict'], 'weights')
    saved_opt = ckpt['optimizer']
    assert probe.start['optimizer']['param_groups'] == saved_opt['param_groups']
    _assert_same_tensors(probe.start['optimizer']['state'], saved_opt['state'], 'momentum')
    assert len(saved_opt['state']) == len(list(runner.model.parameters()))
    assert probe.start['lr'] == pytest.approx(1e-3 * BATCH / 32)  # scaled lr came back
    assert runner.epoch == 2 and runner.iter == 2 * 8 // BATCH
    assert (work_dir / 'epoch_2.pth').is_file()


def test_resume_auto_iter_based_schedule(tiny_data, tmp_path, weights_only_guard):
    """The synthetic recipe (iterations, warmup + cosine): --resume finds the latest
    checkpoint in the work dir and the lr schedule continues where it stopped."""
    work_dir = str(tmp_path / 'iter')
    common = [SYNTHETIC_CONFIG, '--work-dir', work_dir]
    opts = [*data_options(tiny_data), 'default_hooks.checkpoint.interval=3']
    first = Probe()
    train([*common, '--cfg-options', *opts, 'train_cfg.max_iters=3'], first)
    ckpt = torch.load(os.path.join(work_dir, 'iter_3.pth'), map_location='cpu')
    second = Probe()
    runner = train([*common, '--resume', '--cfg-options', *opts, 'train_cfg.max_iters=6'],
                   second)
    assert second.start['iter'] == 3 and runner.iter == 6
    assert os.path.isfile(os.path.join(work_dir, 'iter_6.pth'))  # max_keep_ckpts=1
    _assert_same_tensors(second.start['optimizer']['state'], ckpt['optimizer']['state'],
                         'momentum')
    # linear warmup from 1% of 0.05 (begin=0, end=40: full lr at step 39, mmengine's
    # total_iters = end - begin - 1); the lr set after iteration i
    expected = [0.05 * (0.01 + 0.99 * i / 39) for i in range(1, 7)]
    assert first.lrs + second.lrs == pytest.approx(expected, rel=1e-6)


def test_amp_needs_an_accelerator(tiny_data, tmp_path):
    from tools.train import build_config, build_runner, parse_args
    argv = [WIDERFACE_CONFIG, '--amp', '--work-dir', str(tmp_path)]
    cfg = build_config(parse_args(argv))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match='needs a CUDA'):
            build_runner(argv + ['--cfg-options', *data_options(tiny_data)])


def test_train_options(tmp_path):
    from tools.train import build_config, parse_args
    cfg = build_config(parse_args([WIDERFACE_CONFIG, '--cfg-options',
                                   'train_dataloader.batch_size=8']))
    assert cfg.work_dir.endswith('retinaface_mobilenet0.25_widerface')
    assert cfg.train_dataloader.batch_size == 8
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=32)
    assert not cfg.resume
    cfg = build_config(parse_args([WIDERFACE_CONFIG, '--resume']))
    assert cfg.resume and cfg.load_from is None
    cfg = build_config(parse_args([WIDERFACE_CONFIG, '--launcher', 'pytorch']))
    assert [h.type for h in cfg.custom_hooks].count('AverageLossAcrossRanksHook') == 1
    r50 = build_config(parse_args([str(ROOT / 'configs' / 'retinaface_r50_widerface.py'),
                                   '--auto-scale-lr']))
    assert r50.auto_scale_lr == dict(enable=True, base_batch_size=24)


@pytest.mark.parametrize('config', ['retinaface_mobilenet0.25_widerface.py',
                                    'retinaface_r50_widerface.py', 'retinaface_r18_widerface.py'])
def test_reference_configs_train_as_is_from_data_widerface(config, tiny_data, tmp_path,
                                                           monkeypatch):
    """Each recipe finds its data under data/widerface/ unchanged and trains a step; the
    ResNet-18 one also starts from an ImageNet-style backbone file given by path."""
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'widerface').symlink_to(tiny_data, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    opts = [f'train_dataloader.batch_size={BATCH}', 'train_dataloader.dataset.indices=2',
            f'train_dataloader.dataset.pipeline.6.img_dim={IMG_DIM}',
            'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
            'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
            'train_cfg.max_epochs=1', 'default_hooks.checkpoint.interval=1',
            f'experiment_name={_unique("exp")}', f'visualizer.name={_unique("vis")}']
    init_file = None
    if 'r50' in config:  # its ImageNet init (torchvision://resnet50) would download
        opts.append('model.backbone.init_cfg=None')
    if 'mobilenet' in config:  # the converted ImageNet backbone, where the config expects it
        from mmretinaface.models.backbones import MobileNetV1
        torch.manual_seed(7)
        init_file = tmp_path / 'checkpoints' / 'mobilenet0.25_imagenet.pth'
        init_file.parent.mkdir()
        torch.save(MobileNetV1(widen_factor=0.25).state_dict(), init_file)
    if 'r18' in config:
        from mmdet.models.backbones import ResNet
        torch.manual_seed(7)
        init_file = tmp_path / 'resnet18_imagenet.pth'
        torch.save(ResNet(depth=18).state_dict(), init_file)  # torchvision key names
        opts += ['model.backbone.init_cfg.type=Pretrained',
                 f'model.backbone.init_cfg.checkpoint={init_file}']
    probe = Probe()
    runner = train([str(ROOT / 'configs' / config), '--work-dir', 'work', '--cfg-options',
                    *opts], probe)
    assert runner.cfg.train_dataloader.dataset.data_root == 'data/widerface/'
    assert runner.iter == 1 and (tmp_path / 'work' / 'epoch_1.pth').is_file()
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert 0 < loss < 1e4
    if init_file is not None:  # training started from the backbone file
        backbone = torch.load(init_file)
        if 'r18' in config:
            assert runner.model.backbone.conv1.out_channels == 64
            assert runner.model.neck[0].lateral_convs[2].conv.in_channels == 512
        keys = [k for k in backbone if k.endswith(('weight', 'running_var'))]
        assert len(keys) > 20
        for key in keys:
            assert torch.equal(probe.start['weights'][f'backbone.{key}'], backbone[key]), key


# ---------------------------------------------------------------- tools/test.py
def run_test_tool(argv, capsys) -> dict:
    from tools.test import main
    assert main(argv) == 0
    printed = capsys.readouterr().out
    metrics = dict(re.findall(r'^(widerface/\w+): ([-\d.naN]+)$', printed, flags=re.M))
    return {k: float(v) for k, v in metrics.items()}


def test_test_tool_metrics_and_official_layout(trained_epoch, tiny_data, tmp_path, capsys):
    ckpt = str(trained_epoch[0] / 'epoch_1.pth')
    out_dir = tmp_path / 'txt'
    metrics = run_test_tool([WIDERFACE_CONFIG, ckpt, '--work-dir', str(tmp_path / 'w'),
                             '--out-dir', str(out_dir), '--cfg-options',
                             *data_options(tiny_data)], capsys)
    assert set(metrics) == {'widerface/AP50', 'widerface/landmark_NME',
                            'widerface/landmark_pair_direction'} or set(metrics) == {
                                'widerface/AP50'}
    assert 0 <= metrics['widerface/AP50'] <= 1
    # official layout: <event>/<image name>.txt with name, count, then x y w h score lines
    val_images = sorted((tiny_data / 'val' / 'images').glob('*/*.jpg'))
    assert len(val_images) == 2
    for img in val_images:
        txt = out_dir / img.parent.name / (img.stem + '.txt')
        lines = txt.read_text().splitlines()
        assert lines[0] == img.stem
        count = int(lines[1])
        assert len(lines) == 2 + count
        for line in lines[2:]:
            x, y, w, h, score = (float(v) for v in line.split())
            assert w >= 0 and h >= 0 and 0 <= score <= 1


@pytest.mark.parametrize('protocol,tta', [('original', True), ('vga', False),
                                          ('reference', False), ('vga', True)])
def test_test_tool_scale_protocols_and_tta(trained_epoch, tiny_data, tmp_path, protocol, tta):
    ckpt = str(trained_epoch[0] / 'epoch_1.pth')
    argv = [WIDERFACE_CONFIG, ckpt, '--work-dir', str(tmp_path), '--scale-protocol', protocol,
            '--cfg-options', *data_options(tiny_data)]
    if tta:
        argv.insert(2, '--tta')
    from tools.test import build_config, build_runner, parse_args
    runner = build_runner(argv)
    metrics = runner.test()  # loads the checkpoint into the detector (inside the TTA model)
    assert 'widerface/AP50' in metrics
    detector = runner.model.module if tta else runner.model
    assert type(runner.model).__name__ == ('FaceTTAModel' if tta else 'SingleStageDetector')
    saved = torch.load(ckpt, map_location='cpu')['state_dict']
    _assert_same_tensors(detector.state_dict(), saved, 'tested weights')
    cfg = build_config(parse_args(argv))
    pipeline = cfg.test_dataloader.dataset.pipeline
    resize = (pipeline[1]['transforms'][0][0] if tta else pipeline[1])
    expected = cfg.test_scale_protocols[protocol]
    assert resize == expected
    assert cfg.model.type == ('FaceTTAModel' if tta else 'SingleStageDetector')


def test_missing_imagenet_backbone_stops_with_the_fix(tiny_data, tmp_path, monkeypatch):
    """The MobileNet recipe starts from the converted ImageNet backbone: without that file,
    tools/train.py says how to make it (or how to train from scratch) before building anything;
    URLs (torchvision://) are left to MMEngine."""
    from tools.train import build_runner
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'widerface').symlink_to(tiny_data, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        build_runner([WIDERFACE_CONFIG, '--work-dir', 'work'])
    message = str(exc.value)
    assert 'model.backbone.init_cfg.checkpoint=checkpoints/mobilenet0.25_imagenet.pth' in message
    assert 'convert_weights.py mobilenetV1X0.25_pretrain.tar' in message
    assert 'init_cfg=None' in message
    assert not (tmp_path / 'work').exists()
    from mmretinaface.utils.cli import check_init_checkpoints
    from tools.train import build_config, parse_args
    r50 = build_config(parse_args([str(ROOT / 'configs' / 'retinaface_r50_widerface.py')]))
    check_init_checkpoints(r50, 'tools/train.py')  # torchvision://resnet50: no stop
