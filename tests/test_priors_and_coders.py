"""Prior boxes and coders against the walkthrough's PriorBox / encode / decode."""

import pytest
import torch

from mmretinaface.models.task_modules import (
    RetinaFacePriorGenerator,
    decode_boxes,
    decode_landmarks,
    encode_boxes,
    encode_landmarks,
    prior_boxes,
    reference_featmap_sizes,
)
from tests.reference import reference_prior_box

MIN_SIZES = [[16, 32], [64, 128], [256, 512]]
STEPS = [8, 16, 32]


def to_unit(priors, image_hw):
    return priors / torch.tensor([image_hw[1], image_hw[0]] * 2)


@pytest.mark.parametrize('image_hw', [(640, 640), (480, 640), (333, 197), (17, 100)])
def test_priors_equal_reference_prior_box(image_hw):
    ours = prior_boxes(reference_featmap_sizes(image_hw, STEPS), STEPS, MIN_SIZES)
    ref = reference_prior_box(image_hw)
    assert ours.shape == ref.shape
    torch.testing.assert_close(to_unit(ours, image_hw), ref, rtol=0, atol=1e-6)


def test_prior_generator_caches_per_shape_and_matches_uncached():
    gen = RetinaFacePriorGenerator(MIN_SIZES, STEPS)
    sizes = reference_featmap_sizes((100, 60), STEPS)
    first = gen.grid_priors(sizes)
    assert gen.grid_priors(sizes) is first  # cached
    assert gen.grid_priors(reference_featmap_sizes((60, 100), STEPS)) is not first
    torch.testing.assert_close(first, prior_boxes(sizes, STEPS, MIN_SIZES))
    assert gen.num_base_priors == [2, 2, 2]
    # the traceable path (ONNX export) gives the same values, uncached
    uncached = gen.grid_priors(sizes, cache=False)
    assert torch.equal(uncached, first) and uncached is not gen.grid_priors(sizes, cache=False)


def test_prior_generator_rejects_mismatched_levels():
    with pytest.raises(ValueError, match='min_sizes has 2 levels but steps has 3'):
        RetinaFacePriorGenerator([[16], [32]], [8, 16, 32])


def reference_encode(matched, priors, variances=(0.1, 0.2)):
    """The walkthrough's encode (point-form truths, centre-form priors)."""
    g_cxcy = (matched[:, :2] + matched[:, 2:]) / 2 - priors[:, :2]
    g_cxcy /= variances[0] * priors[:, 2:]
    g_wh = (matched[:, 2:] - matched[:, :2]) / priors[:, 2:]
    return torch.cat([g_cxcy, torch.log(g_wh) / variances[1]], 1)


def reference_encode_landm(matched, priors, n_landmarks, variances=(0.1, 0.2)):
    matched = matched.reshape(matched.size(0), n_landmarks, 2)
    pri = priors[:, None, :].expand(-1, n_landmarks, 4)
    g = (matched - pri[:, :, :2]) / (variances[0] * pri[:, :, 2:])
    return g.reshape(g.size(0), -1)


def random_boxes(n, gen):
    xy = torch.rand(n, 2, generator=gen) * 500
    wh = torch.rand(n, 2, generator=gen) * 100 + 2
    return torch.cat([xy, xy + wh], 1)


def test_box_coder_matches_reference_and_round_trips():
    gen = torch.Generator().manual_seed(0)
    priors = prior_boxes(reference_featmap_sizes((320, 480), STEPS), STEPS, MIN_SIZES)[:500]
    boxes = random_boxes(500, gen)
    ours = encode_boxes(boxes, priors)
    torch.testing.assert_close(ours, reference_encode(boxes, priors))
    # pixel vs [0, 1] units give the same deltas (the encoding is scale invariant)
    unit = torch.tensor([480, 320] * 2)
    torch.testing.assert_close(ours, reference_encode(boxes / unit, priors / unit), atol=1e-4,
                               rtol=1e-4)
    torch.testing.assert_close(decode_boxes(ours, priors), boxes, atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize('num_points', [5, 68])
def test_landmark_coder_matches_reference_and_round_trips(num_points):
    gen = torch.Generator().manual_seed(num_points)
    priors = prior_boxes(reference_featmap_sizes((256, 256), STEPS), STEPS, MIN_SIZES)[:300]
    points = torch.rand(300, num_points, 2, generator=gen) * 256
    ours = encode_landmarks(points, priors)
    assert ours.shape == (300, 2 * num_points)
    torch.testing.assert_close(ours, reference_encode_landm(points.flatten(1), priors, num_points))
    torch.testing.assert_close(decode_landmarks(ours, priors), points, atol=1e-3, rtol=1e-5)


def test_decode_hand_checked():
    prior = torch.tensor([[100.0, 50.0, 16.0, 32.0]])
    # zero deltas decode to the prior itself
    torch.testing.assert_close(decode_boxes(torch.zeros(1, 4), prior),
                               torch.tensor([[92.0, 34.0, 108.0, 66.0]]))
    # dx=1 moves the centre by 0.1 * w; dw = 5 * ln 2 doubles the width
    deltas = torch.tensor([[1.0, 0.0, 5 * torch.log(torch.tensor(2.0)).item(), 0.0]])
    torch.testing.assert_close(decode_boxes(deltas, prior),
                               torch.tensor([[101.6 - 16.0, 34.0, 101.6 + 16.0, 66.0]]))
    pts = decode_landmarks(torch.tensor([[1.0, -1.0, 0.0, 0.0]]), prior)
    torch.testing.assert_close(pts, torch.tensor([[[101.6, 46.8], [100.0, 50.0]]]))
