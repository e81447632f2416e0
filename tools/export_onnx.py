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


def verify_int8(fp32_file: str, int8_file: str) -> bool:
    """Print how the INT8 model's faces compare with FP32's on held-out real faces;
    False when a face of the group photo is lost."""
    from mmretinaface.deploy.int8_eval import compare_faces, face_mosaics, group_photo
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
