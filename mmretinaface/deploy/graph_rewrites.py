"""Graph rewrites that make the exports faster in ONNX Runtime (pure ``onnx.ModelProto`` edits).

Each rewrite keeps the model's function: the first two are exact for every
input size (zero channels, the same sizes from another tensor's shape) and
every FP32 export gets them (:func:`rewrite_fp32_graph`; the INT8 export
quantizes that graph); the last two, for the quantized graph, change only
which tensor a ``Shape`` reads or where a quantized value is rounded.
Measured gains are in docs/deployment.md; each has a unit test against the
un-rewritten graph (tests/test_graph_rewrites.py).

* :func:`pad_conv_channels` (FP32): zero channels up to ONNX Runtime's NCHWc block
  (16 with AVX-512: the stem's 8-channel convs; 8 with AVX2: nothing to pad).
* :func:`resize_sizes_from_shape` (FP32): the FPN's upsampling size from the finer
  map's shape instead of a dozen ``Shape/Gather/Slice/...`` nodes.
* :func:`read_shapes_before_dequantize` (QDQ): ``Shape`` reads the 8-bit tensor.
* :func:`share_concat_quantization` (QDQ): a ``Concat``'s branches use its output's
  scale, so ``QLinearConcat`` copies bytes (one rounding instead of two).
"""
from typing import Collection, Dict, List, Optional

import numpy as np


def _consumers(graph) -> Dict[str, list]:
    out: Dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _attr(node, name: str, default=None):
    from onnx import helper
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _set_initializer(graph, name: str, array: np.ndarray) -> None:
    from onnx import numpy_helper
    for tensor in graph.initializer:
        if tensor.name == name:
            tensor.CopyFrom(numpy_helper.from_array(array, name))
            return
    raise KeyError(name)


def _pad_axis(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    pad = [(0, 0)] * array.ndim
    pad[axis] = (0, size - array.shape[axis])
    return np.pad(array, pad)


def pad_conv_channels(model, names: Collection[str], multiple: Optional[int] = None) -> int:
    """Give the convs named in ``names`` whose output channels are not a multiple of
    ``multiple`` (default: this CPU's :func:`~mmretinaface.utils.cpu.nchwc_block_size`)
    zero channels up to it, and their readers zero weights for them.

    A padded conv's output (possibly through one activation, which sees zeros:
    its values there are never used) may only be read by convs of ``names``:
    ordinary convs get zero input-channel weights; a depthwise conv is padded
    too (zero filters, zero bias), and its readers get zero input-channel
    weights. Exact: the extra channels meet only zero weights. Returns the
    number of padded convs.
    """
    from onnx import numpy_helper

    from ..utils.cpu import nchwc_block_size
    multiple = multiple or nchwc_block_size()
    graph = model.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}

    def readers(node) -> list:
        """Nodes reading ``node``'s output, through one activation (None: other readers)."""
        after, seen = consumers.get(node.output[0], []), [node.output[0]]
        if len(after) == 1 and after[0].op_type != 'Conv' and len(after[0].input) == 1:
            seen.append(after[0].output[0])
            after = consumers.get(seen[-1], [])
        if not after or outputs.intersection(seen) or any(
                n.op_type != 'Conv' or n.name not in names for n in after):
            return None
        return after

    def is_conv(node) -> bool:
        return (node.op_type == 'Conv' and node.input[1] in weights and
                (len(node.input) < 3 or node.input[2] in weights))

    padded = 0
    for conv in [n for n in graph.node if is_conv(n) and n.name in names]:
        width = weights[conv.input[1]].shape[0]
        target = -(-width // multiple) * multiple
        after = readers(conv)
        if _attr(conv, 'group', 1) != 1 or width == target or after is None:
            continue
        depthwise = [n for n in after if _attr(n, 'group', 1) == width]
        plain = [n for n in after if _attr(n, 'group', 1) == 1]
        if len(depthwise) + len(plain) != len(after) or not all(map(is_conv, after)):
            continue
        nexts = [readers(n) for n in depthwise]
        if any(n is None or any(_attr(m, 'group', 1) != 1 or not is_conv(m) for m in n)
               for n in nexts):
            continue
        def pad(name: str, axis: int, target: int = target) -> None:
            weights[name] = _pad_axis(weights[name], axis, target)
            _set_initializer(graph, name, weights[name])

        for node in [conv] + depthwise:  # zero filters, zero bias
            for name in node.input[1:3]:
                pad(name, 0)
        for node in depthwise:
            for attr in node.attribute:
                if attr.name == 'group':
                    attr.i = target
        for node in plain + [m for n in nexts for m in n]:  # zero weights for the new inputs
            pad(node.input[1], 1)
        padded += 1
    return padded


def rewrite_fp32_graph(model, multiple: Optional[int] = None) -> Dict[str, int]:
    """The exact FP32 rewrites, in place: every conv may be padded (to ``multiple``
    channels, default this CPU's block), then the upsampling sizes. Idempotent (a
    rewritten graph has nothing left to rewrite); returns the counts."""
    convs = [n.name for n in model.graph.node if n.op_type == 'Conv']
    return dict(padded_convs=pad_conv_channels(model, convs, multiple),
                resize_sizes=resize_sizes_from_shape(model))


def static_shapes(model, height: int, width: int) -> Dict[str, List[int]]:
    """Tensor name -> shape from ONNX shape inference (with data propagation) on a copy
    of ``model`` whose image input is ``(1, C, height, width)``; unknown shapes left out."""
    import onnx
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    initializers = {t.name for t in probe.graph.initializer}
    for value in probe.graph.input:
        if value.name not in initializers:
            dims = value.type.tensor_type.shape.dim
            for axis, size in ((0, 1), (len(dims) - 2, height), (len(dims) - 1, width)):
                dims[axis].Clear()
                dims[axis].dim_value = size
    inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    out = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField('dim_value') for d in dims):
            out[value.name] = [d.dim_value for d in dims]
    return out


def resize_sizes_from_shape(model, probes=((257, 193), (256, 320))) -> int:
    """Let every ``Resize`` whose output is added to a tensor of its own output shape
    take that tensor's ``Shape`` as its ``sizes``; drop the nodes left unused.

    The FPN upsamples a coarse map to the size of the finer one and adds
    them: the exported ``sizes`` are the coarse map's batch and channels and
    the fine map's height and width, assembled from both shapes. A rewrite
    applies only where ONNX shape inference gives the ``Resize`` output the
    shape of the other ``Add`` input at each probe input size ``(height,
    width)``; sizes equal, output equal. Returns the number of rewired ``Resize``.
    """
    from onnx import helper
    graph = model.graph
    consumers = _consumers(graph)
    producer = {out: n for n in graph.node for out in n.output}
    shapes = [static_shapes(model, *hw) for hw in probes]
    rewired = 0
    for node in [n for n in graph.node if n.op_type == 'Resize' and len(n.input) == 4]:
        adds = consumers.get(node.output[0], [])
        if len(adds) != 1 or adds[0].op_type != 'Add':
            continue
        (partner, ) = [name for name in adds[0].input if name != node.output[0]] or [None]
        source = producer.get(node.input[3])
        if source is not None and source.op_type == 'Shape' and source.input[0] == partner:
            continue  # already rewired
        if partner is None or not all(
                node.output[0] in s and s.get(partner) == s[node.output[0]] for s in shapes):
            continue
        size = f'{node.output[0]}_sizes'
        graph.node.insert(list(graph.node).index(node),
                          helper.make_node('Shape', [partner], [size], name=f'{node.name}_sizes'))
        node.input[3] = size
        rewired += 1
    _drop_unused(graph)
    return rewired


def _drop_unused(graph) -> None:
    """Remove nodes none of whose outputs is read (repeatedly)."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        keep = [n for n in graph.node if any(o in used for o in n.output)]
        if len(keep) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(keep)


def read_shapes_before_dequantize(model) -> int:
    """Let every ``Shape`` that reads a ``DequantizeLinear`` output read its 8-bit input.

    The FPN's upsampling sizes and the decode's prior grid come from feature
    map shapes; left alone, ONNX Runtime dequantizes whole feature maps (and
    transposes them back to NCHW) only to read their shape. Same shape,
    exact. Dequantize nodes left without consumers are removed. Returns the
    number of rewired ``Shape`` nodes.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    rewired = 0
    for node in graph.node:
        source = producer.get(node.input[0]) if node.op_type == 'Shape' else None
        if source is not None and source.op_type == 'DequantizeLinear':
            node.input[0] = source.input[0]
            rewired += 1
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    keep = [n for n in graph.node if n.op_type != 'DequantizeLinear' or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(keep)
    return rewired


def share_concat_quantization(model) -> int:
    """Quantize each input of a QDQ ``Concat`` with the ``Concat`` output's scale and zero point.

    ``Q_i -> DQ_i -> Concat -> Q`` becomes ``Q -> DQ -> Concat -> Q`` per
    input (where ``Q_i`` and ``DQ_i`` serve only this ``Concat``): the
    concatenated values are rounded to the output's grid once, where before
    they were rounded to each input's grid and then requantized (the output
    grid covers every input's range: it was calibrated on their union). ONNX
    Runtime's ``QLinearConcat`` then copies bytes. Returns the number of
    ``Concat`` nodes changed.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph)
    changed = 0
    for concat in [n for n in graph.node if n.op_type == 'Concat']:
        after = consumers.get(concat.output[0], [])
        dqs = [producer.get(name) for name in concat.input]
        if len(after) != 1 or after[0].op_type != 'QuantizeLinear' or not all(
                d is not None and d.op_type == 'DequantizeLinear' and
                len(consumers[d.output[0]]) == 1 for d in dqs):
            continue
        qs = [producer.get(d.input[0]) for d in dqs]
        if not all(q is not None and q.op_type == 'QuantizeLinear' and
                   len(consumers[q.output[0]]) == 1 for q in qs):
            continue
        scale, zero = after[0].input[1:3]
        for q, dq in zip(qs, dqs):
            q.input[1], q.input[2] = scale, zero
            dq.input[1], dq.input[2] = scale, zero
        changed += 1
    used = {name for node in graph.node for name in node.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return changed
