"""Evaluate WIDER FACE predictions in the official layout (easy / medium / hard AP).

    python tools/eval_widerface.py --pred work_dirs/widerface_txt \
        --gt data/widerface/ground_truth [--plot pr.png]

``--pred`` holds ``<event>/<name>.txt`` files (name line, count line,
``x y w h score`` lines); ``--gt`` holds ``wider_face_val.mat`` and
``wider_{easy,medium,hard}_val.mat``. When ``--pred`` covers only part of val,
the images with a prediction file are evaluated: the official protocol
restricted to them (a warning gives how many); ``--all-images`` evaluates
every val image instead, those without a file as images without detections. A
prediction file for an image not in the ground truth, a name line that does
not match its file, a malformed line or a NaN score are errors.
"""
import argparse
import sys
import time
import warnings
from typing import Dict, List, Optional

from mmretinaface.evaluation.plots import plot_pr_curves
from mmretinaface.evaluation.widerface_io import load_widerface_predictions
from mmretinaface.evaluation.widerface_protocol import (
    evaluate_widerface,
    load_widerface_gt,
    subset_message,
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--pred', '-p', required=True, help='predictions folder (official layout)')
    parser.add_argument('--gt', '-g', required=True, help='folder with the four .mat files')
    parser.add_argument('--plot', help='save the precision-recall curves to this PNG')
    parser.add_argument('--iou-thr', type=float, default=0.5, help='IoU threshold (0.5)')
    parser.add_argument('--num-thresholds', type=int, default=1000,
                        help='score thresholds of the PR curve (1000)')
    parser.add_argument('--all-images', action='store_true',
                        help='evaluate all val images, those without a prediction file as '
                        'no detections (default: only the images with a prediction file)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    """Run the evaluation, print the APs and return ``{setting: AP}``."""
    args = parse_args(argv)
    start = time.perf_counter()
    gt = load_widerface_gt(args.gt)
    preds = load_widerface_predictions(args.pred)
    loaded = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # missing images are reported below
        result = evaluate_widerface(preds, gt, args.iou_thr, args.num_thresholds,
                                    warn_missing=False, subset=not args.all_images)
    done = time.perf_counter()
    if len(preds) < len(gt) and not args.all_images:
        print(f'warning: {subset_message(len(preds), gt)} (--all-images counts the others '
              'as images without detections)', file=sys.stderr)
    if result.missing:
        print(f'warning: {len(result.missing)} of {len(gt)} images have no prediction file '
              f'and are treated as no detections (e.g. {result.missing[:3]})', file=sys.stderr)
    print('==================== Results ====================')
    for setting, ap in result.aps.items():
        print(f'{setting.capitalize():<6} Val AP: {ap:.6f}')
    print('=================================================')
    print(f'{len(preds)} prediction files, {len(gt)} images; read {loaded - start:.2f} s, '
          f'evaluated {done - loaded:.2f} s')
    if args.plot:
        plot_pr_curves(result.curves, args.plot)
        print(f'PR curves saved to {args.plot}')
    return result.aps


if __name__ == '__main__':
    main()
