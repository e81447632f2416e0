"""INT8 export: the tool writes a quantized model that finds the faces the FP32 model finds
on real photos; the FP32 parts are the ones the scheme names; bad calibration folders fail
clearly."""
import cv2
import onnx
import pytest

from mmretinaface.apis import bundled_photo, get_config_path, load_image
from mmretinaface.deploy import export_onnx
from mmretinaface.deploy.onnx_runtime import OnnxFaceDetector
from mmretinaface.deploy.quantize import float_nodes
from mmretinaface.utils.cpu import nchwc_block_size
from mmretinaface.utils.image_io import read_image_folder
from tools.export_onnx import box_iou, compare_faces, face_mosaics, group_photo

# INT8 vs FP32 on real faces (the FP32 faces scoring >= 0.5; INT8 faces counted from 0.3, so
# that a face near the threshold may score a little lower). Measured with the default scheme
# and calibration: every face found (at 0.5 too), box IoU >= 0.91 (mean 0.97), landmark error
# 0.008-0.009 of the face size. Bounds leave room for onnxruntime versions and CPUs.
INT8_SCORE_THR = 0.3
MIN_IOU = 0.8
MAX_LANDMARK_NME = 0.03
CONFIG = get_config_path('retinaface_mobilenet0.25_widerface')


@pytest.fixture(scope='module')
def fp32_onnx(tmp_path_factory, mobilenet_detector):
    path = tmp_path_factory.mktemp('int8') / 'fp32.onnx'
    export_onnx(mobilenet_detector, str(path), 'decoded')
    return str(path)


@pytest.fixture(scope='module')
def int8_onnx(tmp_path_factory, converted_checkpoint):
    """Written by the command-line tool with the default (bundled) calibration."""
    from tools.export_onnx import main
    path = tmp_path_factory.mktemp('int8') / 'int8.onnx'
    assert main([CONFIG, converted_checkpoint, '--out', str(path), '--decode',
                 '--int8']) == 0
    return str(path)


def real_photos():
    """The two bundled one-face photos, a group-like photo of 18 LFW faces and mosaics of
    real faces at several scales (none of them in the calibration set)."""
    photos = [load_image(bundled_photo(name)) for name in ('grace_hopper', 'astronaut')]
    return photos + [group_photo()] + face_mosaics(num=6)


def test_int8_model_is_quantized_with_the_same_interface(int8_onnx, fp32_onnx):
    int8, fp32 = onnx.load(int8_onnx), onnx.load(fp32_onnx)
    assert [o.name for o in int8.graph.output] == ['boxes', 'scores', 'landmarks']
    assert [i.name for i in int8.graph.input] == [i.name for i in fp32.graph.input]
    int8_weights = [t for t in int8.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    convs = [n for n in int8.graph.node if n.op_type == 'Conv']
    producers = {o: n.op_type for n in int8.graph.node for o in n.output}
    quantized = [c for c in convs if producers.get(c.input[1]) == 'DequantizeLinear']
    # 50 convs: each level's class, box and landmark convs run as one
    assert len(convs) == 50 and len(quantized) == 50 - 8  # the stem's 8 convs stay FP32
    assert len(int8_weights) >= len(quantized)
    shapes = [n for n in int8.graph.node if n.op_type == 'Shape']
    assert shapes and all(producers.get(n.input[0]) != 'DequantizeLinear' for n in shapes)
    # the graph rewrites (tests/test_graph_rewrites.py): stem padded to the CPU's block, upsampling
    # sizes read from a Shape, the SSH concats' inputs on the output grid (QLinearConcat copies)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in int8.graph.initializer}
    assert weights[convs[0].input[1]].shape[0] == nchwc_block_size()
    assert all(producers[n.input[3]] == 'Shape' for n in int8.graph.node if n.op_type == 'Resize')
    concats = [n for n in int8.graph.node if n.op_type == 'Concat' and
               all(producers.get(i) == 'DequantizeLinear' for i in n.input)]
    assert len(concats) == 3  # one per SSH module
    for concat in concats:
        dqs = [next(d for d in int8.graph.node if d.output[0] == i) for i in concat.input]
        assert len({tuple(d.input[1:]) for d in dqs}) == 1


def test_float_nodes_are_the_stem_and_the_outputs(fp32_onnx):
    model = onnx.load(fp32_onnx)
    excluded = set(float_nodes(model))
    convs = {n.name for n in model.graph.node if n.op_type == 'Conv'} & excluded
    # MobileNet0.25 (hand-checked): the full conv, then depthwise/pointwise pairs at
    # strides 2, 2, 4, 4, 4, 4, 4 (stage1.4's depthwise conv reads stride 4, writes 8)
    stem = ['/backbone/stage1/stage1.0/conv/Conv'] + [
        f'/backbone/stage1/stage1.{i}/{kind}_conv/conv/Conv'
        for i in (1, 2, 3) for kind in ('depthwise', 'pointwise')] + [
        '/backbone/stage1/stage1.4/depthwise_conv/conv/Conv']
    assert convs == set(stem)
    # their LeakyReLUs too; no other activation; the softmax and the decoding stay FP32
    acts = {n.name for n in model.graph.node if n.op_type == 'LeakyRelu'} & excluded
    assert acts == {name.replace('conv/Conv', 'activate/LeakyRelu') for name in stem}
    kinds = {n.op_type for n in model.graph.node if n.name in excluded}
    assert {'Softmax', 'Exp', 'Mul', 'Add', 'Concat'} <= kinds
    assert 'Relu' not in kinds
    assert not {n.name for n in model.graph.node if n.op_type == 'Conv'} & excluded - set(stem)
    assert set(float_nodes(model, float_stride=0)).isdisjoint(
        n.name for n in model.graph.node if n.op_type == 'Conv')


def test_int8_finds_the_faces_fp32_finds_on_real_photos(int8_onnx, fp32_onnx):
    fp32, int8 = OnnxFaceDetector(fp32_onnx, threads=1), OnnxFaceDetector(int8_onnx, threads=1)
    images = real_photos()
    ref, got = [fp32(img) for img in images], [int8(img) for img in images]
    stats = compare_faces(ref, got, candidate_thr=INT8_SCORE_THR)
    assert stats['faces'] >= 18 + 2 + 30
    assert stats['found'] == stats['faces'], stats
    assert stats['min_iou'] >= MIN_IOU, stats
    assert stats['landmark_nme'] <= MAX_LANDMARK_NME, stats
    group = compare_faces(ref[2:3], got[2:3])
    assert group['faces'] == group['found'] == 18 and group['extra'] == 0


@pytest.mark.filterwarnings('ignore:calibration images. skipped')
def test_calibration_on_a_user_folder(tmp_path, converted_checkpoint, fp32_onnx):
    from tools.export_onnx import main
    folder = tmp_path / 'photos' / 'sub'
    folder.mkdir(parents=True)
    for name in ('grace_hopper', 'astronaut'):
        cv2.imwrite(str(folder / f'{name}.png'), load_image(bundled_photo(name)))
    (folder / 'notes.txt').write_text('not an image')
    (folder / 'broken.jpg').write_bytes(b'not a jpeg')
    with pytest.warns(UserWarning, match='skipped 1 unreadable'):
        assert len(read_image_folder(tmp_path / 'photos')) == 2
    out = tmp_path / 'int8_user.onnx'
    assert main([CONFIG, converted_checkpoint, '--out', str(out), '--decode',
                 '--int8', '--calib-images', str(tmp_path / 'photos')]) == 0
    image = load_image(bundled_photo('grace_hopper'))
    boxes, scores, _ = OnnxFaceDetector(str(out), threads=1)(image)
    ref_boxes, ref_scores, _ = OnnxFaceDetector(fp32_onnx, threads=1)(image)
    assert scores[0] >= 0.9 and box_iou(boxes[:1], ref_boxes[:1])[0, 0] >= MIN_IOU


@pytest.mark.parametrize('case', ['missing', 'empty', 'unreadable', 'without_int8'])
def test_bad_calibration_folder_gives_a_clear_error(tmp_path, capsys, case):
    from tools.export_onnx import main
    folder = tmp_path / 'calib'
    if case != 'missing':
        folder.mkdir()
    if case == 'unreadable':
        (folder / 'a.jpg').write_bytes(b'\xff\xd8 truncated')
    out = tmp_path / 'model.onnx'
    argv = [CONFIG, 'no-checkpoint-needed.pth', '--out', str(out),
            '--calib-images', str(folder)] + ([] if case == 'without_int8' else ['--int8'])
    if case == 'without_int8':
        with pytest.raises(SystemExit):
            main(argv)
        assert '--calib-images needs --int8' in capsys.readouterr().err
        return
    assert main(argv) == 2
    err = capsys.readouterr().err
    expected = {'missing': 'is not a folder', 'empty': 'no image file',
                'unreadable': 'could be read'}[case]
    assert expected in err and str(folder) in err
    assert not out.exists()


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    from tools.export_onnx import main
    out = tmp_path / 'mine.onnx'
    out.write_bytes(b'user data')
    assert main([CONFIG, 'no-checkpoint-needed.pth', '--out', str(out), '--int8']) == 2
    assert 'exists; pass --force' in capsys.readouterr().err
    assert out.read_bytes() == b'user data'
