#!/usr/bin/env python
"""Label statistics of a config's dataset, face sizes against the model's prior sizes.

  python tools/analysis_tools/face_size_stats.py configs/retinaface_mobilenet0.25_widerface.py \
      --out-dir outputs/face_sizes [--split train] [--cfg-options ...]

Reports images, faces per image, ignored faces and faces with landmarks; the
size of each usable face, sqrt(w * h) in image pixels, against the priors of
``model.bbox_head.prior_generator`` (``min_sizes`` per level): the share below
the smallest prior, nearest each level, and above the largest, and what the
training crops and test-time scales do for them. Writes face_sizes.png (a
histogram with the prior sizes marked) and face_size_stats.json to --out-dir.
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import List, Optional

import numpy as np
from mmengine.config import DictAction


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('--out-dir', required=True, help='where the plot and the json go')
    parser.add_argument('--split', choices=('train', 'val', 'test'), default='train',
                        help="which dataloader's dataset (default: train)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value')
    return parser.parse_args(argv)


def nearest_level(sizes: np.ndarray, min_sizes: List[List[float]]) -> np.ndarray:
    """Index of the level whose prior size is nearest each size (in log scale)."""
    priors = [(np.log(s), k) for k, level in enumerate(min_sizes) for s in level]
    logs, levels = np.array([p for p, _ in priors]), np.array([k for _, k in priors])
    return levels[np.abs(np.log(sizes)[:, None] - logs[None]).argmin(axis=1)]


def _share(n: int, total: int) -> str:
    return f'{n} ({100.0 * n / max(total, 1):.1f}%)'


def _plot(sizes: np.ndarray, min_sizes: List[List[float]], steps: List[int], path: str,
          title: str) -> None:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.subplots()
    every = [s for level in min_sizes for s in level]
    lo, hi = min(sizes.min(), min(every)) / 1.2, max(sizes.max(), max(every)) * 1.2
    ax.hist(sizes, bins=np.geomspace(lo, hi, 40), color='0.6', edgecolor='0.3')
    for k, (level, step) in enumerate(zip(min_sizes, steps)):
        for j, s in enumerate(level):
            ax.axvline(s, color=f'C{k}', linestyle='--', linewidth=1.5,
                       label=f'level {k} priors {", ".join(f"{v:g}" for v in level)} px '
                       f'(stride {step})' if j == 0 else None)
    ax.set(xscale='log', xlabel='face size sqrt(w * h), image pixels', ylabel='faces')
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from PIL import Image

    from mmretinaface.datasets.transforms import RandomInterpResize, RandomSquareCrop
    from mmretinaface.utils.cli import build_tool_dataset, load_tool_config

    cfg = load_tool_config(args.config, cfg_options=args.cfg_options)
    loader = f'{args.split}_dataloader'
    dataset = build_tool_dataset(cfg, loader, 'face_size_stats')
    if dataset is None:
        return 1
    prior_cfg = cfg.model.bbox_head.prior_generator
    min_sizes = [list(map(float, level)) for level in prior_cfg.min_sizes]
    steps = list(prior_cfg.steps)
    smallest, largest = min(min(lv) for lv in min_sizes), max(max(lv) for lv in min_sizes)

    per_image, sizes, short_sides = [], [], []
    ignored = landmarks = 0
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        usable = [inst for inst in info['instances'] if not inst['ignore_flag']]
        ignored += len(info['instances']) - len(usable)
        landmarks += sum(bool(np.any(inst['keypoints_visible'] > 0)) for inst in usable)
        per_image.append(len(usable))
        if usable:
            width, height = info.get('width'), info.get('height')
            if not width:
                width, height = Image.open(info['img_path']).size  # reads the header only
            boxes = np.array([inst['bbox'] for inst in usable], float)
            sizes.extend(np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
            short_sides.extend([min(width, height)] * len(usable))
    sizes, short_sides = np.asarray(sizes), np.asarray(short_sides, float)
    total, counts = len(sizes), np.asarray(per_image)
    ann_file = getattr(dataset, 'ann_file', cfg[loader].dataset.get('ann_file'))
    if not total:
        print(f'face_size_stats: {ann_file}: no usable faces', file=sys.stderr)
        return 1
    print(f'{loader}.dataset: {type(dataset).__name__}, {ann_file}')
    print(f'images: {len(dataset)} ({int((counts == 0).sum())} without a usable face); '
          f'faces: {total} (per image: mean {counts.mean():.1f}, median '
          f'{np.median(counts):g}, max {counts.max()}); ignored faces: {ignored}; '
          f'faces with landmarks: {_share(landmarks, total)}')
    below, above = int((sizes < smallest).sum()), int((sizes > largest).sum())
    levels = nearest_level(sizes[(sizes >= smallest) & (sizes <= largest)], min_sizes)
    per_level = [int((levels == k).sum()) for k in range(len(steps))]
    print(f'face size sqrt(w*h), image pixels: min {sizes.min():.1f}, median '
          f'{np.median(sizes):.1f}, max {sizes.max():.1f}')
    print(f'  below the smallest prior ({smallest:g} px): {_share(below, total)}')
    for k, (level, step) in enumerate(zip(min_sizes, steps)):
        priors = ', '.join(f'{s:g}' for s in level)
        print(f'  nearest level {k} (stride {step}, priors {priors} px): '
              f'{_share(per_level[k], total)}')
    print(f'  above the largest prior ({largest:g} px): {_share(above, total)}')
    stats = dict(images=len(dataset), faces=total, ignored=ignored, with_landmarks=landmarks,
                 below_smallest=below, above_largest=above, min_sizes=min_sizes, steps=steps,
                 per_level=per_level)
    steps_built = getattr(dataset.pipeline, 'transforms', [])
    crop = next((t for t in steps_built if isinstance(t, RandomSquareCrop)), None)
    resize = next((t for t in steps_built if isinstance(t, RandomInterpResize)), None)
    if crop is not None and resize is not None:  # a face f appears at f * dim / (s * short)
        dim = min(resize.size)
        wide, tight = (sizes * dim / (s * short_sides) for s in (max(crop.scales),
                                                                   min(crop.scales)))
        train = dict(below_widest=int((wide < smallest).sum()),
                     below_tightest=int((tight < smallest).sum()),
                     above_tightest=int((tight > largest).sum()),
                     above_widest=int((wide > largest).sum()))
        stats['train_crops'] = train
        scales = '/'.join(f'{s:g}' for s in crop.scales)
        print(f'training crops ({scales} of the short side, resized to {dim} px): below '
              f'{smallest:g} px: {_share(train["below_widest"], total)} in the widest crop, '
              f'{_share(train["below_tightest"], total)} in the tightest; above {largest:g} '
              f'px: {_share(train["above_tightest"], total)} in the tightest, '
              f'{_share(train["above_widest"], total)} in the widest')
    print(f'note: at the original size (the default test scale) faces below {smallest:g} px '
          'are hard to find: upscaled passes (e.g. FaceInferencer(scales=...)) bring them to '
          f'the priors; faces above {largest:g} px are found by halved copies '
          '(FaceInferencer(pyramid=True), tools/test.py --scale-protocol pyramid). Ignored '
          'faces are left out of the sizes.')
    os.makedirs(args.out_dir, exist_ok=True)
    plot = osp.join(args.out_dir, 'face_sizes.png')
    _plot(sizes, min_sizes, steps, plot, f'{osp.basename(args.config)}: {total} faces, '
          f'{100.0 * below / total:.1f}% below {smallest:g} px, '
          f'{100.0 * above / total:.1f}% above {largest:g} px')
    with open(osp.join(args.out_dir, 'face_size_stats.json'), 'w') as f:
        json.dump(stats, f, indent=1)
    print(f'wrote {plot} and face_size_stats.json')
    return 0


if __name__ == '__main__':
    sys.exit(main())
