"""Small face data sets made from the real photos that installed packages ship.

There are three real faces on disk (matplotlib's grace_hopper, scikit-image's
astronaut and camera) and a dozen real photos without faces. Each face photo
is run once through the converted published model at full resolution; its
best face (box + 5 landmarks) becomes the source label. A data set image is a
640x480 crop of a photo without faces with 1-4 face patches pasted on it: a
patch is the region around a source face, rescaled (face 40-180 px wide),
maybe mirrored (landmarks mirrored and left/right swapped) and brightened or
darkened; its label follows the patch geometry. Written in the RetinaFace
label format (``# name`` lines, ``x y w h`` + 5 ``x y 0`` + score).

So the labels are the published model's own detections on the original
photos, and a split can hold out backgrounds (``backgrounds``) while the three
face identities are shared (no other real faces are available offline).
"""
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
import torch

from mmretinaface.converters.bn_calibration import Photo, packaged_photos

FLIP = [1, 0, 2, 4, 3]
IMAGE_SIZE = (640, 480)  # width, height


class SourceFace:
    """One real photo and the published model's best face in it."""

    def __init__(self, photo: Photo, box: np.ndarray, keypoints: np.ndarray) -> None:
        self.photo, self.box, self.keypoints = photo, box, keypoints


@torch.no_grad()
def detect(model, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes xyxy, scores, keypoints) of a BGR image at its own size, eval mode."""
    from mmdet.structures import DetDataSample
    h, w = image.shape[:2]
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                         scale_factor=(1.0, 1.0)))
    inputs = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    model.eval()
    pred = model.test_step(dict(inputs=[inputs], data_samples=[sample]))[0].pred_instances
    return (pred.bboxes.numpy(), pred.scores.numpy(), pred.keypoints.numpy())


def source_faces(model) -> List[SourceFace]:
    """The best face of each packaged photo that shows one (score >= 0.9)."""
    faces = []
    for photo in packaged_photos():
        if not photo.has_face:
            continue
        boxes, scores, kpts = detect(model, photo.image)
        best = int(np.argmax(scores)) if len(scores) else -1
        if best >= 0 and scores[best] >= 0.9:
            faces.append(SourceFace(photo, boxes[best], kpts[best]))
    assert len(faces) >= 2, 'too few real faces found in the packaged photos'
    return faces


def background_photos() -> List[Photo]:
    return [p for p in packaged_photos() if not p.has_face]


def _background(rng: np.random.Generator, photo: Photo) -> np.ndarray:
    w, h = IMAGE_SIZE
    img = photo.image
    scale = max(w / img.shape[1], h / img.shape[0]) * rng.uniform(1.0, 1.6)
    img = cv2.resize(img, (int(np.ceil(img.shape[1] * scale)), int(np.ceil(img.shape[0] * scale))),
                     interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    y = int(rng.integers(0, img.shape[0] - h + 1))
    x = int(rng.integers(0, img.shape[1] - w + 1))
    return img[y:y + h, x:x + w].copy()


def _patch(rng: np.random.Generator, face: SourceFace, face_width: float):
    """(patch image, box, keypoints) of a face rescaled to ``face_width``, maybe mirrored."""
    img = face.photo.image
    x1, y1, x2, y2 = face.box
    bw, bh = x2 - x1, y2 - y1
    grow = rng.uniform(1.5, 2.2)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    px1 = int(max(0, cx - grow * bw / 2))
    py1 = int(max(0, cy - grow * bh / 2))
    px2 = int(min(img.shape[1], cx + grow * bw / 2))
    py2 = int(min(img.shape[0], cy + grow * bh / 2))
    scale = face_width / bw
    size = (max(1, int(round((px2 - px1) * scale))), max(1, int(round((py2 - py1) * scale))))
    patch = cv2.resize(img[py1:py2, px1:px2], size,
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    sx, sy = size[0] / (px2 - px1), size[1] / (py2 - py1)
    box = (face.box - [px1, py1, px1, py1]) * [sx, sy, sx, sy]
    kpts = (face.keypoints - [px1, py1]) * [sx, sy]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
        box = np.array([size[0] - box[2], box[1], size[0] - box[0], box[3]])
        kpts = np.stack([size[0] - kpts[:, 0], kpts[:, 1]], 1)[FLIP]
    gain = rng.uniform(0.75, 1.25)
    patch = np.clip(patch.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return patch, box, kpts


def make_image(rng: np.random.Generator, faces: Sequence[SourceFace],
               backgrounds: Sequence[Photo]) -> Tuple[np.ndarray, List[Tuple]]:
    """One composite image and its faces [(box xyxy, keypoints (5, 2))]."""
    canvas = _background(rng, backgrounds[int(rng.integers(len(backgrounds)))])
    w, h = IMAGE_SIZE
    taken: List[Tuple[int, int, int, int]] = []
    labels = []
    for _ in range(int(rng.integers(1, 5))):
        face = faces[int(rng.integers(len(faces)))]
        patch, box, kpts = _patch(rng, face, float(np.exp(rng.uniform(np.log(40),
                                                                        np.log(180)))))
        ph, pw = patch.shape[:2]
        if pw >= w or ph >= h:
            continue
        for _attempt in range(30):
            x, y = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
            if all(x >= bx2 or x + pw <= bx1 or y >= by2 or y + ph <= by1
                   for bx1, by1, bx2, by2 in taken):
                break
        else:
            continue
        taken.append((x, y, x + pw, y + ph))
        canvas[y:y + ph, x:x + pw] = patch
        labels.append((box + [x, y, x, y], kpts + [x, y]))
    if not labels:  # always at least one face
        return make_image(rng, faces, backgrounds)
    return canvas, labels


def label_lines(name: str, labels: Sequence[Tuple]) -> List[str]:
    lines = [f'# {name}']
    for box, kpts in labels:
        x1, y1, x2, y2 = (float(v) for v in box)
        points = ' '.join(f'{px:.2f} {py:.2f} 0.0' for px, py in kpts)
        lines.append(f'{x1:.2f} {y1:.2f} {x2 - x1:.2f} {y2 - y1:.2f} {points} 1.0')
    return lines


def write_split(root: Path, split: str, num_images: int, seed: int,
                faces: Sequence[SourceFace], backgrounds: Sequence[Photo]) -> Dict:
    """``root/split/images/*.jpg`` + ``root/split/label.txt``; a summary dict."""
    rng = np.random.default_rng(seed)
    images = root / split / 'images'
    images.mkdir(parents=True, exist_ok=True)
    lines: List[str] = []
    num_faces = 0
    for i in range(num_images):
        image, labels = make_image(rng, faces, backgrounds)
        name = f'{split}_{i:03d}.jpg'
        cv2.imwrite(str(images / name), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        lines += label_lines(name, labels)
        num_faces += len(labels)
    (root / split / 'label.txt').write_text('\n'.join(lines) + '\n')
    return dict(images=num_images, faces=num_faces)


def write_face_set(root: Path, model, num_train: int = 16, num_val: int = 8,
                   seed: int = 0) -> Dict:
    """A train and a val split; val holds out every other background photo."""
    faces = source_faces(model)
    backgrounds = background_photos()
    assert len(backgrounds) >= 4, 'too few packaged photos without faces'
    return dict(
        faces=[f.photo.name for f in faces],
        train=write_split(root, 'train', num_train, seed, faces, backgrounds[0::2]),
        val=write_split(root, 'val', num_val, seed + 1, faces, backgrounds[1::2]))


def zoomed_portrait(inferencer, name: str, face: float, size: Tuple[int, int],
                    flip: bool = False) -> Tuple[np.ndarray, List[float]]:
    """A bundled portrait cropped around its face and resized so that the face is about
    ``face`` px (``sqrt(w * h)``) in a ``size`` (w, h) image (less where the photo ends).

    Returns the BGR image and the face box there (xyxy), mapped from the single-scale
    detection on the photo itself (``inferencer``: a FaceInferencer).
    """
    import math

    from mmretinaface.apis import bundled_photo
    photo = cv2.imread(bundled_photo(name), cv2.IMREAD_COLOR)
    if flip:
        photo = np.ascontiguousarray(photo[:, ::-1])
    (sample, ) = inferencer(photo, return_datasamples=True)['predictions']
    box = sample.pred_instances.bboxes[int(sample.pred_instances.scores.argmax())].tolist()
    scale = face / math.sqrt((box[2] - box[0]) * (box[3] - box[1]))
    height, width = photo.shape[:2]
    crop_w, crop_h = min(size[0] / scale, width), min(size[1] / scale, height)
    left = min(max((box[0] + box[2] - crop_w) / 2, 0), width - crop_w)
    top = min(max((box[1] + box[3] - crop_h) / 2, 0), height - crop_h)
    out_w, out_h = round(crop_w * scale), round(crop_h * scale)
    affine = np.array([[scale, 0, -left * scale], [0, scale, -top * scale]])
    image = cv2.warpAffine(photo, affine, (out_w, out_h), flags=cv2.INTER_LINEAR)
    face_box = [(box[0] - left) * scale, (box[1] - top) * scale,
                (box[2] - left) * scale, (box[3] - top) * scale]
    return image, face_box
