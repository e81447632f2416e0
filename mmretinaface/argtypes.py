"""argparse ``type=`` checks shared by the demos, each with a message saying what was expected.

Light on purpose (no torch, no mmengine): the demos parse and check their
options before loading anything heavy.
"""
import argparse
import re
from typing import Callable


def device(value: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``."""
    if not re.fullmatch(r'cpu|cuda(:\d+)?', value):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got '{value}'")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """A type for integers ``>= minimum`` (``int_at_least(1)``: a count, ``(0)``: 0 allowed)."""
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or number < minimum:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, got '{value}'")
        return number
    return parse


def scales(value: str):
    """A multi-scale setting's name (``single``, ``pyramid``, ``crowd``) or
    comma-separated positive factors (``1,2``)."""
    if re.fullmatch(r'[a-z]+', value):
        return value
    try:
        factors = tuple(float(v) for v in value.split(','))
    except ValueError:
        factors = ()
    if not factors or min(factors) <= 0:
        raise argparse.ArgumentTypeError(
            f"expected single, pyramid, crowd or comma-separated factors like 1,2; got '{value}'")
    return factors


def add_model_options(parser: argparse.ArgumentParser, inputs: str = 'images') -> None:
    """The model options every demo takes: ``--config``, ``--weights``, ``--max-size``,
    ``--backend``, ``--int8``, ``--scales``, ``--pyramid``, ``--flip`` and ``--no-fuse``
    (one wording, one meaning; :func:`inferencer_options` turns them into
    ``FaceInferencer`` arguments)."""
    parser.add_argument('--config', help='config path or shipped config name (default: '
                        'retinaface_mobilenet0.25_widerface)')
    parser.add_argument('--weights', help="checkpoint (default: the config's default weights, "
                        'converted on first use into ~/.cache/mmretinaface or $MMRETINAFACE_HOME)')
    parser.add_argument('--max-size', type=int_at_least(0),
                        help=f'{inputs} whose longer side exceeds this many pixels are '
                        'downscaled for the network (results are mapped back to original '
                        "pixels) to bound time and memory; 0 = no limit (default: the "
                        "config's LimitSize, 4096)")
    parser.add_argument('--backend', choices=('pytorch', 'onnxruntime'),
                        help='what runs the network (default: onnxruntime on CPU, exported on '
                        'first use and cached; pytorch on CUDA)')
    parser.add_argument('--int8', action='store_true',
                        help='run the statically quantized INT8 model (ONNX Runtime, CPU): '
                        'faster, a slightly different model')
    parser.add_argument('--scales', type=scales, metavar='SETTING|F1,F2',
                        help='multi-scale inference: single (default), pyramid (halved copies '
                        'for close-ups), crowd (also a 1.5x copy for crowds and small faces, '
                        'about 3-4x the time), or factors such as 1,2')
    parser.add_argument('--pyramid', action='store_true',
                        help='= --scales pyramid: also detect on halved copies, so that faces '
                        'larger than the anchors (close-ups, >~400 px) are found whole '
                        'instead of as fragments (about 1.3x the time)')
    parser.add_argument('--flip', action='store_true',
                        help='flip test-time augmentation: also detect on the mirror image '
                        '(about 2x the time)')
    parser.add_argument('--no-fuse', action='store_true',
                        help='PyTorch backend: run the model as loaded (by default BatchNorm is '
                        'folded into the convolutions: the same faces to float rounding, faster)')


def inferencer_options(args: argparse.Namespace) -> dict:
    """``FaceInferencer`` keyword arguments from :func:`add_model_options`' options."""
    return dict(model=args.config, weights=args.weights, max_size=args.max_size,
                backend=args.backend, int8=args.int8, scales=args.scales,
                pyramid=args.pyramid, flip=args.flip,
                optimize=not args.no_fuse)
