"""Image loading robustness and aligned face crops."""
import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from mmretinaface.apis import (
    ARCFACE_TEMPLATE_112,
    ImageReadError,
    align_faces,
    estimate_similarity,
    load_image,
    to_bgr_uint8,
)


def test_grayscale_rgba_and_16bit_are_converted(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / 'gray.png'), gray)
    out = load_image(tmp_path / 'gray.png')
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)

    bgra = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / 'rgba.png'), bgra)
    assert np.array_equal(load_image(tmp_path / 'rgba.png'), bgra[..., :3])

    deep = rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / 'deep.png'), deep)
    out = load_image(tmp_path / 'deep.png')
    assert out.dtype == np.uint8
    assert np.abs(out.astype(int) - deep.astype(int) / 257).max() <= 0.5 + 1e-6


@pytest.mark.parametrize('orientation', [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    rgb = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f'o{orientation}.png'
    img.save(path, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert('RGB'))[..., ::-1]
    assert np.array_equal(load_image(path), expected)


def test_missing_and_corrupt_files_name_the_path(tmp_path):
    with pytest.raises(ImageReadError, match='nope.jpg'):
        load_image(tmp_path / 'nope.jpg')
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'definitely not a jpeg')
    with pytest.raises(ImageReadError, match='bad.jpg'):
        load_image(bad)
    with pytest.raises(ValueError, match='shape'):
        to_bgr_uint8(np.zeros((4, 4, 2), np.uint8))


def test_similarity_recovers_a_known_transform():
    angle, scale, shift = np.deg2rad(25), 1.7, np.array([40.0, -12.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_TEMPLATE_112
    dst = src @ (scale * rot).T + shift
    matrix = estimate_similarity(src, dst)
    np.testing.assert_allclose(matrix[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def test_aligned_crop_puts_landmarks_on_the_template():
    """A rotated, scaled synthetic face: its drawn landmarks land on the template."""
    angle, scale, shift = np.deg2rad(-30), 2.3, np.array([150.0, 90.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    face_points = ARCFACE_TEMPLATE_112 @ (scale * rot).T + shift
    image = np.zeros((500, 500, 3), np.uint8)
    colors = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 0, 255)]
    for (x, y), color in zip(face_points, colors):
        cv2.circle(image, (int(round(x)), int(round(y))), 6, color, -1)
    (crop, ) = align_faces(image, face_points[None])
    assert crop.shape == (112, 112, 3)
    for target, color in zip(ARCFACE_TEMPLATE_112, colors):
        mask = np.all(np.abs(crop.astype(int) - color) < 60, axis=-1)
        ys, xs = np.nonzero(mask)
        assert len(xs) > 3
        found = np.array([xs.mean(), ys.mean()])
        # the dot was drawn at a rounded pixel: allow that rounding (scaled) plus 1 px
        assert np.linalg.norm(found - target) <= 1.0


def test_float_bool_and_bad_arrays():
    unit = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    out = to_bgr_uint8(unit)
    assert out.shape == (3, 4, 3) and np.array_equal(out[..., 1], np.round(unit * 255))
    assert np.array_equal(to_bgr_uint8(unit * 200)[..., 0], np.round(unit * 200))  # 0..255
    assert np.array_equal(to_bgr_uint8(np.eye(3, dtype=bool))[..., 2], np.eye(3) * 255)
    with pytest.raises(ValueError, match='NaN'):
        to_bgr_uint8(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match='empty'):
        to_bgr_uint8(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(TypeError):
        to_bgr_uint8([[0, 1]])


def test_aligned_crops_of_other_sizes_from_json_lists():
    """Landmarks as the demo's JSON lists; a 224 px crop scales the template by 2."""
    face_points = ARCFACE_TEMPLATE_112 * 1.5 + np.array([60.0, 40.0])
    image = np.zeros((300, 300, 3), np.uint8)
    for x, y in np.concatenate([face_points, face_points + 20]):
        cv2.circle(image, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1)
    crops = align_faces(image, [face_points.tolist(), (face_points + 20).tolist()], size=224)
    assert [c.shape for c in crops] == [(224, 224, 3)] * 2
    for target in ARCFACE_TEMPLATE_112 * 2:
        x, y = np.round(target).astype(int)
        assert crops[0][y, x].min() > 200 and crops[1][y, x].min() > 200
    assert align_faces(image, np.zeros((0, 5, 2))) == []
