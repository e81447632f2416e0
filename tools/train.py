#!/usr/bin/env python
"""Train a RetinaFace config with MMEngine's Runner (one or many processes).

Examples:
  python tools/train.py configs/retinaface_mobilenet0.25_widerface.py
  python tools/train.py CONFIG --work-dir work_dirs/x --cfg-options train_dataloader.batch_size=8
  python tools/train.py CONFIG --resume            # latest checkpoint in the work dir
  python tools/train.py CONFIG --resume work_dirs/x/epoch_10.pth
  python tools/train.py CONFIG --amp               # mixed precision (needs a GPU)
  python tools/train.py CONFIG --auto-scale-lr     # lr x total batch / base_batch_size
  tools/dist_train.sh CONFIG 4                     # 4 processes (NCCL on GPUs, gloo on CPU)
  tools/slurm_train.sh PARTITION JOB CONFIG WORK_DIR  # SLURM (GPUS=8 by default)

Backbone initialisation comes from the config: the ResNet-50 recipe downloads
torchvision's ImageNet weights (torchvision://resnet50); offline, give a local file
or train from scratch on purpose:
  --cfg-options model.backbone.init_cfg.checkpoint=PATH    (or model.backbone.init_cfg=None)
MobileNet0.25 starts from the reference's ImageNet weights, converted once (docs/training.md):
  python tools/convert_weights.py mobilenetV1X0.25_pretrain.tar \
      --out checkpoints/mobilenet0.25_imagenet.pth
"""
import argparse
import sys
from typing import List, Optional

from mmengine.config import Config, DictAction

from mmretinaface.utils.cli import add_launcher_args, export_local_rank


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper, dynamic loss scale; '
                        'needs a CUDA/NPU/MLU device)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by (processes x batch_size) / '
                        'auto_scale_lr.base_batch_size (the reference total batch)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint; without a path, from the latest '
                        'checkpoint in the work dir')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value (e.g. '
                        'train_dataloader.batch_size=8)')
    add_launcher_args(parser)
    args = parser.parse_args(argv)
    export_local_rank(args)
    return args


def build_config(args: argparse.Namespace) -> Config:
    """The config with the command-line options applied (no Runner yet)."""
    from mmretinaface.utils.cli import load_tool_config
    cfg = load_tool_config(args.config, args.launcher, args.cfg_options, args.work_dir)
    if args.amp:
        optim_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_type == 'AmpOptimWrapper':
            print('AMP is already enabled in the config', file=sys.stderr)
        elif optim_type != 'OptimWrapper':
            raise ValueError(f'--amp only replaces OptimWrapper, the config uses {optim_type}')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError(f'{args.config} has no auto_scale_lr.base_batch_size; '
                             'cannot scale the lr')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.launcher != 'none':
        # log the mean loss over ranks, not rank 0's alone (mmengine does not reduce it)
        _add_hook(cfg, 'AverageLossAcrossRanksHook')
    # warn when loaded weights with BN-folded (identity) statistics train their BatchNorm
    _add_hook(cfg, 'BatchNormStatisticsCheckHook')
    return cfg


def _add_hook(cfg: Config, hook_type: str) -> None:
    hooks = cfg.get('custom_hooks', None) or []
    if not any(h.get('type') == hook_type for h in hooks):
        cfg.custom_hooks = [*hooks, dict(type=hook_type)]


def _check_amp_device(cfg: Config) -> None:
    if cfg.optim_wrapper.get('type') != 'AmpOptimWrapper':
        return
    from mmengine.device import get_device
    if get_device() == 'cpu':
        raise SystemExit('--amp (AmpOptimWrapper) needs a CUDA, NPU or MLU device; this machine '
                         'has none. Train in float32 on CPU (drop --amp).')


def _loaders(cfg: Config) -> List[str]:
    """The dataloaders a training run builds (validation only when it is configured)."""
    with_val = cfg.get('val_cfg') is not None and cfg.get('val_dataloader') is not None
    return ['train_dataloader'] + (['val_dataloader'] if with_val else [])


def build_runner(argv: Optional[List[str]] = None):
    """Parse ``argv``, build the config and the Runner (tests add hooks before ``train``)."""
    args = parse_args(argv)
    from mmdet.utils import setup_cache_size_limit_of_dynamo
    from mmengine.runner import Runner

    from mmretinaface.utils import allow_runner_checkpoint_globals, setup_cpu_distributed
    from mmretinaface.utils.cli import (
        check_checkpoint_path,
        check_data_paths,
        check_init_checkpoints,
    )

    setup_cache_size_limit_of_dynamo()
    # resume / load_from read full runner checkpoints with torch.load's weights-only default
    allow_runner_checkpoint_globals()
    cfg = build_config(args)
    _check_amp_device(cfg)
    check_data_paths(cfg, _loaders(cfg), 'tools/train.py')
    if cfg.get('load_from'):
        check_checkpoint_path(cfg.load_from, 'resume' if cfg.get('resume') else 'load_from')
    check_init_checkpoints(cfg, 'tools/train.py')
    setup_cpu_distributed(cfg)
    if 'runner_type' in cfg:
        from mmengine.registry import RUNNERS
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def main(argv: Optional[List[str]] = None) -> int:
    runner = build_runner(argv)
    runner.train()
    return 0


if __name__ == '__main__':
    sys.exit(main())
