"""Convert a COCO keypoints json (faces with K points) to a RetinaFace ``label.txt``.

    python tools/coco_to_retinaface.py annotations.json out/label.txt \
        [--num-keypoints 5] [--category-ids 1] [--keypoint-order a,b,c,d,e] [--no-score]

Each COCO image becomes ``# file_name``; each annotation ``x y w h`` plus K
``x y 0`` triplets (``-1 -1 -1`` where COCO's visibility is 0) and a score
column of 1 (omit with ``--no-score``). Points must be in the order left eye,
right eye, nose, left mouth corner, right mouth corner (image left/right, as
the RetinaFace labels), or be re-ordered by name with ``--keypoint-order``.
Crowd annotations are skipped. See docs/data.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np

try:
    from mmretinaface.datasets.label_io import format_retinaface_face
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from mmretinaface.datasets.label_io import format_retinaface_face


def _keypoint_columns(coco: dict, num_keypoints: int,
                      keypoint_order: Optional[Sequence[str]],
                      category_ids: Optional[Sequence[int]]) -> Optional[List[int]]:
    """Indices of the COCO points to write, in output order (None: as stored)."""
    if keypoint_order is None:
        return None
    if len(keypoint_order) != num_keypoints:
        raise ValueError(f'--keypoint-order names {len(keypoint_order)} points, '
                         f'expected {num_keypoints}')
    for cat in coco.get('categories', []):
        if category_ids and cat['id'] not in category_ids:
            continue
        names = list(cat.get('keypoints', []))
        missing = [n for n in keypoint_order if n not in names]
        if missing:
            raise ValueError(f'category {cat["id"]} has no keypoints named {missing}')
        return [names.index(n) for n in keypoint_order]
    raise ValueError('--keypoint-order needs a category with keypoint names')


def coco_to_retinaface_lines(coco: dict, num_keypoints: int = 5,
                             category_ids: Optional[Sequence[int]] = None,
                             keypoint_order: Optional[Sequence[str]] = None,
                             with_score: bool = True) -> List[str]:
    """The RetinaFace label lines for a loaded COCO dict."""
    columns = _keypoint_columns(coco, num_keypoints, keypoint_order, category_ids)
    by_image: Dict[int, List[dict]] = defaultdict(list)
    for ann in coco.get('annotations', []):
        if category_ids and ann.get('category_id') not in category_ids:
            continue
        if ann.get('iscrowd', 0):
            continue
        by_image[ann['image_id']].append(ann)
    lines: List[str] = []
    for image in sorted(coco['images'], key=lambda im: im['id']):
        lines.append(f'# {image["file_name"]}')
        for ann in sorted(by_image.get(image['id'], []), key=lambda a: a.get('id', 0)):
            raw = np.asarray(ann.get('keypoints') or [0] * (3 * num_keypoints), dtype=np.float64)
            raw = raw.reshape(-1, 3)
            if columns is not None:
                raw = raw[columns]
            if len(raw) != num_keypoints:
                raise ValueError(f'annotation {ann.get("id")} of image {image["file_name"]} '
                                 f'has {len(raw)} keypoints, expected {num_keypoints}')
            lines.append(format_retinaface_face(ann['bbox'], raw[:, :2], visible=raw[:, 2] > 0,
                                                score=1.0 if with_score else None))
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('coco_json')
    parser.add_argument('out', help='label.txt to write')
    parser.add_argument('--num-keypoints', type=int, default=5)
    parser.add_argument('--category-ids', type=int, nargs='*', default=None)
    parser.add_argument('--keypoint-order', default=None,
                        help='comma-separated COCO keypoint names, in output order')
    parser.add_argument('--no-score', action='store_true', help='omit the score column')
    args = parser.parse_args(argv)
    with open(args.coco_json) as f:
        coco = json.load(f)
    order = args.keypoint_order.split(',') if args.keypoint_order else None
    lines = coco_to_retinaface_lines(coco, args.num_keypoints, args.category_ids, order,
                                     with_score=not args.no_score)
    with open(args.out, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    faces = sum(1 for line in lines if not line.startswith('#'))
    print(f'wrote {args.out}: {len(coco["images"])} images, {faces} faces')
    return 0


if __name__ == '__main__':
    sys.exit(main())
