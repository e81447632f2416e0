"""Read and write predictions in the official WIDER FACE submission layout.

Layout: ``<root>/<event>/<name>.txt``, one file per image::

    <name>                 image name (the reference writer omits the extension)
    <count>                number of boxes
    x y w h score          one line per box, pixels, raw (un-normalised) score

The reader also accepts a first line with the extension and/or a path prefix
(``0--Parade/0_Parade_marchingband_1_20.jpg``), as the official python tool
does, but the name must be the file's own name.
"""
import math
import os
import os.path as osp
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from .widerface_protocol import check_predictions


def _first_line_matches(first_line: str, stem: str) -> bool:
    name = first_line.strip().replace('\\', '/').split('/')[-1]
    return name == stem or osp.splitext(name)[0] == stem


def _parse_fast(body: List[str]) -> Optional[np.ndarray]:
    """numpy's C parser for the common, well-formed case; ``None`` if anything is off."""
    if not any(line.strip() for line in body):
        return np.zeros((0, 5))
    try:
        boxes = np.loadtxt(body, dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        return None
    if boxes.shape[1] != 5 or not np.isfinite(boxes).all():
        return None
    return boxes


def _parse_lines(path: str, body: List[str]) -> np.ndarray:
    """Line-by-line parse that names the first bad line."""
    rows = []
    for lineno, line in enumerate(body, start=3):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 5:
                raise ValueError
            values = [float(v) for v in fields]
        except ValueError:
            raise ValueError(f'{path}, line {lineno}: expected "x y w h score", '
                             f'got {line!r}') from None
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f'{path}, line {lineno}: NaN or infinite value in {line!r}')
        rows.append(values)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def read_prediction_file(path: str) -> Tuple[str, np.ndarray]:
    """Parse one prediction txt; returns ``(image name, (N, 5) float64)``.

    Raises:
        ValueError: naming the file (and line) for a name that does not match
            the file name, a bad count line, a malformed box line, a count that
            disagrees with the number of boxes, or NaN / inf values.
    """
    stem = osp.splitext(osp.basename(path))[0]
    with open(path, encoding='utf-8') as f:
        lines = f.read().splitlines()
    if len(lines) < 2:
        raise ValueError(f'{path}: expected a name line and a count line, '
                         f'got {len(lines)} line(s)')
    if not _first_line_matches(lines[0], stem):
        raise ValueError(f'{path}: first line names image {lines[0].strip()!r}, '
                         f'but the file is for {stem!r}')
    try:
        count = int(lines[1].strip())
    except ValueError:
        raise ValueError(f'{path}, line 2: expected the number of boxes, '
                         f'got {lines[1]!r}') from None
    body = lines[2:]
    boxes = _parse_fast(body)
    if boxes is None:  # something is off: parse line by line for a precise error
        boxes = _parse_lines(path, body)
    if count != len(boxes):
        raise ValueError(f'{path}: count line says {count} boxes, found {len(boxes)}')
    return stem, boxes


def load_widerface_predictions(pred_dir: str) -> Dict[str, np.ndarray]:
    """Read every ``<event>/<name>.txt`` under ``pred_dir`` -> ``{'<event>/<name>': (N, 5)}``.

    Only ``.txt`` files inside event folders are read; other entries are skipped.
    Missing events or images are simply absent from the result (the evaluation
    then treats them as having no detections and warns).
    """
    if not osp.isdir(pred_dir):
        raise FileNotFoundError(f'prediction folder not found: {pred_dir}')
    preds: Dict[str, np.ndarray] = {}
    for event in sorted(os.listdir(pred_dir)):
        event_dir = osp.join(pred_dir, event)
        if not osp.isdir(event_dir):
            continue
        for fname in sorted(os.listdir(event_dir)):
            if not fname.endswith('.txt'):
                continue
            name, boxes = read_prediction_file(osp.join(event_dir, fname))
            preds[f'{event}/{name}'] = boxes
    return preds


def write_widerface_predictions(out_dir: str, predictions: Mapping[str, np.ndarray],
                                box_fmt: str = '{:.3f}', score_fmt: str = '{:.6f}',
                                keys: Optional[Iterable[str]] = None) -> int:
    """Write ``{'<event>/<name>': (N, 5) x y w h score}`` in the official layout.

    Boxes are written in descending score order (the official tool assumes
    it). Returns the number of files written. ``keys`` restricts / orders the
    images written (default: all).

    Raises:
        ValueError: a key without an event folder, or NaN scores.
    """
    line_fmt = ' '.join([box_fmt] * 4 + [score_fmt])
    count = 0
    for key in (predictions if keys is None else keys):
        event, sep, name = key.rpartition('/')
        if not sep or not event or not name:
            raise ValueError(f'prediction key {key!r} is not "<event>/<name>"')
        pred = check_predictions(predictions[key], key)
        pred = pred[np.argsort(-pred[:, 4], kind='stable')]
        event_dir = osp.join(out_dir, event)
        os.makedirs(event_dir, exist_ok=True)
        lines = [name, str(len(pred))]
        lines.extend(line_fmt.format(*row) for row in pred.tolist())
        with open(osp.join(event_dir, name + '.txt'), 'w', encoding='utf-8') as f:
            f.write('\n'.join(lines) + '\n')
        count += 1
    return count
