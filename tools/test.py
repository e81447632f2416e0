#!/usr/bin/env python
"""Evaluate a checkpoint (WIDER FACE easy/medium/hard AP + landmark NME).

Examples:
  python tools/test.py configs/retinaface_mobilenet0.25_widerface.py CKPT
  python tools/test.py CONFIG CKPT --scale-protocol reference --tta
  python tools/test.py CONFIG CKPT --scale-protocol pyramid          # large faces too
  python tools/test.py CONFIG CKPT --scale-protocol crowd            # small faces too
  python tools/test.py CONFIG CKPT --out-dir outputs/widerface_txt   # official txt layout
  python tools/test.py CONFIG CKPT --gt-dir data/widerface/ground_truth --plot pr.png
"""
import argparse
import os.path as osp
import sys

from mmengine.config import Config, DictAction

from mmretinaface.utils.cli import add_launcher_args, export_local_rank

#: Resize protocols (the config's ``test_scale_protocols``) and multi-scale settings
#: (FacePyramidTTAModel, the settings FaceInferencer(scales=...) takes).
RESIZE_PROTOCOLS = ('original', 'vga', 'reference')
MULTI_SCALE_PROTOCOLS = ('pyramid', 'crowd')
SCALE_PROTOCOLS = RESIZE_PROTOCOLS + MULTI_SCALE_PROTOCOLS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--work-dir', help='where the log, metrics and PR plot go')
    parser.add_argument('--out-dir', help='also write predictions in the official WIDER FACE '
                        'layout (one folder per event, one txt per image)')
    parser.add_argument('--gt-dir', help='folder with the official .mat ground truth')
    parser.add_argument('--plot', help='PR-curve PNG (default: WORK_DIR/pr_curves.png)')
    parser.add_argument('--scale-protocol', choices=SCALE_PROTOCOLS,
                        help='test scale: original size (default), fixed VGA, the '
                        "reference's shorter side 1600 / longer side <= 2150, or a "
                        'multi-scale setting as FaceInferencer(scales=...): pyramid (original '
                        'size plus halved copies for large faces), crowd (also a 1.5x copy '
                        'for small faces)')
    parser.add_argument('--tta', action='store_true', help='horizontal-flip test-time aug')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value')
    add_launcher_args(parser)
    args = parser.parse_args(argv)
    export_local_rank(args)
    return args


def _replace_resize(pipeline: list, resize: dict) -> None:
    for i, step in enumerate(pipeline):
        if step['type'] in ('ResizeWithLandmarks', 'Resize', 'mmdet.Resize'):
            pipeline[i] = dict(resize)
            return
        if step['type'] == 'TestTimeAug':
            step['transforms'][0] = [dict(resize)]
            return
    raise ValueError('no Resize step in the test pipeline to apply --scale-protocol to')


def build_config(args) -> Config:
    from mmretinaface.utils.cli import load_tool_config
    cfg = load_tool_config(args.config, args.launcher, args.cfg_options, args.work_dir)
    cfg.load_from = args.checkpoint
    evaluator = cfg.test_evaluator
    if args.gt_dir is not None:
        evaluator.gt_dir = args.gt_dir
    if args.out_dir is not None:
        evaluator.out_dir = args.out_dir
    evaluator.plot_file = args.plot or osp.join(cfg.work_dir, 'pr_curves.png')
    if args.tta:
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise ValueError(f'{args.config} defines no tta_model / tta_pipeline')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    if args.scale_protocol in MULTI_SCALE_PROTOCOLS:
        from mmretinaface.models.pyramid import SCALE_SETTINGS
        if args.tta:
            raise ValueError(f'--scale-protocol {args.scale_protocol} does not combine with '
                             '--tta')
        cfg.model = dict(type='FacePyramidTTAModel', module=cfg.model,
                         **SCALE_SETTINGS[args.scale_protocol])
    elif args.scale_protocol is not None:
        _replace_resize(cfg.test_dataloader.dataset.pipeline,
                        cfg.test_scale_protocols[args.scale_protocol])
    return cfg


def build_runner(argv=None):
    """Parse ``argv`` and build the Runner (its ``test()`` loads the checkpoint)."""
    args = parse_args(argv)
    from mmengine.runner import Runner

    from mmretinaface.utils import allow_runner_checkpoint_globals, setup_cpu_distributed
    from mmretinaface.utils.cli import check_checkpoint_path, check_data_paths
    # checkpoints written by tools/train.py, read with torch.load's weights-only default
    allow_runner_checkpoint_globals()
    check_checkpoint_path(args.checkpoint)
    cfg = build_config(args)
    check_data_paths(cfg, ['test_dataloader'], 'tools/test.py')
    setup_cpu_distributed(cfg)
    return Runner.from_cfg(cfg)


def main(argv=None) -> int:
    runner = build_runner(argv)
    metrics = runner.test()
    for key, value in metrics.items():
        print(f'{key}: {value:.4f}' if isinstance(value, float) else f'{key}: {value}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
