#!/usr/bin/env python
"""Detect faces and their 5 landmarks in a video: draw them, blur them, or export them per frame.

INPUT is a video file OpenCV can read, or a camera index (0, 1, ...; with --show
for a live preview). Frames go through FaceInferencer (the image path: same
pre-processing, model and post-processing), --batch-size frames at a time.

Outputs (at least one of --out, --json, --show):
  --out OUT.mp4     the video with boxes, scores and landmarks drawn as the image
                    demo draws them (or, with --blur, every face anonymised and
                    nothing drawn); same size and frame rate as the input.
                    Codec by extension: .mp4/.m4v/.mov mp4v, .avi MJPG, .mkv FFV1
                    (lossless); --fourcc overrides it.
  --json OUT.jsonl  one line per frame: {"frame": i, "time": seconds, "bboxes":
                    [[x1,y1,x2,y2],...], "scores", "labels", "keypoints": [[[x,y] x5],...]}
                    (faces scoring >= --score-thr, like the image demo's JSON).
A progress bar shows frames/s on stderr. Ctrl-C (or SIGTERM) finishes the frames
in hand and stops: OUT plays up to the last processed frame and the JSON file
holds the same frames (exit code 130). A second Ctrl-C stops at once, still
closing both files. Existing outputs are not replaced without --overwrite.

Exit codes: 0 done, 1 unreadable input (missing, not a video, no frames) or a
frame of another size mid-stream, 2 bad option / model / device / output,
130 interrupted.

Example:
  python demo/video_demo.py clip.mp4 --out clip_faces.mp4 --json clip_faces.jsonl
  python demo/video_demo.py clip.mp4 --out clip_anon.mp4 --blur pixelate --score-thr 0.3
  python demo/video_demo.py 0 --show            # camera 0, live preview (q or Esc quits)
"""
import argparse
import contextlib
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
from typing import IO, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from mmretinaface import argtypes

#: Output container -> default codec (all in opencv-python's bundled FFmpeg, offline).
FOURCC_BY_EXT = {'.mp4': 'mp4v', '.m4v': 'mp4v', '.mov': 'mp4v', '.avi': 'MJPG', '.mkv': 'FFV1'}
#: Frame rate written when the input reports none (cameras, some streams).
FALLBACK_FPS = 30.0
EXIT_INPUT, EXIT_SETUP, EXIT_INTERRUPTED = 1, 2, 130
WINDOW = 'mmretinaface video demo'


class VideoInputError(ValueError):
    """The input is missing, not a readable video, or has no frames."""


class SetupError(ValueError):
    """A bad option, output path or unavailable feature (reported before any frame)."""


# --------------------------------------------------------------------------- reading
class VideoSource:
    """Frames of a video file or camera as BGR uint8 arrays, with clear errors.

    ``frame_count`` is what the container announces (``None`` for cameras or
    when unknown); ``ended_early`` is set when a file stops before that.
    """

    def __init__(self, source: str) -> None:
        self.name = source
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
        self.frames_read = 0
        self.ended_early = False
        self.started = time.monotonic()
        self._first = self._read()
        if self._first is None:
            self.release()
            what = f'camera {source}' if self.is_camera else source
            raise VideoInputError(f'{what} has no readable frame (empty video, or a format '
                                  'OpenCV cannot decode)')
        self.height, self.width = self._first[1].shape[:2]

    def _read(self) -> Optional[Tuple[float, np.ndarray]]:
        ok, frame = self.capture.read()
        if not ok or frame is None or frame.size == 0:
            return None
        stamp = (time.monotonic() - self.started if self.is_camera
                 else self.frames_read / self.fps)
        self.frames_read += 1
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        return stamp, frame

    def frames(self, limit: Optional[int] = None) -> Iterator[Tuple[float, np.ndarray]]:
        """``(time in seconds, BGR frame)`` pairs; at most ``limit`` of them."""
        produced = 0
        while limit is None or produced < limit:
            item, self._first = self._first, None  # the frame read to check the input
            if item is None:
                item = self._read()
            if item is None:
                if self.frame_count is not None and self.frames_read < self.frame_count:
                    self.ended_early = True
                return
            produced += 1
            yield item

    def release(self) -> None:
        self.capture.release()


def batched(items: Iterator, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# --------------------------------------------------------------------------- writing
def video_codec(path: Path, fourcc: Optional[str] = None) -> str:
    """The FourCC to write ``path`` with: ``fourcc``, else the one for its extension."""
    code = fourcc or FOURCC_BY_EXT.get(path.suffix.lower())
    if code is None:
        raise SetupError(f'--out {path}: unknown video extension {path.suffix!r} (use '
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

    def __init__(self, path: Path, fps: float, width: int, height: int,
                 fourcc: Optional[str] = None) -> None:
        code = video_codec(path, fourcc)
        self.pad_x, self.pad_y = width % 2, height % 2
        self.size = (width + self.pad_x, height + self.pad_y)
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*code), fps, self.size)
        if not self.writer.isOpened():
            self.writer.release()
            raise SetupError(f'cannot write {path} with codec {code!r} at {width}x{height} '
                             f'(not in this OpenCV build for {path.suffix or "this container"}'
                             '; try .mp4 or .avi)')

    @property
    def padded(self) -> bool:
        return bool(self.pad_x or self.pad_y)

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
    lo = np.floor(boxes[:, :2] - margin * size)
    hi = np.ceil(boxes[:, 2:] + margin * size)
    grown = np.concatenate([lo, hi], axis=1)
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
    out = image.copy()
    height, width = image.shape[:2]
    for x1, y1, x2, y2 in grow_boxes(bboxes, margin, width, height):
        w, h = x2 - x1, y2 - y1
        if w <= 0 or h <= 0:
            continue
        roi = out[y1:y2, x1:x2]
        if method == 'gaussian':
            small = _resize_longer(roi, 32, cv2.INTER_AREA)
            small = cv2.GaussianBlur(small, (0, 0), sigmaX=max(small.shape[:2]) / 8,
                                     borderType=cv2.BORDER_REPLICATE)
            roi[:] = cv2.resize(small, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)
        elif method == 'pixelate':
            small = _resize_longer(roi, 10, cv2.INTER_AREA)
            roi[:] = cv2.resize(small, (int(w), int(h)), interpolation=cv2.INTER_NEAREST)
        else:
            raise ValueError(f"unknown anonymisation {method!r} (gaussian or pixelate)")
    return out


def _resize_longer(image: np.ndarray, longer: int, interpolation: int) -> np.ndarray:
    h, w = image.shape[:2]
    ratio = longer / max(h, w)
    size = (max(1, int(round(w * ratio))), max(1, int(round(h * ratio))))
    return cv2.resize(image, size, interpolation=interpolation)


def frame_record(index: int, stamp: float, faces: Dict[str, list]
                 ) -> Dict[str, Union[int, float, list]]:
    """The JSON line of one frame: index, time, then the image JSON's face fields."""
    return dict(frame=index, time=round(stamp, 6), **faces)


# ------------------------------------------------------------------------- run control
class Progress:
    """One updating stderr line: frames done (of the total when known), frames/s, ETA."""

    def __init__(self, total: Optional[int], stream: Optional[IO] = None,
                 interval: float = 0.5) -> None:
        self.total, self.interval = total, interval
        self.stream = sys.stderr if stream is None else stream
        self.done = 0
        self.start = time.monotonic()
        self.start_cpu = time.process_time()
        self._last = -math.inf
        self._shown = -1  # frames count on the line printed last

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    @property
    def cpu_seconds(self) -> float:
        """CPU time of this process (all its threads) since the start."""
        return time.process_time() - self.start_cpu

    @property
    def rate(self) -> float:
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else 0.0

    def update(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._print()

    def close(self) -> None:
        if self._shown != self.done:
            self._print()
        print(file=self.stream, flush=True)

    def _print(self) -> None:
        elapsed = self.elapsed
        rate = self.rate
        if self.total:
            width = 30
            filled = int(width * min(self.done, self.total) / self.total)
            eta = (self.total - self.done) / rate if rate > 0 else math.inf
            text = (f'[{">" * filled}{" " * (width - filled)}] {self.done}/{self.total} '
                    f'frames, {rate:.1f} frames/s, elapsed: {elapsed:.0f}s')
            if math.isfinite(eta):
                text += f', ETA: {eta:.0f}s'
        else:
            text = f'{self.done} frames, {rate:.1f} frames/s, elapsed: {elapsed:.0f}s'
        print(f'\r{text}', end='', file=self.stream, flush=True)
        self._shown = self.done


class StopRequests:
    """SIGINT / SIGTERM while active: the first asks the loop to stop after the frames in
    hand, a second raises KeyboardInterrupt at once, except while a batch is being written
    (``writing``), so the video and the JSON file always hold the same frames."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.writing = False
        self._previous: dict = {}

    def __enter__(self) -> 'StopRequests':
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.requested and not self.writing:
            raise KeyboardInterrupt
        if not self.requested:
            print('\nstopping after the frames in hand (Ctrl-C again to stop at once)',
                  file=sys.stderr, flush=True)
        self.requested = True


# --------------------------------------------------------------------------- CLI
def _margin(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 2:
        raise argparse.ArgumentTypeError(f'expected a fraction of the box size in [0, 2], '
                                         f'got {value}')
    return number


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('input', help='video file, or camera index (0, 1, ...)')
    parser.add_argument('--out', type=Path, help='output video (boxes and landmarks drawn, '
                        'or faces blurred with --blur)')
    parser.add_argument('--json', type=Path, help='output JSON Lines file, one line per frame')
    parser.add_argument('--blur', nargs='?', const='gaussian', choices=('gaussian', 'pixelate'),
                        help='anonymise the faces in --out instead of drawing them '
                        '(default method: gaussian)')
    parser.add_argument('--blur-margin', type=_margin, default=0.2,
                        help='grow each box by this fraction of its width / height on every '
                        'side before blurring (default 0.2: hair, ears and chin)')
    parser.add_argument('--score-thr', type=float, default=0.5,
                        help='faces scoring at least this are written, drawn or blurred '
                        '(default 0.5; lower it, e.g. 0.3, to anonymise more eagerly)')
    parser.add_argument('--batch-size', type=argtypes.int_at_least(1), default=4,
                        help='frames per forward pass (default 4)')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    parser.add_argument('--max-frames', type=argtypes.int_at_least(1),
                        help='stop after this many frames')
    parser.add_argument('--show', action='store_true',
                        help='show the frames in a window while processing (q or Esc stops)')
    parser.add_argument('--fourcc', help='codec of --out as a FourCC, e.g. mp4v, MJPG, FFV1, '
                        'XVID (default: from the extension)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace --out / --json when they exist')
    argtypes.add_model_options(parser, 'frames')
    args = parser.parse_args(argv)
    if args.out is None and args.json is None and not args.show:
        parser.error('nothing to do: give --out, --json and/or --show')
    if args.blur and args.out is None and not args.show:
        parser.error('--blur anonymises the faces of --out (or --show): give --out')
    return args


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse outputs that would replace the input or (without --overwrite) existing files."""
    outputs = [p for p in (args.out, args.json) if p is not None]
    if len(outputs) == 2 and outputs[0].resolve() == outputs[1].resolve():
        raise SetupError('--out and --json are the same file')
    for path in outputs:
        if os.path.exists(args.input) and path.resolve() == Path(args.input).resolve():
            raise SetupError(f'{path} is the input video; choose another output')
        if path.is_dir():
            raise SetupError(f'{path} is a folder; expected a file name')
        if path.exists() and not args.overwrite:
            raise SetupError(f'{path} exists; pass --overwrite to replace it')
    if args.out is not None:
        video_codec(args.out, args.fourcc)


def check_show() -> None:
    """--show needs a GUI build of OpenCV and a display; say so before loading anything
    (without a display, OpenCV's Qt backend aborts the whole process on the first window)."""
    gui = re.search(r'GUI:\s*(\S+)', cv2.getBuildInformation())
    if gui is not None and gui.group(1).upper() == 'NONE':
        raise SetupError('--show needs an OpenCV build with GUI support (opencv-python, '
                         'not opencv-python-headless)')
    if sys.platform.startswith('linux') and not os.environ.get('DISPLAY'):
        raise SetupError('--show needs a display (DISPLAY is not set); write the video with '
                         '--out instead')
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error as err:
        raise SetupError(f'--show: cannot open a window: {err.err}') from None


def build_inferencer(args: argparse.Namespace):
    """The image path's FaceInferencer (``--pyramid``: ``pyramid=True``)."""
    from mmretinaface.apis import FaceInferencer
    kwargs = dict(device=args.device, show_progress=False, optimize=not args.no_fuse)
    if args.max_size is not None:
        kwargs['max_size'] = args.max_size
    return FaceInferencer(args.config, args.weights, pyramid=args.pyramid, **kwargs)


def _print_error(message: str) -> None:
    print(f'error: {message}', file=sys.stderr, flush=True)


@dataclass
class VideoRun:
    """What :func:`process` did: exit status, frames written, seconds spent on them (wall
    and this process's CPU time, from the first frame read to the last written; model
    loading excluded)."""
    status: int
    frames: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def main(argv=None) -> int:
    return process(parse_args(argv)).status


def process(args: argparse.Namespace) -> VideoRun:
    """Run the demo for parsed ``args`` (:func:`parse_args`); errors are reported on stderr
    and in the returned status."""
    try:
        check_outputs(args)
        if args.show:
            check_show()
        source = VideoSource(args.input)
    except SetupError as err:
        _print_error(str(err))
        return VideoRun(EXIT_SETUP)
    except VideoInputError as err:
        _print_error(str(err))
        return VideoRun(EXIT_INPUT)
    try:
        return _run(args, source)
    finally:
        source.release()
        if args.show:
            cv2.destroyAllWindows()


def _run(args: argparse.Namespace, source: VideoSource) -> VideoRun:
    if not source.fps_known:
        print(f'warning: {source.name} reports no frame rate; writing {FALLBACK_FPS:g} '
              'frames/s', file=sys.stderr)
    try:
        inferencer = build_inferencer(args)
    except (SetupError, FileNotFoundError, RuntimeError, ValueError, ImportError) as err:
        _print_error(str(err))
        return VideoRun(EXIT_SETUP)
    total = source.frame_count
    if total is not None and args.max_frames is not None:
        total = min(total, args.max_frames)
    with contextlib.ExitStack() as stack:
        writer = None
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            try:
                writer = VideoSink(args.out, source.fps, source.width, source.height,
                                   args.fourcc)
            except SetupError as err:
                _print_error(str(err))
                return VideoRun(EXIT_SETUP)
            stack.callback(writer.release)
            if writer.padded:
                print(f'warning: {source.width}x{source.height} frames are written as '
                      f'{writer.size[0]}x{writer.size[1]} (OpenCV writes even sizes only; '
                      'one replicated column / row added at the right / bottom, '
                      'coordinates unchanged)', file=sys.stderr)
        json_file = None
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            json_file = stack.enter_context(open(args.json, 'w'))
        stop = stack.enter_context(StopRequests())
        progress = Progress(total)
        draw = not args.blur and (writer is not None or args.show)
        status, reason = 0, ''
        try:
            for batch in batched(source.frames(args.max_frames), args.batch_size):
                frames = [frame for _, frame in batch]
                bad = next((i for i, f in enumerate(frames)
                            if f.shape[:2] != (source.height, source.width)), None)
                if bad is not None:
                    h, w = frames[bad].shape[:2]
                    reason = (f'frame {progress.done + bad} is {w}x{h}, the video started at '
                              f'{source.width}x{source.height}; stopped there')
                    status = EXIT_INPUT
                    frames, batch = frames[:bad], batch[:bad]
                if frames:
                    result = inferencer(frames, batch_size=len(frames), return_vis=draw,
                                        return_datasamples=True, vis_max_size=0,
                                        pred_score_thr=args.score_thr)
                    stop.writing = True
                    quit_key = _write_batch(args, batch, result, progress.done, writer,
                                            json_file)
                    stop.writing = False
                    progress.update(len(frames))
                    if quit_key:
                        break
                if status or stop.requested:
                    break
        except KeyboardInterrupt:
            stop.requested = True
        finally:
            progress.close()
    if status:
        _print_error(reason)
    elif source.ended_early:
        print(f'warning: {source.name} ended after {source.frames_read} of the '
              f'{source.frame_count} frames it announces (truncated or damaged file); '
              'the outputs hold the frames that were read', file=sys.stderr)
    written = ', '.join(str(p) for p in (args.out, args.json) if p is not None)
    state = 'interrupted after' if stop.requested else 'done:'
    print(f'{state} {progress.done} frame(s), {progress.rate:.1f} frames/s'
          + (f' -> {written}' if written else ''))
    return VideoRun(EXIT_INTERRUPTED if stop.requested else status, progress.done,
                    progress.elapsed, progress.cpu_seconds)


def _write_batch(args: argparse.Namespace, batch: List[Tuple[float, np.ndarray]],
                 result: dict, first_index: int, writer: Optional[VideoSink],
                 json_file: Optional[IO]) -> bool:
    """Write (and show) one processed batch; True when the preview window asks to quit."""
    from mmretinaface.apis import instances_to_dict
    drawings = result.get('visualization') or [None] * len(batch)
    quit_key = False
    for offset, ((stamp, frame), sample, drawing) in enumerate(
            zip(batch, result['predictions'], drawings)):
        faces = instances_to_dict(sample.pred_instances, args.score_thr)
        record = frame_record(first_index + offset, stamp, faces)
        if args.blur:
            shown = anonymize_faces(frame, record['bboxes'], args.blur, args.blur_margin)
        else:
            shown = np.ascontiguousarray(drawing[..., ::-1]) if drawing is not None else frame
        if writer is not None:
            writer.write(shown)
        if json_file is not None:
            json_file.write(json.dumps(record) + '\n')
        if args.show:
            cv2.imshow(WINDOW, shown)
            quit_key = quit_key or (cv2.waitKey(1) & 0xFF) in (ord('q'), 27)
    if json_file is not None:
        json_file.flush()
    return quit_key


if __name__ == '__main__':
    sys.exit(main())
