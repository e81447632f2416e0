"""Operator profiles: where the PyTorch forward, the preprocessor and ONNX Runtime spend time."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Dict, List

from ..common import (
    build_detector,
    build_inferencer,
    ort_session,
    photos,
    raw_input,
    setup_child,
    top_ops,
)
from ..report import markdown_table, ops_table, ratio
from .base import Case, Context

TITLES = dict(forward="PyTorch forward, `FaceInferencer`'s model",
              forward_unoptimized='PyTorch forward, as loaded (`init_face_detector`)',
              preprocess='data preprocessor (`DetDataPreprocessor`)')


def measure_profiles(p: dict) -> dict:
    """torch.profiler top operators (forwards, preprocessor) and ONNX Runtime's kernels."""
    setup_child(p)
    import torch
    inferencer = build_inferencer('mnet', p['device'])
    unoptimized = build_detector('mnet', p['device'])
    model = inferencer.model
    images = photos(p['width'], p['height'], 1)
    data = inferencer.collate_fn([inferencer.pipeline(dict(img=img)) for img in images])
    x = model.data_preprocessor(data, False)['inputs']
    jobs = dict(forward=lambda: model(x, mode='tensor'),
                forward_unoptimized=lambda: unoptimized(x, mode='tensor'),
                preprocess=lambda: model.data_preprocessor(data, False))
    out = {}
    for name, fn in jobs.items():
        with torch.no_grad():
            out[name] = top_ops(fn, p['rounds'], p['device'])
    out['onnx'] = _ort_kernel_times(p, x.float().cpu().numpy())
    return out


def _ort_kernel_times(p: dict, x_ref) -> Dict[str, Dict[str, float]]:
    """ONNX Runtime kernel time per operator type (its own profiler), reference vs ours."""
    from retinaface.weights import WEIGHTS
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, feed in (('reference', WEIGHTS, {'input': x_ref}),
                                  ('ours', p['onnx_path'], {'image': raw_input(x_ref)})):
            sess = ort_session(model, dict(p, device='cpu'), os.path.join(tmp, name))
            for _ in range(p['rounds'] + 1):  # the first run is a warm-up
                sess.run(None, feed)
            with open(sess.end_profiling()) as f:
                events = json.load(f)
            kernels: Dict[str, float] = {}
            for e in events:
                if e.get('cat') == 'Node' and e.get('name', '').endswith('_kernel_time'):
                    op = e.get('args', {}).get('op_name', '?')
                    kernels[op] = kernels.get(op, 0.0) + e['dur'] / 1e3
            out[name] = {op: t / (p['rounds'] + 1) for op, t in kernels.items()}
    return out


class ProfileCase(Case):
    """Operator profiles at the inference case's first size, batch 1."""

    name = 'profile'
    modes = dict(full=dict(width=640, height=480, rounds=5),
                 quick=dict(width=160, height=128, rounds=3))

    def run(self, ctx: Context) -> dict:
        return ctx.job(measure_profiles, f"operator profiles {ctx.params['width']}x"
                       f"{ctx.params['height']}", **ctx.params)

    def findings(self, result: dict) -> List[str]:
        if 'error' in result:
            return []
        fwd = result['forward']
        top = ', '.join(f'`{op}` {100 * t / fwd["total_ms"]:.0f}%'
                        for op, t, _ in fwd['rows'][:4])
        out = [f"- **Top operators of `FaceInferencer`'s forward** (self CPU time, "
               f"{fwd['total_ms']:.1f} ms profiled): {top}."]
        onnx = result.get('onnx')
        if onnx:
            ours = sum(onnx['ours'].values())
            extra = sum(onnx['ours'].get(op, 0.0) for op in ('Sub', 'Div'))
            out.append(f'- **Input normalisation inside our ONNX graph** (`Sub`/`Div` '
                       f'kernels): {extra:.2f} ms of {ours:.2f} ms kernel time '
                       f'({100 * ratio(extra, ours):.0f}%; the reference graph: '
                       f"{sum(onnx['reference'].values()):.2f} ms).")
        return out

    def render(self, result: dict) -> List[str]:
        if 'error' in result:
            return []
        out = ['## Profiles (where the time goes)', '',
               'torch.profiler, self CPU time per call, top operators.', '']
        for key, title in TITLES.items():
            out += [f"**{title}**: {result[key]['total_ms']:.1f} ms", '',
                    ops_table(result[key]), '']
        ref, ours = result['onnx']['reference'], result['onnx']['ours']
        ops = sorted(set(ref) | set(ours), key=lambda op: -max(ref.get(op, 0), ours.get(op, 0)))
        ops = [op for k, op in enumerate(ops) if k < 6 or op in ('Sub', 'Div')]

        def cell(table, op):
            return f'{table[op]:.2f}' if op in table else '-'
        rows = [(f'`{op}`', cell(ref, op), cell(ours, op)) for op in ops]
        rows.append(('total (all operators)', f'{sum(ref.values()):.2f}',
                     f'{sum(ours.values()):.2f}'))
        return out + ['**ONNX Runtime kernel time per operator type** (its own profiler, ms '
                      'per run, same input; the reference gets it mean-subtracted):', '',
                      markdown_table(['operator', 'reference ONNX', 'our ONNX'], rows), '']
