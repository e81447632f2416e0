"""Write a small WIDER FACE style data set of drawn faces with known landmarks.

    python tools/make_synthetic_widerface.py --out data/synthetic_widerface \
        --num-images 200 --seed 0 [--size 320] [--val-fraction 0.2]

The output (``train/`` and ``val/``, RetinaFace ``label.txt`` with landmarks)
loads with ``WiderFaceDataset``; see docs/data.md. Deterministic for a seed.
"""
from __future__ import annotations

import argparse
import json
from typing import List, Optional


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--num-images', type=int, required=True, help='images in total')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--size', type=int, default=320, help='image side in pixels')
    parser.add_argument('--val-fraction', type=float, default=0.2,
                        help='share of the images written to val/')
    parser.add_argument('--max-faces', type=int, default=6, help='faces per image: 1..N')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    from mmretinaface.datasets.synthetic import write_synthetic_widerface

    summary = write_synthetic_widerface(args.out, args.num_images, seed=args.seed,
                                        size=args.size, val_fraction=args.val_fraction,
                                        num_faces=(1, args.max_faces))
    print(json.dumps(summary))
    return summary


if __name__ == '__main__':
    main()
