"""read_image_folder: the one reader of a user's image folder (the calibration images of
tools/convert_weights.py and tools/export_onnx.py --int8), its rules and its messages."""
import os

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from mmretinaface.converters.bn_calibration import folder_photos
from mmretinaface.utils.image_io import IMAGE_EXTENSIONS, load_image, read_image_folder


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_missing_folder_or_a_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f'{tmp_path / "nope"} is not a folder'):
        read_image_folder(tmp_path / 'nope')
    (tmp_path / 'a.png').write_bytes(b'')
    with pytest.raises(FileNotFoundError, match='a.png is not a folder'):
        read_image_folder(tmp_path / 'a.png', purpose='calibration images')


def test_folder_without_image_files_names_what_it_holds(tmp_path):
    with pytest.raises(ValueError, match=r'no image file .* in .*\(it is empty\)'):
        read_image_folder(tmp_path)
    (tmp_path / 'notes.txt').write_text('not an image')
    (tmp_path / 'photo.heic').write_bytes(b'\0' * 10)
    with pytest.raises(ValueError, match='no image file') as info:
        read_image_folder(tmp_path)
    assert 'notes.txt' in str(info.value) and 'photo.heic' in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_unreadable_files_are_skipped_with_a_warning_naming_them(tmp_path):
    image = noise(40, 50)
    cv2.imwrite(str(tmp_path / 'good.png'), image)
    (tmp_path / 'broken.jpg').write_bytes(b'\xff\xd8 truncated')
    (tmp_path / 'readme.md').write_text('ignored: not an image name')
    with pytest.warns(UserWarning, match='skipped 1 unreadable') as record:
        out = read_image_folder(tmp_path, purpose='calibration images')
    message = str(record[0].message)
    assert message.startswith('calibration images: ')
    assert str(tmp_path / 'broken.jpg') in message and 'good.png' not in message
    assert [name for name, _ in out] == ['good.png']
    assert np.array_equal(out[0][1], image)


def test_none_readable_names_every_file(tmp_path):
    (tmp_path / 'a.jpg').write_bytes(b'not a jpeg')
    cv2.imwrite(str(tmp_path / 'b.png'), noise(8, 100))
    with pytest.raises(ValueError, match=f'none of the 2 image files in {tmp_path}') as info:
        read_image_folder(tmp_path)
    assert str(tmp_path / 'a.jpg') in str(info.value)
    assert str(tmp_path / 'b.png') in str(info.value) and 'under 32 px' in str(info.value)


def test_images_under_min_side_are_skipped(tmp_path):
    cv2.imwrite(str(tmp_path / 'big.png'), noise(32, 32))
    cv2.imwrite(str(tmp_path / 'thin.png'), noise(31, 200, seed=1))  # shorter side 31
    with pytest.warns(UserWarning, match='thin.png: 200x31 px, shorter side under 32 px'):
        assert [n for n, _ in read_image_folder(tmp_path)] == ['big.png']
    out = read_image_folder(tmp_path, min_side=31)  # no warning: both are kept
    assert [n for n, _ in out] == ['big.png', 'thin.png']


def test_sub_folders_every_extension_any_case_sorted(tmp_path):
    # one file per extension (upper case for some), in nested folders, written in
    # an order that is not the sorted one
    names = []
    for k, ext in enumerate(IMAGE_EXTENSIONS):
        sub = ('z', 'a', 'a/b', '', 'm', 'a/b', 'c')[k % 7]
        name = os.path.join(sub, f'{6 - k}{ext.upper() if k % 2 else ext}')
        os.makedirs(tmp_path / sub, exist_ok=True)
        assert cv2.imwrite(str(tmp_path / name), noise(48, 64, seed=k)), name
        names.append(name)
    (tmp_path / 'a' / 'skip.txt').write_text('x')
    out = read_image_folder(tmp_path)
    assert [n for n, _ in out] == sorted(names)
    for name, image in out:
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8
        if name.lower().endswith(('.png', '.bmp', '.tif', '.tiff')):  # lossless
            k = names.index(name)
            assert np.array_equal(image, noise(48, 64, seed=k)), name


def test_max_images_spreads_over_the_sorted_files_and_warns(tmp_path):
    for i in range(10):
        cv2.imwrite(str(tmp_path / f'{i:02d}.png'), noise(32, 32, seed=i))
    with pytest.warns(UserWarning, match='holds 10 image files; reading 4 of them'):
        out = read_image_folder(tmp_path, max_images=4)
    # hand-checked: files 10 * i // 4 for i = 0..3
    assert [n for n, _ in out] == ['00.png', '02.png', '05.png', '07.png']
    assert np.array_equal(out[2][1], noise(32, 32, seed=5))
    assert len(read_image_folder(tmp_path, max_images=10)) == 10
    with pytest.raises(ValueError, match='max_images'):
        read_image_folder(tmp_path, max_images=0)


def test_exif_orientation_is_applied(tmp_path):
    # left half dark, right half bright; EXIF 6 = rotate 90 degrees clockwise for display
    rgb = np.full((40, 64, 3), 30, np.uint8)
    rgb[:, 32:] = 220
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / 'rotated.jpg', exif=exif, quality=95)
    [(name, image)] = read_image_folder(tmp_path)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / 'rotated.jpg')))
    assert name == 'rotated.jpg' and image.shape == (64, 40, 3) == upright.shape
    assert np.abs(image.astype(int) - upright[..., ::-1].astype(int)).max() <= 3
    # after the rotation the dark half is on top
    assert image[:28].mean() < 60 and image[36:].mean() > 190


def test_bn_calibration_folder_uses_the_same_rules(tmp_path):
    (tmp_path / 'sub').mkdir()
    cv2.imwrite(str(tmp_path / 'sub' / 'a.png'), noise(40, 40))
    cv2.imwrite(str(tmp_path / 'tiny.png'), noise(10, 10))
    with pytest.warns(UserWarning, match='calibration images: skipped 1') as record:
        photos = folder_photos(str(tmp_path))
    assert 'tiny.png' in str(record[0].message)
    assert [p.name for p in photos] == [os.path.join('sub', 'a.png')]
    assert np.array_equal(photos[0].image, load_image(tmp_path / 'sub' / 'a.png'))
