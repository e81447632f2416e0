#!/usr/bin/env python
"""Draw a config's training samples after its pipeline (crops, flips, landmarks).

mmdet's tools/analysis_tools/browse_dataset.py for faces: boxes, ignored faces
dashed grey, landmarks one colour per point (left eye red, right eye cyan,
nose magenta, left mouth corner green, right mouth corner blue, left/right as
seen in the image), so a mirrored landmark order shows at a glance.

  python tools/analysis_tools/browse_dataset.py configs/retinaface_mobilenet0.25_widerface.py \
      --output-dir outputs/browse --not-show [--max-samples 20] [--cfg-options ...]

Without a display nothing is shown: the drawings go to --output-dir only.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import warnings
from typing import List, Optional

from mmengine.config import DictAction

IGNORED_COLOR = (160, 160, 160)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--output-dir', help='write the drawings here (needed without a display)')
    parser.add_argument('--not-show', action='store_true', help='do not open a window')
    parser.add_argument('--show-interval', type=float, default=2,
                        help='seconds each sample is shown')
    parser.add_argument('--max-samples', type=int, help='stop after this many samples')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value')
    return parser.parse_args(argv)


def has_display() -> bool:
    """Whether a window can be opened (always assumed off Linux)."""
    return not sys.platform.startswith('linux') or bool(
        os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY'))


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    show = not args.not_show and has_display()
    if not args.not_show and not show:
        print('browse_dataset: no display, so nothing is shown', file=sys.stderr)
    if not show and not args.output_dir:
        print('browse_dataset: nothing to do: give --output-dir (no window is shown)',
              file=sys.stderr)
        return 1
    import mmcv
    from mmengine.utils import ProgressBar

    from mmretinaface.utils.cli import build_tool_dataset, load_tool_config
    from mmretinaface.visualization import build_face_visualizer

    cfg = load_tool_config(args.config, cfg_options=args.cfg_options)
    dataset = build_tool_dataset(cfg, 'train_dataloader', 'browse_dataset')
    if dataset is None:
        return 1
    visualizer = build_face_visualizer(cfg.get('visualizer'), dataset.metainfo)
    # faces cut by a crop touch the border: expected here, not worth a warning per box
    warnings.filterwarnings('ignore', 'Warning: The (bbox|polygon) is out of bounds')
    count = len(dataset) if args.max_samples is None else min(args.max_samples, len(dataset))
    faces = with_landmarks = 0
    progress = ProgressBar(count)
    for index in range(count):
        item = dataset[index]
        sample = item['data_samples']
        image = item['inputs'].permute(1, 2, 0).numpy()[..., ::-1]  # BGR -> RGB
        name = osp.basename(sample.img_path)
        for key in ('gt_instances', 'ignored_instances'):  # HorizontalBoxes -> tensors
            if key in sample and 'bboxes' in sample.get(key):
                boxes = sample.get(key).bboxes
                sample.get(key).bboxes = getattr(boxes, 'tensor', boxes)
        gt = sample.gt_instances
        faces += len(gt)
        if 'keypoints_visible' in gt:
            with_landmarks += int((gt.keypoints_visible > 0).any(dim=1).sum())
        visualizer.add_datasample(name, image, sample, draw_pred=False, show=False)
        drawn = visualizer.get_image()
        ignored = sample.get('ignored_instances')
        if ignored is not None and len(ignored):
            visualizer.set_image(drawn)
            visualizer.draw_bboxes(ignored.bboxes, edge_colors=IGNORED_COLOR, line_styles='--',
                                   line_widths=visualizer.line_width)
            drawn = visualizer.get_image()
        if show:
            visualizer.show(drawn, win_name=name, wait_time=args.show_interval)
        if args.output_dir:
            mmcv.imwrite(drawn[..., ::-1], osp.join(args.output_dir, name))
        progress.update()
    where = f' to {args.output_dir}' if args.output_dir else ''
    note = '' if with_landmarks else ' (these labels have no landmarks: boxes only)'
    print(f'\ndrew {count} samples{where}: {faces} faces, {with_landmarks} with '
          f'landmarks{note}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
