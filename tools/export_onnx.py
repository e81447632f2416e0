#!/usr/bin/env python
"""Export a RetinaFace checkpoint to ONNX (dynamic batch, height and width).

Example:
  python tools/export_onnx.py configs/retinaface_mobilenet0.25_widerface.py \
      checkpoints/retinaface_mobilenet0.25_widerface.pth --out retinaface.onnx --decode
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
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmretinaface.apis import init_face_detector
    from mmretinaface.deploy import export_onnx
    model = init_face_detector(args.config, args.checkpoint, device='cpu')
    export_onnx(model, args.out, decode=args.decode, opset=args.opset)
    print(f'exported {args.out} (decode={args.decode})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
