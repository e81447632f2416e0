"""Train step (forward + loss + backward + SGD): ours vs the reference-style step, per thread count.

Ours is the MobileNet0.25 config's detector in train mode: ``model.loss`` (the
head's ``loss_by_feat``), ``parse_losses`` and the config's ``OptimWrapper``
(backward, SGD step). The reference-style step is
``mmretinaface.testing.RetinaFace`` (the reference architecture) with the
per-image ``ReferenceMultiBoxLoss`` loop and the same SGD settings, on the same
batch and faces. A third variant runs ours with ``channels_last`` model and
batch. The three steps alternate in one child process per thread count and
the ratio is the median of the ratios of the same round, so a burst of load
from other jobs hits both steps of a pair.
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
    'ours': 'ours as built (NCHW): `model.loss` + `parse_losses` + the config\'s '
            '`OptimWrapper`',
    'ours_cl': 'ours, model and batch `channels_last`',
    'reference': 'reference-style: `testing.RetinaFace` + per-image `ReferenceMultiBoxLoss`',
}


def _relative_error(outs, exact) -> float:
    """Largest ``max|a - b| / max|b|`` over paired output tensors."""
    return max(float((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-12))
               for a, b in zip(outs, exact))


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n > 1 else ''}"


def measure_train_step(p: dict) -> dict:
    """Paired step times of ours, ours channels-last and the reference-style step."""
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

    def ours_step(channels_last: bool):
        torch.manual_seed(0)
        model = MODELS.build(cfg.model).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
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

    # channels-last BatchNorm accuracy (the caveat): train-mode forward vs float64, fresh weights
    torch.manual_seed(0)
    probe = MODELS.build(cfg.model).train()
    with torch.no_grad():
        nchw = [t for level in probe(x, mode='tensor') for t in level]
        cl = [t for level in probe.to(memory_format=torch.channels_last)(x_cl, mode='tensor')
              for t in level]
        exact = [t for level in probe.double().to(memory_format=torch.contiguous_format)(
            x.double(), mode='tensor') for t in level]
    accuracy = dict(ours=_relative_error(nchw, exact), ours_cl=_relative_error(cl, exact))
    del probe, nchw, cl, exact

    steps = {'reference': reference_step(), 'ours': ours_step(False),
             'ours_cl': ours_step(True)}
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
               image_size=size, batch=batch, faces=p['faces'], variants={})
    for name in steps:
        pairs = [a / b for a, b in zip(times[name], times['reference'])]
        wall_pairs = [a / b for a, b in zip(wall[name], wall['reference'])]
        out['variants'][name] = dict(
            ratio=float(np.median(pairs)), wall_ratio=float(np.median(wall_pairs)),
            ms=1e3 * float(np.median(times[name])), wall_ms=1e3 * float(np.median(wall[name])),
            **({'rel_err': accuracy[name]} if name in accuracy else {}))
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
                f"{r['image_size']} px, batch {r['batch']}, {r['faces']} faces per image): "
                f"ours {v['ours']['ratio']:.2f}x, ours `channels_last` "
                f"{v['ours_cl']['ratio']:.2f}x "
                f"({r['clock']} time; wall {v['ours']['wall_ratio']:.2f}x and "
                f"{v['ours_cl']['wall_ratio']:.2f}x); `channels_last` train-mode outputs "
                f"{v['ours_cl']['rel_err']:.1e} from float64 (NCHW {v['ours']['rel_err']:.1e}).")
        return out

    def render(self, result: dict) -> List[str]:
        rows = [(r['threads'], VARIANTS[name], v['ms'], v['wall_ms'], f"{v['ratio']:.3f}",
                 f"{v['wall_ratio']:.3f}", f"{v['rel_err']:.1e}" if 'rel_err' in v else '-',
                 r['n'], r['clock'])
                for r in self._rows(result) for name, v in r['variants'].items()]
        if not rows:
            return []
        first = self._rows(result)[0]
        return ['## Train step vs the reference-style step', '',
                f"MobileNet0.25, batch {first['batch']} of {first['image_size']}x"
                f"{first['image_size']} random pixels, {first['faces']} random faces per image "
                '(boxes 16 px to half the image, 5 landmarks each), forward + loss + backward + '
                'SGD (the config\'s lr, momentum and weight decay for both), PyTorch\'s default '
                'init. The three steps alternate in one child process per thread count, `n` '
                'rounds after one warm-up; `ratio` is the median of the per-round ratios to the '
                'reference-style step in CPU time (the thread\'s with one thread, the '
                'process\'s with two), `wall ratio` the same in wall time.', '',
                markdown_table(['threads', 'variant', 'step CPU (ms)', 'step wall (ms)', 'ratio',
                                'wall ratio', 'output rel. error vs float64', 'n', 'clock'],
                               rows, 'llrrrrrrl'), '',
                '`output rel. error vs float64`: largest relative error of the head outputs of '
                'a fresh train-mode model (batch statistics) against the same model in float64: '
                'channels-last BatchNorm accumulates its statistics less accurately, see '
                '"Training step (item 4)" below.', '']
