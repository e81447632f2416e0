"""What this CPU is: its model name and vector extensions (benchmarks record them, and the
ONNX graph rewrites pick ONNX Runtime's channel block size from them)."""
import platform
from functools import lru_cache
from typing import Dict, List

#: /proc/cpuinfo flag -> the name benchmarks report.
VECTOR_EXTENSIONS = {'avx2': 'AVX2', 'avx512f': 'AVX-512F', 'avx512_vnni': 'AVX-512 VNNI',
                     'avx_vnni': 'AVX-VNNI', 'amx_tile': 'AMX'}


@lru_cache(maxsize=1)
def cpu_info() -> Dict[str, object]:
    """``{'model': name, 'flags': frozenset}`` from /proc/cpuinfo (Linux); elsewhere the
    platform's processor string and no flags."""
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip()
                if key == 'model name':
                    model = value.strip()
                elif key == 'flags':
                    flags = frozenset(value.split())
                if key == '' and flags:
                    break  # the first processor is enough
    except OSError:
        pass
    return dict(model=model, flags=flags)


def vector_extensions() -> List[str]:
    """The :data:`VECTOR_EXTENSIONS` this CPU has (report names, in the table's order)."""
    flags = cpu_info()['flags']
    return [name for flag, name in VECTOR_EXTENSIONS.items() if flag in flags]


def nchwc_block_size() -> int:
    """Channels per block of ONNX Runtime's blocked FP32 convolutions (NCHWc) on this
    CPU: 16 with AVX-512, else 8."""
    return 16 if 'avx512f' in cpu_info()['flags'] else 8
