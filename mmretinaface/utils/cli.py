"""Command-line plumbing shared by tools/train.py and tools/test.py.

Config loading, the launcher options, and the checks that turn a missing data
set or checkpoint into a message instead of a traceback from deep inside the
Runner.
"""
import argparse
import os
import os.path as osp
import sys
from typing import Any, Iterable, List, Optional, Tuple

from mmengine.config import Config

DATA_DOC = 'docs/data.md'


def load_tool_config(config: str, launcher: str = 'none', cfg_options: Optional[dict] = None,
                     work_dir: Optional[str] = None) -> Config:
    """Read a config, apply ``--cfg-options`` and pick the work dir like mmdet's tools.

    The work dir is ``work_dir`` if given, else the config's, else
    ``./work_dirs/<config name>``.
    """
    if not osp.isfile(config):
        raise SystemExit(f'config not found: {config}')
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg


def build_tool_dataset(cfg: Config, loader: str, tool: str):
    """The dataset of ``cfg[loader]`` for an analysis tool (the data paths checked first);
    ``None`` after printing one line when its images or labels cannot be read."""
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    check_data_paths(cfg, [loader], tool)
    dataset_cfg = cfg[loader].dataset
    if 'dataset' not in dataset_cfg and 'datasets' not in dataset_cfg:  # not a wrapper
        dataset_cfg.serialize_data = False  # read once: no copy (mmengine fails on none left)
    try:
        return DATASETS.build(dataset_cfg)
    except (FileNotFoundError, ValueError) as e:  # missing images, malformed labels
        print(f'{tool}: {e}', file=sys.stderr)
        return None


def add_launcher_args(parser: argparse.ArgumentParser) -> None:
    """``--launcher`` and the ``--local-rank`` that ``torch.distributed.launch`` passes."""
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher (tools/dist_train.sh uses pytorch)')
    # torch.distributed.launch passes --local-rank; torchrun sets $LOCAL_RANK
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)


def export_local_rank(args: argparse.Namespace) -> None:
    """Set ``$LOCAL_RANK`` from ``--local-rank`` unless the launcher set it."""
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))


# ------------------------------------------------------------------ data checks
def _leaf_datasets(dataset_cfg, where: str) -> Iterable[Tuple[str, dict]]:
    """(config key, dataset config) of every dataset under wrappers (Concat, Repeat...)."""
    if not isinstance(dataset_cfg, dict):
        return
    if 'datasets' in dataset_cfg:
        for i, sub in enumerate(dataset_cfg['datasets']):
            yield from _leaf_datasets(sub, f'{where}.datasets.{i}')
    elif 'dataset' in dataset_cfg:
        yield from _leaf_datasets(dataset_cfg['dataset'], f'{where}.dataset')
    else:
        yield where, dataset_cfg


def _resolve(data_root: Optional[str], path: str) -> str:
    return path if not data_root or osp.isabs(path) else osp.join(data_root, path)


def missing_data_paths(cfg: Config, loaders: Iterable[str]) -> List[str]:
    """Lines describing each label file or image folder of ``loaders`` that does not exist.

    Only datasets on the local file system are checked (``backend_args`` unset
    or a local backend); ``data_root`` is joined as MMEngine does.
    """
    problems = []
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not loader_cfg:
            continue
        for where, ds in _leaf_datasets(loader_cfg.get('dataset'), f'{loader}.dataset'):
            backend = ds.get('backend_args') or {}
            if backend.get('backend', 'local') != 'local':
                continue
            root = ds.get('data_root')
            ann_file = ds.get('ann_file')
            if ann_file:
                path = _resolve(root, ann_file)
                if not osp.isfile(path):
                    problems.append(f'{path}: label file not found ({where}: '
                                    f'data_root={root!r}, ann_file={ann_file!r})')
            img = (ds.get('data_prefix') or {}).get('img')
            if img:
                path = _resolve(root, img)
                if not osp.isdir(path):
                    problems.append(f'{path}: image folder not found ({where}: '
                                    f'data_root={root!r}, data_prefix.img={img!r})')
    return problems


def check_data_paths(cfg: Config, loaders: Iterable[str], tool: str) -> None:
    """Stop with a message naming what is missing and how to fix it (before the Runner)."""
    loaders = list(loaders)
    problems = missing_data_paths(cfg, loaders)
    if not problems:
        return
    overrides = ' '.join(f'{name}.dataset.data_root=DIR/' for name in loaders)
    raise SystemExit(
        f'{tool}: data not found:\n  ' + '\n  '.join(problems) +
        f'\nPut the data there (the WIDER FACE layout and the label formats: {DATA_DOC}; '
        'your own faces: docs/training.md, "Fine-tune on your own faces"), or point the '
        f'config at it: --cfg-options {overrides}. Without any data set, docs/training.md '
        '"Quick start without WIDER FACE" trains on drawn faces.')


def check_checkpoint_path(path: Optional[str], what: str = 'checkpoint') -> None:
    """Stop with a message when a local checkpoint path does not exist (URLs pass)."""
    if path and '://' not in str(path) and not osp.isfile(path):
        raise SystemExit(f'{what} not found: {path}')


def _pretrained_files(cfg: Any, where: str) -> Iterable[Tuple[str, str]]:
    """``(config key, checkpoint)`` of every ``Pretrained`` init_cfg under ``cfg``."""
    if isinstance(cfg, dict):
        init = cfg.get('init_cfg')
        for item in (init if isinstance(init, (list, tuple)) else [init]):
            if isinstance(item, dict) and item.get('type') == 'Pretrained' and \
                    item.get('checkpoint'):
                yield f'{where}.init_cfg', str(item['checkpoint'])
        for key, value in cfg.items():
            if key != 'init_cfg':
                yield from _pretrained_files(value, f'{where}.{key}')
    elif isinstance(cfg, (list, tuple)):
        for i, value in enumerate(cfg):
            yield from _pretrained_files(value, f'{where}.{i}')


def check_init_checkpoints(cfg: Config, tool: str) -> None:
    """Stop when a local ``Pretrained`` init file (e.g. the ImageNet backbone) is missing.

    MMEngine would only fail when the weights are initialised, after the data
    is built; URLs such as ``torchvision://resnet50`` are left to it (downloaded).
    """
    missing = [(key, path) for key, path in _pretrained_files(cfg.model, 'model')
               if '://' not in path and not osp.isfile(path)]
    if not missing:
        return
    lines = '\n  '.join(f'{key}.checkpoint={path}' for key, path in missing)
    raise SystemExit(
        f'{tool}: initialisation checkpoint not found:\n  {lines}\n'
        'The MobileNet0.25 ImageNet backbone is converted once from the reference\'s '
        'mobilenetV1X0.25_pretrain.tar: python tools/convert_weights.py '
        'mobilenetV1X0.25_pretrain.tar --out checkpoints/mobilenet0.25_imagenet.pth '
        '(docs/training.md, "ImageNet initialisation"). Point elsewhere with --cfg-options '
        f'{missing[0][0]}.checkpoint=PATH, or train from scratch on purpose with '
        f'--cfg-options {missing[0][0]}=None.')
