#!/usr/bin/env python
"""Train a RetinaFace config with MMEngine's Runner (one or many processes).

Examples:
  python tools/train.py configs/retinaface_mobilenet0.25_widerface.py
  python tools/train.py CONFIG --work-dir work_dirs/x --amp --cfg-options train_dataloader.batch_size=8
  python tools/train.py CONFIG --resume            # latest checkpoint in the work dir
  tools/dist_train.sh CONFIG 4                     # 4 processes (NCCL on GPUs, gloo on CPU)
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by total batch / auto_scale_lr.base_batch_size')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or the latest in the work dir')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_dataloader.batch_size=8')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_config(args) -> Config:
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise ValueError(f'{args.config} has no auto_scale_lr; cannot scale the lr')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmengine.runner import Runner

    from mmdet.utils import setup_cache_size_limit_of_dynamo
    from mmretinaface.utils import allow_runner_checkpoint_globals, init_cpu_distributed

    setup_cache_size_limit_of_dynamo()
    allow_runner_checkpoint_globals()
    cfg = build_config(args)
    if args.launcher == 'pytorch' and init_cpu_distributed():
        # gloo group made above; DDP on CPU takes no device ids
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)
        cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    runner = Runner.from_cfg(cfg)
    runner.train()
    return 0


if __name__ == '__main__':
    sys.exit(main())
