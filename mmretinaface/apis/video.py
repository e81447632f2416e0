"""Faces in videos: frames of a file or camera through :class:`FaceInferencer`, written as a
video (faces drawn or anonymised) and JSON Lines; Ctrl-C stops cleanly.

Light to import (OpenCV and numpy): torch, mmengine and mmdet load on first use.
"""
import contextlib
import itertools
import json
import math
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

#: Output container -> default codec (all in opencv-python's bundled FFmpeg, offline).
FOURCC_BY_EXT = {'.mp4': 'mp4v', '.m4v': 'mp4v', '.mov': 'mp4v', '.avi': 'MJPG', '.mkv': 'FFV1'}
#: Frame rate written when the input reports none (cameras, some streams).
FALLBACK_FPS = 30.0
EXIT_INPUT, EXIT_SETUP, EXIT_INTERRUPTED = 1, 2, 130
WINDOW = 'mmretinaface video demo'
PathLike = Union[str, os.PathLike]


class VideoInputError(ValueError):
    """The input is missing, not a readable video, or has no frames."""


class SetupError(ValueError):
    """A bad option, output path or unavailable feature (reported before any frame)."""


def print_error(message: str) -> None:
    print(f'error: {message}', file=sys.stderr, flush=True)


class VideoSource:
    """Frames of a video file or camera (``'0'``, ``'1'``, ...) as BGR uint8 arrays, with
    clear errors.

    ``frame_count`` is what the container announces (``None`` for cameras or
    when unknown); ``ended_early`` is set when a file stops before that.
    """

    def __init__(self, source: str) -> None:
        self.name = source = str(source)
        self.is_camera = bool(re.fullmatch(r'\d+', source)) and not os.path.exists(source)
        if self.is_camera:
            self.capture = cv2.VideoCapture(int(source))
            if not self.capture.isOpened():
                raise VideoInputError(f'cannot open camera {source} (no such device, or in use)')
        else:
            if not os.path.exists(source):
                raise VideoInputError(f'video not found: {source}')
            if os.path.isdir(source):
                raise VideoInputError(f'{source} is a folder, expected a video file')
            self.capture = cv2.VideoCapture(source)
            if not self.capture.isOpened():
                raise VideoInputError(f'cannot read {source}: not a video OpenCV can decode')
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps_known = math.isfinite(fps) and 0 < fps <= 1000
        self.fps = float(fps) if self.fps_known else FALLBACK_FPS
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 and not self.is_camera else None
        self.frames_read, self.ended_early = 0, False
        self.started = time.monotonic()
        self.first = self.read()  # read now, so that an unusable input fails here
        if self.first is None:
            self.release()
            what = f'camera {source}' if self.is_camera else source
            raise VideoInputError(f'{what} has no readable frame (empty video, or a format '
                                  'OpenCV cannot decode)')
        self.height, self.width = self.first[1].shape[:2]

    def read(self) -> Optional[Tuple[float, np.ndarray]]:
        """The next ``(time in seconds, BGR frame)`` from the capture, ``None`` at the end."""
        ok, frame = self.capture.read()
        if not ok or frame is None or frame.size == 0:
            return None
        stamp = (time.monotonic() - self.started if self.is_camera
                 else self.frames_read / self.fps)
        self.frames_read += 1
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        return stamp, frame

    def frames(self) -> Iterator[Tuple[float, np.ndarray]]:
        """``(time in seconds, BGR frame)`` pairs from the first to the last readable."""
        item, self.first = self.first, None
        while item is not None:
            yield item
            item = self.read()
        self.ended_early = self.frame_count is not None and self.frames_read < self.frame_count

    def release(self) -> None:
        self.capture.release()


def video_codec(path: PathLike, fourcc: Optional[str] = None) -> str:
    """The FourCC to write ``path`` with: ``fourcc``, else the one for its extension."""
    suffix = Path(path).suffix
    code = fourcc or FOURCC_BY_EXT.get(suffix.lower())
    if code is None:
        raise SetupError(f'--out {path}: unknown video extension {suffix!r} (use '
                         f'{", ".join(sorted(FOURCC_BY_EXT))}, or give --fourcc)')
    if len(code) != 4:
        raise SetupError(f'--fourcc must be 4 characters, got {code!r}')
    return code


class VideoSink:
    """``cv2.VideoWriter`` for ``path`` (codec from the extension unless ``fourcc``).

    OpenCV's FFmpeg writer silently crops frames to even widths and heights
    (every codec, lossless ones too), so an odd-sized video is written one
    replicated column / row larger at the right / bottom instead: every input
    pixel is kept at its coordinates (``padded`` tells).
    """

    def __init__(self, path: PathLike, fps: float, width: int, height: int,
                 fourcc: Optional[str] = None) -> None:
        code = video_codec(path, fourcc)
        self.pad_x, self.pad_y = width % 2, height % 2
        self.size = (width + self.pad_x, height + self.pad_y)
        self.padded = bool(self.pad_x or self.pad_y)
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*code), fps, self.size)
        if not self.writer.isOpened():
            self.writer.release()
            container = Path(path).suffix or 'this container'
            raise SetupError(f'cannot write {path} with codec {code!r} at {width}x{height} '
                             f'(not in this OpenCV build for {container}; try .mp4 or .avi)')

    def write(self, frame: np.ndarray) -> None:
        if self.padded:
            frame = cv2.copyMakeBorder(frame, 0, self.pad_y, 0, self.pad_x,
                                       cv2.BORDER_REPLICATE)
        self.writer.write(frame)

    def release(self) -> None:
        self.writer.release()


def grow_boxes(bboxes: Sequence, margin: float, width: int, height: int) -> np.ndarray:
    """Integer pixel boxes ``[x1, y1, x2, y2)``: grown by ``margin`` x their width and height
    on each side, rounded outwards, clipped to the image (may be empty when off-image)."""
    boxes = np.asarray(bboxes, np.float64).reshape(-1, 4)
    size = boxes[:, 2:] - boxes[:, :2]
    grown = np.concatenate([np.floor(boxes[:, :2] - margin * size),
                            np.ceil(boxes[:, 2:] + margin * size)], axis=1)
    return np.clip(grown, 0, [width, height, width, height]).astype(np.int64)


def anonymize_faces(image: np.ndarray, bboxes: Sequence, method: str = 'gaussian',
                    margin: float = 0.2) -> np.ndarray:
    """A copy of ``image`` with each box (grown by ``margin``) blurred or pixelated.

    Both work at a fixed resolution relative to the box, so faces of any size
    are equally unrecognisable and the cost stays proportional to the box area:
    ``gaussian`` blurs with a sigma of 1/8 of the box's longer side (computed on
    a copy downscaled to 32 px, then upscaled bilinearly); ``pixelate`` shows
    the box as 10 blocks along its longer side.
    """
    from ..datasets.transforms.limit_size import limited_size
    if method not in ('gaussian', 'pixelate'):
        raise ValueError(f'unknown anonymisation {method!r} (gaussian or pixelate)')
    out = image.copy()
    height, width = image.shape[:2]
    for x1, y1, x2, y2 in grow_boxes(bboxes, margin, width, height):
        w, h = int(x2 - x1), int(y2 - y1)
        if w <= 0 or h <= 0:
            continue
        roi = out[y1:y2, x1:x2]
        small = cv2.resize(roi, limited_size(w, h, 32 if method == 'gaussian' else 10),
                           interpolation=cv2.INTER_AREA)
        if method == 'gaussian':
            small = cv2.GaussianBlur(small, (0, 0), sigmaX=max(small.shape[:2]) / 8,
                                     borderType=cv2.BORDER_REPLICATE)
        roi[:] = cv2.resize(small, (w, h), interpolation=(
            cv2.INTER_LINEAR if method == 'gaussian' else cv2.INTER_NEAREST))
    return out


def frame_record(index: int, stamp: float, faces: Dict[str, list]
                 ) -> Dict[str, Union[int, float, list]]:
    """The JSON line of one frame: index, time, then the image JSON's face fields."""
    return dict(frame=index, time=round(stamp, 6), **faces)


class StopRequests:
    """SIGINT / SIGTERM while active (a context manager; main thread only): the first asks
    the loop to stop after the frames in hand, a second raises KeyboardInterrupt at once,
    except while a batch is being written (``writing``), so the video and the JSON file
    always hold the same frames. ``request()`` is the handler, callable directly."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = self.writing = False
        self.previous: dict = {}

    def __enter__(self) -> 'StopRequests':
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self.request) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def request(self, signum: Optional[int] = None, frame=None) -> None:
        if self.requested and not self.writing:
            raise KeyboardInterrupt
        if not self.requested:
            print('\nstopping after the frames in hand (Ctrl-C again to stop at once)',
                  file=sys.stderr, flush=True)
        self.requested = True


@dataclass
class VideoRun:
    """What :func:`process_video` did: exit status, frames written, seconds spent on them
    (wall and this process's CPU time, from the first frame read to the last written)."""
    status: int
    frames: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def process_video(inferencer, source: VideoSource, out: Optional[PathLike] = None,
                  json_path: Optional[PathLike] = None, *, blur: Optional[str] = None,
                  blur_margin: float = 0.2, score_thr: float = 0.5, batch_size: int = 4,
                  max_frames: Optional[int] = None, show: bool = False,
                  fourcc: Optional[str] = None) -> VideoRun:
    """Run ``inferencer`` (a :class:`FaceInferencer`) on ``source``, ``batch_size`` frames at
    a time, and write ``out`` (faces drawn, or anonymised with ``blur``: ``'gaussian'`` or
    ``'pixelate'``), ``json_path`` (one :func:`frame_record` per line, faces scoring >=
    ``score_thr``) and/or ``show`` them; the two files always hold the same frames.

    Reports on stderr (a progress bar, warnings, errors) and stdout (the summary line);
    Ctrl-C / SIGTERM stop after the batch in hand (:class:`StopRequests`, exit status 130).
    """
    from mmengine.utils import ProgressBar

    from .inferencer import instances_to_dict
    if not source.fps_known:
        print(f'warning: {source.name} reports no frame rate; writing {FALLBACK_FPS:g} '
              'frames/s', file=sys.stderr)
    total = min(source.frame_count, max_frames or source.frame_count) if source.frame_count else 0
    with contextlib.ExitStack() as stack:
        writer = json_file = None
        if out is not None:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            try:
                writer = VideoSink(out, source.fps, source.width, source.height, fourcc)
            except SetupError as err:
                print_error(str(err))
                return VideoRun(EXIT_SETUP)
            stack.callback(writer.release)
            if writer.padded:
                print(f'warning: {source.width}x{source.height} frames are written as '
                      f'{writer.size[0]}x{writer.size[1]} (OpenCV writes even sizes only; '
                      'one replicated column / row added at the right / bottom, '
                      'coordinates unchanged)', file=sys.stderr)
        if json_path is not None:
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            json_file = stack.enter_context(open(json_path, 'w'))
        stop = stack.enter_context(StopRequests())
        bar = ProgressBar(total, file=sys.stderr)
        start, start_cpu = time.perf_counter(), time.process_time()
        draw = not blur and (writer is not None or show)
        done, status, reason = 0, 0, ''

        def write(batch: List[Tuple[float, np.ndarray]], result: dict) -> bool:
            """Write (and show) one processed batch; True when the preview asks to quit."""
            drawings = result.get('visualization') or [None] * len(batch)
            quit_key = False
            for offset, ((stamp, frame), sample, drawing) in enumerate(
                    zip(batch, result['predictions'], drawings)):
                record = frame_record(done + offset, stamp,
                                      instances_to_dict(sample.pred_instances, score_thr))
                if blur:
                    shown = anonymize_faces(frame, record['bboxes'], blur, blur_margin)
                else:
                    shown = frame if drawing is None else np.ascontiguousarray(drawing[..., ::-1])
                if writer is not None:
                    writer.write(shown)
                if json_file is not None:
                    json_file.write(json.dumps(record) + '\n')
                if show:
                    cv2.imshow(WINDOW, shown)
                    quit_key = quit_key or (cv2.waitKey(1) & 0xFF) in (ord('q'), 27)
            if json_file is not None:
                json_file.flush()
            return quit_key

        try:
            frames_in = itertools.islice(source.frames(), max_frames)
            for batch in iter(lambda: list(itertools.islice(frames_in, batch_size)), []):
                frames = [frame for _, frame in batch]
                bad = next((i for i, f in enumerate(frames)
                            if f.shape[:2] != (source.height, source.width)), None)
                if bad is not None:
                    h, w = frames[bad].shape[:2]
                    reason = (f'frame {done + bad} is {w}x{h}, the video started at '
                              f'{source.width}x{source.height}; stopped there')
                    status, frames, batch = EXIT_INPUT, frames[:bad], batch[:bad]
                if frames:
                    result = inferencer(frames, batch_size=len(frames), return_vis=draw,
                                        return_datasamples=True, vis_max_size=0,
                                        pred_score_thr=score_thr)
                    stop.writing = True
                    quit_key = write(batch, result)
                    stop.writing = False
                    done += len(frames)
                    if not bar.task_num:
                        bar.file.write('\r')  # mmengine's count-only line does not rewind
                    bar.update(len(frames))
                    if quit_key:
                        break
                if status or stop.requested:
                    break
        except KeyboardInterrupt:
            stop.requested = True
        finally:
            run = VideoRun(EXIT_INTERRUPTED if stop.requested else status, done,
                           time.perf_counter() - start, time.process_time() - start_cpu)
            print(file=sys.stderr, flush=True)
    if status:
        print_error(reason)
    elif source.ended_early:
        print(f'warning: {source.name} ended after {source.frames_read} of the '
              f'{source.frame_count} frames it announces (truncated or damaged file); '
              'the outputs hold the frames that were read', file=sys.stderr)
    written = ', '.join(str(p) for p in (out, json_path) if p is not None)
    print(f'{"interrupted after" if stop.requested else "done:"} {done} frame(s), '
          f'{run.frames_per_second:.1f} frames/s' + (f' -> {written}' if written else ''))
    return run
