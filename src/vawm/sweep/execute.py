"""Executors for a sweep's cells, with progress: Ray (local or a cluster) or subprocesses of this
machine (``--no-ray``, ``--max-concurrent`` at a time)."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import TextIO

from vawm.sweep.cell import run_cell

RAY_HINT = "pip install 'vawm[ray]'  (or: pip install 'ray[default]>=2.9,<3')"


class Progress:
    """Cells finished / running / failed / pending; a bar on a terminal, log lines otherwise."""

    def __init__(self, name: str, total: int, skipped: int = 0, enabled: bool = True,
                 stream: TextIO | None = None):
        self.name, self.total, self.skipped = name, total, skipped
        self.finished, self.running, self.failed = skipped, 0, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._bar = None
        self._last = ""
        if enabled and self.stream.isatty():
            from tqdm import tqdm
            self._bar = tqdm(total=total, initial=skipped, desc=f"sweep {name}", unit="cell",
                             file=self.stream, dynamic_ncols=True)

    @property
    def pending(self) -> int:
        return self.total - self.finished - self.running - self.failed

    def line(self) -> str:
        return (f"sweep {self.name}: {self.finished}/{self.total} finished, {self.running} "
                f"running, {self.failed} failed, {self.pending} pending")

    def update(self, finished: int = 0, running: int = 0, failed: int = 0) -> None:
        """Add deltas to the counts and redraw."""
        self.finished += finished
        self.running += running
        self.failed += failed
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.n = self.finished
            self._bar.set_postfix(running=self.running, failed=self.failed, refresh=True)
            return
        line = self.line()
        if line != self._last:
            print(f"[{time.strftime('%H:%M:%S')}] {line}", file=self.stream, flush=True)
            self._last = line

    def note(self, msg: str) -> None:
        """Print a message without breaking the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(msg, file=self.stream)
        else:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _account(progress: Progress, res: dict) -> None:
    """A cell came back: finished, failed, or ``busy`` (another sweep process runs it: neither)."""
    progress.update(running=-1, finished=res["status"] == "finished",
                    failed=res["status"] == "failed")


def run_local(cells: list[dict], root: str, retries: int, train_cmd: list[str] | None,
              progress: Progress, on_result: Callable[[dict], None],
              max_concurrent: int = 1) -> None:
    """Run cells as ``vawm train`` subprocesses of this machine, ``max_concurrent`` at a time
    (threads only wait on them). An interrupt stops every running trainer at a checkpoint."""
    stop, limit = threading.Event(), max(1, max_concurrent)
    todo, inflight = deque(cells), {}
    with ThreadPoolExecutor(limit) as pool:
        try:
            while todo or inflight:
                while todo and len(inflight) < limit:
                    cell = todo.popleft()
                    fut = pool.submit(run_cell, cell, root, retries, train_cmd, None, stop)
                    inflight[fut] = cell
                    progress.update(running=1)
                done, _ = wait(inflight, timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in done:
                    del inflight[fut]
                    res = fut.result()
                    _account(progress, res)
                    on_result(res)
        except BaseException:
            stop.set()
            wait(inflight)
            progress.update(running=-len(inflight))
            raise


def ray_capacity(resources: dict, cpus: float, gpus: float) -> int:
    """How many cells with the given per-cell demand fit into a cluster's total resources."""
    fits = [math.floor(resources.get("CPU", 0) / cpus + 1e-9)] if cpus > 0 else []
    if gpus > 0:
        fits.append(math.floor(resources.get("GPU", 0) / gpus + 1e-9))
    return min(fits) if fits else 1


def run_ray(cells: list[dict], root: str, retries: int, train_cmd: list[str] | None,
            progress: Progress, on_result: Callable[[dict], None], *, address: str | None,
            cpus: float, gpus: float, max_concurrent: int | None) -> None:
    """Run cells as Ray tasks, at most ``max_concurrent`` at a time.

    Without ``address`` Ray starts here with this machine's cores and its dashboard bound to
    127.0.0.1. A cell whose worker dies is re-executed by Ray (``max_retries``); the task then
    resumes the run from its checkpoint. Application failures are retried inside the task.
    """
    import ray

    if address:
        ctx = ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    else:
        ctx = ray.init(num_cpus=os.cpu_count() or 1, dashboard_host="127.0.0.1",
                       log_to_driver=False, logging_level="WARNING")
    try:
        res = ray.cluster_resources()
        dash = getattr(ctx, "dashboard_url", None)
        print(f"Ray: {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs"
              + (f"; dashboard http://{dash}" if dash else ""), file=sys.stderr, flush=True)
        capacity = ray_capacity(res, cpus, gpus)
        if capacity < 1:
            msg = (f"a cell needs {cpus:g} CPU and {gpus:g} GPU but the Ray cluster has "
                   f"{ray.cluster_resources()}")
            if not address:
                raise RuntimeError(msg)
            print(f"warning: {msg}; waiting for the cluster to grow", file=sys.stderr)
            capacity = max_concurrent or len(cells)
        limit = min(capacity, max_concurrent) if max_concurrent else capacity
        threads = max(1, math.ceil(cpus))
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=max(retries, 1))(run_cell)
        todo = deque(cells)
        inflight: dict = {}
        try:
            while todo or inflight:
                while todo and len(inflight) < limit:
                    cell = todo.popleft()
                    ref = task.options(name=cell["name"]).remote(cell, root, retries, train_cmd,
                                                                 threads)
                    inflight[ref] = cell
                    progress.update(running=1)
                done, _ = ray.wait(list(inflight), num_returns=1, timeout=2.0)
                for ref in done:
                    cell = inflight.pop(ref)
                    try:
                        res = ray.get(ref)
                    except Exception as e:  # worker died past max_retries, or task error
                        res = {"name": cell["name"], "status": "failed", "attempts": None,
                               "error": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
                    _account(progress, res)
                    on_result(res)
        except BaseException:
            for ref in inflight:
                ray.cancel(ref, force=True)
            raise
    finally:
        ray.shutdown()
