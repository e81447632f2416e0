#!/usr/bin/env python
"""Export a RetinaFace checkpoint to ONNX (dynamic batch, height and width).

Input `image`: (B, 3, H, W) float32 BGR pixels 0..255 (the mean is subtracted in
the graph). Outputs: `loc`, `conf`, `landmarks` (the reference's raw layout), or
with --decode `boxes` (B, P, 4) xyxy pixels, `scores` (B, P), `landmarks`
(B, P, K, 2) pixels; thresholding and NMS stay outside the graph (see
docs/inference.md for a ten-line onnxruntime example).

--int8 writes a statically quantized model instead (same inputs and outputs;
calibrated on real photos shipped by installed packages, or --calib-images DIR;
see docs/deployment.md for the scheme, its speed and accuracy).

Examples:
  python tools/export_onnx.py configs/retinaface_mobilenet0.25_widerface.py \
      checkpoints/retinaface_mobilenet0.25_widerface.pth --out retinaface.onnx --decode --verify
  python tools/export_onnx.py configs/retinaface_mobilenet0.25_widerface.py \
      checkpoints/retinaface_mobilenet0.25_widerface.pth --out retinaface_int8.onnx --decode \
      --int8 [--calib-images my_photos/] --verify
"""
import argparse
import os
import sys
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from mmretinaface.deploy.calibration import NUM_FACE_PHOTOS, bundled_photo_paths, photo_mosaic


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='output .onnx file')
    parser.add_argument('--force', action='store_true', help='replace --out if it exists')
    parser.add_argument('--decode', action='store_true',
                        help='decode in the graph: boxes, scores, landmarks in pixels')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--trace-size', type=int, nargs=2, default=(480, 640),
                        metavar=('H', 'W'),
                        help='image size used for tracing (the exported model accepts any '
                        'size; default 480 640)')
    parser.add_argument('--verify', action='store_true',
                        help='run onnxruntime and PyTorch on a random batch of 2 at another '
                        'size and fail (exit 1) if they disagree; with --int8 --decode also '
                        'compare the INT8 faces with the FP32 ones on held-out real faces')
    parser.add_argument('--int8', action='store_true',
                        help='write an INT8 model (onnxruntime static quantization)')
    parser.add_argument('--calib-images', metavar='DIR',
                        help='calibrate --int8 on the images of DIR (default: real photos '
                        'shipped by matplotlib and scikit-image)')
    args = parser.parse_args(argv)
    if args.calib_images and not args.int8:
        parser.error('--calib-images needs --int8')
    return args


# ---------------------------------------------------------------- INT8 verification
# Held-out real-face images and the FP32-vs-INT8 comparison of detections. None of these
# images is in the default calibration set: the faces come from scikit-image's LFW subset
# (100 real faces, 25x25 grey crops) and from the three bundled face photos placed at other
# scales and positions. Offline there is no real group photo, so group_photo builds a
# group-like one: rows of LFW faces on a photo background.
Faces = Tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (N, 4), scores (N,), landmarks (N, K, 2)


def lfw_faces() -> List[np.ndarray]:
    """The 100 face crops of scikit-image's LFW subset (25x25 grey) as BGR uint8."""
    from mmretinaface.utils.extras import require
    data = require('skimage.data', 'demo', 'the held-out LFW faces')
    faces = np.load(os.path.join(data.data_dir, 'lfw_subset.npy'))[:100]
    return [cv2.cvtColor(np.round(f * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR) for f in faces]


def group_photo(seed: int = 0, size: Tuple[int, int] = (1280, 720), rows: int = 3,
                per_row: int = 6, face_sides: Tuple[int, int] = (80, 120)) -> np.ndarray:
    """A group-like photo: ``rows x per_row`` LFW faces (different people), side by side
    in rows with some jitter, on a blurred photo background; BGR ``size`` (w, h)."""
    rng = np.random.default_rng(seed)
    width, height = size
    background = cv2.imread(bundled_photo_paths()[NUM_FACE_PHOTOS + 1], cv2.IMREAD_COLOR)
    canvas = cv2.GaussianBlur(cv2.resize(background, size), (0, 0), 6)
    faces = lfw_faces()
    people = rng.permutation(len(faces))[:rows * per_row]
    cell_w, cell_h = width // per_row, height // rows
    for k, person in enumerate(people):
        side = int(rng.integers(face_sides[0], face_sides[1] + 1))
        side = min(side, cell_w - 4, cell_h - 4)
        face = cv2.resize(faces[person], (side, side), interpolation=cv2.INTER_CUBIC)
        row, col = divmod(k, per_row)
        x = col * cell_w + int(rng.integers(0, cell_w - side + 1))
        y = row * cell_h + int(rng.integers(0, cell_h - side + 1))
        canvas[y:y + side, x:x + side] = face
    return canvas


def face_mosaics(num: int = 12, seed: int = 1) -> List[np.ndarray]:
    """Mosaics of real faces at several scales: the bundled face photos (whole, 24 to
    400 px) and LFW faces, on 320x240, 640x480 and 1280x720 photo canvases in turn."""
    rng = np.random.default_rng(seed)
    photos = [cv2.imread(path, cv2.IMREAD_COLOR) for path in bundled_photo_paths()]
    lfw = lfw_faces()
    sizes = ((320, 240), (640, 480), (1280, 720))
    out = []
    for k in range(num):
        tiles = photos[:NUM_FACE_PHOTOS] + [lfw[i] for i in rng.permutation(len(lfw))[:6]]
        rng.shuffle(tiles)
        out.append(photo_mosaic(tiles, rng, size=sizes[k % 3], tile_sides=(24, 400),
                                background=photos[NUM_FACE_PHOTOS + k % 7]))
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes ``(N, 4)`` x ``(M, 4)`` (continuous pixels, no +1)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-12)


def compare_faces(reference: Sequence[Faces], candidate: Sequence[Faces],
                  score_thr: float = 0.5,
                  candidate_thr: Optional[float] = None) -> Dict[str, float]:
    """How well ``candidate`` detections reproduce the ``reference`` faces (score >= thr).

    For each reference face, the candidate face (score >= ``candidate_thr``,
    default ``score_thr``: a lower one forgives faces near the threshold) of
    highest IoU: ``faces`` (reference count), ``found`` (IoU >= 0.5),
    ``min_iou``, ``mean_iou``, ``landmark_nme`` (mean point distance over
    ``sqrt(w * h)`` of the reference box, over found faces), ``max_score_diff``
    and ``extra`` (candidate faces >= ``score_thr`` overlapping no reference face).
    """
    candidate_thr = score_thr if candidate_thr is None else candidate_thr
    ious, nmes, score_diffs, extra = [], [], [], 0
    for (rb, rs, rk), (cb, cs, ck) in zip(reference, candidate):
        rmask, cmask = rs >= score_thr, cs >= candidate_thr
        rb, rs, rk, cb, cs, ck = rb[rmask], rs[rmask], rk[rmask], cb[cmask], cs[cmask], ck[cmask]
        iou = box_iou(rb, cb)
        extra += int(((iou.max(axis=0, initial=0) < 0.5) & (cs >= score_thr)).sum())
        for i in range(len(rb)):
            j = int(iou[i].argmax()) if len(cb) else -1
            ious.append(iou[i, j] if j >= 0 else 0.0)
            if j >= 0 and iou[i, j] >= 0.5:
                wh = rb[i, 2:] - rb[i, :2]
                nmes.append(np.linalg.norm(ck[j] - rk[i], axis=-1).mean() / np.sqrt(wh.prod()))
                score_diffs.append(abs(float(cs[j]) - float(rs[i])))
    ious = np.asarray(ious)
    return dict(faces=len(ious), found=int((ious >= 0.5).sum()),
                min_iou=float(ious.min()) if len(ious) else float('nan'),
                mean_iou=float(ious.mean()) if len(ious) else float('nan'),
                landmark_nme=float(np.mean(nmes)) if nmes else float('nan'),
                max_score_diff=float(max(score_diffs)) if score_diffs else float('nan'),
                extra=extra)


def verify_int8(fp32_file: str, int8_file: str) -> bool:
    """Print how the INT8 model's faces compare with FP32's on held-out real faces;
    False when a face of the group photo is lost."""
    from mmretinaface.deploy.onnx_runtime import OnnxFaceDetector
    fp32, int8 = OnnxFaceDetector(fp32_file), OnnxFaceDetector(int8_file)
    ok = True
    for name, images in (('group photo', [group_photo()]), ('face mosaics', face_mosaics())):
        stats = compare_faces([fp32(img) for img in images], [int8(img) for img in images])
        print(f'  INT8 vs FP32, {name}: {stats["found"]}/{stats["faces"]} faces found, '
              f'IoU min {stats["min_iou"]:.3f} mean {stats["mean_iou"]:.3f}, landmark NME '
              f'{stats["landmark_nme"]:.4f}, {stats["extra"]} extra faces')
        ok &= name != 'group photo' or stats['found'] == stats['faces']
    return ok


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.path.exists(args.out) and not args.force:
        print(f'error: {args.out} exists; pass --force to replace it', file=sys.stderr)
        return 2
    calib_images = None
    if args.calib_images:  # bad folders fail before the slow part
        from mmretinaface.utils.image_io import read_image_folder
        try:
            calib_images = [image for _, image in
                            read_image_folder(args.calib_images, purpose='calibration images')]
        except (OSError, ValueError) as err:
            print(f'error: {err}', file=sys.stderr)
            return 2
    if not args.int8:
        return export(args, args.out)
    with tempfile.TemporaryDirectory(prefix='.fp32-',
                                     dir=os.path.dirname(os.path.abspath(args.out))) as tmp:
        fp32_file = os.path.join(tmp, 'fp32.onnx')
        status = export(args, fp32_file)
        if status:
            return status
        from mmretinaface.deploy.quantize import DEFAULT_SCHEME, quantize_int8
        try:
            quantize_int8(fp32_file, args.out, calib_images)
        except ImportError as err:  # the default calibration photos' packages (an extra)
            print(f'error: {err}', file=sys.stderr)
            return 2
        print(f'quantized {args.out} ({DEFAULT_SCHEME.describe()}; calibrated on '
              f'{args.calib_images or "the bundled photos"})')
        if args.verify and args.decode and not verify_int8(fp32_file, args.out):
            print('error: the INT8 model lost faces of the group photo', file=sys.stderr)
            return 1
    return 0


def export(args: argparse.Namespace, out_file: str) -> int:
    """Export the FP32 model to ``out_file`` (and --verify it against PyTorch)."""
    from mmretinaface.apis import init_face_detector
    from mmretinaface.deploy import export_onnx
    from mmretinaface.deploy.onnx_export import compare_with_pytorch
    model = init_face_detector(args.config, args.checkpoint, device='cpu')
    export_onnx(model, out_file, 'decoded' if args.decode else 'raw', opset=args.opset,
                sample_hw=tuple(args.trace_size))
    print(f'exported {out_file if out_file == args.out else "FP32"} (decode={args.decode})')
    if args.verify:
        height, width = args.trace_size
        ratios = compare_with_pytorch(model, out_file, 'decoded' if args.decode else 'raw',
                                      size=(height // 2 + 13, width // 2 + 7))
        for name, ratio in ratios.items():
            print(f'  {name}: max |onnx - torch| = {ratio:.3f} x tolerance')
        if any(ratio > 1 for ratio in ratios.values()):
            print('error: onnxruntime and PyTorch outputs differ', file=sys.stderr)
            return 1
        print('verified: onnxruntime matches PyTorch')
    return 0


if __name__ == '__main__':
    sys.exit(main())
