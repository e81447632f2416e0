"""mmretinaface.apis.video and its command line, demo/video_demo.py, end to end on short
videos made from real photos (panning, zooming).

Inputs are written with FFV1 (lossless), so the frames the demo decodes are exactly
the frames made here; outputs written losslessly (.mkv) are compared pixel for pixel
with the image path (FaceInferencer on the same frame), lossy ones (.mp4) with a
codec tolerance.
"""
import contextlib
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT

SCORE_THR = 0.5
FPS = 12.5
FRAME_W, FRAME_H = 320, 240


@pytest.fixture(scope='module')
def video_demo():
    from demo import video_demo
    return video_demo


@pytest.fixture(scope='module')
def video():
    from mmretinaface.apis import video
    return video


@pytest.fixture(scope='module')
def inferencer(converted_checkpoint):
    from mmretinaface.apis import FaceInferencer
    return FaceInferencer(weights=converted_checkpoint, device='cpu', show_progress=False)


@pytest.fixture(autouse=True)
def _one_model_per_module(monkeypatch, video_demo, request):
    """Each main() parses and checks as usual, but the model of (config, weights, options)
    is built once per module (building is the slow part of a tiny video)."""
    real = video_demo.build_inferencer

    def cached(args):
        key = (args.config, args.weights, args.device, args.no_fuse, args.max_size,
               args.pyramid)
        if key not in _MODELS:
            _MODELS[key] = real(args)
        return _MODELS[key]

    monkeypatch.setattr(video_demo, 'build_inferencer', cached)


_MODELS: dict = {}


# --------------------------------------------------------------------------- helpers
def photo(name: str) -> np.ndarray:
    from mmretinaface.apis import bundled_photo, load_image
    return load_image(bundled_photo(name))


def canvas() -> np.ndarray:
    """Grace Hopper and the astronaut side by side on grey (faces ~100 and ~60 px)."""
    grace = cv2.resize(photo('grace_hopper'), (256, 300), interpolation=cv2.INTER_AREA)
    astro = cv2.resize(photo('astronaut'), (256, 256), interpolation=cv2.INTER_AREA)
    out = np.full((320, 540, 3), 120, np.uint8)
    out[10:310, 10:266] = grace
    out[40:296, 276:532] = astro
    return out


def pan_frames(count: int) -> list:
    """(frame, (dx, dy)) windows moving right and down over the canvas."""
    board = canvas()
    frames = []
    for i in range(count):
        dx = int(round(i * (board.shape[1] - FRAME_W) / max(1, count - 1)))
        dy = int(round(i * (board.shape[0] - FRAME_H) / max(1, count - 1)))
        frames.append((np.ascontiguousarray(board[dy:dy + FRAME_H, dx:dx + FRAME_W]),
                       (dx, dy)))
    return frames


def zoom_frames(count: int) -> list:
    """Crops shrinking around Grace Hopper's face, resized to the frame size (zoom in)."""
    board = canvas()
    cx, cy = 140, 120
    frames = []
    for i in range(count):
        half_w = 200 - 60 * i / max(1, count - 1)
        half_h = half_w * FRAME_H / FRAME_W
        x1, y1 = int(max(0, cx - half_w)), int(max(0, cy - half_h))
        crop = board[y1:int(cy + half_h), x1:int(cx + half_w)]
        frames.append(cv2.resize(crop, (FRAME_W, FRAME_H), interpolation=cv2.INTER_AREA))
    return frames


def write_video(path: Path, frames, fps: float = FPS, fourcc: str = 'FFV1') -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f'{fourcc} not available in this OpenCV build'
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def write_mjpeg_avi(path: Path, frames, fps: int = 10) -> Path:
    """A minimal Motion-JPEG AVI (RIFF: avih, strh, strf, movi, idx1) of any frame size.

    OpenCV's writer rounds sizes down to even numbers, so odd-sized videos (which
    cameras and other tools do make) are written here by hand.
    """
    height, width = frames[0].shape[:2]
    jpegs = [cv2.imencode('.jpg', frame, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
             for frame in frames]

    def chunk(fourcc: bytes, data: bytes) -> bytes:
        return fourcc + struct.pack('<I', len(data)) + data + b'\0' * (len(data) % 2)

    def riff_list(kind: bytes, fourcc: bytes, data: bytes) -> bytes:
        return kind + struct.pack('<I', len(data) + 4) + fourcc + data

    biggest = max(map(len, jpegs))
    avih = struct.pack('<14I', 1_000_000 // fps, 0, 0, 0x10, len(jpegs), 0, 1, biggest,
                       width, height, 0, 0, 0, 0)
    strh = (b'vidsMJPG' + struct.pack('<IHHIIIIIIII4h', 0, 0, 0, 0, 1, fps, 0, len(jpegs),
                                      biggest, 0xFFFFFFFF, 0, 0, 0, width, height))
    strf = struct.pack('<IiiHH4sIiiII', 40, width, height, 1, 24, b'MJPG',
                       width * height * 3, 0, 0, 0, 0)
    header = riff_list(b'LIST', b'hdrl', chunk(b'avih', avih) + riff_list(
        b'LIST', b'strl', chunk(b'strh', strh) + chunk(b'strf', strf)))
    movi, index, offset = b'', b'', 4
    for jpeg in jpegs:
        index += b'00dc' + struct.pack('<III', 0x10, offset, len(jpeg))
        piece = chunk(b'00dc', jpeg)
        movi += piece
        offset += len(piece)
    body = header + riff_list(b'LIST', b'movi', movi) + chunk(b'idx1', index)
    path.write_bytes(riff_list(b'RIFF', b'AVI ', body))
    return path


def read_video(path: Path):
    """(frames, fps, (width, height)) as OpenCV decodes ``path``."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f'{path} does not open'
    fps = capture.get(cv2.CAP_PROP_FPS)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames, fps, size


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_demo(video_demo, *args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = video_demo.main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def image_path_faces(inferencer, frame: np.ndarray) -> dict:
    from mmretinaface.apis import instances_to_dict
    (sample, ) = inferencer([frame], return_datasamples=True)['predictions']
    return instances_to_dict(sample.pred_instances, SCORE_THR)


def box_mask(shape, boxes) -> np.ndarray:
    mask = np.zeros(shape[:2], bool)
    for x1, y1, x2, y2 in np.clip(np.asarray(boxes).reshape(-1, 4), 0, None):
        mask[y1:y2, x1:x2] = True
    return mask


# ------------------------------------------------------------------- drawn + JSON
@pytest.fixture(scope='module')
def pan_run(tmp_path_factory, video_demo, converted_checkpoint):
    tmp = tmp_path_factory.mktemp('pan')
    made = pan_frames(7)
    source = write_video(tmp / 'pan.mkv', [f for f, _ in made])
    code, stdout, stderr = run_demo(
        video_demo, source, '--out', tmp / 'drawn.mkv', '--json', tmp / 'faces.jsonl',
        '--weights', converted_checkpoint, '--batch-size', 3, '--score-thr', SCORE_THR)
    return dict(tmp=tmp, made=made, source=source, code=code, stdout=stdout, stderr=stderr)


def test_counts_size_and_rate_equal_the_input(pan_run):
    assert pan_run['code'] == 0, pan_run['stderr']
    frames, fps, size = read_video(pan_run['tmp'] / 'drawn.mkv')
    records = read_jsonl(pan_run['tmp'] / 'faces.jsonl')
    assert len(frames) == len(records) == len(pan_run['made']) == 7
    assert size == (FRAME_W, FRAME_H) and fps == pytest.approx(FPS)
    assert [r['frame'] for r in records] == list(range(7))
    assert [r['time'] for r in records] == pytest.approx([i / FPS for i in range(7)])
    assert '] 7/7, ' in pan_run['stderr']  # the progress bar's last state
    summary = re.search(r'done: 7 frame\(s\), ([\d.]+) frames/s -> (.*)', pan_run['stdout'])
    assert float(summary.group(1)) > 0
    assert summary.group(2) == f"{pan_run['tmp'] / 'drawn.mkv'}, {pan_run['tmp'] / 'faces.jsonl'}"


def test_json_equals_the_image_path_on_each_decoded_frame(pan_run, inferencer):
    records = read_jsonl(pan_run['tmp'] / 'faces.jsonl')
    decoded, _, _ = read_video(pan_run['source'])
    for (made, _), frame, record in zip(pan_run['made'], decoded, records):
        assert np.array_equal(frame, made)  # FFV1: the demo saw exactly these pixels
        assert set(record) == {'frame', 'time', 'bboxes', 'scores', 'labels', 'keypoints'}
        expected = image_path_faces(inferencer, frame)
        assert len(record['scores']) == len(expected['scores'])
        for key in ('bboxes', 'keypoints', 'scores'):  # batch of 3 vs single image
            np.testing.assert_allclose(record[key], expected[key], atol=1e-3)
        assert record['labels'] == expected['labels']


def test_faces_follow_the_camera_pan(pan_run, inferencer):
    """Independent of the demo's code: the whole canvas holds both faces; each frame is a
    window moved by (dx, dy), so its faces are the canvas faces moved back by (dx, dy)."""
    whole = image_path_faces(inferencer, canvas())
    assert len(whole['scores']) == 2
    for (_, (dx, dy)), record in zip(pan_run['made'],
                                         read_jsonl(pan_run['tmp'] / 'faces.jsonl')):
        expected = np.asarray(whole['bboxes']) - [dx, dy, dx, dy]
        inside = ((expected[:, 0] >= 0) & (expected[:, 1] >= 0)
                  & (expected[:, 2] <= FRAME_W) & (expected[:, 3] <= FRAME_H))
        found = np.asarray(record['bboxes']).reshape(-1, 4)
        for box in expected[inside]:
            errors = np.abs(found - box).max(axis=1) if len(found) else [np.inf]
            assert min(errors) < 4.0, (dx, dy, box, found)


def test_drawing_is_the_image_visualizer(pan_run, inferencer):
    drawn, _, _ = read_video(pan_run['tmp'] / 'drawn.mkv')
    for (frame, _), out in zip(pan_run['made'], drawn):
        expected = inferencer([frame], return_vis=True, pred_score_thr=SCORE_THR,
                              vis_max_size=0)['visualization'][0][..., ::-1]
        # lossless output: the same drawing; a few anti-aliased edge pixels may differ by
        # one level (boxes from a batch of 3 vs one image differ by ~1e-5 px)
        diff = np.abs(out.astype(int) - expected)
        assert diff.max() <= 2 and (diff > 0).mean() < 1e-3
        assert np.abs(out.astype(int) - frame).max() > 100  # something was drawn


def test_zoom_and_mp4_output(tmp_path, video_demo, converted_checkpoint, inferencer):
    frames = zoom_frames(5)
    source = write_video(tmp_path / 'zoom.mkv', frames)
    code, _, stderr = run_demo(video_demo, source, '--out', tmp_path / 'zoom.mp4', '--json',
                               tmp_path / 'zoom.jsonl', '--weights', converted_checkpoint)
    assert code == 0, stderr
    decoded, fps, size = read_video(tmp_path / 'zoom.mp4')
    records = read_jsonl(tmp_path / 'zoom.jsonl')
    assert len(decoded) == len(records) == 5 and size == (FRAME_W, FRAME_H)
    assert fps == pytest.approx(FPS)
    widths = []
    for frame, record in zip(frames, records):
        expected = image_path_faces(inferencer, frame)
        np.testing.assert_allclose(record['bboxes'], expected['bboxes'], atol=1e-3)
        widths.append(max(b[2] - b[0] for b in record['bboxes']))
    assert all(b > a for a, b in zip(widths, widths[1:]))  # the face grows as we zoom in
    # mp4v is lossy: the image path's drawings through the same codec decode the same
    drawings = [inferencer([frame], return_vis=True, pred_score_thr=SCORE_THR,
                           vis_max_size=0)['visualization'][0][..., ::-1] for frame in frames]
    encoded, _, _ = read_video(write_video(tmp_path / 'expected.mp4',
                                           [np.ascontiguousarray(d) for d in drawings],
                                           fourcc='mp4v'))
    for out, expected, drawing in zip(decoded, encoded, drawings):
        codec_noise = np.abs(expected.astype(float) - drawing).mean()
        assert np.abs(out.astype(float) - expected).mean() < 0.1 * codec_noise


# -------------------------------------------------------------------------- blur
@pytest.mark.parametrize('method', ['gaussian', 'pixelate'])
def test_blur_hides_the_faces_and_keeps_every_other_pixel(pan_run, video_demo, video, method,
                                                          converted_checkpoint, inferencer):
    tmp = pan_run['tmp']
    out = tmp / f'blur_{method}.mkv'
    code, _, stderr = run_demo(video_demo, pan_run['source'], '--out', out, '--json',
                               tmp / f'blur_{method}.jsonl', '--blur', method,
                               '--weights', converted_checkpoint, '--batch-size', 2)
    assert code == 0, stderr
    blurred, _, _ = read_video(out)
    records = read_jsonl(tmp / f'blur_{method}.jsonl')
    assert records == read_jsonl(tmp / 'faces.jsonl')  # same detections as the drawn run
    assert len(blurred) == len(records) == len(pan_run['made'])
    for (frame, _), out_frame, record in zip(pan_run['made'], blurred, records):
        grown = video.grow_boxes(record['bboxes'], 0.2, FRAME_W, FRAME_H)
        outside = ~box_mask(frame.shape, grown)
        assert np.array_equal(out_frame[outside], frame[outside])
        for box in np.asarray(record['bboxes']).round().astype(int):
            inside = box_mask(frame.shape, box)
            assert np.abs(out_frame[inside].astype(float) - frame[inside]).mean() > 5.0
        # anonymised: the detector no longer finds a face there
        assert image_path_faces(inferencer, out_frame)['scores'] == []


def test_blur_with_a_lossy_codec_leaves_the_rest_as_the_codec_does(pan_run, video_demo, video,
                                                                  converted_checkpoint):
    tmp = pan_run['tmp']
    code, _, stderr = run_demo(video_demo, pan_run['source'], '--out', tmp / 'blur.mp4',
                               '--blur', '--weights', converted_checkpoint)
    assert code == 0, stderr
    blurred, _, _ = read_video(tmp / 'blur.mp4')
    plain, _, _ = read_video(write_video(tmp / 'plain.mp4', [f for f, _ in pan_run['made']],
                                         fourcc='mp4v'))
    records = read_jsonl(tmp / 'faces.jsonl')
    assert len(blurred) == len(plain) == len(records)
    for out_frame, ref, (frame, _), record in zip(blurred, plain, pan_run['made'], records):
        grown = video.grow_boxes(record['bboxes'], 0.2, FRAME_W, FRAME_H)
        # one 16-px macroblock around the blurred areas may change with them
        far = ~box_mask(frame.shape, grown + [-16, -16, 16, 16])
        codec_noise = np.abs(ref[far].astype(float) - frame[far]).mean()  # ~4 levels
        assert np.abs(out_frame[far].astype(float) - ref[far]).mean() < 0.75 * codec_noise
        assert (np.abs(out_frame[far].astype(float) - frame[far]).mean()
                < 1.1 * codec_noise)
        inside = box_mask(frame.shape, np.asarray(record['bboxes']).round().astype(int))
        assert np.abs(out_frame[inside].astype(float) - frame[inside]).mean() > 5.0


def test_grow_boxes_hand_checked(video):
    grown = video.grow_boxes([[10, 20, 30, 60], [-5, 90.5, 15, 99]], 0.25, 100, 100)
    # 20x40 box grown by 5 / 10 px; the second is clipped and rounded outwards
    assert grown.tolist() == [[5, 10, 35, 70], [0, 88, 20, 100]]
    assert video.grow_boxes([], 0.2, 10, 10).shape == (0, 4)


def test_anonymize_only_touches_the_grown_box(video):
    image = photo('astronaut')
    box = [[180, 60, 300, 210]]
    out = video.anonymize_faces(image, box, 'pixelate', margin=0.1)
    x1, y1, x2, y2 = video.grow_boxes(box, 0.1, 512, 512)[0]
    mask = box_mask(image.shape, [(x1, y1, x2, y2)])
    assert np.array_equal(out[~mask], image[~mask])
    region = out[y1:y2, x1:x2]
    # 10 blocks along the longer side: few distinct colours, constant inside a block
    assert len(np.unique(region.reshape(-1, 3), axis=0)) <= 10 * 10
    assert len(np.unique(region[:, 0], axis=0)) <= 10
    blurred = video.anonymize_faces(image, box, 'gaussian', margin=0.1)
    assert np.array_equal(blurred[~mask], image[~mask])
    gradient = np.abs(np.diff(blurred[y1:y2, x1:x2].astype(float), axis=1)).mean()
    assert gradient < 0.25 * np.abs(np.diff(image[y1:y2, x1:x2].astype(float), axis=1)).mean()


# --------------------------------------------------------------------- bad input
def test_odd_sized_frames_are_kept_whole(tmp_path, video_demo, video, converted_checkpoint):
    frames = [cv2.resize(f, (161, 121), interpolation=cv2.INTER_AREA) for f in zoom_frames(3)]
    assert read_video(write_video(tmp_path / 'odd.mkv', frames))[2] == (160, 120)  # why
    source = write_mjpeg_avi(tmp_path / 'odd.avi', frames)
    decoded, fps, size = read_video(source)
    assert size == (161, 121) and len(decoded) == 3 and fps == 10
    assert np.abs(decoded[0].astype(float) - frames[0]).mean() < 6  # JPEG, 4:2:0 chroma
    code, _, stderr = run_demo(video_demo, source, '--out', tmp_path / 'out.mkv', '--blur',
                               '--json', tmp_path / 'out.jsonl', '--weights',
                               converted_checkpoint)
    assert code == 0, stderr
    assert '161x121 frames are written as 162x122' in stderr
    out, _, size = read_video(tmp_path / 'out.mkv')
    assert size == (162, 122) and len(out) == len(read_jsonl(tmp_path / 'out.jsonl')) == 3
    for frame, written, record in zip(decoded, out, read_jsonl(tmp_path / 'out.jsonl')):
        outside = ~box_mask(frame.shape, video.grow_boxes(record['bboxes'], 0.2, 161, 121))
        assert np.array_equal(written[:121, :161][outside], frame[outside])
        assert np.array_equal(written[:, 161], written[:, 160])  # the replicated column


def test_bad_inputs_give_clear_errors(tmp_path, video_demo, converted_checkpoint):
    weights = ('--weights', converted_checkpoint)
    out = tmp_path / 'out.mp4'
    code, _, err = run_demo(video_demo, tmp_path / 'missing.mp4', '--out', out, *weights)
    assert code == 1 and f'video not found: {tmp_path / "missing.mp4"}' in err
    text = tmp_path / 'notes.mp4'
    text.write_text('not a video\n' * 100)
    code, _, err = run_demo(video_demo, text, '--out', out, *weights)
    assert code == 1 and f'cannot read {text}' in err and 'not a video' in err
    code, _, err = run_demo(video_demo, tmp_path, '--out', out, *weights)
    assert code == 1 and 'is a folder' in err
    empty = tmp_path / 'empty.avi'
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 48))
    writer.release()  # a valid container without a frame
    code, _, err = run_demo(video_demo, empty, '--out', out, *weights)
    assert code == 1 and 'has no readable frame' in err
    code, _, err = run_demo(video_demo, '7', '--out', out, *weights)
    assert code == 1 and 'cannot open camera 7' in err
    assert not out.exists()  # nothing written for unusable inputs


def test_outputs_are_checked_before_anything_runs(tmp_path, video_demo, converted_checkpoint):
    source = write_video(tmp_path / 'in.mkv', zoom_frames(2))
    weights = ('--weights', converted_checkpoint)
    existing = tmp_path / 'mine.mp4'
    existing.write_bytes(b'user data')
    code, _, err = run_demo(video_demo, source, '--out', existing, *weights)
    assert code == 2 and 'exists; pass --overwrite' in err
    assert existing.read_bytes() == b'user data'
    code, _, err = run_demo(video_demo, source, '--out', source, '--overwrite', *weights)
    assert code == 2 and 'is the input video' in err
    code, _, err = run_demo(video_demo, source, '--out', tmp_path / 'x.gif', *weights)
    assert code == 2 and "unknown video extension '.gif'" in err
    code, _, err = run_demo(video_demo, source, '--out', tmp_path / 'x.mp4', '--pyramid',
                            *weights)
    assert code == 0, err
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        video_demo.main([str(source)])  # nothing to do
    with pytest.raises(SystemExit) as refused, contextlib.redirect_stderr(io.StringIO()) as err:
        video_demo.main([str(source), '--json', str(tmp_path / 'x.jsonl'), '--device', 'tpu'])
    assert refused.value.code == 2
    assert "argument --device: expected cpu, cuda or cuda:N, got 'tpu'" in err.getvalue()
    code, _, err = run_demo(video_demo, source, '--json', existing, '--overwrite', *weights)
    assert code == 0 and len(read_jsonl(existing)) == 2


def test_show_without_a_display_is_refused_up_front(tmp_path, video_demo, monkeypatch):
    # OpenCV's Qt backend would abort the process on the first window without a display
    monkeypatch.delenv('DISPLAY', raising=False)
    monkeypatch.setattr(sys, 'platform', 'linux')
    code, _, err = run_demo(video_demo, tmp_path / 'any.mp4', '--show')
    assert code == 2 and '--show needs a display (DISPLAY is not set)' in err


def test_truncated_file_keeps_the_frames_that_decode(tmp_path, video_demo,
                                                     converted_checkpoint):
    full = write_video(tmp_path / 'full.avi', zoom_frames(12), fourcc='MJPG')
    cut = tmp_path / 'cut.avi'
    data = full.read_bytes()
    cut.write_bytes(data[:len(data) * 6 // 10])
    readable = len(read_video(cut)[0])
    assert 0 < readable < 12
    code, _, err = run_demo(video_demo, cut, '--out', tmp_path / 'cut_out.avi', '--json',
                            tmp_path / 'cut.jsonl', '--weights', converted_checkpoint)
    assert code == 0, err
    assert f'ended after {readable} of the 12 frames' in err
    assert len(read_video(tmp_path / 'cut_out.avi')[0]) == readable
    assert len(read_jsonl(tmp_path / 'cut.jsonl')) == readable


def test_a_frame_of_another_size_stops_the_run_there(tmp_path, video_demo, monkeypatch,
                                                      converted_checkpoint):
    """OpenCV's FFmpeg backend rescales such frames itself; other capture backends (cameras,
    GStreamer) may hand them over, so the demo stops cleanly at the first one."""
    frames = zoom_frames(5)
    frames[3] = cv2.resize(frames[3], (160, 120))

    class Capture:  # a capture backend that hands over frames as they come
        def __init__(self, source):
            self.frames = list(frames)

        def isOpened(self):
            return True

        def get(self, prop):
            return {cv2.CAP_PROP_FPS: 10.0, cv2.CAP_PROP_FRAME_COUNT: 5.0}.get(prop, 0.0)

        def read(self):
            return (True, self.frames.pop(0)) if self.frames else (False, None)

        def release(self):
            pass

    source = tmp_path / 'stream.avi'
    source.write_bytes(b'')
    monkeypatch.setattr(cv2, 'VideoCapture', Capture)
    code, stdout, err = run_demo(video_demo, source, '--out', tmp_path / 'out.mkv', '--json',
                                 tmp_path / 'out.jsonl', '--batch-size', 2, '--weights',
                                 converted_checkpoint)
    monkeypatch.undo()
    assert code == 1 and 'frame 3 is 160x120, the video started at 320x240' in err
    assert len(read_video(tmp_path / 'out.mkv')[0]) == len(read_jsonl(tmp_path / 'out.jsonl'))
    assert len(read_jsonl(tmp_path / 'out.jsonl')) == 3 and 'done: 3 frame(s)' in stdout


def test_max_frames(tmp_path, video_demo, converted_checkpoint):
    source = write_video(tmp_path / 'in.mkv', zoom_frames(5))
    code, _, err = run_demo(video_demo, source, '--json', tmp_path / 'a.jsonl', '--max-frames',
                            3, '--batch-size', 2, '--weights', converted_checkpoint)
    assert code == 0, err
    assert [r['frame'] for r in read_jsonl(tmp_path / 'a.jsonl')] == [0, 1, 2]


# --------------------------------------------------------------------- interrupts
def test_ctrl_c_finishes_the_batch_in_hand(tmp_path, video, inferencer):
    """A SIGINT raised in the second batch's inference: that batch is finished and written,
    then the run stops (exit 130); two SIGINTs in the third batch's inference (another run)
    drop that batch. Both leave equal frame and JSON counts and the handlers found before.

    ``signal.raise_signal`` runs the Python handler before it returns (main thread), so the
    signals land at a known point whatever else runs in the process."""
    def interrupting(signals_at: dict, installed: list):
        """The inferencer, raising SIGINT ``signals_at[n]`` times in its n-th call."""
        def call(*args, **kwargs):
            installed.append(signal.getsignal(signal.SIGINT))
            for _ in range(signals_at.get(len(installed), 0)):
                signal.raise_signal(signal.SIGINT)
            return inferencer(*args, **kwargs)
        return call

    source = write_video(tmp_path / 'in.mkv', zoom_frames(9))
    before = {sig: signal.getsignal(sig) for sig in video.StopRequests.SIGNALS}
    for signals_at, expected in (({2: 1}, 4), ({3: 2}, 4)):
        installed: list = []
        out, log = tmp_path / f'out{len(signals_at)}_{expected}.mp4', tmp_path / 'out.jsonl'
        capture = video.VideoSource(str(source))
        try:
            stdout, stderr = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                run = video.process_video(interrupting(signals_at, installed), capture, out,
                                          log, batch_size=2)
        finally:
            capture.release()
        assert run.status == video.EXIT_INTERRUPTED and run.frames == expected
        assert 'stopping after the frames in hand' in stderr.getvalue()
        assert f'interrupted after {expected} frame(s)' in stdout.getvalue()
        assert len(read_video(out)[0]) == len(read_jsonl(log)) == expected
        assert [r['frame'] for r in read_jsonl(log)] == list(range(expected))
        # StopRequests handled SIGINT during the run, and the earlier handlers are back
        assert all(isinstance(getattr(h, '__self__', None), video.StopRequests)
                   for h in installed) and len(installed) == max(signals_at)
        assert {sig: signal.getsignal(sig) for sig in video.StopRequests.SIGNALS} == before


def test_a_second_request_waits_for_the_batch_being_written(video):
    stop = video.StopRequests()
    with contextlib.redirect_stderr(io.StringIO()) as err:
        stop.request()
    assert stop.requested and 'Ctrl-C again to stop at once' in err.getvalue()
    stop.writing = True
    stop.request()  # the video and the JSON file get the whole batch
    stop.writing = False
    with pytest.raises(KeyboardInterrupt):
        stop.request()


@pytest.mark.slow
def test_sigint_to_a_running_demo_leaves_a_playable_video(tmp_path, converted_checkpoint):
    frames = [cv2.resize(f, (160, 120), interpolation=cv2.INTER_AREA) for f in zoom_frames(8)]
    source = write_video(tmp_path / 'long.mkv', frames * 40)  # 320 frames
    out, log = tmp_path / 'out.mp4', tmp_path / 'out.jsonl'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / 'demo' / 'video_demo.py'), str(source), '--out', str(out),
         '--json', str(log), '--weights', converted_checkpoint, '--batch-size', '2'],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and len(log.read_text().splitlines()) >= 6:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    records = read_jsonl(log)
    decoded, fps, size = read_video(out)
    assert 6 <= len(records) < 320
    assert len(decoded) == len(records) and size == (160, 120) and fps == pytest.approx(FPS)
    assert [r['frame'] for r in records] == list(range(len(records)))
    assert f'interrupted after {len(records)} frame(s)' in stdout
