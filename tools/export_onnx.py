#!/usr/bin/env python
"""Export a RetinaFace checkpoint to ONNX (dynamic batch, height and width).

Input `image`: (B, 3, H, W) float32 BGR pixels 0..255 (the mean is subtracted in
the graph). Outputs: `loc`, `conf`, `landmarks` (the reference's raw layout), or
with --decode `boxes` (B, P, 4) xyxy pixels, `scores` (B, P), `landmarks`
(B, P, K, 2) pixels; thresholding and NMS stay outside the graph (see
docs/inference.md for a ten-line onnxruntime example).

Example:
  python tools/export_onnx.py configs/retinaface_mobilenet0.25_widerface.py \
      checkpoints/retinaface_mobilenet0.25_widerface.pth --out retinaface.onnx --decode --verify
"""
import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='output .onnx file')
    parser.add_argument('--decode', action='store_true',
                        help='decode in the graph: boxes, scores, landmarks in pixels')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--trace-size', type=int, nargs=2, default=(480, 640),
                        metavar=('H', 'W'),
                        help='image size used for tracing (the exported model accepts any '
                        'size; default 480 640)')
    parser.add_argument('--verify', action='store_true',
                        help='run onnxruntime and PyTorch on a random batch of 2 at another '
                        'size and fail (exit 1) if they disagree')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmretinaface.apis import init_face_detector
    from mmretinaface.deploy import export_onnx
    from mmretinaface.deploy.onnx_export import compare_with_pytorch
    model = init_face_detector(args.config, args.checkpoint, device='cpu')
    export_onnx(model, args.out, decode=args.decode, opset=args.opset,
                sample_hw=tuple(args.trace_size))
    print(f'exported {args.out} (decode={args.decode})')
    if args.verify:
        height, width = args.trace_size
        ratios = compare_with_pytorch(model, args.out, args.decode,
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
