"""The package as users get it: light imports, configs by name, registration through
custom_imports in a fresh process, default weights in a per-user cache, extras named in
errors, and the wheel (configs inside, no tests) running the default model elsewhere."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import mmretinaface
from mmretinaface.apis import model_zoo
from mmretinaface.utils.extras import require
from tests.conftest import ROOT

HEAVY = ('torch', 'mmdet', 'mmengine', 'mmcv', 'matplotlib', 'onnx', 'onnxruntime')
NAME = 'retinaface_mobilenet0.25_widerface'


def run_python(code: str, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, '-c', code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_imports_are_light(tmp_path):
    """import mmretinaface / .apis / .evaluation / the eval tool, and resolving a config
    by name, pull in neither torch nor mmdet (nor the optional packages)."""
    code = f'''
import sys
sys.path.insert(0, {str(ROOT)!r})
import mmretinaface, mmretinaface.apis, mmretinaface.evaluation
import tools.eval_widerface
path = mmretinaface.get_config_path({NAME!r})
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
'''
    out = run_python(code, cwd=tmp_path).stdout.split()
    assert out[-1] == '[]', out


def test_a_config_registers_everything_in_a_fresh_process(tmp_path):
    """Config.fromfile runs custom_imports (mmretinaface.register): the model, dataset,
    every pipeline step, the metric, the visualizer and the hooks build by name."""
    code = f'''
from mmengine.config import Config
from mmengine.registry import init_default_scope
import mmretinaface
cfg = Config.fromfile(mmretinaface.get_config_path({NAME!r}))
init_default_scope(cfg.default_scope)
from mmdet.registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS, VISUALIZERS
model = MODELS.build(cfg.model)
steps = [TRANSFORMS.build(s) for s in cfg.train_pipeline + cfg.test_pipeline]
cls = DATASETS.get(cfg.test_dataloader.dataset.type)
metric = METRICS.build(cfg.val_evaluator)
hooks = [HOOKS.build(h) for h in cfg.custom_hooks]
vis = VISUALIZERS.build(dict(cfg.visualizer, vis_backends=None))
print(type(model.bbox_head).__name__, cls.__name__, type(metric).__name__,
      type(vis).__name__, 'LimitSize' in [type(s).__name__ for s in steps])
'''
    out = run_python(code, cwd=tmp_path).stdout.split()
    assert out[-5:] == ['RetinaFaceHead', 'WiderFaceDataset', 'WiderFaceMetric',
                        'FaceLocalVisualizer', 'True']


def test_configs_by_name():
    names = model_zoo.list_configs()
    assert NAME in names and 'retinaface_r50_widerface' in names
    assert not any(n.startswith('_') for n in names)
    path = model_zoo.get_config_path(NAME)
    assert path == model_zoo.get_config_path(NAME + '.py')
    assert Path(path).parent == model_zoo.config_dir()
    # a source checkout (this editable install) reads the repository's configs
    assert model_zoo.config_dir() == ROOT / 'configs'
    for bad in ('nope', '_base_/default_runtime', '../configs/' + NAME):
        with pytest.raises(FileNotFoundError, match='config not found') as err:
            model_zoo.get_config_path(bad)
        assert NAME in str(err.value)  # lists what exists
    with pytest.raises(ValueError, match='no default weights'):
        model_zoo.get_weights_path('retinaface_r50_widerface')


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(model_zoo.HOME_ENV, raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert model_zoo.cache_dir() == tmp_path / 'xdg' / 'mmretinaface'
    monkeypatch.delenv('XDG_CACHE_HOME')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert model_zoo.cache_dir() == tmp_path / 'home' / '.cache' / 'mmretinaface'
    monkeypatch.setenv(model_zoo.HOME_ENV, str(tmp_path / 'mine'))
    assert model_zoo.cache_dir() == tmp_path / 'mine'


def test_default_weights_are_made_once_and_atomically(monkeypatch, tmp_path):
    """The maker writes a temporary file that is renamed; a failed conversion leaves
    nothing behind, a made checkpoint is reused."""
    monkeypatch.setenv(model_zoo.HOME_ENV, str(tmp_path / 'cache'))
    calls = []

    def fake(out_file):
        calls.append(out_file)
        assert Path(out_file).parent == tmp_path / 'cache'
        assert not Path(out_file).name.startswith(NAME)  # not yet under its final name
        Path(out_file).write_bytes(b'checkpoint')

    def broken(out_file):
        Path(out_file).write_bytes(b'half a file')
        raise RuntimeError('conversion failed')

    monkeypatch.setitem(model_zoo._DEFAULT_WEIGHTS, NAME, broken)
    with pytest.raises(RuntimeError):
        model_zoo.get_weights_path(NAME)
    assert list((tmp_path / 'cache').iterdir()) == []
    monkeypatch.setitem(model_zoo._DEFAULT_WEIGHTS, NAME, fake)
    first = model_zoo.get_weights_path(NAME)
    assert model_zoo.get_weights_path(NAME + '.py') == first and len(calls) == 1
    assert [p.name for p in (tmp_path / 'cache').iterdir()] == [Path(first).name]
    assert Path(first).read_bytes() == b'checkpoint'


def test_missing_extras_name_the_extra(monkeypatch):
    with pytest.raises(ImportError, match=r'mmretinaface\[deploy\]'):
        require('no_such_module_xyz.sub', 'deploy', 'ONNX export')
    from mmretinaface.apis import bundled_photo
    monkeypatch.setitem(sys.modules, 'skimage', None)  # as if scikit-image were missing
    monkeypatch.setitem(sys.modules, 'skimage.data', None)
    with pytest.raises(ImportError, match=r'scikit-image|skimage') as err:
        bundled_photo('astronaut')
    assert 'mmretinaface[demo]' in str(err.value)
    with pytest.raises(ValueError, match='grace_hopper'):
        bundled_photo('nobody')


# ---------------------------------------------------------------------- the wheel
@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (the checkout stays untouched)."""
    src = tmp_path_factory.mktemp('src')
    for name in ('pyproject.toml', 'setup.py', 'MANIFEST.in', 'README.md'):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info')
    for folder in ('mmretinaface', 'configs'):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    out = tmp_path_factory.mktemp('dist')
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                    '-q', '-w', str(out), str(src)], check=True, capture_output=True,
                   timeout=600)
    (wheel, ) = out.glob('mmretinaface-*.whl')
    return wheel


@pytest.mark.slow
def test_wheel_ships_the_configs_and_no_tests(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    configs = sorted(n for n in names if n.startswith('mmretinaface/.mim/configs/'))
    shipped = {Path(n).relative_to('mmretinaface/.mim/configs').as_posix() for n in configs}
    in_repo = {p.relative_to(ROOT / 'configs').as_posix()
               for p in (ROOT / 'configs').rglob('*.py')}
    assert shipped == in_repo
    assert f'mmretinaface/.mim/configs/{NAME}.py' in names
    assert not [n for n in names if n.startswith(('tests/', 'tools/', 'demo/', 'docs/'))
                or '/tests/' in n or n.endswith('.pyc')]
    assert 'mmretinaface/register.py' in names and 'mmretinaface/apis/model_zoo.py' in names
    print('\n'.join(names))


@pytest.mark.slow
def test_installed_wheel_runs_the_default_model_elsewhere(wheel, tmp_path, converted_checkpoint):
    """pip install --no-deps --target; another working directory, an empty cache: the
    default FaceInferencer finds its packaged config, converts the weights and exports
    them to ONNX into the cache and gives the in-repository detections on a bundled photo."""
    target, cache, cwd = tmp_path / 'site', tmp_path / 'cache', tmp_path / 'elsewhere'
    cwd.mkdir()
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target',
                    str(target), str(wheel)], check=True, capture_output=True, timeout=600)
    env = dict(os.environ, PYTHONPATH=str(target), MMRETINAFACE_HOME=str(cache),
               OMP_NUM_THREADS='1')
    code = '''
import json
import mmretinaface
from mmretinaface.apis import FaceInferencer, bundled_photo, get_config_path
inferencer = FaceInferencer(device='cpu', show_progress=False)
(pred, ) = inferencer(bundled_photo('grace_hopper'))['predictions']
print(json.dumps(dict(package=mmretinaface.__file__, config=get_config_path(
    'retinaface_mobilenet0.25_widerface'), pred=pred)))
'''
    proc = run_python(code, cwd=cwd, env=env)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out['package'].startswith(str(target))  # the installed copy, not the checkout
    assert out['config'].startswith(str(target / 'mmretinaface' / '.mim' / 'configs'))
    # the converted weights and their ONNX export (the CPU default backend), both cached
    assert sorted(p.name for p in cache.iterdir()) == [
        'onnx', f'{NAME}-v{mmretinaface.__version__}.pth']
    (export, ) = (cache / 'onnx').iterdir()
    assert export.name.startswith(NAME) and export.suffix == '.onnx'
    assert list(cwd.iterdir()) == []  # nothing written where it ran

    from mmretinaface.apis import FaceInferencer, bundled_photo
    here = FaceInferencer(model_zoo.get_config_path(NAME), converted_checkpoint, device='cpu',
                          show_progress=False)
    (expected, ) = here(bundled_photo('grace_hopper'))['predictions']
    pred = out['pred']
    assert (np.asarray(expected['scores']) >= 0.5).sum() >= 1
    assert len(pred['scores']) == len(expected['scores'])
    for key in ('bboxes', 'keypoints', 'scores'):
        np.testing.assert_allclose(pred[key], expected[key], atol=1e-3, rtol=0)
