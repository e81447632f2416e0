"""Image pyramid (``FaceInferencer(pyramid=True)``): time against a single scale, and the
faces it gives on a close-up portrait and on a large group-like photo.

Both photos are made from the bundled portraits (there is no real close-up or
group photo offline): the close-up crops Grace Hopper's photo around her face
and upscales it (face ~900 px in 1500x1800); the group-like photo places six
portrait crops zoomed to faces of 300..1400 px on a 6000x4000 canvas (an
upscaled photo of a coffee cup). Their true faces are where the single-scale detector finds
them on the source photos (face ~200 px, well inside its range), mapped.
"""
from __future__ import annotations

import math
from typing import List, Tuple

from ..common import photos, setup_child
from ..report import Target, markdown_table, ratio
from ..timing import interleaved_timings, medians_ms
from .base import Case, Context

RATIO_MAX = 1.4  # pyramid / single scale, FaceInferencer call (issue 12)
#: Group-like photo: face sizes (px, sqrt(w * h)) of its six portraits.
GROUP_FACES = (1400, 450, 900, 300, 1100, 650)
GROUP_SIZE = (6000, 4000)


def _top_face(inferencer, image):
    (sample, ) = inferencer(image, return_datasamples=True)['predictions']
    faces = sample.pred_instances
    return faces[int(faces.scores.argmax())]


def zoomed_portrait(inferencer, name: str, face: float, size: Tuple[int, int],
                    flip: bool = False):
    """A bundled portrait cropped around its face and resized so that the face is about
    ``face`` px (``sqrt(w * h)``) in a ``size`` (w, h) image (less where the photo ends).

    Returns the BGR image and the face box there (xyxy), mapped from the single-scale
    detection on the photo itself.
    """
    import cv2
    import numpy as np

    from mmretinaface.apis import bundled_photo
    photo = cv2.imread(bundled_photo(name), cv2.IMREAD_COLOR)
    if flip:
        photo = np.ascontiguousarray(photo[:, ::-1])
    box = _top_face(inferencer, photo).bboxes[0].tolist()
    scale = face / math.sqrt((box[2] - box[0]) * (box[3] - box[1]))
    height, width = photo.shape[:2]
    crop_w, crop_h = min(size[0] / scale, width), min(size[1] / scale, height)
    left = min(max((box[0] + box[2] - crop_w) / 2, 0), width - crop_w)
    top = min(max((box[1] + box[3] - crop_h) / 2, 0), height - crop_h)
    out_w, out_h = round(crop_w * scale), round(crop_h * scale)
    affine = np.array([[scale, 0, -left * scale], [0, scale, -top * scale]])
    image = cv2.warpAffine(photo, affine, (out_w, out_h), flags=cv2.INTER_LINEAR)
    face_box = [(box[0] - left) * scale, (box[1] - top) * scale,
                (box[2] - left) * scale, (box[3] - top) * scale]
    return image, face_box


def group_photo(inferencer):
    """The 6000x4000 group-like photo and its six face boxes."""
    import cv2
    import numpy as np
    import skimage.data
    rng = np.random.default_rng(0)
    width, height = GROUP_SIZE
    background = cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2BGR)  # 600x400, no face
    canvas = cv2.resize(background, GROUP_SIZE, interpolation=cv2.INTER_LINEAR)
    cell_w, cell_h = width // 3, height // 2
    boxes = []
    for k, face in enumerate(GROUP_FACES):
        tile, box = zoomed_portrait(inferencer, ('grace_hopper', 'astronaut')[k % 2], face,
                                    (cell_w - 50, cell_h - 50), flip=bool(k % 3 == 1))
        row, col = divmod(k, 3)
        x = col * cell_w + int(rng.integers(0, cell_w - tile.shape[1] + 1))
        y = row * cell_h + int(rng.integers(0, cell_h - tile.shape[0] + 1))
        canvas[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
        boxes.append([box[0] + x, box[1] + y, box[2] + x, box[3] + y])
    return canvas, boxes


def _faces(inferencer, image, truth: List[List[float]], score_thr: float = 0.5, **kwargs
           ) -> dict:
    """Detections >= ``score_thr``: true faces found (IoU >= 0.5) and the others' scores."""
    import numpy as np
    import torch
    from mmdet.structures.bbox import bbox_overlaps
    (sample, ) = inferencer(image, return_datasamples=True, **kwargs)['predictions']
    faces = sample.pred_instances
    faces = faces[faces.scores >= score_thr]
    iou = bbox_overlaps(faces.bboxes, torch.tensor(truth, dtype=faces.bboxes.dtype))
    found = int((iou.max(dim=0).values >= 0.5).sum()) if len(faces) else 0
    false = faces.scores[iou.max(dim=1).values < 0.5] if len(faces) else faces.scores
    best = float(iou.max()) if len(faces) else 0.0
    return dict(detections=len(faces), found=found, faces=len(truth), best_iou=best,
                false_scores=sorted(np.round(false.tolist(), 2).tolist()))


def measure_pyramid(p: dict) -> dict:
    """Per size: ``FaceInferencer`` single scale and ``pyramid=True`` (the default,
    optimized model), timed interleaved (the whole call: pipeline, network, merge),
    in wall and in CPU time of the process (steadier when other jobs share the cores)."""
    setup_child(p)
    import time

    from mmretinaface.apis import FaceInferencer
    from mmretinaface.models.pyramid import pyramid_scales
    single = FaceInferencer(device=p['device'], show_progress=False)
    pyramid = FaceInferencer(single.model, show_progress=False, pyramid=True)
    if p['image'] == 'close-up':
        image, _ = zoomed_portrait(single, 'grace_hopper', 900, (1500, 1800))
    elif p['image'] == 'group':
        image, _ = group_photo(single)
    else:
        (image, ) = photos(p['width'], p['height'], 1)
    height, width = image.shape[:2]
    network = min(1.0, 4096 / max(height, width))  # the default LimitSize
    levels = len(pyramid_scales(network * min(height, width)))
    calls = {'single': lambda: single(image, return_datasamples=True),
             'pyramid': lambda: pyramid(image, return_datasamples=True)}
    limits = dict(repeats=p['repeats'], min_repeats=p['min_repeats'], budget_s=p['budget_s'])
    wall = interleaved_timings(calls, **limits)
    cpu = interleaved_timings(calls, **limits, clock=time.process_time)
    return dict(ms=medians_ms(wall), cpu_ms=medians_ms(cpu), n=len(wall['single']),
                levels=levels, size=f'{width}x{height}')


def measure_pyramid_faces(p: dict) -> dict:
    """Faces >= 0.5 on the close-up and the group-like photo: single scale, single scale
    at smaller network sizes, and the pyramid."""
    setup_child(p)
    from mmretinaface.apis import FaceInferencer
    single = FaceInferencer(device=p['device'], show_progress=False)
    pyramid = FaceInferencer(single.model, show_progress=False, pyramid=True)
    out = {}
    image, box = zoomed_portrait(single, 'grace_hopper', 900, (1500, 1800))
    out['close-up'] = {'single': _faces(single, image, [box]),
                       'single, max_size 600': _faces(single, image, [box], max_size=600),
                       'pyramid': _faces(pyramid, image, [box])}
    if p['group']:
        image, boxes = group_photo(single)
        out['group'] = {'single (max_size 4096)': _faces(single, image, boxes),
                        'single, max_size 1500': _faces(single, image, boxes, max_size=1500),
                        'pyramid (max_size 4096)': _faces(pyramid, image, boxes)}
    return out


class PyramidCase(Case):
    """``FaceInferencer(pyramid=True)`` against single scale: time and faces found."""

    name = 'pyramid'
    modes = dict(full=dict(images=['640x480', '1280x720', 'close-up', 'group'], group=True),
                 quick=dict(images=['1280x720'], group=False))

    def run(self, ctx: Context) -> dict:
        rows = []
        for image in ctx.params['images']:
            if 'x' in image:
                w, h = (int(v) for v in image.split('x'))
                result = ctx.job(measure_pyramid, f'pyramid {image}', image='photo',
                                 width=w, height=h)
            else:
                result = ctx.job(measure_pyramid, f'pyramid {image}', image=image)
            rows.append(dict(image=image, result=result))
        faces = ctx.job(measure_pyramid_faces, 'pyramid faces', group=ctx.params['group'])
        return dict(rows=rows, faces=faces)

    @staticmethod
    def _ratio(row: dict, key: str = 'cpu_ms') -> float:
        ms = row['result'].get(key, {})
        return ratio(ms.get('pyramid', math.nan), ms.get('single', math.nan))

    @staticmethod
    def _label(row: dict) -> str:
        size = row['result'].get('size', '')
        return row['image'] if row['image'] == size else f"{row['image']} {size}"

    def targets(self, result: dict) -> List[Target]:
        return [Target(f'pyramid / single scale (CPU time), {self._label(row)}',
                       self._ratio(row), RATIO_MAX) for row in result['rows']]

    def findings(self, result: dict) -> List[str]:
        out = []
        faces = result['faces']
        if 'error' in faces:  # the failed job is listed under Errors
            return out
        for photo, runs in faces.items():
            if 'error' in runs:
                continue
            parts = []
            for name, r in runs.items():
                false = r['false_scores']
                scores = (f' ({false[0]:.2f})' if len(false) == 1 else
                          f' ({false[0]:.2f}-{false[-1]:.2f})' if false else '')
                parts.append(f"{name}: {r['found']}/{r['faces']} true faces, "
                             f'{len(false)} other detections >= 0.5{scores}')
            out.append(f'- Pyramid, {photo}: ' + '; '.join(parts) + '.')
        return out

    def render(self, result: dict) -> List[str]:
        rows = [(row['image'], row['result']['size'], row['result']['levels'], clock,
                 row['result'][key]['single'], row['result'][key]['pyramid'],
                 f'{self._ratio(row, key):.2f}x', row['result']['n'])
                for row in result['rows'] if 'ms' in row['result']
                for clock, key in (('wall', 'ms'), ('CPU', 'cpu_ms'))]
        if not rows:
            return []
        return ['## Image pyramid (`FaceInferencer(pyramid=True)`)', '',
                markdown_table(['image', 'size', 'levels', 'time', 'single scale (ms)',
                                'pyramid (ms)', 'ratio', 'n'], rows), '',
                'Whole `FaceInferencer` calls (pipeline with the default `LimitSize` 4096, '
                'network, post-processing, merge), the default optimized model; median of `n` '
                'interleaved rounds, in wall time and in CPU time of the process (the target '
                'uses the latter: other jobs on shared cores move it less). `levels`: the '
                'input plus its halved copies. Faces found are under Findings.', '']
