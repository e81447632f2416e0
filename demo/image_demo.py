#!/usr/bin/env python
"""Detect faces and their 5 landmarks in images; write JSON and drawn images.

INPUTS are image files, folders, glob patterns, or `bundled:grace_hopper` /
`bundled:astronaut` (public-domain photos shipped inside matplotlib and
scikit-image). For each image STEM it writes
  OUT_DIR/preds/STEM.json   {"bboxes": [[x1,y1,x2,y2],...], "scores": [...],
                             "labels": [...], "keypoints": [[[x,y]x5],...]}
  OUT_DIR/vis/STEM.jpg      boxes, scores and landmarks drawn

Example:
  python demo/image_demo.py bundled:grace_hopper photos/ 'more/*.png' --out-dir outputs/demo
"""
import argparse
import glob
import json
import os
import sys
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[1]
IMAGE_EXTS = {'.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp'}


def bundled_image(name: str) -> str:
    """Path of a public-domain photo bundled in an installed package."""
    if name == 'grace_hopper':
        import matplotlib.cbook
        return str(matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False))
    if name == 'astronaut':
        import skimage.data
        return os.path.join(skimage.data.data_dir, 'astronaut.png')
    raise ValueError(f"unknown bundled image '{name}' (choose grace_hopper or astronaut)")


def expand_inputs(inputs: List[str]) -> List[str]:
    """Files, folders (sorted image files inside) and globs -> list of paths."""
    paths: List[str] = []
    for item in inputs:
        if item.startswith('bundled:'):
            paths.append(bundled_image(item[len('bundled:'):]))
        elif os.path.isdir(item):
            paths.extend(sorted(str(p) for p in Path(item).iterdir()
                                if p.suffix.lower() in IMAGE_EXTS))
        elif any(ch in item for ch in '*?['):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise FileNotFoundError(f'no file matches {item}')
            paths.extend(matches)
        else:
            paths.append(item)  # missing files are reported per image below
    return paths


def parse_args(argv=None):
    from mmretinaface.apis import DEFAULT_CONFIG, DEFAULT_WEIGHTS
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('inputs', nargs='+', help='images, folders, globs or bundled:NAME')
    parser.add_argument('--config', default=str(DEFAULT_CONFIG))
    parser.add_argument('--weights', default=str(DEFAULT_WEIGHTS))
    parser.add_argument('--out-dir', default='outputs/demo')
    parser.add_argument('--score-thr', type=float, default=0.5,
                        help='keep faces scoring at least this (default 0.5)')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    parser.add_argument('--batch-size', type=int, default=1)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import mmcv
    from mmengine.utils import ProgressBar

    from mmdet.registry import VISUALIZERS
    from mmretinaface.apis import (ImageReadError, detect_faces, init_face_detector,
                                   instances_to_dict, load_image)

    paths = expand_inputs(args.inputs)
    model = init_face_detector(args.config, args.weights, device=args.device)
    visualizer = VISUALIZERS.build(model.cfg.visualizer)
    visualizer.dataset_meta = model.dataset_meta
    out_dir = Path(args.out_dir)
    (out_dir / 'preds').mkdir(parents=True, exist_ok=True)
    (out_dir / 'vis').mkdir(parents=True, exist_ok=True)

    failed = []
    progress = ProgressBar(len(paths)) if len(paths) > 1 else None
    for start in range(0, len(paths), args.batch_size):
        batch_paths, images = [], []
        for path in paths[start:start + args.batch_size]:
            try:
                images.append(load_image(path))
                batch_paths.append(path)
            except (ImageReadError, ValueError) as err:
                failed.append((path, str(err)))
        results = detect_faces(model, images, batch_size=len(images)) if images else []
        for path, image, instances in zip(batch_paths, images, results):
            stem = Path(path).stem
            pred = instances_to_dict(instances, args.score_thr)
            with open(out_dir / 'preds' / f'{stem}.json', 'w') as f:
                json.dump(dict(image=str(path), **pred), f)
            from mmdet.structures import DetDataSample
            sample = DetDataSample(pred_instances=instances)
            visualizer.add_datasample(stem, mmcv.bgr2rgb(image), sample, draw_gt=False,
                                      pred_score_thr=args.score_thr)
            mmcv.imwrite(mmcv.rgb2bgr(visualizer.get_image()), str(out_dir / 'vis' / f'{stem}.jpg'))
            if progress is None:
                print(f'{path}: {len(pred["scores"])} face(s) -> {out_dir}/preds/{stem}.json')
        if progress is not None:
            for _ in range(len(paths[start:start + args.batch_size])):
                progress.update()
    if progress is not None:
        print()
    print(f'{len(paths) - len(failed)} image(s) done, results in {out_dir}/')
    for path, reason in failed:
        print(f'skipped {path}: {reason}', file=sys.stderr)
    return 1 if failed and len(failed) == len(paths) else 0


if __name__ == '__main__':
    sys.exit(main())
