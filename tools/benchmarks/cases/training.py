"""Training: data pipeline, forward, loss, backward and optimizer step per iteration."""
from __future__ import annotations

import math
import tempfile
import time
from typing import Any, Dict, List

from ..common import MNET_CONFIG, autocast, setup_child, sync_fn
from ..report import markdown_table
from ..timing import medians_ms, peak_rss_mib
from .base import Case, Context

PARTS = ('data', 'collate_preprocess', 'forward', 'loss', 'backward', 'optimizer')


def measure_training(p: dict) -> dict:
    """Training parts, timed per iteration, on the config's train pipeline over drawn faces."""
    setup_child(p)
    import numpy as np
    import torch
    from mmdet.models.utils import unpack_gt_instances
    from mmdet.registry import DATASETS, MODELS
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.optim import build_optim_wrapper

    from mmretinaface.datasets.synthetic import write_synthetic_widerface
    device, batch = p['device'], p['batch']
    sync = sync_fn(p) or (lambda: None)
    amp = autocast(p)
    cfg = Config.fromfile(str(MNET_CONFIG))
    pipeline = cfg.train_dataloader.dataset.pipeline
    for step in pipeline:  # the benchmark's crop size (quick mode: smaller)
        if 'img_dim' in step:
            step['img_dim'] = p['img_dim']
    out: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out['synthetic'] = write_synthetic_widerface(
            tmp, p['num_images'], seed=0, size=p['src_size'], val_fraction=0.0,
            num_faces=(1, p['max_faces']))
        dataset = DATASETS.build(dict(
            type='WiderFaceDataset', data_root=tmp, ann_file='train/label.txt',
            data_prefix=dict(img='train/images/'), filter_cfg=dict(filter_empty_gt=True),
            pipeline=pipeline))
        torch.manual_seed(0)
        model = MODELS.build(cfg.model).to(device).train()  # PyTorch's default init
        optim = build_optim_wrapper(model, cfg.optim_wrapper)
        scaler = torch.amp.GradScaler('cuda') if p.get('amp') and device == 'cuda' else None
        times: Dict[str, List[float]] = {k: [] for k in PARTS}
        per_sample: List[float] = []
        num_pos = []
        for it in range(1 + p['iters']):  # the first iteration is a warm-up
            sync()
            t0 = time.perf_counter()
            samples = []
            for j in range(batch):
                s0 = time.perf_counter()
                samples.append(dataset[(it * batch + j) % len(dataset)])
                per_sample.append(time.perf_counter() - s0)
            t1 = time.perf_counter()
            data = model.data_preprocessor(pseudo_collate(samples), True)
            sync()
            t2 = time.perf_counter()
            with amp():
                outs = model(data['inputs'], mode='tensor')
            sync()
            t3 = time.perf_counter()
            gts, ignores, metas = unpack_gt_instances(data['data_samples'])
            with amp():
                losses = model.bbox_head.loss_by_feat(*outs, gts, metas, ignores)
            loss, _ = model.parse_losses(losses)
            sync()
            t4 = time.perf_counter()
            optim.optimizer.zero_grad(set_to_none=True)
            (scaler.scale(loss) if scaler else loss).backward()
            sync()
            t5 = time.perf_counter()
            if scaler:
                scaler.step(optim.optimizer)
                scaler.update()
            else:
                optim.optimizer.step()
            sync()
            t6 = time.perf_counter()
            num_pos.append(sum(len(g) for g in gts))
            if it == 0:
                per_sample.clear()
                continue
            for key, dt in zip(PARTS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
                times[key].append(dt)
        out.update(ms=medians_ms(times), n=p['iters'],
                   sample_ms=1e3 * float(np.median(per_sample)),
                   faces_per_image=float(np.mean(num_pos[1:] or num_pos)) / batch,
                   loss=float(loss.detach()))
        if device == 'cuda':
            out['cuda_peak_mib'] = torch.cuda.max_memory_allocated() / 2**20
    out['peak_mib'] = peak_rss_mib()
    return out


class TrainingCase(Case):
    """One training process of MobileNet0.25 (no loader workers), by part."""

    name = 'train'
    modes = dict(
        full=dict(img_dim=640, batch=8, iters=4, num_images=16, src_size=1024, max_faces=20),
        quick=dict(img_dim=128, batch=2, iters=1, num_images=2, src_size=192, max_faces=4))

    def run(self, ctx: Context) -> dict:
        result = ctx.job(measure_training, 'training parts MobileNet0.25', **ctx.params)
        return dict(result, params=ctx.params)

    def render(self, result: dict) -> List[str]:
        if 'error' in result:
            return []
        t, ms = result['params'], result['ms']
        step = sum(ms[k] for k in ('forward', 'loss', 'backward', 'optimizer'))
        total = sum(ms.values())
        rows = [(k.replace('_', ' + '), v, f'{100 * v / total:.0f}%') for k, v in ms.items()]
        rows.append(('total', total, '100%'))
        return ['## 2. Training: MobileNet0.25', '',
                f"Batch {t['batch']}, {t['img_dim']} px crops, the train pipeline of "
                '`configs/retinaface_mobilenet0.25_widerface.py` over '
                f"{t['num_images']} drawn-face images of {t['src_size']}x{t['src_size']} px "
                f"(`write_synthetic_widerface`, {result['faces_per_image']:.1f} faces per "
                'image), the config\'s optimizer, PyTorch\'s default init. Median of '
                f"{result['n']} iterations after one warm-up, in one process (no loader "
                'workers).', '',
                markdown_table(['part (ms per batch)', 'median', 'share'], rows), '',
                f"Data pipeline: {result['sample_ms']:.1f} ms per image, i.e. "
                f"**{1e3 / result['sample_ms']:.1f} images/s per worker**; the model step "
                f'(forward + loss + backward + optimizer) takes {step:.0f} ms, i.e. '
                f"{1e3 * t['batch'] / step:.1f} images/s, so "
                f"{math.ceil(1e3 * t['batch'] / step * result['sample_ms'] / 1e3)} loader "
                'worker(s) keep one such process fed. Peak RSS of the training child: '
                f"{result['peak_mib']:.0f} MiB.", '']
