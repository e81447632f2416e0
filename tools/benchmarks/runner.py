"""Run measurements in fresh child processes (or inline) and collect their results.

Each measurement function runs in a child forked from a parent that has only
imported the basics, so the child's ``ru_maxrss`` is that measurement's clean
peak RSS and one case cannot leave caches or threads behind for the next.
A failure is caught and returned as ``{'error': traceback}``: the report
lists it and the other cases still run.
"""
from __future__ import annotations

import multiprocessing as mp
import sys
import time
import traceback
from typing import Callable, List


def _child_main(conn, fn: Callable[[dict], dict], params: dict) -> None:
    try:
        result = fn(params)
    except BaseException:  # report everything, the parent decides
        result = dict(error=traceback.format_exc())
    conn.send(result)
    conn.close()


class Runner:
    """Calls ``fn(params)`` in a child process (``inline``: in this one); logs to stderr.

    ``base`` parameters (device, threads, repeats, ...) are merged under each
    call's own. ``fn`` must be a module-level function (children started with
    ``forkserver`` or ``spawn`` import it by name).
    """

    def __init__(self, inline: bool, base: dict, start_method: str = 'fork') -> None:
        self.inline = inline
        self.base = base
        self.start = time.perf_counter()
        self.errors: List[str] = []
        self.ctx = None
        if not inline:
            self.ctx = mp.get_context(start_method)
            if start_method == 'forkserver':  # children fork from a process with these loaded
                self.ctx.set_forkserver_preload(['torch', 'mmdet.models', 'mmretinaface'])

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.start

    def log(self, msg: str) -> None:
        print(f'[benchmark {self.elapsed_s():6.1f}s] {msg}', file=sys.stderr, flush=True)

    def __call__(self, fn: Callable[[dict], dict], label: str, **params) -> dict:
        full = {**self.base, **params}
        self.log(f'{label} ...')
        if self.inline:
            try:
                result = fn(full)
            except Exception:
                result = dict(error=traceback.format_exc())
        else:
            recv, send = self.ctx.Pipe(duplex=False)
            proc = self.ctx.Process(target=_child_main, args=(send, fn, full))
            proc.start()
            send.close()
            try:
                result = recv.recv()
            except EOFError:
                result = dict(error=f'child exited with code {proc.exitcode} without a result')
            proc.join()
        if 'error' in result:
            self.errors.append(f'{label}: {result["error"].strip().splitlines()[-1]}')
            self.log(f'{label} FAILED:\n{result["error"]}')
        return result
