"""Small, dependency-light helpers for ``tools/benchmark.py``.

Timing on a shared machine is noisy, so the helpers measure the variants being
compared *interleaved* (A, B, C, A, B, C, ...) and report medians: a burst of
load from another process then hits every variant alike instead of one of them.
Nothing here imports torch at module level.
"""
from __future__ import annotations

import math
import os
import platform
import resource
import statistics
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np


# ----------------------------------------------------------------------------- timing
def interleaved_timings(fns: Mapping[str, Callable[[], Any]],
                        repeats: int = 10,
                        warmup: int = 1,
                        min_repeats: int = 3,
                        budget_s: Optional[float] = None,
                        sync: Optional[Callable[[], None]] = None,
                        clock: Callable[[], float] = time.perf_counter) -> Dict[str, List[float]]:
    """Time every callable of ``fns`` round-robin; returns seconds per call, per name.

    ``warmup`` untimed rounds come first. Then timed rounds run until
    ``repeats`` rounds are done or, with ``budget_s``, until the timed rounds
    have taken ``budget_s`` seconds and at least ``min_repeats`` rounds are
    done. Each round starts at the next name (rotation), so no variant always
    runs right after the same other one. ``sync`` (e.g.
    ``torch.cuda.synchronize``) runs before starting and before stopping each
    clock.
    """
    if not fns:
        return {}
    if repeats < 1 or min_repeats < 1:
        raise ValueError(f'repeats and min_repeats must be >= 1, got {repeats}, {min_repeats}')
    names = list(fns)
    sync = sync or (lambda: None)
    for _ in range(max(warmup, 0)):
        for name in names:
            fns[name]()
        sync()
    times: Dict[str, List[float]] = {name: [] for name in names}
    start_all = clock()
    for r in range(repeats):
        if (budget_s is not None and r >= min(min_repeats, repeats)
                and clock() - start_all >= budget_s):
            break
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            sync()
            start = clock()
            fns[name]()
            sync()
            times[name].append(clock() - start)
    return times


def summarize(times: Sequence[float]) -> Dict[str, float]:
    """Median / min / max in milliseconds and the sample count."""
    if not times:
        return dict(median_ms=float('nan'), min_ms=float('nan'), max_ms=float('nan'), n=0)
    return dict(median_ms=1e3 * statistics.median(times), min_ms=1e3 * min(times),
                max_ms=1e3 * max(times), n=len(times))


def medians_ms(times: Mapping[str, Sequence[float]]) -> Dict[str, float]:
    return {name: 1e3 * statistics.median(ts) if ts else float('nan')
            for name, ts in times.items()}


# ----------------------------------------------------------------------------- memory
def current_rss_mib() -> float:
    """Resident set size of this process now (MiB), from /proc; peak where unavailable."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mib()


def peak_rss_mib() -> float:
    """Peak RSS of this process (MiB): ``getrusage(RUSAGE_SELF).ru_maxrss``."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # kilobytes on Linux, bytes on macOS
    return peak / (1024 * 1024) if platform.system() == 'Darwin' else peak / 1024


# ----------------------------------------------------------------------------- system
def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo``, else ``platform.processor()``)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.lower().startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown'


def package_versions(names: Iterable[str]) -> Dict[str, str]:
    """Installed distribution versions (``'not installed'`` when missing), no imports."""
    from importlib import metadata
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = 'not installed'
    return out


def load_average() -> Tuple[float, float, float]:
    try:
        return tuple(round(v, 2) for v in os.getloadavg())
    except OSError:  # not available on this platform
        return (float('nan'), ) * 3


# ----------------------------------------------------------------------------- synthetic GT
def random_faces(rng: np.random.Generator, num_faces: int, image_size: int = 640,
                 min_size: float = 8.0, max_size: Optional[float] = None,
                 num_keypoints: int = 5) -> Tuple[np.ndarray, np.ndarray]:
    """Random face boxes (``(G, 4)`` xyxy) and landmarks (``(G, K, 2)``) in a square image.

    Box heights are log-uniform in ``[min_size, max_size]`` (default half the
    image), width ``0.78 * height``, fully inside the image; overlaps are
    allowed (crowds). Landmarks are uniform inside their box. Float32.
    """
    max_size = max_size or image_size / 2
    heights = np.exp(rng.uniform(math.log(min_size), math.log(max_size), num_faces))
    widths = 0.78 * heights
    x1 = rng.uniform(0, image_size - widths)
    y1 = rng.uniform(0, image_size - heights)
    boxes = np.stack([x1, y1, x1 + widths, y1 + heights], axis=1)
    u = rng.uniform(0.15, 0.85, (num_faces, num_keypoints, 2))
    points = boxes[:, None, :2] + u * np.stack([widths, heights], axis=1)[:, None, :]
    return boxes.astype(np.float32), points.astype(np.float32)


# ----------------------------------------------------------------------------- formatting
def fmt(value: Any, digits: int = 1) -> str:
    """Numbers for tables: ``nan``/``None`` -> ``-``; large values without decimals."""
    if value is None:
        return '-'
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return '-'
    if abs(value) >= 1000:
        return f'{value:,.0f}'
    if abs(value) >= 100:
        return f'{value:.{max(digits - 1, 0)}f}' if digits > 1 else f'{value:.0f}'
    return f'{value:.{digits}f}'


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
                   align: Optional[str] = None) -> str:
    """A GitHub markdown table; ``align`` is one letter per column (``l``/``r``)."""
    headers = [str(h) for h in headers]
    align = align or 'l' + 'r' * (len(headers) - 1)
    if len(align) != len(headers):
        raise ValueError(f'{len(align)} alignments for {len(headers)} columns')
    sep = ['---:' if a == 'r' else ':---' for a in align]
    lines = ['| ' + ' | '.join(headers) + ' |', '| ' + ' | '.join(sep) + ' |']
    for row in rows:
        cells = [fmt(c) if not isinstance(c, str) else c for c in row]
        if len(cells) != len(headers):
            raise ValueError(f'row has {len(cells)} cells, expected {len(headers)}: {cells}')
        lines.append('| ' + ' | '.join(c.replace('|', '\\|') for c in cells) + ' |')
    return '\n'.join(lines)


def verdict(value: float, limit: float, higher_is_better: bool = False) -> str:
    """``PASS`` when ``value`` is within ``limit`` (``<=``, or ``>=``), else ``MISS``."""
    if value is None or math.isnan(value):
        return 'not measured'
    ok = value >= limit if higher_is_better else value <= limit
    return 'PASS' if ok else 'MISS'
