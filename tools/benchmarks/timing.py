"""Timing, memory and system facts for the benchmark (no torch at import time).

Timing on a shared machine is noisy, so the variants being compared are timed
*interleaved* (A, B, C, A, B, C, ...) and reported as medians: a burst of load
from another process then hits every variant alike instead of one of them.
"""
from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple


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


def medians_ms(times: Mapping[str, Sequence[float]]) -> Dict[str, float]:
    """Median milliseconds per name (``nan`` for a name without samples)."""
    return {name: 1e3 * statistics.median(ts) if ts else float('nan')
            for name, ts in times.items()}


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
    """The 1/5/15-minute load average (``nan`` where the platform has none)."""
    try:
        return tuple(round(v, 2) for v in os.getloadavg())
    except OSError:
        return (float('nan'), ) * 3
