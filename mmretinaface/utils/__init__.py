from .distributed import init_cpu_distributed
from .safe_checkpoint import allow_runner_checkpoint_globals

__all__ = ['allow_runner_checkpoint_globals', 'init_cpu_distributed']
