"""Scaling: inference time against the image area; prior generation and its cache."""
from __future__ import annotations

import functools
import math
import time
from typing import List

from ..common import MNET_CONFIG, setup_child, sync_fn
from ..report import markdown_table, ms, ratio
from ..timing import interleaved_timings, medians_ms
from .base import Case, Context
from .inference import measure_inference

SIZES = dict(full=[(320, 240), (640, 480), (1280, 720), (1920, 1080), (2150, 1600)],
             quick=[(160, 128), (320, 256)])


class ScalingCase(Case):
    """MobileNet0.25 at batch 1 over image sizes (reusing the inference case's sizes)."""

    name = 'scaling'
    modes = dict(full=dict(sizes=SIZES['full']), quick=dict(sizes=SIZES['quick']))

    def run(self, ctx: Context) -> dict:
        done = {(c['width'], c['height']): c['latency']
                for c in ctx.results.get('infer', {}).get('cases', []) if c['batch'] == 1}
        rows = []
        for w, h in ctx.params['sizes']:
            lat = done.get((w, h)) or ctx.job(
                measure_inference, f'scaling {w}x{h} batch 1', model='mnet', width=w,
                height=h, batch=1, variants=['forward', 'postprocess', 'ort_ref'])
            rows.append(dict(width=w, height=h, latency=lat))
        return dict(rows=rows)

    def render(self, result: dict) -> List[str]:
        rows = []
        for s in result['rows']:
            lat = s['latency']
            if 'error' in lat:
                continue
            mpx = s['width'] * s['height'] / 1e6
            total = ms(lat, 'forward') + ms(lat, 'postprocess')
            rows.append((f"{s['width']}x{s['height']}", f'{mpx:.2f}', lat['num_priors'],
                         ms(lat, 'forward'), ms(lat, 'postprocess'), total, total / mpx,
                         f"{100 * ratio(ms(lat, 'postprocess'), total):.1f}%",
                         ms(lat, 'ort_ref'), ms(lat, 'ort_ref') / mpx, lat['n']))
        if not rows:
            return []
        return ['## 3. Scaling', '',
                '### Inference time vs image area (MobileNet0.25, batch 1, ms)', '',
                markdown_table(['size', 'Mpx', 'priors', 'forward', 'post-processing',
                                'PyTorch total', 'total ms/Mpx', 'post-processing share',
                                'reference ONNX', 'ONNX ms/Mpx', 'n'], rows), '']


def measure_priors(p: dict) -> dict:
    """Prior generation per input shape: uncached, first (cache miss) and cached calls."""
    setup_child(p)
    import torch
    from mmdet.registry import TASK_UTILS
    from mmengine.config import Config

    from mmretinaface.models.task_modules.prior_box import prior_boxes
    cfg = Config.fromfile(str(MNET_CONFIG)).model.bbox_head.prior_generator
    gen = TASK_UTILS.build(cfg)
    device = torch.device(p['device'])
    sync = sync_fn(p) or (lambda: None)
    rows = []
    for width, height in p['sizes']:
        featmaps = [(math.ceil(height / s), math.ceil(width / s)) for s in cfg.steps]
        sync()
        start = time.perf_counter()
        priors = gen.grid_priors(featmaps, device)
        sync()
        first_ms = 1e3 * (time.perf_counter() - start)
        times = interleaved_timings(
            {'uncached': functools.partial(prior_boxes, featmaps, cfg.steps, cfg.min_sizes,
                                           device),
             'cached': functools.partial(gen.grid_priors, featmaps, device)},
            repeats=max(p['repeats'], 5) * 3, warmup=1, min_repeats=p['min_repeats'],
            budget_s=p['budget_s'] / 4, sync=sync_fn(p))
        rows.append(dict(width=width, height=height, num_priors=int(priors.shape[0]),
                         first_ms=first_ms, ms=medians_ms(times),
                         n=min(len(t) for t in times.values())))
    return dict(rows=rows)


class PriorsCase(Case):
    """The prior generator's per-shape cache against building the priors every call."""

    name = 'priors'
    modes = dict(full=dict(sizes=SIZES['full']), quick=dict(sizes=SIZES['quick']))

    def run(self, ctx: Context) -> dict:
        return ctx.job(measure_priors, 'prior generation, cache', sizes=ctx.params['sizes'])

    def render(self, result: dict) -> List[str]:
        if 'error' in result:
            return []
        rows = [(f"{r['width']}x{r['height']}", r['num_priors'], r['ms']['uncached'],
                 r['first_ms'], r['ms']['cached'],
                 f"{ratio(r['ms']['uncached'], r['ms']['cached']):.0f}x", r['n'])
                for r in result['rows']]
        return ['### Prior generation per input shape (ms)', '',
                markdown_table(['size', 'priors', 'uncached (`prior_boxes`)',
                                'first `grid_priors` (cache miss)', 'cached `grid_priors`',
                                'cached speed-up', 'n'], rows), '',
                "The config's `RetinaFacePriorGenerator`: `grid_priors` caches the priors per "
                'feature-map sizes, device and dtype; `prior_boxes` builds them each call.', '']
