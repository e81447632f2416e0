"""Training hooks."""
from typing import Optional

import torch
from mmdet.registry import HOOKS
from mmengine.dist import all_reduce, get_world_size, is_distributed
from mmengine.hooks import Hook


@HOOKS.register_module()
class AverageLossAcrossRanksHook(Hook):
    """Log the mean over all ranks of every scalar a train step returns.

    MMEngine logs rank 0's ``loss``/``loss_*`` only (``parse_losses`` does
    not reduce them), so with several processes the logged loss would be
    one rank's. This hook all-reduces them (one small ``all_reduce`` per
    iteration) before :class:`~mmengine.hooks.RuntimeInfoHook` records them,
    so logs, ``scalars.json`` and the message hub hold the mean over ranks.
    It does nothing in a single process.

    Every rank must return the same keys (the head always returns the same
    losses). Gradients are unaffected: DDP already averages them.
    """

    # before RuntimeInfoHook (VERY_HIGH = 10), which stores the outputs
    priority = 5

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if not outputs or not is_distributed() or get_world_size() < 2:
            return
        keys = sorted(k for k, v in outputs.items()
                      if isinstance(v, torch.Tensor) and v.numel() == 1)
        if not keys:
            return
        values = torch.stack([outputs[k].detach().reshape(()).float() for k in keys])
        all_reduce(values, op='mean')
        for key, value in zip(keys, values):
            outputs[key] = value.to(outputs[key].dtype)
