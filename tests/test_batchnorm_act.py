"""Fused training BatchNorm + activation (``BatchNormAct2d``) and the FastTrainingHook path.

The reference is stock PyTorch in float64: ``F.batch_norm`` in train mode then
``F.leaky_relu`` / nothing, its autograd gradients and running statistics.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from torch import nn

from mmretinaface.models.layers import (
    BatchNormAct2d,
    fuse_batchnorm_activation,
    unfused_batchnorm_layers,
)
from mmretinaface.models.layers.batchnorm_act import NO_ACTIVATION
from mmretinaface.utils import FastTrainingHook
from mmretinaface.utils.training_speed import optimize_for_training

SLOPES = (0.0, 0.1, NO_ACTIVATION)
LAYOUTS = (torch.contiguous_format, torch.channels_last)


def _stock(x, bn: nn.BatchNorm2d, slope: float):
    y = bn.train()(x)
    return y if slope == NO_ACTIVATION else F.leaky_relu(y, slope)


def _inputs(shape, layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    # a large channel mean and a spread of scales: where naive float32 sums lose digits
    x = torch.randn(shape, generator=g) * 3 + 5 + torch.arange(shape[1]).view(1, -1, 1, 1)
    grad = torch.randn(shape, generator=g)
    return x.contiguous(memory_format=layout), grad.contiguous(memory_format=layout)


def _relative(a, b) -> float:
    return float((a.detach().double() - b.detach()).abs().max() / b.detach().abs().max())


def _run_fused(x, grad, slope, compiled, steps=2):
    bn = nn.BatchNorm2d(x.shape[1])
    with torch.no_grad():
        bn.weight.uniform_(-1.5, 1.5)  # negative scales flip which side the slope applies to
        bn.bias.uniform_(-1, 1)
    reference = copy.deepcopy(bn).double()
    fused = BatchNormAct2d.from_batch_norm(bn, slope, compiled=compiled)
    for _ in range(steps):
        xf = x.detach().clone().requires_grad_()
        out = fused(xf)
        out.backward(grad)
        xd = x.detach().double().requires_grad_()
        ref = _stock(xd, reference, slope)
        ref.backward(grad.double())
    return fused, reference, (out, xf.grad), (ref, xd.grad)


@pytest.mark.parametrize('layout', LAYOUTS, ids=['nchw', 'channels_last'])
@pytest.mark.parametrize('slope', SLOPES)
def test_fused_matches_float64_stock(slope, layout):
    x, grad = _inputs((3, 5, 7, 9), layout)
    fused, reference, (out, grad_x), (ref, ref_grad_x) = _run_fused(x, grad, slope, False)
    assert _relative(out, ref) < 1e-5
    assert _relative(grad_x, ref_grad_x) < 1e-5
    assert _relative(fused.weight.grad, reference.weight.grad) < 1e-5
    assert _relative(fused.bias.grad, reference.bias.grad) < 1e-5
    assert _relative(fused.running_mean, reference.running_mean) < 1e-6
    assert _relative(fused.running_var, reference.running_var) < 1e-6
    assert int(fused.num_batches_tracked) == int(reference.num_batches_tracked) == 2
    assert out.is_contiguous(memory_format=layout) and grad_x.is_contiguous(memory_format=layout)


def test_compiled_kernels_match_float64_stock():
    x, grad = _inputs((2, 4, 6, 5), torch.channels_last, seed=1)
    fused, reference, (out, grad_x), (ref, ref_grad_x) = _run_fused(x, grad, 0.1, True, steps=1)
    assert _relative(out, ref) < 1e-5
    assert _relative(grad_x, ref_grad_x) < 1e-5
    assert _relative(fused.weight.grad, reference.weight.grad) < 1e-5
    assert _relative(fused.running_var, reference.running_var) < 1e-6


def test_channels_last_large_batch_is_accurate():
    """Where stock channels-last BatchNorm (float32 sums) loses the input gradient."""
    x, grad = _inputs((8, 16, 96, 96), torch.channels_last, seed=2)
    _, _, (out, grad_x), (ref, ref_grad_x) = _run_fused(x, grad, 0.1, False, steps=1)
    assert _relative(out, ref) < 1e-5
    assert _relative(grad_x, ref_grad_x) < 1e-5


@pytest.mark.parametrize('compiled', [False, True], ids=['eager', 'compiled'])
def test_statistics_of_channels_far_from_zero(compiled):
    """Means 1e3 x the spread (conv outputs of raw pixels): float32 sums lose the normalised value.

    No activation here: near 0 the LeakyReLU side of a value is decided by float32 rounding.
    """
    x, grad = _inputs((8, 8, 96, 96), torch.channels_last, seed=3)
    x = (x - x.mean()) * 0.05 + 300.0
    x[0, :, 0, 0] = 250.0  # an outlier first (corner) pixel: the shift the sums start from
    fused, reference, (out, grad_x), (ref, ref_grad_x) = _run_fused(x, grad, NO_ACTIVATION,
                                                                    compiled, steps=1)
    assert _relative(out, ref) < 1e-4
    assert _relative(grad_x, ref_grad_x) < 1e-4
    assert _relative(fused.weight.grad, reference.weight.grad) < 1e-4


def test_eval_mode_and_state_dict_are_stock():
    bn = nn.BatchNorm2d(6).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(-1, 1)
    fused = BatchNormAct2d.from_batch_norm(bn, 0.1)
    assert fused.weight is bn.weight and fused.running_var is bn.running_var
    assert list(fused.state_dict()) == list(bn.state_dict())
    x = torch.randn(2, 6, 5, 5)
    assert torch.equal(fused(x), F.leaky_relu(bn(x), 0.1))
    assert not fused.training


def _mobilenet_model():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    import mmretinaface.register  # noqa: F401
    from mmretinaface.apis.model_zoo import get_config_path
    cfg = Config.fromfile(get_config_path('retinaface_mobilenet0.25_widerface'))
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def test_fuse_model_keeps_checkpoint_and_outputs():
    model = _mobilenet_model().eval()
    num_bn = len(unfused_batchnorm_layers(model))
    reference = copy.deepcopy(model)
    x = torch.randn(1, 3, 96, 128) * 50
    assert fuse_batchnorm_activation(model, compiled=False) == num_bn
    assert unfused_batchnorm_layers(model) == []
    assert list(model.state_dict()) == list(reference.state_dict())
    with torch.no_grad():
        for a, b in zip(model(x, mode='tensor'), reference(x, mode='tensor')):
            for ta, tb in zip(a, b):
                assert torch.equal(ta, tb)
        # train mode (batch statistics): against the stock model in float64
        model.train()
        reference.train().double()
        for a, b in zip(model(x, mode='tensor'), reference(x.double(), mode='tensor')):
            for ta, tb in zip(a, b):
                assert _relative(ta, tb) < 1e-4


def test_optimized_for_inference_after_fused_training():
    from mmretinaface.apis.optimize import optimize_for_inference
    model = _mobilenet_model().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_var.uniform_(0.5, 2)
                m.running_mean.uniform_(-0.5, 0.5)
    reference = copy.deepcopy(model)
    fuse_batchnorm_activation(model, compiled=False)
    x = torch.randn(1, 3, 96, 128) * 50
    with torch.no_grad():
        expected = reference(x, mode='tensor')
        got = optimize_for_inference(model, mode='fold')(x, mode='tensor')
    for a, b in zip(got, expected):
        for ta, tb in zip(a, b):
            assert _relative(ta, tb) < 1e-4


def test_optimize_for_training_goes_channels_last_only_when_all_fused():
    model = _mobilenet_model().train()
    result = optimize_for_training(model, compile=False)
    assert result.channels_last and not result.unfused and result.fused_layers > 0
    assert model.backbone.stage1[0].conv.weight.is_contiguous(memory_format=torch.channels_last)

    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4), nn.Conv2d(4, 4, 1),
                          nn.BatchNorm2d(4))
    result = optimize_for_training(other, compile=False)
    assert result.fused_layers == 1 and result.unfused == ['1'] and not result.channels_last
    assert other[0].weight.is_contiguous()


def test_hook_leaves_model_alone_without_compiler(monkeypatch):
    from mmretinaface.models import layers
    monkeypatch.setattr(layers, 'compiled_kernels_error', lambda: 'no C++ compiler')

    class Runner:
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        warnings = []

        class logger:
            @staticmethod
            def warning(msg):
                Runner.warnings.append(msg)

            info = warning

    hook = FastTrainingHook()
    hook.before_train(Runner)
    assert type(Runner.model[1]) is nn.BatchNorm2d
    assert hook.result.skipped and 'no C++ compiler' in Runner.warnings[0]
