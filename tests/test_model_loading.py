"""Loading checkpoints for inference (the one builder, init_face_detector): strict,
weights-only, landmark count checked; configs by path, name or Config."""
import pytest
import torch
from mmengine.config import Config

from mmretinaface.apis import get_config_path, init_face_detector

DEFAULT_CONFIG = get_config_path('retinaface_mobilenet0.25_widerface')


def test_missing_and_unexpected_keys_are_listed(tmp_path, converted_checkpoint):
    ckpt = torch.load(converted_checkpoint, weights_only=True)
    state = ckpt['state_dict']
    state.pop('bbox_head.kpt_convs.2.bias')
    state['neck.2.extra.weight'] = torch.zeros(1)
    broken = tmp_path / 'broken.pth'
    torch.save(ckpt, broken)
    with pytest.raises(ValueError) as err:
        init_face_detector(DEFAULT_CONFIG, broken)
    message = str(err.value)
    assert 'bbox_head.kpt_convs.2.bias' in message and 'neck.2.extra.weight' in message
    assert str(broken) in message


def test_runner_checkpoints_load_for_inference(tmp_path, converted_checkpoint):
    """What tools/train.py writes (message_hub with HistoryBuffer, numpy) loads safely."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    ckpt = torch.load(converted_checkpoint, weights_only=True)
    buffer = HistoryBuffer()
    buffer.update(np.float64(0.5))
    ckpt['message_hub'] = dict(log_scalars={'train/loss': buffer},
                               runtime_info={'iter': np.int64(10)})
    path = tmp_path / 'epoch_1.pth'
    torch.save(ckpt, path)
    model = init_face_detector(DEFAULT_CONFIG, path)
    assert model.dataset_meta['classes'] == ('face', )


def test_landmark_count_mismatch_is_reported(converted_checkpoint):
    with pytest.raises(ValueError, match='kpt_convs'):
        init_face_detector(DEFAULT_CONFIG, converted_checkpoint,
                           cfg_options={'model.bbox_head.num_keypoints': 68})


class Anything:
    """A class a weights-only load must refuse to rebuild."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / 'pickled.pth'
    torch.save({'state_dict': {}, 'meta': Anything()}, path)
    with pytest.raises(ValueError, match='weights_only=True'):
        init_face_detector(DEFAULT_CONFIG, path)


def test_missing_weights_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing.pth'):
        init_face_detector(DEFAULT_CONFIG, tmp_path / 'nothing.pth')


def test_optimized_model_gives_the_same_outputs(mobilenet_detector, converted_checkpoint):
    """init_face_detector(optimize=True) runs optimize_for_inference: BatchNorm folded."""
    fused = init_face_detector(DEFAULT_CONFIG, converted_checkpoint, optimize=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in mobilenet_detector.modules())
    assert not fused.training and fused.cfg.model == mobilenet_detector.cfg.model
    assert mobilenet_detector.dataset_meta['classes'] == ('face', )
    x = torch.randn(1, 3, 160, 224) * 50
    with torch.no_grad():
        ref = mobilenet_detector.bbox_head.flatten_outputs(
            *mobilenet_detector.bbox_head(mobilenet_detector.extract_feat(x)))
        out = fused.bbox_head.flatten_outputs(*fused.bbox_head(fused.extract_feat(x)))
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_config_by_path_name_or_config_object(mobilenet_detector, converted_checkpoint,
                                              tmp_path):
    by_path = init_face_detector(DEFAULT_CONFIG, converted_checkpoint)
    by_name = init_face_detector('retinaface_mobilenet0.25_widerface', converted_checkpoint)
    cfg = Config.fromfile(DEFAULT_CONFIG)
    by_config = init_face_detector(cfg, converted_checkpoint)
    expected = mobilenet_detector.state_dict()
    for model in (by_path, by_name, by_config):
        assert model.cfg.model == cfg.model and not model.training
        state = model.state_dict()
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], expected[k]) for k in expected)
    with pytest.raises(FileNotFoundError, match='config not found'):
        init_face_detector(tmp_path / 'missing.py', converted_checkpoint)
    with pytest.raises(TypeError, match='config'):
        init_face_detector(42)
    # a path (not a name) without weights: mmdet's random initialisation, face metainfo
    with pytest.warns(UserWarning, match='randomly initialised'):
        random = init_face_detector(DEFAULT_CONFIG)
    assert random.dataset_meta['classes'] == ('face', )
    assert not torch.equal(random.bbox_head.cls_convs[0].weight,
                           expected['bbox_head.cls_convs.0.weight'])
