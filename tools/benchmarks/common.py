"""What the benchmark cases share on the measuring side: set-up, inputs, models, sessions.

Everything here runs inside a case's child process; torch and friends are
imported inside the functions, so that the parent process stays light.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[2]
MNET_CONFIG = ROOT / 'configs' / 'retinaface_mobilenet0.25_widerface.py'
R50_CONFIG = ROOT / 'configs' / 'retinaface_r50_widerface.py'
#: The reference's preprocessing: BGR minus this mean (our ONNX does it in its graph).
MEAN_BGR = (104.0, 117.0, 123.0)

_TORCH_DEFAULT_THREADS: List[int] = []


def setup_child(p: dict) -> None:
    """Register the modules and apply ``--threads`` / ``--device`` in a case's process."""
    import torch
    if not _TORCH_DEFAULT_THREADS:
        _TORCH_DEFAULT_THREADS.append(torch.get_num_threads())
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    import mmretinaface.register  # noqa: F401 (registers the components)
    if p.get('threads'):
        torch.set_num_threads(p['threads'])
    if p['device'] == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError('--device cuda requested but torch.cuda.is_available() is False')


def torch_default_threads() -> int:
    """torch's thread count before ``--threads`` changed it."""
    return _TORCH_DEFAULT_THREADS[0]


def num_threads(p: dict) -> int:
    import torch
    return p.get('threads') or torch.get_num_threads()


def sync_fn(p: dict) -> Optional[Callable[[], None]]:
    """``torch.cuda.synchronize`` on CUDA (timings wait for the kernels), else None."""
    if p['device'] == 'cuda':
        import torch
        return torch.cuda.synchronize
    return None


def autocast(p: dict) -> Callable[[], Any]:
    """A context-manager factory: autocast under ``--amp`` (fp16 on CUDA, bf16 on CPU)."""
    import torch
    if not p.get('amp'):
        return contextlib.nullcontext
    dtype = torch.float16 if p['device'] == 'cuda' else torch.bfloat16
    return lambda: torch.autocast(device_type=p['device'], dtype=dtype)


def photos(width: int, height: int, batch: int) -> list:
    """``batch`` BGR photos resized to ``width x height``: grace_hopper, astronaut, ..."""
    import cv2

    from mmretinaface.apis import bundled_photo
    out = []
    for i in range(batch):
        img = cv2.imread(bundled_photo(('grace_hopper', 'astronaut')[i % 2]), cv2.IMREAD_COLOR)
        out.append(cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR))
    return out


def reference_input(images: Sequence) -> Any:
    """The reference's preprocessing: BGR float minus the mean, NCHW (numpy)."""
    import numpy as np
    mean = np.asarray(MEAN_BGR, np.float32)
    batch = np.stack([img.astype(np.float32) - mean for img in images])
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def raw_input(x_ref: Any) -> Any:
    """Undo the mean subtraction: the raw-pixel input our exported ONNX takes."""
    import numpy as np
    return np.ascontiguousarray(x_ref + np.asarray(MEAN_BGR, np.float32).reshape(1, 3, 1, 1))


def model_files(kind: str) -> Tuple[str, Optional[str]]:
    """Config and weights of ``'mnet'`` (the converted published weights, made on first
    use) or ``'r50'`` (no weights: random init)."""
    if kind == 'mnet':
        from mmretinaface.apis import get_weights_path
        return str(MNET_CONFIG), get_weights_path()
    return str(R50_CONFIG), None


def build_inferencer(kind: str, device: str):
    """``FaceInferencer`` with its defaults (production's inference path) for ``kind``."""
    import torch

    from mmretinaface.apis import FaceInferencer
    torch.manual_seed(0)  # the random ResNet50 weights
    return FaceInferencer(*model_files(kind), device=device, show_progress=False)


def build_detector(kind: str, device: str):
    """The detector as loaded (``init_face_detector`` without speed-ups) for ``kind``."""
    import torch

    from mmretinaface.apis import init_face_detector
    torch.manual_seed(0)
    return init_face_detector(*model_files(kind), device=device)


def ort_session(model: Any, p: dict, profile_prefix: Optional[str] = None):
    """An ONNX Runtime session with the benchmark's options (threads as ``--threads``)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads(p)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    providers = ['CPUExecutionProvider']
    if p['device'] == 'cuda' and 'CUDAExecutionProvider' in ort.get_available_providers():
        providers.insert(0, 'CUDAExecutionProvider')
    return ort.InferenceSession(model, opts, providers=providers)


def top_ops(fn: Callable[[], Any], rounds: int, device: str, limit: int = 8) -> dict:
    """Top operators of ``fn`` by self CPU time (torch.profiler), per call."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU]
    if device == 'cuda':
        activities.append(ProfilerActivity.CUDA)
    with torch.no_grad():
        for _ in range(2):  # warm-up
            fn()
    with profile(activities=activities) as prof:
        for _ in range(rounds):
            fn()
    events = prof.key_averages()
    rows = [(e.key, e.self_cpu_time_total / 1e3 / rounds, e.count // rounds)
            for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:limit]]
    return dict(rows=rows, total_ms=sum(e.self_cpu_time_total for e in events) / 1e3 / rounds)


def measure_setup(p: dict) -> dict:
    """Versions and threads seen from a child, and our ONNX export (checked against the
    reference ONNX on one photo): the run's environment, and the file ONNX cases time."""
    setup_child(p)
    import time

    import numpy as np
    import onnxruntime as ort
    import torch
    from retinaface.weights import WEIGHTS

    from mmretinaface.deploy.onnx_export import export_onnx
    info = dict(torch_threads=torch.get_num_threads(), ort_threads=num_threads(p),
                torch_default_threads=torch_default_threads(),
                cuda_available=torch.cuda.is_available(),
                ort_providers=ort.get_available_providers())
    if torch.cuda.is_available():
        info['cuda_device'] = torch.cuda.get_device_name(0)
    model = build_detector('mnet', 'cpu')  # as loaded (the optimized model does not export)
    start = time.perf_counter()
    export_onnx(model, p['onnx_path'])
    info['export_s'] = time.perf_counter() - start
    x = reference_input(photos(320, 256, 1))
    ref = ort_session(WEIGHTS, p).run(None, {'input': x})
    ours = ort_session(p['onnx_path'], p).run(None, {'image': raw_input(x)})
    info['onnx_max_abs_diff'] = float(max(np.abs(a - b).max() for a, b in zip(ref, ours)))
    return info
