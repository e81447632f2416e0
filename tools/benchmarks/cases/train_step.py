"""Train step (forward + loss + backward + SGD): ours vs the reference-style step, per thread count.

Ours is the MobileNet0.25 config's detector in train mode as the config
trains it: the config's ``FastTrainingHook`` applied
(:func:`~mmretinaface.utils.training_speed.optimize_for_training`: fused
BatchNorm + activation, channels-last tensors), then ``model.loss`` (the
head's ``loss_by_feat``), ``parse_losses`` and the config's ``OptimWrapper``
(backward, SGD step). Two more variants run ours without the hook, stock
BatchNorm in NCHW and in channels-last. The reference-style step is
``mmretinaface.testing.RetinaFace`` (the reference architecture) with the
per-image ``ReferenceMultiBoxLoss`` loop and the same SGD settings, on the same
batch and faces. The steps alternate in one child process per thread count
and the ratio is the median of the ratios of the same round, so a burst of
load from other jobs hits both steps of a pair. Each variant's train-mode
outputs and parameter gradients are compared with the stock model in float64.
"""
from __future__ import annotations

import time
from typing import Dict, List

from ..common import MNET_CONFIG, setup_child
from ..report import Target, markdown_table
from ..timing import interleaved_timings
from .base import Case, Context
from .loss import random_faces

#: Issue 12 item 4: our train step / the reference-style step, one and two threads.
RATIO_MAX = 0.8
#: What each variant is, for the report.
VARIANTS = {
    'reference': 'reference-style: `testing.RetinaFace` + per-image `ReferenceMultiBoxLoss`',
    'ours': 'ours as configured (`FastTrainingHook`: fused BN + activation, channels-last): '
            '`model.loss` + `parse_losses` + the config\'s `OptimWrapper`',
    'stock': 'ours without the hook: stock BatchNorm, NCHW',
    'stock_cl': 'ours without the hook, model and batch `channels_last` (stock BatchNorm)',
}


def _relative_error(outs, exact) -> float:
    """Largest ``max|a - b| / max|b|`` over paired output tensors."""
    return max(float((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-12))
               for a, b in zip(outs, exact))


def _relative_l2(tensors, exact) -> float:
    """``||a - b|| / ||b||`` over all paired tensors as one vector (e.g. all gradients)."""
    diff = sum(float((a.double() - b).pow(2).sum()) for a, b in zip(tensors, exact))
    norm = sum(float(b.pow(2).sum()) for b in exact)
    return (diff / max(norm, 1e-300)) ** 0.5


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n > 1 else ''}"


def measure_train_step(p: dict) -> dict:
    """Paired step times of the variants and the reference-style step, and their accuracy."""
    setup_child(p)
    import numpy as np
    import torch
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.structures import InstanceData

    from mmretinaface.testing import (
        ReferenceMultiBoxLoss,
        RetinaFace,
        reference_prior_box,
        to_reference_targets,
    )
    from mmretinaface.utils.training_speed import optimize_for_training
    size, batch = p['image_size'], p['batch']
    cfg = Config.fromfile(str(MNET_CONFIG))
    sgd = cfg.optim_wrapper.optimizer
    if sgd.type != 'SGD':
        raise ValueError(f'{MNET_CONFIG}: expected an SGD optimizer, got {sgd.type!r}')
    loc_weight = float(cfg.model.bbox_head.loss_multibox.loc_weight)
    rng = np.random.default_rng(0)
    faces = [random_faces(rng, p['faces'], size, min_size=16) for _ in range(batch)]
    samples = []
    for boxes, points in faces:
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                             batch_input_shape=(size, size)))
        sample.gt_instances = InstanceData(
            bboxes=torch.from_numpy(boxes), labels=torch.zeros(len(boxes), dtype=torch.long),
            keypoints=torch.from_numpy(points),
            keypoints_visible=torch.ones(points.shape[:2]))
        samples.append(sample)
    gts = [s.gt_instances for s in samples]
    targets = to_reference_targets([g.bboxes for g in gts], [g.keypoints for g in gts],
                                   [g.keypoints_visible for g in gts], size)
    priors = reference_prior_box((size, size))
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 50
    x_cl = x.contiguous(memory_format=torch.channels_last)

    hook_cfg = next((h for h in cfg.get('custom_hooks', []) if h.type == 'FastTrainingHook'),
                    None)
    applied = {}  # variant -> what optimize_for_training did (the same for every build)

    def build_ours(variant: str):
        torch.manual_seed(0)
        model = MODELS.build(cfg.model).train()
        channels_last = variant == 'stock_cl'
        if variant == 'ours' and hook_cfg is not None:
            result = optimize_for_training(model, hook_cfg.get('channels_last', True),
                                           hook_cfg.get('compile', True))
            applied[variant] = result.describe()
            channels_last = result.channels_last
        elif channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model, channels_last

    def ours_step(variant: str):
        model, channels_last = build_ours(variant)
        optim = build_optim_wrapper(model, cfg.optim_wrapper)
        xin = x_cl if channels_last else x

        def step():
            loss, _ = model.parse_losses(model.loss(xin, samples))
            optim.update_params(loss)
        return step

    def reference_step():
        torch.manual_seed(0)
        model = RetinaFace('mobilenet0.25', phase='train').train()
        criterion = ReferenceMultiBoxLoss(num_landmarks=5)
        optim = torch.optim.SGD(model.parameters(), lr=sgd.lr, momentum=sgd.momentum,
                                weight_decay=sgd.weight_decay)

        def step():
            loss_l, loss_c, loss_landm = criterion(model(x), priors, targets)
            optim.zero_grad()
            (loc_weight * loss_l + loss_c + loss_landm).backward()
            optim.step()
        return step

    def outputs_and_grads(model, inputs):
        """Train-mode head outputs and the parameter gradients of a fixed random weighting."""
        model.zero_grad()
        outs = [t for level in model(inputs, mode='tensor') for t in level]
        weights = torch.Generator().manual_seed(1)
        total = sum((o * torch.randn(o.shape, generator=weights, dtype=torch.float64).to(
            o.dtype)).sum() for o in outs)
        total.backward()
        grads = [p.grad.detach().clone() for p in model.parameters()]
        return [o.detach() for o in outs], grads

    steps = {'reference': reference_step(), 'ours': ours_step('ours'),
             'stock': ours_step('stock'), 'stock_cl': ours_step('stock_cl')}
    first_step_s = {}
    for name, step in steps.items():  # the first step of ours compiles its kernels
        start = time.perf_counter()
        step()
        first_step_s[name] = time.perf_counter() - start
    # train-mode accuracy of each variant (fresh weights, batch statistics) vs stock float64
    torch.manual_seed(0)
    exact_model = MODELS.build(cfg.model).train().double()
    exact = outputs_and_grads(exact_model, x.double())
    del exact_model
    accuracy = {}
    for variant in ('ours', 'stock', 'stock_cl'):
        model, channels_last = build_ours(variant)
        outs, grads = outputs_and_grads(model, x_cl if channels_last else x)
        accuracy[variant] = dict(rel_err=_relative_error(outs, exact[0]),
                                 grad_err=_relative_l2(grads, exact[1]))
        del model
    del exact

    cpu_clock = time.thread_time if torch.get_num_threads() == 1 else time.process_time
    wall: Dict[str, List[float]] = {name: [] for name in steps}

    def timed(name):
        def run():
            start = time.perf_counter()
            steps[name]()
            wall[name].append(time.perf_counter() - start)
        return run
    times = interleaved_timings({name: timed(name) for name in steps}, repeats=p['rounds'],
                                warmup=1, min_repeats=p['min_rounds'],
                                budget_s=p['budget_s'],
                                clock=cpu_clock)
    wall = {name: ts[1:] for name, ts in wall.items()}  # drop the warm-up round
    out = dict(threads=torch.get_num_threads(), n=len(times['reference']),
               clock='thread CPU' if cpu_clock is time.thread_time else 'process CPU',
               image_size=size, batch=batch, faces=p['faces'], variants={},
               applied=applied.get('ours', 'FastTrainingHook not in the config'))
    for name in steps:
        pairs = [a / b for a, b in zip(times[name], times['reference'])]
        wall_pairs = [a / b for a, b in zip(wall[name], wall['reference'])]
        out['variants'][name] = dict(
            ratio=float(np.median(pairs)), wall_ratio=float(np.median(wall_pairs)),
            ms=1e3 * float(np.median(times[name])), wall_ms=1e3 * float(np.median(wall[name])),
            first_step_s=first_step_s[name], **accuracy.get(name, {}))
    return out


class TrainStepCase(Case):
    """Issue 12 item 4: the train step against the reference-style step, 1 and 2 threads."""

    name = 'train_step'
    modes = dict(full=dict(threads_list=[1, 2], image_size=640, batch=8, faces=24, rounds=30,
                           min_rounds=5, budget_s=70.0),
                 quick=dict(threads_list=[1, 2], image_size=160, batch=2, faces=4, rounds=3,
                            min_rounds=2, budget_s=0.5))

    def run(self, ctx: Context) -> dict:
        params = {k: v for k, v in ctx.params.items() if k != 'threads_list'}
        return dict(rows=[ctx.job(measure_train_step, f'train step, {_threads(n)}', threads=n,
                                  **params) for n in ctx.params['threads_list']])

    @staticmethod
    def _rows(result: dict) -> List[dict]:
        return [r for r in result['rows'] if 'error' not in r]

    def targets(self, result: dict) -> List[Target]:
        return [Target(f"train step ours / reference-style, {_threads(r['threads'])}, "
                       f"{r['clock']} time", r['variants']['ours']['ratio'], RATIO_MAX)
                for r in self._rows(result)]

    def findings(self, result: dict) -> List[str]:
        out = []
        for r in self._rows(result):
            v = r['variants']
            out.append(
                f"- **Train step vs the reference-style step** ({_threads(r['threads'])}, "
                f"{r['image_size']} px, batch {r['batch']}, {r['faces']} faces per image, "
                f"{r['clock']} time): ours as configured {v['ours']['ratio']:.2f}x "
                f"(wall {v['ours']['wall_ratio']:.2f}x; {r['applied']}; first step "
                f"{v['ours']['first_step_s']:.0f} s, compiling), stock NCHW "
                f"{v['stock']['ratio']:.2f}x, stock `channels_last` {v['stock_cl']['ratio']:.2f}x. "
                f"Parameter gradients vs float64: ours {v['ours']['grad_err']:.1e}, stock NCHW "
                f"{v['stock']['grad_err']:.1e}, stock `channels_last` "
                f"{v['stock_cl']['grad_err']:.1e}.")
        return out

    def render(self, result: dict) -> List[str]:
        def err(v: dict, key: str) -> str:
            return f'{v[key]:.1e}' if key in v else '-'
        rows = [(r['threads'], VARIANTS[name], v['ms'], v['wall_ms'], f"{v['ratio']:.3f}",
                 f"{v['wall_ratio']:.3f}", f"{v['first_step_s']:.1f}", err(v, 'rel_err'),
                 err(v, 'grad_err'), r['n'], r['clock'])
                for r in self._rows(result) for name, v in r['variants'].items()]
        if not rows:
            return []
        first = self._rows(result)[0]
        return ['## Train step vs the reference-style step', '',
                f"MobileNet0.25, batch {first['batch']} of {first['image_size']}x"
                f"{first['image_size']} random pixels, {first['faces']} random faces per image "
                '(boxes 16 px to half the image, 5 landmarks each), forward + loss + backward + '
                'SGD (the config\'s lr, momentum and weight decay for both), PyTorch\'s default '
                f"init. Ours as configured: {first['applied']}. The steps alternate in one child "
                'process per thread count, `n` rounds after one warm-up; `ratio` is the median '
                'of the per-round ratios to the reference-style step in CPU time (the '
                'thread\'s with one thread, the process\'s with two), `wall ratio` the same '
                'in wall time; `first step` is the wall time of the first step (ours: '
                'compiling the fused kernels; cached on disk by torch for later runs).', '',
                markdown_table(['threads', 'variant', 'step CPU (ms)', 'step wall (ms)', 'ratio',
                                'wall ratio', 'first step (s)', 'outputs error',
                                'gradients error', 'n', 'clock'],
                               rows, 'llrrrrrrrrl'), '',
                'Errors against the stock model in float64, fresh train-mode models (batch '
                'statistics) on the same batch: `outputs`: largest max |a - b| / max |b| over '
                'the head outputs; `gradients`: ||a - b|| / ||b|| of all parameter gradients (of '
                'a fixed random weighting of the outputs) as one vector. A randomly initialised '
                'deep network amplifies float32 rounding, so compare the variants with each '
                'other; stock channels-last BatchNorm on CPU accumulates in float32, see '
                '"Training step (item 4)" below.', '']
