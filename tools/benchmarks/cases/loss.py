"""Training loss: the head's ``loss_by_feat`` vs the per-image reference ``MultiBoxLoss``."""
from __future__ import annotations

import functools
import math
from typing import List, Optional, Tuple

import numpy as np

from ..common import MNET_CONFIG, setup_child, sync_fn, top_ops
from ..report import Target, markdown_table, ops_table, ratio
from ..timing import interleaved_timings, medians_ms
from .base import Case, Context

LOSS_SPEEDUP_MIN = 5.0  # batched loss vs the per-image reference loop, batch 32


def random_faces(rng: np.random.Generator, num_faces: int, image_size: int = 640,
                 min_size: float = 8.0, max_size: Optional[float] = None,
                 num_keypoints: int = 5) -> Tuple[np.ndarray, np.ndarray]:
    """Random face boxes (``(G, 4)`` xyxy) and landmarks (``(G, K, 2)``) in a square image.

    Box heights are log-uniform in ``[min_size, max_size]`` (default half the
    image), width ``0.78 * height``, fully inside the image; overlaps are
    allowed (crowds). Landmarks are uniform inside their box. Float32.
    """
    max_size = max_size or image_size / 2
    heights = np.exp(rng.uniform(math.log(min_size), math.log(max_size), num_faces))
    widths = 0.78 * heights
    x1 = rng.uniform(0, image_size - widths)
    y1 = rng.uniform(0, image_size - heights)
    boxes = np.stack([x1, y1, x1 + widths, y1 + heights], axis=1)
    u = rng.uniform(0.15, 0.85, (num_faces, num_keypoints, 2))
    points = boxes[:, None, :2] + u * np.stack([widths, heights], axis=1)[:, None, :]
    return boxes.astype(np.float32), points.astype(np.float32)


def measure_loss(p: dict) -> dict:
    """Ours (``bbox_head.loss_by_feat``) vs the reference, interleaved, per face count."""
    setup_child(p)
    import torch
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.structures import InstanceData

    from mmretinaface.testing import (
        ReferenceMultiBoxLoss,
        nhwc_flatten,
        reference_prior_box,
        to_reference_targets,
    )
    device, size, batch = p['device'], p['image_size'], p['batch']
    cfg = Config.fromfile(str(MNET_CONFIG))
    model = MODELS.build(cfg.model).to(device).train()
    head = model.bbox_head
    box_weight = float(cfg.model.bbox_head.loss_multibox.loc_weight)
    with torch.no_grad():  # the per-level output shapes for this input size
        shapes = [[o.shape[1:] for o in level]
                  for level in model(torch.zeros(1, 3, size, size, device=device),
                                     mode='tensor')]
    priors_unit = reference_prior_box((size, size)).to(device)
    reference = ReferenceMultiBoxLoss(num_landmarks=5)
    metas = [dict(img_shape=(size, size), pad_shape=(size, size),
                  batch_input_shape=(size, size))]
    rng = np.random.default_rng(0)
    cases = [(f"1..{p['max_faces']}", rng.integers(1, p['max_faces'] + 1, size=batch).tolist(),
              True)]
    cases += [(str(n), [n] * p['scaling_batch'], False) for n in p['faces_scaling']]
    rows, profile = [], None
    for label, counts, main in cases:
        faces = [random_faces(rng, n, size) for n in counts]
        gts = [InstanceData(bboxes=torch.from_numpy(b).to(device),
                            labels=torch.zeros(len(b), dtype=torch.long, device=device),
                            keypoints=torch.from_numpy(k).to(device),
                            keypoints_visible=torch.ones(k.shape[:2], device=device))
               for b, k in faces]
        targets = [t.to(device) for t in to_reference_targets(
            [g.bboxes.cpu() for g in gts], [g.keypoints.cpu() for g in gts],
            [g.keypoints_visible.cpu() for g in gts], size)]
        gen = torch.Generator().manual_seed(len(counts) + len(label))
        maps = [[torch.randn(len(counts), *shape, generator=gen).mul_(0.5).to(device)
                 .requires_grad_() for shape in level] for level in shapes]
        flat = [torch.cat([nhwc_flatten(m, dim) for m in level], 1)
                for level, dim in zip(maps, (2, 4, 10))]

        ours = functools.partial(head.loss_by_feat, *maps, gts, metas * len(counts))
        ref = functools.partial(reference, (flat[1], flat[0], flat[2]), priors_unit, targets)
        times = interleaved_timings({'ours': ours, 'reference': ref}, repeats=p['repeats'],
                                    warmup=1, min_repeats=p['min_repeats'],
                                    budget_s=p['budget_s'], sync=sync_fn(p))
        mine, (loss_l, loss_c, loss_landm) = ours(), ref()
        pairs = ((mine['loss_bbox'] / box_weight, loss_l), (mine['loss_cls'], loss_c),
                 (mine['loss_kpt'], loss_landm))
        rel = max(abs(a.item() - b.item()) / max(abs(b.item()), 1e-12)
                  for a, b in ((x.detach(), y.detach()) for x, y in pairs))
        rows.append(dict(label=label, main=main, batch=len(counts), faces=int(sum(counts)),
                         ms=medians_ms(times), n=min(len(t) for t in times.values()),
                         max_rel_diff=rel))
        if main:
            profile = top_ops(ours, rounds=1, device=device)
    return dict(rows=rows, batch=batch, image_size=size, num_priors=int(priors_unit.shape[0]),
                profile=profile)


class LossCase(Case):
    """The training loss on random predictions and drawn face boxes."""

    name = 'loss'
    modes = dict(
        full=dict(image_size=640, batch=32, max_faces=200, faces_scaling=[1, 10, 50, 200],
                  scaling_batch=8),
        quick=dict(image_size=160, batch=4, max_faces=20, faces_scaling=[1, 20],
                   scaling_batch=2))

    def run(self, ctx: Context) -> dict:
        return ctx.job(measure_loss, 'loss vs the per-image reference', **ctx.params)

    @staticmethod
    def _main(result: dict) -> dict:
        return next(r for r in result['rows'] if r['main'])

    def targets(self, result: dict) -> List[Target]:
        if 'error' in result:
            return []
        main = self._main(result)
        return [Target(f"batched loss speed-up vs per-image reference, batch {result['batch']}, "
                       f"{main['label']} faces/image (forward)",
                       ratio(main['ms']['reference'], main['ms']['ours']), LOSS_SPEEDUP_MIN,
                       higher_is_better=True, digits=1)]

    def render(self, result: dict) -> List[str]:
        if 'error' in result:
            return []
        rows, scale_rows = [], []
        for r in result['rows']:
            t = r['ms']
            row = (r['label'], r['batch'], r['faces'], t['ours'], t['reference'],
                   f"{ratio(t['reference'], t['ours']):.1f}x", f"{r['max_rel_diff']:.1g}",
                   r['n'])
            (rows if r['main'] else scale_rows).append(row)
        headers = ['faces per image', 'batch', 'faces in batch', 'ours', 'reference',
                   'speed-up', 'max rel. loss diff', 'n']
        out = ['### Training loss vs the per-image reference (ms)', '',
               f"{result['image_size']}x{result['image_size']} input ({result['num_priors']} "
               'priors), random predictions, random face boxes (log-uniform 8 px to half the '
               'image, overlaps allowed) with 5 landmarks. `ours` = the head\'s `loss_by_feat` '
               '(flatten, priors, matching, targets, hard-negative mining, the three losses); '
               '`reference` = `mmretinaface.testing.ReferenceMultiBoxLoss` (the reference\'s '
               'per-image `match` loop) on the same predictions. Forward only.', '',
               markdown_table(headers, rows), '',
               '`max rel. loss diff`: largest relative difference of the three loss terms '
               '(ours without the config\'s box-loss weight).', '']
        if result.get('profile'):
            prof = result['profile']
            out += [f"Where `loss_by_feat` spends its time in the first row "
                    f"({prof['total_ms']:.0f} ms under the profiler):", '', ops_table(prof), '']
        if scale_rows:
            out += ['### Loss time vs faces per image (forward, ms)', '',
                    markdown_table(headers, scale_rows), '']
        return out
