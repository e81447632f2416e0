"""Flip TTA maps mirrored landmarks back (its NMS on the CPU for any device); padded
batches give per-image detections."""
import cv2
import numpy as np
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

from mmretinaface.apis import detect_faces
from mmretinaface.models.tta import FaceTTAModel, mirror_data, unflip_instances
from tests.conftest import ROOT, bundled_photo


def test_unflip_mirrors_boxes_and_swaps_left_right_points():
    pred = InstanceData()
    pred.bboxes = torch.tensor([[10.0, 5.0, 30.0, 25.0]])
    # mirrored image of width 100: left eye (image-left) at x=12, right eye at x=28
    pred.keypoints = torch.tensor([[[12.0, 9.0], [28.0, 9.0], [20.0, 15.0], [14.0, 20.0],
                                    [26.0, 21.0]]])
    pred.scores = torch.tensor([0.9])
    back = unflip_instances(pred, 100.0, [1, 0, 2, 4, 3])
    torch.testing.assert_close(back.bboxes, torch.tensor([[70.0, 5.0, 90.0, 25.0]]))
    # the point that was the right eye (x=28 -> 72) is now the image-left eye
    torch.testing.assert_close(back.keypoints[0, :, 0], torch.tensor([72.0, 88.0, 80.0, 74.0,
                                                                      86.0]))
    assert back.keypoints[0, 0, 0] < back.keypoints[0, 1, 0]
    torch.testing.assert_close(back.keypoints[0, :, 1], torch.tensor([9.0, 9.0, 15.0, 21.0,
                                                                      20.0]))


def test_tta_merge_on_a_real_mirrored_photo(mobilenet_detector):
    image = cv2.imread(bundled_photo('grace_hopper'))
    (upright, ), (mirrored, ) = (detect_faces(mobilenet_detector, [img])
                                 for img in (image, image[:, ::-1].copy()))
    views = []
    for pred, flip in ((upright, False), (mirrored, True)):
        sample = DetDataSample(metainfo=dict(ori_shape=image.shape[:2], flip=flip,
                                             flip_direction='horizontal'))
        sample.pred_instances = pred
        views.append(sample)
    tta = FaceTTAModel(module=mobilenet_detector)
    (merged, ) = tta.merge_preds([views])
    best = merged.pred_instances[int(merged.pred_instances.scores.argmax())]
    ref = upright[int(upright.scores.argmax())]
    # the mirrored view, mapped back, agrees with the upright one on the real face
    assert np.abs(best.keypoints.numpy() - ref.keypoints.numpy()).max() < 3.0
    assert np.abs(best.bboxes.numpy() - ref.bboxes.numpy()).max() < 3.0
    # the mirrored view's own prediction, mapped back: the model is not exactly mirror
    # symmetric (stride-32 grid, a slightly turned face), so allow 10% of the face width;
    # forgetting the left/right swap puts each eye on the other one (~45% of the width)
    width = float(ref.bboxes[0, 2] - ref.bboxes[0, 0])
    errors = {}
    for name, flip_indices in (('swapped', [1, 0, 2, 4, 3]), ('not swapped', [0, 1, 2, 3, 4])):
        back = unflip_instances(mirrored, float(image.shape[1]), flip_indices)
        top = back[int(back.scores.argmax())]
        errors[name] = np.abs(top.keypoints.numpy() - ref.keypoints.numpy()).max()
    assert errors['swapped'] < 0.1 * width
    assert errors['not swapped'] > 0.3 * width


def test_padded_batch_matches_single_images(mobilenet_detector):
    big = cv2.imread(bundled_photo('grace_hopper'))  # 600 x 512
    small = cv2.resize(cv2.imread(bundled_photo('astronaut')), (320, 320))
    alone = [detect_faces(mobilenet_detector, [img])[0] for img in (big, small)]
    batched = detect_faces(mobilenet_detector, [big, small], batch_size=2)
    for single, joint in zip(alone, batched):
        keep_a, keep_b = single.scores > 0.5, joint.scores > 0.5
        assert keep_a.sum() == keep_b.sum() >= 1
        # bottom/right zero padding only perturbs features near the pad: faces agree
        np.testing.assert_allclose(joint.bboxes[keep_b].numpy(), single.bboxes[keep_a].numpy(),
                                   atol=2.0)
        np.testing.assert_allclose(joint.keypoints[keep_b].numpy(),
                                   single.keypoints[keep_a].numpy(), atol=2.0)


def test_tta_merge_on_another_device_runs_nms_on_cpu(monkeypatch):
    """The GPU path of the merge (NMS on the CPU, kept indices back on the device), forced on
    CPU tensors: the same merged predictions as the CPU path."""
    import mmretinaface.models.tta as tta_module
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=gen) * 200
    pred = InstanceData(bboxes=torch.cat([xy, xy + 40], 1), scores=torch.rand(60, generator=gen),
                        labels=torch.zeros(60, dtype=torch.long),
                        keypoints=xy[:, None] + torch.rand(60, 5, 2, generator=gen) * 40)
    views = []
    for flip in (False, True):
        sample = DetDataSample(metainfo=dict(ori_shape=(240, 240), flip=flip,
                                             flip_direction='horizontal'))
        sample.pred_instances = pred
        views.append(sample)
    model = Config.fromfile(str(ROOT / 'configs' / '_base_' / 'models' /
                                'retinaface_mobilenet0.25.py')).model
    tta = FaceTTAModel(module=model)
    (expected, ) = tta.merge_preds([views])
    assert 10 < len(expected.pred_instances) < 100  # NMS removed many of the 120 boxes
    asked = []
    monkeypatch.setattr(tta_module, 'nms_needs_cpu', lambda device: asked.append(device) or True)
    (got, ) = tta.merge_preds([views])
    assert asked
    for key in ('bboxes', 'scores', 'labels', 'keypoints'):
        assert torch.equal(got.pred_instances.get(key), expected.pred_instances.get(key)), key


def test_mirror_data_flips_each_image_and_marks_it():
    image = torch.arange(6, dtype=torch.uint8).reshape(1, 2, 3)
    sample = DetDataSample(metainfo=dict(img_shape=(2, 3), scale_factor=(1.0, 1.0)))
    data = mirror_data(dict(inputs=[image], data_samples=[sample]))
    assert data['inputs'][0].tolist() == [[[2, 1, 0], [5, 4, 3]]]
    (meta, ) = data['data_samples']
    assert meta.flip and meta.flip_direction == 'horizontal' and meta.img_shape == (2, 3)
    assert 'flip' not in sample  # the input's sample is untouched


def test_face_inferencer_flip_finds_the_face_with_image_left_landmarks_first(
        mobilenet_detector):
    """FaceInferencer(flip=True): the mirrored view's faces come back unmirrored with the
    left/right landmarks swapped, merged with the direct view's (the same face)."""
    from mmretinaface.apis import FaceInferencer, load_image
    image = load_image(bundled_photo('grace_hopper'))
    single = FaceInferencer(mobilenet_detector, show_progress=False)
    flipped = FaceInferencer(mobilenet_detector, show_progress=False, flip=True)
    assert isinstance(flipped.network, FaceTTAModel)
    (one, ), (both, ) = (inf(image, return_datasamples=True)['predictions']
                         for inf in (single, flipped))
    one, both = one.pred_instances, both.pred_instances
    one, both = one[one.scores >= 0.5], both[both.scores >= 0.5]
    assert len(one) == len(both) == 1
    points = both.keypoints[0]
    assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]  # image-left first
    torch.testing.assert_close(both.bboxes, one.bboxes, atol=3.0, rtol=0)
    torch.testing.assert_close(both.keypoints, one.keypoints, atol=3.0, rtol=0)
