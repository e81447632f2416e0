"""CPU speed of the default inference path: its forward against the reference ONNX.

The default path is ``FaceInferencer``'s model (``init_face_detector(optimize=True)``:
:func:`~mmretinaface.apis.optimize.optimize_for_inference`) fed by its own data
preprocessor (channels-last batches). Each variant is timed in a tight A/B loop
with the reference ONNX under ONNX Runtime (same values: the NCHW batch the
reference takes) and the target is the median of the ratios of adjacent runs, so a
burst of load hits both runs of a pair; with one thread the clock is the thread's
CPU time (other jobs on shared cores then move it little). The steps in between
(BatchNorm folded, then channels-last) show what each part gives.
"""
from __future__ import annotations

import time
from typing import Dict, List

from ..common import build_detector, build_inferencer, ort_session, photos, setup_child
from ..report import Target, markdown_table
from ..timing import interleaved_timings
from .base import Case, Context

#: Issue 12: default forward / reference ONNX forward, one thread.
RATIO_MAX = {'640x480': 1.10, '1280x720': 1.00}
#: What each variant is, for the report.
VARIANTS = {
    'default': "`FaceInferencer`'s model on its preprocessor's batch (the default path)",
    'as_loaded': '`init_face_detector(optimize=False)`, NCHW',
    'fold': "`optimize='fold'` (BatchNorm folded by `mmcv.cnn.fuse_conv_bn`), NCHW",
    'fold_cl': 'BatchNorm folded + `channels_last` weights and input (the previous default)',
}


def measure_cpu_speed(p: dict) -> dict:
    """Paired ratios of each variant's forward to the reference ONNX, and exactness."""
    setup_child(p)
    import numpy as np
    import torch
    from mmcv.cnn import fuse_conv_bn
    from retinaface.weights import WEIGHTS
    inferencer = build_inferencer('mnet', p['device'])
    default = inferencer.model
    as_loaded = build_detector('mnet', p['device'])
    images = photos(p['width'], p['height'], 1)
    data = inferencer.collate_fn([inferencer.pipeline(dict(img=img)) for img in images])
    x_default = default.data_preprocessor(data, False)['inputs']
    x = as_loaded.data_preprocessor(data, False)['inputs']  # NCHW, the same values
    models = {'default': (default, x_default), 'as_loaded': (as_loaded, x)}
    if 'fold' in p['variants']:
        models['fold'] = (fuse_conv_bn(build_detector('mnet', p['device'])), x)
    if 'fold_cl' in p['variants']:
        models['fold_cl'] = (fuse_conv_bn(build_detector('mnet', p['device'])).to(
            memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last))
    sess = ort_session(WEIGHTS, p)
    x_ref = np.ascontiguousarray(x.float().cpu().numpy())  # a strided array would be copied
    with torch.no_grad():
        expected = [t for level in as_loaded(x, mode='tensor') for t in level]
        reference = sess.run(None, {'input': x_ref})
        out: Dict[str, dict] = {}
        for name, (model, xin) in models.items():
            outs = [t for level in model(xin, mode='tensor') for t in level]
            max_diff = max(float((a - b).abs().max()) for a, b in zip(outs, expected))

            def forward(model=model, xin=xin):
                with torch.no_grad():
                    return model(xin, mode='tensor')
            clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
            times = interleaved_timings(
                {'ort': lambda: sess.run(None, {'input': x_ref}), name: forward},
                repeats=p['pairs'], warmup=2, min_repeats=min(10, p['pairs']),
                budget_s=p['budget_s'], clock=clock)
            pairs = [a / b for a, b in zip(times[name], times['ort'])]
            out[name] = dict(ratio=float(np.median(pairs)), n=len(pairs),
                             ms=1e3 * float(np.median(times[name])),
                             ort_ms=1e3 * float(np.median(times['ort'])),
                             clock='CPU' if clock is time.thread_time else 'wall',
                             max_abs_diff=max_diff)
    out['onnx_outputs'] = [list(o.shape) for o in reference]
    return out


class CpuSpeedCase(Case):
    """Default-path forward vs the reference ONNX (one thread), and the steps to it."""

    name = 'cpu_speed'
    modes = dict(full=dict(sizes=[(640, 480), (1280, 720)], pairs=40,
                           variants=list(VARIANTS)),
                 quick=dict(sizes=[(160, 128)], pairs=6, variants=['default', 'as_loaded']))

    def run(self, ctx: Context) -> dict:
        rows = []
        for w, h in ctx.params['sizes']:
            result = ctx.job(measure_cpu_speed, f'cpu speed {w}x{h}', width=w, height=h,
                             pairs=ctx.params['pairs'], variants=ctx.params['variants'])
            rows.append(dict(size=f'{w}x{h}', result=result))
        return dict(rows=rows)

    def targets(self, result: dict) -> List[Target]:
        return [Target(f"default-path forward / reference ONNX (ORT), {row['size']}, "
                       f"{row['result']['default']['clock']} time",
                       row['result']['default']['ratio'], RATIO_MAX[row['size']])
                for row in result['rows']
                if row['size'] in RATIO_MAX and 'default' in row['result']]

    def findings(self, result: dict) -> List[str]:
        out = []
        for row in result['rows']:
            r = row['result']
            if 'default' not in r:
                continue
            steps = ', '.join(f"{name} {r[name]['ratio']:.2f}x" for name in VARIANTS
                              if name in r and name != 'default')
            out.append(f"- **Default-path forward vs the reference ONNX** ({row['size']}, one "
                       f"thread): {r['default']['ratio']:.2f}x ({steps}); outputs within "
                       f"{r['default']['max_abs_diff']:.1e} of the model as loaded.")
        return out

    def render(self, result: dict) -> List[str]:
        rows = [(row['size'], VARIANTS[name], r['ms'], r['ort_ms'], f"{r['ratio']:.3f}",
                 r['n'], r['clock'], f"{r['max_abs_diff']:.1e}")
                for row in result['rows'] for name, r in row['result'].items()
                if name in VARIANTS]
        if not rows:
            return []
        return ['## CPU speed: the default inference path vs the reference ONNX', '',
                markdown_table(['size', 'variant', 'forward (ms)', 'reference ONNX (ms)',
                                'ratio', 'n', 'clock', 'max abs diff vs as loaded'], rows), '',
                'Forward = `model(batch, mode=\'tensor\')` (backbone, neck, head maps); the '
                'reference ONNX graph also flattens, concatenates and softmaxes its outputs. '
                'Each variant alternates with the reference session in its own loop of `n` '
                'pairs; `ratio` is the median of the per-pair ratios, timed in CPU time of '
                'the thread with one thread. The reference gets the NCHW batch as a '
                'contiguous array. Measured in one child process per size; see "CPU speed: '
                'what was tried" below for the other options and their costs.', '']
