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
A progress bar on stderr shows the frames done and their rate. Ctrl-C (or SIGTERM)
finishes the frames in hand and stops: OUT plays up to the last processed frame and
the JSON file holds the same frames (exit code 130). A second Ctrl-C stops at once,
still closing both files. Existing outputs are not replaced without --overwrite.
The work is mmretinaface.apis.video's (process_video); this file is its command line.

Exit codes: 0 done, 1 unreadable input (missing, not a video, no frames) or a
frame of another size mid-stream, 2 bad option / model / device / output,
130 interrupted.

Example:
  python demo/video_demo.py clip.mp4 --out clip_faces.mp4 --json clip_faces.jsonl
  python demo/video_demo.py clip.mp4 --out clip_anon.mp4 --blur pixelate --score-thr 0.3
  python demo/video_demo.py 0 --show            # camera 0, live preview (q or Esc quits)
"""
import argparse
import os
import sys
from pathlib import Path

from mmretinaface import argtypes


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
    parser.add_argument('--device', type=argtypes.device, default='cpu',
                        help='cpu, cuda or cuda:N')
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
    """Refuse outputs that would replace the input or (without --overwrite) existing files,
    and a video extension without a codec."""
    from mmretinaface.apis.video import SetupError, video_codec
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
    import re

    import cv2

    from mmretinaface.apis.video import WINDOW, SetupError
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
    """The image path's FaceInferencer for the model options (backend, INT8, pyramid, ...)."""
    from mmretinaface.apis import FaceInferencer
    return FaceInferencer(device=args.device, show_progress=False,
                          **argtypes.inferencer_options(args))


def main(argv=None) -> int:
    args = parse_args(argv)
    import cv2

    from mmretinaface.apis import video
    try:
        check_outputs(args)
        if args.show:
            check_show()
        source = video.VideoSource(args.input)
    except video.SetupError as err:
        video.print_error(str(err))
        return video.EXIT_SETUP
    except video.VideoInputError as err:
        video.print_error(str(err))
        return video.EXIT_INPUT
    try:
        try:
            inferencer = build_inferencer(args)
        except (FileNotFoundError, RuntimeError, ValueError, ImportError) as err:
            video.print_error(str(err))
            return video.EXIT_SETUP
        return video.process_video(
            inferencer, source, args.out, args.json, blur=args.blur, blur_margin=args.blur_margin,
            score_thr=args.score_thr, batch_size=args.batch_size, max_frames=args.max_frames,
            show=args.show, fourcc=args.fourcc).status
    finally:
        source.release()
        if args.show:
            cv2.destroyAllWindows()


if __name__ == '__main__':
    sys.exit(main())
