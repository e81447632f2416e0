"""Video: ``demo/video_demo.py`` frames/s (decode, batched FaceInferencer, draw or blur,
encode, JSON Lines) against the image path on the same decoded frames."""
from __future__ import annotations

import statistics
from typing import Dict, List

from ..common import ROOT, photos, setup_child
from ..report import markdown_table, ratio
from .base import Case, Context

#: The demo's outputs per variant (besides the input video and ``--overwrite``).
VARIANTS = {
    'json': ['--json', '{tmp}/faces.jsonl'],
    'drawn': ['--out', '{tmp}/drawn.mp4', '--json', '{tmp}/faces.jsonl'],
    'blurred': ['--out', '{tmp}/blurred.mp4', '--blur', '--json', '{tmp}/faces.jsonl'],
}


def make_video(path: str, width: int, height: int, frames: int, fps: float = 25.0) -> None:
    """An mp4v video panning over two bundled photos (two faces in most frames)."""
    import cv2
    import numpy as np
    board = np.full((int(height * 1.3), int(width * 1.5), 3), 110, np.uint8)
    side = int(height * 0.8)
    left, right = photos(side, side, 2)
    board[20:20 + side, 20:20 + side] = left
    board[40:40 + side, -side - 20:-20] = right
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), fps, (width, height))
    for i in range(frames):
        dx = i * (board.shape[1] - width) // max(1, frames - 1)
        dy = i * (board.shape[0] - height) // max(1, frames - 1)
        writer.write(np.ascontiguousarray(board[dy:dy + height, dx:dx + width]))
    writer.release()


def _load_demo():
    import importlib.util
    spec = importlib.util.spec_from_file_location('video_demo', ROOT / 'demo' / 'video_demo.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure_video(p: dict) -> dict:
    """Frames/s of each demo variant (``VideoRun``: first frame to last written, model
    loading excluded) and of ``FaceInferencer`` on the decoded frames, interleaved rounds;
    per wall second and per CPU second of the process (the latter barely moves when other
    jobs share the cores)."""
    setup_child(p)
    import contextlib
    import io
    import tempfile
    import time

    import cv2

    from mmretinaface.apis import FaceInferencer
    demo = _load_demo()
    names = [*VARIANTS, 'image_path']
    rates: Dict[str, List[float]] = {name: [] for name in names}
    cpu_rates: Dict[str, List[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix='mmretinaface-video-') as tmp:
        source = f'{tmp}/in.mp4'
        make_video(source, p['width'], p['height'], p['frames'])
        capture = cv2.VideoCapture(source)
        decoded = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            decoded.append(frame)
        capture.release()
        inferencer = FaceInferencer(device=p['device'], show_progress=False)
        for _ in range(p['rounds']):
            for name, options in VARIANTS.items():
                argv = [source, *(o.format(tmp=tmp) for o in options), '--overwrite',
                        '--device', p['device'], '--batch-size', str(p['batch'])]
                with contextlib.redirect_stdout(io.StringIO()), \
                        contextlib.redirect_stderr(io.StringIO()) as err:
                    run = demo.process(demo.parse_args(argv))
                if run.status != 0:
                    raise RuntimeError(f'video demo {name} failed: {err.getvalue()}')
                rates[name].append(run.frames_per_second)
                cpu_rates[name].append(run.frames / run.cpu_seconds)
            start, start_cpu = time.perf_counter(), time.process_time()
            for frame in decoded:
                inferencer([frame], return_datasamples=True)
            rates['image_path'].append(len(decoded) / (time.perf_counter() - start))
            cpu_rates['image_path'].append(len(decoded) / (time.process_time() - start_cpu))
    return dict(fps={k: statistics.median(v) for k, v in rates.items()},
                cpu_fps={k: statistics.median(v) for k, v in cpu_rates.items()},
                frames=len(decoded), n=p['rounds'])


class VideoCase(Case):
    """``demo/video_demo.py`` on a panning video: frames/s per output kind."""

    name = 'video'
    modes = dict(full=dict(sizes=[(640, 480), (1280, 720)], frames=32, rounds=3, batch=4),
                 quick=dict(sizes=[(320, 240)], frames=8, rounds=1, batch=4))

    def run(self, ctx: Context) -> dict:
        rows = []
        for w, h in ctx.params['sizes']:
            result = ctx.job(measure_video, f'video demo {w}x{h}', width=w, height=h,
                             frames=ctx.params['frames'], rounds=ctx.params['rounds'],
                             batch=ctx.params['batch'])
            rows.append(dict(width=w, height=h, result=result))
        return dict(rows=rows, batch=ctx.params['batch'])

    def findings(self, result: dict) -> List[str]:
        out = []
        for row in result['rows']:
            fps = row['result'].get('cpu_fps')
            if not fps:
                continue
            size = f"{row['width']}x{row['height']}"
            draw_ms = 1e3 * (1 / fps['drawn'] - 1 / fps['json'])
            out.append(f'- Video demo {size}, per CPU second: {fps["json"]:.1f} frames with '
                       f'JSON only ({ratio(fps["json"], fps["image_path"]):.2f}x the image '
                       f'path on the same frames), {fps["blurred"]:.1f} blurred, '
                       f'{fps["drawn"]:.1f} drawn (drawing and encoding add {draw_ms:.0f} ms '
                       'of CPU per frame).')
        return out

    def render(self, result: dict) -> List[str]:
        rows = [(f"{r['width']}x{r['height']}", per, *(r['result'][key][v] for v in
                 ('json', 'blurred', 'drawn', 'image_path')), r['result']['frames'],
                 r['result']['n'])
                for r in result['rows'] if 'fps' in r['result']
                for per, key in (('wall second', 'fps'), ('CPU second', 'cpu_fps'))]
        if not rows:
            return []
        return ['## 4. Video demo (frames/s)', '',
                markdown_table(['size', 'frames per', '`--json`', '`--out --blur --json`',
                                '`--out --json` (drawn)', 'image path (FaceInferencer per '
                                'decoded frame, batch 1)', 'frames', 'n'], rows), '',
                f"`demo/video_demo.py` with `--batch-size {result['batch']}` on an mp4v video "
                'panning over two bundled photos (two faces in most frames): decoding, '
                'inference, drawing (the image visualizer) or blurring, mp4v encoding and '
                'JSON Lines, from the first frame read to the last written (model loading '
                'excluded); median of `n` interleaved rounds, per wall second and per CPU '
                'second of the process (all its threads: with other jobs on the cores the '
                'wall numbers drop, the CPU ones barely move).', '']
