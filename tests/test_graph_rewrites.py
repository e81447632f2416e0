"""The INT8 export's graph rewrites (mmretinaface.deploy.graph_rewrites) against the un-rewritten
graphs, run by onnxruntime on random inputs of several sizes (odd ones too)."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from mmretinaface.deploy import export_onnx
from mmretinaface.deploy.graph_rewrites import (
    pad_conv_channels,
    read_shapes_before_dequantize,
    resize_sizes_from_shape,
    rewrite_fp32_graph,
    share_concat_quantization,
)
from mmretinaface.deploy.quantize import float_nodes
from mmretinaface.utils.cpu import nchwc_block_size

SIZES = [(1, 32, 48), (2, 31, 47), (1, 17, 9), (1, 97, 75)]  # (batch, height, width)


def run(model, feeds: dict) -> list:
    session = ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])
    return session.run(None, feeds)


def copy(model):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def random_images(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, height, width])
    return rng.uniform(0, 255, (batch, 3, height, width)).astype(np.float32)


def conv(name, x, out, weight, bias=None, **attrs):
    inputs = [x, f'{name}.w'] + ([f'{name}.b'] if bias is not None else [])
    inits = [numpy_helper.from_array(weight, f'{name}.w')] + (
        [numpy_helper.from_array(bias, f'{name}.b')] if bias is not None else [])
    return helper.make_node('Conv', inputs, [out], name=name, **attrs), inits


def stem_model(extra_reader: bool = False):
    """conv 3->8 (stride 2) -> LeakyRelu -> depthwise 8 -> LeakyRelu -> conv 8->16, like
    MobileNet0.25's stem; ``extra_reader``: the first conv's output is also an output."""
    rng = np.random.default_rng(0)
    w = [rng.normal(0, 0.3, s).astype(np.float32) for s in ((8, 3, 3, 3), (8, 1, 3, 3),
                                                             (16, 8, 1, 1))]
    b = [rng.normal(0, 0.3, s).astype(np.float32) for s in (8, 8, 16)]
    n0, i0 = conv('c0', 'x', 'y0', w[0], b[0], strides=[2, 2], pads=[1, 1, 1, 1])
    n1, i1 = conv('dw', 'a0', 'y1', w[1], b[1], group=8, pads=[1, 1, 1, 1])
    n2, i2 = conv('pw', 'a1', 'y', w[2], b[2])
    nodes = [n0, helper.make_node('LeakyRelu', ['y0'], ['a0'], alpha=0.1), n1,
             helper.make_node('LeakyRelu', ['y1'], ['a1'], alpha=0.1), n2]
    outputs = [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)]
    if extra_reader:
        outputs.append(helper.make_tensor_value_info('a0', TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, 'stem', [helper.make_tensor_value_info('x', TensorProto.FLOAT,
                                                      ['n', 3, 'h', 'w'])],
        outputs, i0 + i1 + i2)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])


def test_pad_conv_channels_is_exact_and_pads_the_stem():
    model = stem_model()
    padded = copy(model)
    assert pad_conv_channels(padded, {'c0', 'dw', 'pw'}, 16) == 1
    weights = {t.name: numpy_helper.to_array(t).shape for t in padded.graph.initializer}
    assert weights == {'c0.w': (16, 3, 3, 3), 'c0.b': (16, ), 'dw.w': (16, 1, 3, 3),
                       'dw.b': (16, ), 'pw.w': (16, 16, 1, 1), 'pw.b': (16, )}
    assert [a.i for a in padded.graph.node[2].attribute if a.name == 'group'] == [16]
    for size in SIZES:
        x = random_images(*size)
        np.testing.assert_allclose(run(padded, {'x': x})[0], run(model, {'x': x})[0],
                                   rtol=1e-5, atol=1e-4)


def test_pad_conv_channels_leaves_convs_it_cannot_pad():
    # a non-conv reader of the 8 channels, or a conv outside ``names``: no change
    for model, names in ((stem_model(extra_reader=True), {'c0', 'dw', 'pw'}),
                         (stem_model(), {'c0', 'dw'})):
        before = model.SerializeToString()
        assert pad_conv_channels(model, names, 16) == 0
        assert model.SerializeToString() == before


@pytest.fixture(scope='module')
def fp32_model(tmp_path_factory, mobilenet_detector):
    """The FP32 export as torch.onnx writes it (before the rewrites)."""
    path = tmp_path_factory.mktemp('graph_rewrites') / 'fp32.onnx'
    export_onnx(mobilenet_detector, str(path), rewrite=False)
    return onnx.load(str(path))


def test_the_fp32_export_carries_the_exact_rewrites_once(fp32_model, mobilenet_detector,
                                                          tmp_path):
    rewritten = copy(fp32_model)
    assert rewrite_fp32_graph(rewritten, 16) == dict(padded_convs=1, resize_sizes=2)
    again = copy(rewritten)
    assert rewrite_fp32_graph(again, 16) == dict(padded_convs=0, resize_sizes=0)  # idempotent
    assert again.SerializeToString() == rewritten.SerializeToString()
    # with 8-channel blocks (AVX2) the 8-channel stem needs nothing
    assert rewrite_fp32_graph(copy(fp32_model), 8) == dict(padded_convs=0, resize_sizes=2)
    path = tmp_path / 'default.onnx'
    export_onnx(mobilenet_detector, str(path))  # the default export: rewritten for this CPU
    default = onnx.load(str(path))
    assert rewrite_fp32_graph(copy(default)) == dict(padded_convs=0, resize_sizes=0)
    first = next(n for n in default.graph.node if n.op_type == 'Conv')
    widths = {t.name: t.dims[0] for t in default.graph.initializer}
    assert widths[first.input[1]] == nchwc_block_size()  # the stem's 8 channels, padded or not
    x = random_images(1, 37, 53)
    for got, want in zip(run(default, {'image': x}), run(fp32_model, {'image': x})):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_rewrites_of_the_fp32_export_keep_its_outputs(fp32_model):
    """The stem padding and the upsampling sizes on the exported model, odd sizes too."""
    rewritten = copy(fp32_model)
    assert pad_conv_channels(rewritten, float_nodes(rewritten), 16) == 1  # the 8-channel stem
    assert resize_sizes_from_shape(rewritten) == 2  # the two FPN upsamplings
    assert len(rewritten.graph.node) < len(fp32_model.graph.node) - 20
    producer = {o: n.op_type for n in rewritten.graph.node for o in n.output}
    resizes = [n for n in rewritten.graph.node if n.op_type == 'Resize']
    assert [producer[n.input[3]] for n in resizes] == ['Shape', 'Shape']
    for size in SIZES:
        x = random_images(*size)
        for got, want in zip(run(rewritten, {'image': x}), run(fp32_model, {'image': x})):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_resize_sizes_from_shape_needs_the_add_partner_shape():
    """A Resize to a size other than its Add partner's (here: broadcast over batch) stays."""
    nodes = [helper.make_node('Resize', ['c', '', '', 'sizes'], ['up'], mode='nearest'),
             helper.make_node('Add', ['up', 'f'], ['y'])]
    graph = helper.make_graph(
        nodes, 'g', [helper.make_tensor_value_info('c', TensorProto.FLOAT, [2, 4, 3, 5]),
                     helper.make_tensor_value_info('f', TensorProto.FLOAT, [1, 4, 6, 10])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([2, 4, 6, 10], np.int64), 'sizes')])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    assert resize_sizes_from_shape(model) == 0
    assert model.graph.node[0].input[3] == 'sizes'


def qdq(x: str, out: str, scale: str, zero: str) -> list:
    return [helper.make_node('QuantizeLinear', [x, scale, zero], [f'{out}_q']),
            helper.make_node('DequantizeLinear', [f'{out}_q', scale, zero], [out])]


def test_share_concat_quantization_rounds_once_to_the_output_grid():
    scales = dict(s1=0.05, s2=0.11, s=0.13)
    zeros = dict(z1=3, z2=140, z=100)
    inits = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in scales.items()]
    inits += [numpy_helper.from_array(np.array(v, np.uint8), k) for k, v in zeros.items()]
    nodes = (qdq('x1', 'a', 's1', 'z1') + qdq('x2', 'b', 's2', 'z2') +
             [helper.make_node('Concat', ['a', 'b'], ['c'], axis=1)] + qdq('c', 'y', 's', 'z'))
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 'k', 5])
              for n in ('x1', 'x2')]
    graph = helper.make_graph(nodes, 'g', inputs,
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    rng = np.random.default_rng(0)
    feeds = dict(x1=rng.uniform(-0.1, 12, (2, 3, 5)).astype(np.float32),
                 x2=rng.uniform(-13, 12.5, (2, 4, 5)).astype(np.float32))
    before = run(model, feeds)[0]
    rewritten = copy(model)
    assert share_concat_quantization(rewritten) == 1
    assert {t.name for t in rewritten.graph.initializer} == {'s', 'z'}
    after = run(rewritten, feeds)[0]
    concat = np.concatenate([feeds['x1'], feeds['x2']], axis=1)
    grid = np.clip(np.round(concat / scales['s']) + zeros['z'], 0, 255)
    np.testing.assert_allclose(after, (grid - zeros['z']) * scales['s'], rtol=1e-6)
    assert np.abs(after - before).max() <= scales['s'] * 1.0001  # at most one step apart


def test_read_shapes_before_dequantize_is_exact():
    """A Shape behind a DequantizeLinear reads the 8-bit tensor: same output, DQ removed."""
    scale = helper.make_tensor('scale', TensorProto.FLOAT, [], [0.5])
    zero = helper.make_tensor('zero', TensorProto.UINT8, [], [7])
    nodes = [helper.make_node('QuantizeLinear', ['x', 'scale', 'zero'], ['xq']),
             helper.make_node('DequantizeLinear', ['xq', 'scale', 'zero'], ['xdq']),
             helper.make_node('DequantizeLinear', ['xq', 'scale', 'zero'], ['xdq2']),
             helper.make_node('Shape', ['xdq'], ['shape']),
             helper.make_node('Relu', ['xdq2'], ['y'])]
    graph = helper.make_graph(
        nodes, 'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, ['n', 3])],
        [helper.make_tensor_value_info('shape', TensorProto.INT64, [2]),
         helper.make_tensor_value_info('y', TensorProto.FLOAT, ['n', 3])], [scale, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    x = np.random.default_rng(0).uniform(-3, 60, (5, 3)).astype(np.float32)
    before = run(model, {'x': x})
    assert read_shapes_before_dequantize(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert ops == ['QuantizeLinear', 'DequantizeLinear', 'Shape', 'Relu']
    for a, b in zip(before, run(model, {'x': x})):
        np.testing.assert_array_equal(a, b)
