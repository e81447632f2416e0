"""optimize_for_inference: the optimized detector predicts what the model as loaded does.

The reference is the same converted published MobileNet0.25 without the
optimization (BatchNorm as its own layer, eager ``Conv2d`` + activation); the
inputs are the bundled real photos at several sizes, one model instance
seeing every size in turn (no per-shape state may leak between calls).
"""
import copy

import cv2
import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmretinaface.apis import bundled_photo, init_face_detector, load_image
from mmretinaface.apis.optimize import FusedConv2d, optimize_for_inference

# (width, height) per photo in a batch; None keeps the photo's own size. Mixed sizes in
# one batch exercise the data preprocessor's padding.
SIZES = [
    [(640, 480)],
    [(1280, 720)],
    [(333, 517)],
    [None, None],  # grace_hopper 512x600 + astronaut 512x512, padded to one batch
    [(640, 480)],  # a size seen before, after others
]
RAW_ATOL = 1e-4  # raw head outputs (logits and deltas, |x| up to ~13 here)


@pytest.fixture(scope='module')
def photos():
    return [load_image(bundled_photo(name)) for name in ('grace_hopper', 'astronaut')]


@pytest.fixture(scope='module')
def plain(converted_checkpoint):
    return init_face_detector(weights=converted_checkpoint, optimize=False)


@pytest.fixture(scope='module', params=['auto', 'onednn', 'fold'])
def optimized(request, converted_checkpoint):
    return request.param, optimize_for_inference(
        init_face_detector(weights=converted_checkpoint, optimize=False), request.param)


def make_batch(photos, sizes):
    """``test_step`` input: BGR photos resized to ``sizes``, metainfo of an unscaled image."""
    images = [img if size is None else cv2.resize(img, size, interpolation=cv2.INTER_AREA)
              for img, size in zip(photos, sizes)]
    return dict(
        inputs=[torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))) for img in images],
        data_samples=[DetDataSample(metainfo=dict(img_shape=img.shape[:2],
                                                  ori_shape=img.shape[:2],
                                                  scale_factor=(1.0, 1.0)))
                      for img in images])


def raw_outputs(model, inputs):
    return model.bbox_head(model.extract_feat(inputs))


def test_layers_are_rewritten(optimized):
    mode, model = optimized
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    fused = [m for m in model.modules() if isinstance(m, FusedConv2d)]
    if mode == 'fold':
        assert not fused
    else:  # every convolution, with LeakyReLU/ReLU as oneDNN post-ops
        assert not any(type(m) is nn.Conv2d for m in model.modules())
        assert {m.attr for m in fused} == {'none', 'leaky_relu', 'relu'}
        ssh_acts = [m.out_act for m in model.neck.modules() if hasattr(m, 'out_act')]
        assert ssh_acts and all(isinstance(a, nn.Identity) for a in ssh_acts)


@torch.no_grad()
def test_outputs_equal_unoptimized_on_every_size(plain, optimized, photos):
    mode, model = optimized
    for sizes in SIZES:
        data = make_batch(photos, sizes)
        inputs = plain.data_preprocessor(copy.deepcopy(data), False)['inputs']
        ref = raw_outputs(plain, inputs)
        out = raw_outputs(model, inputs)
        for ref_level, out_level in zip(ref, out):
            for a, b in zip(ref_level, out_level):
                assert a.shape == b.shape
                torch.testing.assert_close(b, a, rtol=0, atol=RAW_ATOL)

        shapes = [sample.img_shape for sample in data['data_samples']]
        expected = plain.test_step(copy.deepcopy(data))
        results = model.test_step(data)
        for exp, res, (h, w) in zip(expected, results, shapes):
            exp, res = exp.pred_instances, res.pred_instances
            assert len(res) == len(exp) > 0, (mode, sizes)
            assert exp.scores[0] > 0.9  # each photo's face is found
            # coordinates as fractions of the image (the reference's units), scores as is
            norm = exp.bboxes.new_tensor([w, h])
            torch.testing.assert_close(res.scores, exp.scores, rtol=0, atol=1e-4)
            torch.testing.assert_close(res.bboxes / norm.repeat(2), exp.bboxes / norm.repeat(2),
                                       rtol=0, atol=1e-4)
            torch.testing.assert_close(res.keypoints / norm, exp.keypoints / norm,
                                       rtol=0, atol=1e-4)
            assert torch.equal(res.labels, exp.labels)


@torch.no_grad()
@pytest.mark.filterwarnings('ignore:no weights given')
def test_resnet_backbone_and_mmdet_fpn_are_folded_too():
    """Conv + BN pairs outside mmcv ConvModules (mmdet's ResNet) and mmdet's FPN."""
    torch.manual_seed(0)
    for config in ('retinaface_r18_widerface', 'retinaface_mobilenet0.25_mmdetfpn_widerface'):
        model = init_face_detector(config, cfg_options={'model.backbone.init_cfg': None},
                                   optimize=False)
        for m in model.modules():  # non-trivial BatchNorm statistics
            if isinstance(m, _BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        x = torch.randn(2, 3, 96, 128) * 50
        ref = raw_outputs(model, x)
        optimize_for_inference(model, 'onednn')
        assert not any(isinstance(m, (_BatchNorm, nn.Conv2d)) for m in model.modules())
        out = raw_outputs(model, x)
        for ref_level, out_level in zip(ref, out):
            for a, b in zip(ref_level, out_level):
                torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().max().item())


def test_mode_none_and_bad_mode(converted_checkpoint):
    model = init_face_detector(weights=converted_checkpoint, optimize=False)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert optimize_for_inference(model, 'none') is model
    assert [m for m in model.modules() if isinstance(m, nn.Conv2d)] == convs
    with pytest.raises(ValueError, match="mode must be one of"):
        optimize_for_inference(model, 'fast')
    # optimizing twice changes nothing more (builders may call it on a built model)
    x = torch.randn(1, 3, 64, 96) * 50
    with torch.no_grad():
        once = raw_outputs(optimize_for_inference(model), x)
        layers = [type(m) for m in model.modules()]
        twice = raw_outputs(optimize_for_inference(model), x)
    assert [type(m) for m in model.modules()] == layers
    for a, b in zip(once, twice):
        for p, q in zip(a, b):
            assert torch.equal(p, q)


def test_inference_only_but_copyable(plain, optimized, photos):
    mode, model = optimized
    if mode == 'fold':
        pytest.skip('fold keeps plain Conv2d layers')
    data = make_batch(photos, [(160, 120)])
    inputs = plain.data_preprocessor(data, False)['inputs']
    clone = copy.deepcopy(model)  # the cached oneDNN weights are not copied, made again
    with torch.no_grad():
        expected = raw_outputs(model, inputs)
        for a, b in zip(expected[0], raw_outputs(clone, inputs)[0]):
            assert torch.equal(a, b)
    with torch.inference_mode():  # no version counters on inference tensors
        for a, b in zip(expected[1], raw_outputs(model, inputs)[1]):
            assert torch.equal(a, b)
    clone.train()
    with pytest.raises(RuntimeError, match='optimized for inference'):
        raw_outputs(clone, inputs)


@torch.no_grad()
def test_preprocessor_same_values_channels_last(plain, optimized, photos):
    mode, model = optimized
    for sizes in SIZES:
        data = make_batch(photos, sizes)
        expected = plain.data_preprocessor(copy.deepcopy(data), False)
        result = model.data_preprocessor(data, False)
        assert torch.equal(result['inputs'], expected['inputs'])  # bit-identical values
        if mode != 'fold':
            assert result['inputs'].is_contiguous(memory_format=torch.channels_last)
        for res, exp in zip(result['data_samples'], expected['data_samples']):
            assert res.metainfo == exp.metainfo
    # training batches take DetDataPreprocessor's own path (NCHW)
    data = make_batch(photos, [(64, 48)])
    assert model.data_preprocessor(data, True)['inputs'].is_contiguous()


@pytest.mark.parametrize('std,bgr_to_rgb', [((1.0, 1.0, 1.0), False), ((58.4, 57.1, 57.4), True)])
@torch.no_grad()
def test_preprocessor_reads_channels_last_packed_images(photos, std, bgr_to_rgb):
    """Images packed as CHW views of HWC arrays (PackFaceInputs(channels_last=True), as
    FaceInferencer's pipeline packs them for this preprocessor), of different widths and
    heights: the same values as DetDataPreprocessor on the usual contiguous CHW images."""
    from mmdet.models.data_preprocessors import DetDataPreprocessor

    from mmretinaface.apis.optimize import ChannelsLastDetDataPreprocessor
    from mmretinaface.datasets.transforms import PackFaceInputs
    kwargs = dict(mean=[104.0, 117.0, 123.0], std=list(std), bgr_to_rgb=bgr_to_rgb,
                  pad_size_divisor=32, pad_value=7)
    plain, fast = DetDataPreprocessor(**kwargs), ChannelsLastDetDataPreprocessor(**kwargs)
    images = [cv2.resize(photos[0], (333, 517)), cv2.resize(photos[1], (640, 480))]

    def batch(channels_last):
        packed = [PackFaceInputs(channels_last=channels_last)(
            dict(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2],
                 scale_factor=(1.0, 1.0))) for img in images]
        return dict(inputs=[p['inputs'] for p in packed],
                    data_samples=[p['data_samples'] for p in packed])

    expected = plain(batch(False), False)
    for channels_last in (False, True):
        result = fast(batch(channels_last), False)
        assert torch.equal(result['inputs'], expected['inputs'])
        assert result['inputs'].is_contiguous(memory_format=torch.channels_last)
        for res, exp in zip(result['data_samples'], expected['data_samples']):
            assert res.metainfo == exp.metainfo
