"""The demos' shared argparse checks: accepted values, the messages, and a light import."""
import argparse
import contextlib
import io
import subprocess
import sys

import pytest

from mmretinaface import argtypes


def parse_error(parse_args, argv) -> str:
    """The message argparse prints when ``argv`` is refused (it exits with code 2)."""
    err = io.StringIO()
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(err):
        parse_args(argv)
    assert exit_info.value.code == 2
    return err.getvalue()


def test_device():
    for good in ('cpu', 'cuda', 'cuda:0', 'cuda:12'):
        assert argtypes.device(good) == good
    for bad in ('tpu', 'CUDA', 'cuda:', 'cuda:x', 'cpu:0', ''):
        with pytest.raises(argparse.ArgumentTypeError, match="expected cpu, cuda or cuda:N, got '"):
            argtypes.device(bad)


def test_int_at_least():
    count, size = argtypes.int_at_least(1), argtypes.int_at_least(0)
    assert count('1') == 1 and count('64') == 64 and size('0') == 0
    for parse, bad in ((count, '0'), (count, '-3'), (size, '-1'), (count, 'four'),
                       (count, '1.5'), (size, '')):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected an integer >= [01], got '"):
            parse(bad)


def test_scales_and_model_options():
    assert argtypes.scales('crowd') == 'crowd'
    assert argtypes.scales('1,2') == (1.0, 2.0) and argtypes.scales('1.5') == (1.5, )
    for bad in ('1,-2', '0', '1,,2', 'Crowd', ''):
        with pytest.raises(argparse.ArgumentTypeError, match='expected single, pyramid, crowd'):
            argtypes.scales(bad)
    parser = argparse.ArgumentParser()
    argtypes.add_model_options(parser)
    options = argtypes.inferencer_options(parser.parse_args(
        ['--backend', 'onnxruntime', '--int8', '--scales', '1,1.5', '--max-size', '0']))
    assert options == dict(model=None, weights=None, max_size=0, backend='onnxruntime',
                           int8=True, scales=(1.0, 1.5), pyramid=False, flip=False,
                           optimize=True)
    assert argtypes.inferencer_options(parser.parse_args([]))['max_size'] is None


def test_both_demos_refuse_with_the_same_messages():
    from demo.image_demo import parse_args as image_args
    from demo.video_demo import parse_args as video_args
    message = "argument --batch-size: expected an integer >= 1, got 'four'"
    assert message in parse_error(image_args, ['x.jpg', '--batch-size', 'four'])
    assert message in parse_error(video_args, ['x.mp4', '--json', 'x.jsonl',
                                               '--batch-size', 'four'])
    assert "argument --max-size: expected an integer >= 0, got '-1'" in parse_error(
        video_args, ['x.mp4', '--json', 'x.jsonl', '--max-size', '-1'])
    for parse_args, argv in ((image_args, ['x.jpg']),
                             (video_args, ['x.mp4', '--json', 'x.jsonl'])):
        assert "argument --device: expected cpu, cuda or cuda:N, got 'tpu'" in parse_error(
            parse_args, [*argv, '--device', 'tpu'])


def test_import_is_light():
    code = ('import sys, mmretinaface.argtypes; '
            'print(sorted({"torch", "mmengine", "mmdet", "cv2"} & set(sys.modules)))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == '[]'
