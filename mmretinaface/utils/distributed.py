"""Multi-process training on CPU (gloo), where MMEngine's launchers assume CUDA."""
import os
import subprocess
from datetime import timedelta

import torch
import torch.distributed as dist

#: Default gloo timeout (the same as torch's default for gloo).
DEFAULT_TIMEOUT_S = 1800


def _slurm_env() -> None:
    """torchrun-style env vars from SLURM's (as mmengine's slurm launcher does)."""
    os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
    os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
    os.environ.setdefault('LOCAL_RANK', os.environ.get('SLURM_LOCALID', '0'))
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        node_list = os.environ['SLURM_NODELIST']
        out = subprocess.run(['scontrol', 'show', 'hostname', node_list], check=True,
                             capture_output=True, text=True).stdout.split()
        os.environ['MASTER_ADDR'] = out[0]


def init_cpu_distributed(launcher: str = 'pytorch', timeout_s: int = DEFAULT_TIMEOUT_S) -> bool:
    """Initialise a gloo process group when CUDA is absent.

    MMEngine's ``pytorch`` and ``slurm`` launchers call
    ``torch.cuda.set_device``; on a CPU machine we create the group first, so
    the Runner skips its own initialisation, and the caller wraps the model in
    ``MMDistributedDataParallel(device_ids=None)``. ``pytorch`` reads
    torchrun's ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``;
    ``slurm`` derives them from ``SLURM_PROCID``/``SLURM_NTASKS``/
    ``SLURM_NODELIST`` (``MASTER_PORT`` defaults to 29500).

    Returns True when it initialised the group (False with CUDA, or when a
    group exists already).
    """
    if torch.cuda.is_available() or dist.is_initialized():
        return False
    if launcher == 'slurm':
        _slurm_env()
    elif launcher != 'pytorch':
        raise ValueError(f'CPU distributed training supports the pytorch and slurm launchers, '
                         f'got {launcher!r}')
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        if key not in os.environ:
            raise RuntimeError(f'distributed launch needs ${key}; start with torchrun, '
                               'tools/dist_train.sh or tools/slurm_train.sh')
    dist.init_process_group('gloo', timeout=timedelta(seconds=timeout_s))
    return True


def setup_cpu_distributed(cfg) -> bool:
    """The CPU part of a distributed launch, for ``tools/train.py`` and ``tools/test.py``.

    With ``cfg.launcher`` ``pytorch`` or ``slurm`` on a machine without CUDA,
    creates the gloo group (:func:`init_cpu_distributed`) and configures the
    Runner for it: DDP without device ids and ``env_cfg.dist_cfg.backend``
    ``gloo``. The Runner then sees an initialised group and skips its own
    (CUDA-only) set-up. Returns True when it did so; with CUDA, one process or
    an existing group, ``cfg`` is left as it is.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher not in ('pytorch', 'slurm') or not init_cpu_distributed(launcher):
        return False
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    return True
