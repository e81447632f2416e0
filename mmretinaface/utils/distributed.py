"""Multi-process training on CPU (gloo), where MMEngine's launcher assumes CUDA."""
import os

import torch
import torch.distributed as dist


def init_cpu_distributed(timeout_s: int = 1800) -> bool:
    """Initialise a gloo process group from torchrun's env vars when CUDA is absent.

    MMEngine's ``pytorch`` launcher calls ``torch.cuda.set_device``; on a CPU
    machine we create the group first so the Runner skips its own init.
    Returns True when it initialised the group.
    """
    if torch.cuda.is_available() or dist.is_initialized():
        return False
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        if key not in os.environ:
            raise RuntimeError(f'distributed launch needs ${key}; start with torchrun or '
                               'tools/dist_train.sh')
    from datetime import timedelta
    dist.init_process_group('gloo', timeout=timedelta(seconds=timeout_s))
    return True
