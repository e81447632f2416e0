"""Convert a COCO keypoints json (faces with K points) to a RetinaFace ``label.txt``.

    python tools/coco_to_retinaface.py annotations.json out/label.txt \
        [--num-keypoints 5] [--category-ids 1] [--keypoint-order a,b,c,d,e] [--no-score] \
        [--allow-mirrored-order]

Each COCO image becomes ``# file_name``; each annotation ``x y w h`` plus K
``x y 0`` triplets (``-1 -1 -1`` where COCO's visibility is 0) and a score
column of 1 (omit with ``--no-score``). Points must be in the order left eye,
right eye, nose, left mouth corner, right mouth corner as seen in the image,
or be re-ordered by name (or index) with ``--keypoint-order``. COCO's
``left_eye`` is the subject's left, on the image's right: with 5 points the
order is checked from the geometry, and a file whose first eye (or mouth
corner) lies right of the second in most faces stops with the
``--keypoint-order`` that fixes it. Crowd annotations and degenerate boxes
are skipped. The output folder is created. See docs/data.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

try:
    from mmretinaface.datasets.label_io import format_retinaface_face
    from mmretinaface.datasets.metainfo import FACE_FLIP_INDICES
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from mmretinaface.datasets.label_io import format_retinaface_face
    from mmretinaface.datasets.metainfo import FACE_FLIP_INDICES


@dataclass
class Conversion:
    """The label lines and what went into them."""

    lines: List[str]
    points: np.ndarray  # (faces, K, 2) written landmarks, in output order
    visible: np.ndarray  # (faces, K) bool
    num_images: int
    skipped_boxes: int  # degenerate or malformed boxes
    order: List[str]  # the point names (or indices) written, in output order


def keypoint_columns(category: dict, num_keypoints: int,
                     keypoint_order: Optional[Sequence[str]]) -> Optional[List[int]]:
    """Indices of the category's points to write, in output order (None: as stored)."""
    names = [str(n) for n in category.get('keypoints') or []]
    where = f'category {category.get("id")} ({category.get("name", "?")!r})'
    if keypoint_order is None:
        if names and len(names) != num_keypoints:
            raise ValueError(
                f'{where} has {len(names)} keypoints ({", ".join(names)}), expected '
                f'{num_keypoints}: pick {num_keypoints} with --keypoint-order, or select the '
                'face category with --category-ids')
        return None
    if len(keypoint_order) != num_keypoints:
        raise ValueError(f'--keypoint-order names {len(keypoint_order)} points, '
                         f'expected {num_keypoints}')
    unknown = [t for t in keypoint_order if t not in names and
               not (t.isdigit() and (not names or int(t) < len(names)))]
    if unknown:
        raise ValueError(f'--keypoint-order: {where} has no keypoints named '
                         f'{", ".join(unknown)} (it has: {", ".join(names) or "no names"})')
    return [names.index(t) if t in names else int(t) for t in keypoint_order]


def _valid_box(bbox) -> bool:
    return (isinstance(bbox, (list, tuple)) and len(bbox) == 4
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)
            and bbox[2] > 0 and bbox[3] > 0)


def convert_coco(coco: dict, num_keypoints: int = 5, category_ids: Optional[Sequence[int]] = None,
                 keypoint_order: Optional[Sequence[str]] = None,
                 with_score: bool = True) -> Conversion:
    """Convert a loaded COCO dict; ``ValueError`` says what is wrong with it."""
    if not isinstance(coco, dict):
        raise ValueError('not a COCO annotation file (the top level is not an object)')
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(coco.get(key), list):
            raise ValueError(f'no {key!r} list: not a COCO annotation file')
    categories = [c for c in coco['categories']
                  if not category_ids or c.get('id') in category_ids]
    if category_ids and not categories:
        raise ValueError(f'no category with id {category_ids}')
    columns = {c.get('id'): keypoint_columns(c, num_keypoints, keypoint_order)
               for c in categories}
    first = categories[0].get('keypoints') if categories else None
    order = list(keypoint_order or first or map(str, range(num_keypoints)))
    by_image: Dict[int, List[dict]] = defaultdict(list)
    skipped = 0
    known = {c.get('id') for c in coco['categories']}
    for ann in coco['annotations']:
        if ann.get('category_id') not in known:
            raise ValueError(f'annotation {ann.get("id")} has category_id '
                             f'{ann.get("category_id")}, which "categories" does not list')
        if ann['category_id'] not in columns or ann.get('iscrowd', 0):
            continue
        if _valid_box(ann.get('bbox')):
            by_image[ann.get('image_id')].append(ann)
        else:
            skipped += 1
    lines: List[str] = []
    points, visible = [], []
    for image in sorted(coco['images'], key=lambda im: im.get('id', 0)):
        if 'file_name' not in image:
            raise ValueError(f'image {image.get("id")} has no "file_name"')
        lines.append(f'# {image["file_name"]}')
        for ann in sorted(by_image.get(image.get('id'), []), key=lambda a: a.get('id', 0)):
            raw = np.asarray(ann.get('keypoints') or [0] * (3 * num_keypoints), np.float64)
            cols = columns[ann['category_id']]
            if raw.size % 3 or len(raw) // 3 <= max(cols or [-1]) or (
                    cols is None and len(raw) // 3 != num_keypoints):
                raise ValueError(
                    f'annotation {ann.get("id")} (category {ann["category_id"]}) of image '
                    f'{image["file_name"]} has {raw.size / 3:g} keypoints, expected '
                    f'{num_keypoints}' + ('' if cols else ' (pick them with --keypoint-order)'))
            raw = raw.reshape(-1, 3)[cols if cols is not None else slice(None)]
            points.append(raw[:, :2])
            visible.append(raw[:, 2] > 0)
            lines.append(format_retinaface_face(ann['bbox'], raw[:, :2], visible=raw[:, 2] > 0,
                                                score=1.0 if with_score else None))
    return Conversion(lines, np.reshape(points, (-1, num_keypoints, 2)),
                      np.asarray(visible, bool).reshape(-1, num_keypoints),
                      len(coco['images']), skipped, order)


def mirrored_pairs(points: np.ndarray, visible: np.ndarray,
                   flip_indices: Sequence[int] = FACE_FLIP_INDICES
                   ) -> List[Tuple[int, int, int, int]]:
    """``(i, j, mirrored, counted)`` for each left/right pair ``i < j`` whose point ``i``
    lies right of point ``j`` in more than half of the ``counted`` faces with both visible."""
    found = []
    for i, j in enumerate(flip_indices):
        if i < j:
            both = visible[:, i] & visible[:, j]
            mirrored = int((points[both, i, 0] > points[both, j, 0]).sum())
            if 2 * mirrored > both.sum():
                found.append((i, j, mirrored, int(both.sum())))
    return found


def _mirror_message(conv: Conversion, pairs: List[Tuple[int, int, int, int]]) -> str:
    fixed = list(conv.order)
    for i, j, _, _ in pairs:
        fixed[i], fixed[j] = conv.order[j], conv.order[i]
    found = '; '.join(f'point {i} ({conv.order[i]}) lies right of point {j} ({conv.order[j]}) '
                      f'in {m} of {n} faces with both visible' for i, j, m, n in pairs)
    return (f'the landmark order looks mirrored: {found}. RetinaFace labels put the '
            "image-left point first (COCO's left_eye is the subject's left, on the image's "
            f'right). Fix: --keypoint-order {",".join(fixed)} '
            '(or --allow-mirrored-order to write it as it is)')


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('coco_json')
    parser.add_argument('out', help='label.txt to write (its folder is created)')
    parser.add_argument('--num-keypoints', type=int, default=5)
    parser.add_argument('--category-ids', type=int, nargs='*', default=None)
    parser.add_argument('--keypoint-order', default=None,
                        help='comma-separated COCO keypoint names (or indices), in output order')
    parser.add_argument('--no-score', action='store_true', help='omit the score column')
    parser.add_argument('--allow-mirrored-order', action='store_true',
                        help='write labels whose first eye / mouth corner lies on the right')
    args = parser.parse_args(argv)
    order = args.keypoint_order.split(',') if args.keypoint_order else None
    path = args.coco_json
    try:
        with open(path, encoding='utf-8') as f:
            coco = json.load(f)
        conv = convert_coco(coco, args.num_keypoints, args.category_ids, order,
                            with_score=not args.no_score)
        pairs = (mirrored_pairs(conv.points, conv.visible)
                 if args.num_keypoints == len(FACE_FLIP_INDICES) else [])
        if pairs and not args.allow_mirrored_order:
            raise ValueError(_mirror_message(conv, pairs))
        path = args.out
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, 'w') as f:
            f.write('\n'.join(conv.lines) + '\n')
    except OSError as e:
        print(f'error: {path}: {e.strerror or e}', file=sys.stderr)
        return 1
    except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError included
        kind = 'invalid JSON: ' if isinstance(e, (json.JSONDecodeError, UnicodeError)) else ''
        print(f'error: {path}: {kind}{e}', file=sys.stderr)
        return 1
    if pairs:
        print(f'warning: {path}: written with a mirrored landmark order '
              '(--allow-mirrored-order)', file=sys.stderr)
    no_landmarks = int((~conv.visible.any(axis=1)).sum())
    print(f'wrote {path}: {conv.num_images} images, {len(conv.points)} faces, '
          f'{no_landmarks} faces without landmarks, {conv.skipped_boxes} degenerate boxes '
          'skipped')
    return 0


if __name__ == '__main__':
    sys.exit(main())
