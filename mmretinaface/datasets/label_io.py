"""Read and write WIDER FACE label files (pure Python + numpy, no mmdet).

Two formats are understood:

* RetinaFace labels (``label.txt`` as shipped with the RetinaFace training
  data): an image line ``# relative/path.jpg`` (optionally followed by the
  image width and height), then one line per face: ``x y w h`` followed, for
  training files, by ``K`` landmarks ``x y v`` and a trailing score. ``-1``
  coordinates mean "not annotated".
* The official ``wider_face_{train,val}_bbx_gt.txt``: an image name line, a
  face-count line, then one ``x1 y1 w h blur expression illumination invalid
  occlusion pose`` line per face (a count of 0 is followed by one line of
  zeros). It has no landmarks.

Both parsers return :class:`ImageLabels` records; every malformed line raises
``ValueError`` naming the file and the 1-based line number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

#: Number of fields of a face line in the official bbx_gt files.
WIDER_GT_FIELDS = 10


@dataclass
class FaceLabel:
    """One face as written in a label file (``x y w h`` box, raw landmarks)."""

    xywh: Tuple[float, float, float, float]
    #: ``(K, 3)`` raw ``x y v`` triplets, or ``None`` when the line has none.
    landmarks: Optional[np.ndarray] = None
    score: Optional[float] = None
    #: The official ``invalid`` flag (always False for RetinaFace labels).
    invalid: bool = False


@dataclass
class ImageLabels:
    """All faces of one image, with the image path relative to the image root."""

    path: str
    faces: List[FaceLabel] = field(default_factory=list)
    width: Optional[int] = None
    height: Optional[int] = None
    #: 1-based line number of the image line (for messages).
    lineno: int = 0


def _error(filename: str, lineno: int, reason: str, line: str) -> ValueError:
    return ValueError(f'Malformed label file {filename}, line {lineno}: {reason}: {line!r}')


def _parse_numbers(tokens: Sequence[str], filename: str, lineno: int,
                   line: str) -> List[float]:
    values = []
    for tok in tokens:
        try:
            value = float(tok)
        except ValueError:
            raise _error(filename, lineno, f'non-numeric value {tok!r}', line) from None
        if not math.isfinite(value):
            raise _error(filename, lineno, f'non-finite value {tok!r}', line)
        values.append(value)
    return values


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _numbered_lines(lines: Iterable[str]) -> List[Tuple[int, str]]:
    """Non-blank stripped lines with their 1-based line numbers."""
    return [(i, s) for i, raw in enumerate(lines, 1) if (s := raw.strip())]


def parse_retinaface_labels(lines: Iterable[str], num_keypoints: int = 5,
                            filename: str = '<labels>') -> List[ImageLabels]:
    """Parse a RetinaFace ``label.txt``.

    A face line has 4 fields (``x y w h``: val/test files), ``4 + 3K``
    (with landmarks) or ``5 + 3K`` (with landmarks and the trailing score of
    the training file). Anything else is a ``ValueError``.
    """
    k3 = 3 * num_keypoints
    allowed = (4, 4 + k3, 5 + k3)
    images: List[ImageLabels] = []
    current: Optional[ImageLabels] = None
    for lineno, line in _numbered_lines(lines):
        if line.startswith('#'):
            tokens = line[1:].split()
            if not tokens:
                raise _error(filename, lineno, 'image line without a path', line)
            width = height = None
            if len(tokens) >= 3 and tokens[-1].isdigit() and tokens[-2].isdigit():
                width, height = int(tokens[-2]), int(tokens[-1])
                tokens = tokens[:-2]
            current = ImageLabels(path=' '.join(tokens), width=width, height=height,
                                  lineno=lineno)
            images.append(current)
            continue
        if current is None:
            raise _error(filename, lineno, 'face line before any "# image" line', line)
        values = _parse_numbers(line.split(), filename, lineno, line)
        if len(values) not in allowed:
            raise _error(
                filename, lineno,
                f'expected {allowed[0]}, {allowed[1]} or {allowed[2]} fields '
                f'(x y w h [+ {num_keypoints} x y v landmarks [+ score]]), got {len(values)}',
                line)
        landmarks = None
        if len(values) > 4:
            landmarks = np.asarray(values[4:4 + k3], dtype=np.float32).reshape(-1, 3)
        score = values[-1] if len(values) == 5 + k3 else None
        current.faces.append(FaceLabel(xywh=tuple(values[:4]), landmarks=landmarks, score=score))
    return images


def parse_wider_bbx_gt(lines: Iterable[str], filename: str = '<labels>') -> List[ImageLabels]:
    """Parse an official ``wider_face_*_bbx_gt.txt`` file.

    A count of 0 may be followed by one placeholder line of numbers (the
    official files write ``0 0 0 0 0 0 0 0 0 0``); it is skipped.
    """
    rows = _numbered_lines(lines)
    images: List[ImageLabels] = []
    i = 0
    while i < len(rows):
        lineno, name = rows[i]
        tokens = name.split()
        if all(_is_number(t) for t in tokens):
            hint = ('does the previous face count match its face lines?' if images
                    else 'a face line before any image line?')
            raise _error(filename, lineno,
                         f'expected an image name line but got numbers ({hint})', name)
        image = ImageLabels(path=name, lineno=lineno)
        images.append(image)
        i += 1
        if i >= len(rows):
            raise _error(filename, lineno, 'image line is not followed by a face count', name)
        count_lineno, count_line = rows[i]
        try:
            count = int(count_line)
        except ValueError:
            count = -1
        if count < 0:
            raise _error(filename, count_lineno,
                         f'expected a non-negative face count for {name}', count_line)
        i += 1
        if count == 0:
            if i < len(rows) and all(_is_number(t) for t in rows[i][1].split()):
                i += 1  # the placeholder line of zeros
            continue
        for k in range(count):
            if i >= len(rows):
                raise _error(filename, count_lineno,
                             f'file ends after {k} of {count} faces for {name}', count_line)
            lineno, line = rows[i]
            tokens = line.split()
            if len(tokens) != WIDER_GT_FIELDS:
                raise _error(
                    filename, lineno,
                    f'expected {WIDER_GT_FIELDS} fields (x1 y1 w h blur expression '
                    'illumination invalid occlusion pose) for face '
                    f'{k + 1} of {count} of {name}, got {len(tokens)} '
                    '(does the face count match?)', line)
            values = _parse_numbers(tokens, filename, lineno, line)
            image.faces.append(FaceLabel(xywh=tuple(values[:4]), invalid=bool(values[7])))
            i += 1
    return images


def detect_label_format(lines: Sequence[str]) -> str:
    """``'retinaface'`` when the first non-blank line starts with ``#``, else ``'wider'``."""
    for line in lines:
        if line.strip():
            return 'retinaface' if line.lstrip().startswith('#') else 'wider'
    return 'retinaface'


def _fmt(value: float, decimals: int) -> str:
    text = f'{float(value):.{decimals}f}'
    if '.' in text:
        text = text.rstrip('0').rstrip('.')
    return '0' if text == '-0' else text


def format_retinaface_face(xywh: Sequence[float],
                           landmarks: Optional[np.ndarray] = None,
                           visible: Optional[np.ndarray] = None,
                           score: Optional[float] = None,
                           decimals: int = 2) -> str:
    """One RetinaFace face line.

    ``landmarks`` is ``(K, 2)``; points with ``visible == 0`` are written as
    ``-1 -1 -1``, visible ones as ``x y 0`` (the label format's third value
    is 0 for annotated points). ``score`` appends the training file's last
    column.
    """
    fields = [_fmt(v, decimals) for v in xywh]
    if landmarks is not None:
        pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
        vis = np.ones(len(pts)) if visible is None else np.asarray(visible).reshape(-1)
        for (x, y), v in zip(pts, vis):
            if v > 0:
                fields += [_fmt(x, decimals), _fmt(y, decimals), '0']
            else:
                fields += ['-1', '-1', '-1']
    if score is not None:
        fields.append(_fmt(score, decimals))
    return ' '.join(fields)
