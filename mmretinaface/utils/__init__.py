"""Training utilities: safe checkpoint loading, CPU distributed set-up, hooks."""
from .distributed import init_cpu_distributed, setup_cpu_distributed
from .hooks import AverageLossAcrossRanksHook, BatchNormStatisticsCheckHook, FastTrainingHook
from .safe_checkpoint import allow_runner_checkpoint_globals, runner_checkpoint_globals

__all__ = ['AverageLossAcrossRanksHook', 'BatchNormStatisticsCheckHook', 'FastTrainingHook',
           'allow_runner_checkpoint_globals', 'init_cpu_distributed', 'runner_checkpoint_globals',
           'setup_cpu_distributed']
