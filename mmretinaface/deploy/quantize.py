"""Static INT8 quantization of an exported RetinaFace ONNX model (onnxruntime).

The default :class:`Int8Scheme` was chosen by measurement (docs/deployment.md):
QDQ format, uint8 activations, int8 per-channel weights, MinMax ranges from
real photos. Two parts stay FP32:

* the high-resolution stem, every convolution that reads a feature map finer
  than stride 8 (``float_stride``; the first 8 convolutions of MobileNet0.25).
  Few channels over many pixels are slower in INT8 here (ONNX Runtime's INT8
  depthwise kernels want multiples of 16 channels, the first conv has 3 input
  channels) than its blocked FP32 kernels, and quantizing them cost faces on
  held-out photos;
* everything after the last convolutions (per-prior reshapes, softmax and,
  in a ``--decode`` export, box / landmark decoding): 8-bit pixel coordinates
  would be a few pixels coarse, and these ops are cheap in FP32.

Before and after quantizing, the graph rewrites of :mod:`.graph_rewrites` make
ONNX Runtime's work lighter without changing what the model computes (one
moves where a quantized value is rounded).
"""
import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

#: Activations that directly follow a conv and are kept in its precision.
ACTIVATIONS = ('Relu', 'LeakyRelu', 'Clip', 'Sigmoid')


@dataclass(frozen=True)
class Int8Scheme:
    """How to quantize; the defaults are the measured best (docs/deployment.md).

    Attributes:
        quant_format: ``'qdq'`` (QuantizeLinear/DequantizeLinear pairs that
            ONNX Runtime fuses into integer kernels) or ``'qoperator'``
            (QLinearConv & co. written into the file).
        activations, weights: ``'uint8'`` or ``'int8'``.
        per_channel: one weight scale per output channel.
        float_stride: convolutions reading a feature map of stride below this
            (input pixels per feature pixel; 0: none) stay FP32, with their activation.
        float_head: the last convolutions (class / box / landmark heads) stay FP32 too.
        graph_rewrites: apply the rewrites of :mod:`.graph_rewrites` (off: only to
            measure what they give).
    """

    quant_format: str = 'qdq'
    activations: str = 'uint8'
    weights: str = 'int8'
    per_channel: bool = True
    float_stride: int = 8
    float_head: bool = False
    graph_rewrites: bool = True

    def describe(self) -> str:
        fp32 = [f'convs below stride {self.float_stride}'] if self.float_stride else []
        fp32 += ['head convs'] if self.float_head else []
        fp32 += ['post-conv outputs']
        return (f'{self.quant_format.upper()}, {self.activations} activations, {self.weights} '
                f'{"per-channel" if self.per_channel else "per-tensor"} weights; FP32: '
                f'{", ".join(fp32)}{"" if self.graph_rewrites else "; no graph rewrites"}')


DEFAULT_SCHEME = Int8Scheme()


def conv_input_strides(model, side: int = 256) -> Dict[str, float]:
    """Conv name -> stride of the feature map it reads (input pixels per feature pixel).

    From ONNX shape inference on a copy of ``model`` with a ``side x side``
    input; convs whose input shape stays unknown are left out.
    """
    from .graph_rewrites import static_shapes
    widths = {name: shape[-1] for name, shape in static_shapes(model, side, side).items()
              if len(shape) == 4}
    return {n.name: side / widths[n.input[0]] for n in model.graph.node
            if n.op_type == 'Conv' and widths.get(n.input[0], 0) > 0}


def float_nodes(model, float_stride: int = 8, float_head: bool = False) -> List[str]:
    """Names of the nodes of ``model`` (an ``onnx.ModelProto``) that stay FP32.

    The quantized part is the convolutional trunk: every node from which a
    convolution can be reached, plus the last convolutions. Excluded are the
    nodes after the last convolutions, the convolutions that read a feature
    map of stride below ``float_stride`` and the activation right after each,
    and with ``float_head`` the last convolutions (and their activations).
    """
    nodes = list(model.graph.node)  # ONNX graphs are topologically sorted
    consumers: Dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def next_nodes(node) -> list:
        return [c for out in node.output for c in consumers.get(out, [])]

    reaches_conv: Dict[str, bool] = {}
    for node in reversed(nodes):
        reaches_conv[node.name] = any(c.op_type == 'Conv' or reaches_conv[c.name]
                                      for c in next_nodes(node))
    convs = [n for n in nodes if n.op_type == 'Conv']
    if not convs:
        raise ValueError('the model has no Conv node: not an exported RetinaFace?')

    def with_activation(conv) -> List[str]:
        after = next_nodes(conv)
        return [conv.name] + [a.name for a in after if len(after) == 1 and a.op_type in ACTIVATIONS]

    excluded = [n.name for n in nodes if n.op_type != 'Conv' and not reaches_conv[n.name]]
    strides = conv_input_strides(model) if float_stride else {}
    for conv in convs:
        if strides.get(conv.name, float('inf')) < float_stride or (
                float_head and not reaches_conv[conv.name]):
            excluded += with_activation(conv)
    return list(dict.fromkeys(excluded))


class _PreprocessAdvice(logging.Filter):
    """Drops onnxruntime's advice to run ``quant_pre_process`` first: measured, it gave no
    speed here (docs/deployment.md) and its symbolic shape inference fails on --decode
    exports."""

    def filter(self, record: logging.LogRecord) -> bool:
        return 'pre-processing before quantization' not in record.getMessage()


@contextlib.contextmanager
def _without_preprocess_advice() -> Iterator[None]:
    advice = _PreprocessAdvice()
    logging.getLogger().addFilter(advice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(advice)


def quantize_int8(fp32_file: str, out_file: str,
                  images: Optional[Sequence[np.ndarray]] = None,
                  to_input: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                  scheme: Int8Scheme = DEFAULT_SCHEME) -> None:
    """Write an INT8 version of the exported FP32 model ``fp32_file`` to ``out_file``.

    Args:
        images: BGR uint8 calibration photos (any sizes); default the bundled
            real photos and mosaics (:func:`~.calibration.calibration_images`).
            Given photos are resized to longer sides 640 and 320 first.
        to_input: a ``(3, H, W)`` uint8 BGR image -> the model's input (default:
            float32 pixels, as the exports with the normalisation inside take).
        scheme: see :class:`Int8Scheme`.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from .calibration import CalibrationReader, calibration_images
    from .graph_rewrites import (
        pad_conv_channels,
        read_shapes_before_dequantize,
        resize_sizes_from_shape,
        share_concat_quantization,
    )
    model = onnx.load(fp32_file)
    exclude = float_nodes(model, scheme.float_stride, scheme.float_head)
    if scheme.graph_rewrites:
        pad_conv_channels(model, exclude)
        resize_sizes_from_shape(model)
        exclude = float_nodes(model, scheme.float_stride, scheme.float_head)
    (input_name, ) = [i.name for i in model.graph.input
                      if i.name not in {t.name for t in model.graph.initializer}]
    types = dict(uint8=QuantType.QUInt8, int8=QuantType.QInt8)
    formats = dict(qdq=QuantFormat.QDQ, qoperator=QuantFormat.QOperator)
    for value, allowed in ((scheme.activations, types), (scheme.weights, types),
                           (scheme.quant_format, formats)):
        if value not in allowed:
            raise ValueError(f'INT8 scheme: {value!r} is not one of {sorted(allowed)}')
    reader = CalibrationReader(calibration_images(images), input_name, to_input)
    out_dir = os.path.dirname(os.path.abspath(out_file))
    with tempfile.TemporaryDirectory(dir=out_dir, prefix='.int8-') as tmp, \
            _without_preprocess_advice():
        staged, fp32_staged = os.path.join(tmp, 'model.onnx'), os.path.join(tmp, 'fp32.onnx')
        onnx.save(model, fp32_staged)
        quantize_static(fp32_staged, staged, reader, quant_format=formats[scheme.quant_format],
                        activation_type=types[scheme.activations],
                        weight_type=types[scheme.weights], per_channel=scheme.per_channel,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude)
        quantized = onnx.load(staged)
        read_shapes_before_dequantize(quantized)
        if scheme.graph_rewrites:
            share_concat_quantization(quantized)
        onnx.checker.check_model(quantized)
        onnx.save(quantized, staged)
        os.replace(staged, out_file)
