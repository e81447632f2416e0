"""Independent reference implementations the tests compare the package against.

They follow the reference RetinaFace as the walkthrough
(``shared/reference/retinaface_walkthrough.txt``) describes it, in plain
``torch``, and share no code with the rest of ``mmretinaface``: they are the
oracles the package is checked against, so they must not reuse what they
check. Importing this module imports torch (``import mmretinaface`` does not
import it).
"""
from .reference_multibox import ReferenceMultiBoxLoss, to_reference_targets
from .reference_retinaface import RetinaFace, nhwc_flatten, randomize_, reference_prior_box

__all__ = [
    'ReferenceMultiBoxLoss', 'RetinaFace', 'nhwc_flatten', 'randomize_', 'reference_prior_box',
    'to_reference_targets'
]
