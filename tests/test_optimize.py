"""optimize_for_inference: the optimized detector predicts what the model as loaded does.

The reference is the same converted published MobileNet0.25 without the
optimization (BatchNorm as its own layer); the inputs are the bundled real
photos at several sizes, one model instance seeing every size in turn.
"""
import copy

import cv2
import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from torch.nn.modules.batchnorm import _BatchNorm

from mmretinaface.apis import bundled_photo, init_face_detector, load_image
from mmretinaface.apis.optimize import optimize_for_inference

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


@pytest.fixture(scope='module', params=[True, False], ids=['channels_last', 'nchw'])
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


def test_batchnorm_is_folded_and_weights_take_the_layout(optimized):
    channels_last, model = optimized
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) > 40
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) is channels_last
               for c in convs if c.weight.shape[-1] > 1 and c.weight.shape[1] > 1)
    assert optimize_for_inference(model, channels_last) is model  # again: nothing to fold


def test_a_training_model_is_refused(converted_checkpoint):
    model = init_face_detector(weights=converted_checkpoint).train()
    with pytest.raises(RuntimeError, match='eval-mode'):
        optimize_for_inference(model)


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
        optimize_for_inference(model)
        assert not any(isinstance(m, _BatchNorm) for m in model.modules())
        out = raw_outputs(model, x)
        for ref_level, out_level in zip(ref, out):
            for a, b in zip(ref_level, out_level):
                torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().max().item())
