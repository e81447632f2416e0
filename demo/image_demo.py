#!/usr/bin/env python
"""Detect faces and their 5 landmarks in images; write JSON, drawn images, aligned crops.

INPUTS are image files, folders (their image files, sorted), glob patterns
(quote them; `**` recurses), or `bundled:grace_hopper` / `bundled:astronaut`
(public-domain photos shipped inside matplotlib and scikit-image). Images are
read with their EXIF orientation; grayscale, RGBA and 16-bit files work.

For each image STEM it writes
  OUT_DIR/preds/STEM.json       {"image": path, "width": W, "height": H,
                                 "bboxes": [[x1,y1,x2,y2],...], "scores": [...],
                                 "labels": [...], "keypoints": [[[x,y] x5],...]}
                                (faces scoring >= --score-thr; empty lists if none)
  OUT_DIR/vis/STEM.jpg          boxes, scores and landmarks drawn (unless --no-vis;
                                at most --vis-max-size pixels on the longer side)
  OUT_DIR/aligned/STEM_I.jpg    112x112 ArcFace-aligned crop of face I (--save-aligned)
Two inputs with the same stem get STEM, STEM_1, ... Coordinates are original-image
pixels, also for images larger than --max-size (downscaled for the network only).
Unreadable inputs are reported on stderr and skipped; the exit code is 0 when at
least one image was processed (1 when none, 2 for a missing model or device).
Detection and drawing are mmretinaface.apis.FaceInferencer's.

Example:
  python demo/image_demo.py bundled:grace_hopper photos/ 'more/*.png' --out-dir outputs/demo
"""
import argparse
import glob
import json
import os
import sys
from pathlib import Path
from typing import List, Optional, Set, Tuple

from mmretinaface import argtypes

IMAGE_EXTS = {'.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.pgm', '.ppm'}


def expand_inputs(inputs: List[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Files, folders (sorted image files inside), globs, bundled:NAME -> paths.

    Returns ``(paths, problems)``; ``problems`` are ``(input, reason)`` for
    inputs that expand to nothing (unknown bundled name, glob without match,
    folder without images). Missing plain files stay in ``paths`` and are
    reported when read.
    """
    from mmretinaface.apis import bundled_photo
    paths: List[str] = []
    problems: List[Tuple[str, str]] = []
    for item in inputs:
        if item.startswith('bundled:'):
            try:
                paths.append(bundled_photo(item[len('bundled:'):]))
            except (ValueError, OSError, ImportError) as err:
                problems.append((item, str(err)))
        elif os.path.isdir(item):
            found = sorted(str(p) for p in Path(item).iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
            if not found:
                problems.append((item, 'folder contains no image file '
                                 f'({", ".join(sorted(IMAGE_EXTS))})'))
            paths.extend(found)
        elif any(ch in item for ch in '*?['):
            matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not matches:
                problems.append((item, 'no file matches this pattern'))
            paths.extend(matches)
        else:
            paths.append(item)  # a missing file is reported when it is read
    return paths, problems


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('inputs', nargs='+', help='images, folders, globs or bundled:NAME')
    parser.add_argument('--out-dir', default='outputs/demo')
    parser.add_argument('--score-thr', type=float, default=0.5,
                        help='keep (write, draw, align) faces scoring at least this '
                        '(default 0.5)')
    parser.add_argument('--device', type=argtypes.device, default='cpu',
                        help='cpu, cuda or cuda:N')
    parser.add_argument('--batch-size', type=argtypes.int_at_least(1), default=1,
                        help='images per forward pass (default 1)')
    argtypes.add_model_options(parser, 'images')
    parser.add_argument('--save-aligned', action='store_true',
                        help='also write OUT_DIR/aligned/STEM_I.jpg, 112x112 crops aligned '
                        'on the ArcFace 5-point template (I = index in the JSON; 5-point '
                        'models only)')
    parser.add_argument('--vis-max-size', type=argtypes.int_at_least(0), default=2048,
                        help='drawn images are downscaled so that their longer side is at '
                        'most this (drawing is slow and memory-hungry on huge images; JSON '
                        'and aligned crops stay in original pixels); 0 = original size '
                        '(default 2048)')
    parser.add_argument('--no-vis', action='store_true', help='do not write drawn images')
    return parser.parse_args(argv)


class _Names:
    """Output stems, unique within one run (``a/x.jpg`` and ``b/x.png`` -> x, x_1)."""

    def __init__(self) -> None:
        self.used: Set[str] = set()

    def __call__(self, path: str) -> str:
        stem = Path(path).stem or 'image'
        candidate, count = stem, 0
        while candidate in self.used:
            count += 1
            candidate = f'{stem}_{count}'
        self.used.add(candidate)
        return candidate


def _report(path: str, reason: str) -> None:
    print(f'error: skipped {path}: {reason}', file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    import cv2
    from mmengine.utils import ProgressBar

    from mmretinaface import apis

    paths, failed = expand_inputs(args.inputs)
    for item, reason in failed:
        _report(item, reason)
    if not paths:
        print('error: no input image', file=sys.stderr)
        return 1
    try:
        inferencer = apis.FaceInferencer(device=args.device, show_progress=False,
                                         **argtypes.inferencer_options(args))
    except (FileNotFoundError, RuntimeError, ValueError, ImportError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    out_dir = Path(args.out_dir)
    for folder, wanted in (('preds', True), ('vis', not args.no_vis),
                           ('aligned', args.save_aligned)):
        if wanted:
            (out_dir / folder).mkdir(parents=True, exist_ok=True)
    call_options = dict(return_datasamples=True, return_vis=not args.no_vis,
                        pred_score_thr=args.score_thr, vis_max_size=args.vis_max_size)

    names = _Names()
    done = 0
    progress: Optional[ProgressBar] = (ProgressBar(len(paths), file=sys.stdout)
                                       if len(paths) > 1 else None)
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start:start + args.batch_size]
        batch_paths, images = [], []
        for path in chunk:
            try:
                images.append(apis.load_image(path))
                batch_paths.append(path)
            except (apis.ImageReadError, ValueError) as err:
                failed.append((path, str(err)))
                _report(path, str(err))
        out = (inferencer(images, batch_size=len(images), **call_options) if images
               else dict(predictions=[], visualization=[]))
        drawings = out['visualization'] or [None] * len(images)
        for path, image, sample, drawn in zip(batch_paths, images, out['predictions'],
                                              drawings):
            stem = names(path)
            pred = apis.instances_to_dict(sample.pred_instances, args.score_thr)
            record = dict(image=str(path), width=int(image.shape[1]),
                          height=int(image.shape[0]), **pred)
            with open(out_dir / 'preds' / f'{stem}.json', 'w') as f:
                json.dump(record, f)
            if drawn is not None:
                cv2.imwrite(str(out_dir / 'vis' / f'{stem}.jpg'), drawn[..., ::-1])
            if args.save_aligned and pred['keypoints'] and len(pred['keypoints'][0]) == 5:
                for i, crop in enumerate(apis.align_faces(image, pred['keypoints'])):
                    cv2.imwrite(str(out_dir / 'aligned' / f'{stem}_{i}.jpg'), crop)
            done += 1
            if progress is None:
                print(f'{path}: {len(pred["scores"])} face(s) -> {out_dir}/preds/{stem}.json')
        if progress is not None:
            for _ in chunk:
                progress.update()
    if progress is not None:
        print()
    print(f'{done} image(s) done, results in {out_dir}/')
    if failed:
        print(f'{len(failed)} input(s) skipped:', file=sys.stderr)
        for path, reason in failed:
            print(f'  {path}: {reason}', file=sys.stderr)
    return 0 if done else 1


if __name__ == '__main__':
    sys.exit(main())
