"""Running one cell: ``vawm train`` as a subprocess, retried from the cell's own checkpoint.

Bookkeeping lives beside the run directories, under ``ROOT/_sweep/``:
``cells/<key>.json`` (arguments and attempts), ``logs/<key>.log`` (the trainer's output),
``failed/<key>.<time>/`` (a half-written run without a checkpoint, moved aside before a fresh
start), ``locks/<key>.lock`` (held while a process runs the cell, so two sweep processes on
the same root never run one cell twice). This module is imported by Ray workers, so it must
not import Ray.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:      # not POSIX: no cross-process cell lock
    fcntl = None

BAD_INPUT = 2            # `vawm train` exits 2 on bad input: retrying cannot help
SWEEP_DIR = "_sweep"


def is_finished(run_dir: Path) -> bool:
    """A cell is finished iff ``summary.json`` exists with status ``finished``."""
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("status") == "finished"
    except (OSError, ValueError, AttributeError):
        return False


def cell_status(run_dir: Path) -> str:
    """``finished`` | ``resumable`` (has ``checkpoints/latest.pt``) | ``partial`` | ``new``."""
    if is_finished(run_dir):
        return "finished"
    if (run_dir / "checkpoints" / "latest.pt").is_file():
        return "resumable"
    if run_dir.is_dir() and any(run_dir.iterdir()):
        return "partial"
    return "new"


def plan_command(train_cmd: list[str], train_args: list[str], run_dir: Path) -> list[str]:
    """The next command for a cell: resume from its checkpoint if it has one, else start fresh."""
    if cell_status(run_dir) == "resumable":
        return [*train_cmd, "--resume", str(run_dir), "--no-progress"]
    return [*train_cmd, *train_args, "--run-dir", str(run_dir), "--no-progress"]


def default_train_cmd() -> list[str]:
    return [sys.executable, "-m", "vawm", "train"]


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (the file is read by other processes and, on a cluster, nodes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies (Linux), so a killed Ray worker or sweep
    leaves no orphaned trainer behind."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _stop(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """Terminate a child, then kill it if it does not exit within ``grace_s``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _lock(path: Path):
    """An exclusive lock on ``path`` held until the returned file is closed (or the process
    dies), or None when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a")
    if fcntl is not None:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return None
    return f


def cell_key(name: str) -> str:
    """A flat file name for a cell's bookkeeping (its run directory ``name`` with ``/`` -> ``__``)."""
    return name.replace("/", "__")


def lock_path(root: Path, name: str) -> Path:
    """The cell ``name``'s lock file (held while a sweep process runs it)."""
    return root / SWEEP_DIR / "locks" / f"{cell_key(name)}.lock"


def is_running(root: Path, name: str) -> bool:
    """Whether a sweep process holds ``name``'s cell lock now (its trainer is running); writes
    nothing where no sweep ever ran the cell."""
    path = lock_path(root, name)
    if not path.is_file():
        return False
    f = _lock(path)
    if f is None:
        return True
    f.close()
    return False


def _wait(proc: subprocess.Popen, stop: threading.Event | None) -> int:
    """The trainer's exit code; ``KeyboardInterrupt`` once ``stop`` is set (the sweep's main
    thread was interrupted while this cell ran in a worker thread)."""
    while stop is not None:
        try:
            return proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            if stop.is_set():
                raise KeyboardInterrupt from None
    return proc.wait()


def run_cell(cell: dict, root: str, retries: int, train_cmd: list[str] | None = None,
             threads: int | None = None, stop: threading.Event | None = None) -> dict:
    """Run one cell to completion; returns ``{"name", "status", "attempts", "error"}``.

    Each attempt resumes from ``checkpoints/latest.pt`` when the run has one (a failed or killed
    attempt, or an earlier interrupted sweep), else starts fresh into the same directory after
    moving any half-written run aside. Exit code 2 (bad input) is not retried. A
    ``KeyboardInterrupt`` (or ``stop`` set by another thread) stops the trainer at a checkpoint,
    records the attempt and propagates. A cell another process is running is left to it
    (status ``busy``). The trainer runs in its own session: a terminal's Ctrl-C reaches the
    sweep, which stops the trainer with one SIGTERM.
    """
    root_p = Path(root)
    run_dir = root_p / cell["name"]
    key = cell_key(cell["name"])
    lock = _lock(lock_path(root_p, cell["name"]))
    if lock is None:
        return {"name": cell["name"], "status": "busy", "attempts": None,
                "error": "another sweep process is running this cell"}
    try:
        return _run_locked(cell, root_p, run_dir, key, retries, train_cmd, threads, stop)
    finally:
        lock.close()


def _run_locked(cell: dict, root_p: Path, run_dir: Path, key: str, retries: int,
                train_cmd: list[str] | None, threads: int | None,
                stop: threading.Event | None) -> dict:
    state_path = root_p / SWEEP_DIR / "cells" / f"{key}.json"
    log_path = root_p / SWEEP_DIR / "logs" / f"{key}.log"
    train_cmd = train_cmd or default_train_cmd()
    state = read_json(state_path) or {"name": cell["name"], "argv": cell["argv"], "attempts": []}
    state["argv"] = cell["argv"]
    env = dict(os.environ)
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, str(threads))
    error = ""
    for _ in range(retries + 1):
        if is_finished(run_dir):
            break
        status = cell_status(run_dir)
        if status == "partial":
            aside = root_p / SWEEP_DIR / "failed" / f"{key}.{time.strftime('%Y%m%d-%H%M%S')}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(run_dir), str(aside))
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = plan_command(train_cmd, cell["argv"], run_dir)
        attempt = {"cmd": cmd, "resumed": status == "resumable", "host": socket.gethostname(),
                   "start": time.time(), "end": None, "rc": None}
        state["attempts"].append(attempt)
        state["status"] = "running"
        write_json(state_path, state)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
                                    start_new_session=True)
            try:
                rc = _wait(proc, stop)
            except BaseException:
                _stop(proc)
                attempt.update(end=time.time(), rc=proc.returncode)
                state["status"] = "interrupted"
                write_json(state_path, state)
                raise
        attempt.update(end=time.time(), rc=rc)
        if rc == 0 and is_finished(run_dir):
            break
        error = (f"exit code {rc}" if rc != 0
                 else "the trainer exited 0 without a finished summary.json")
        error += f"; see {log_path}"
        if rc == BAD_INPUT:
            break
    finished = is_finished(run_dir)
    state["status"] = "finished" if finished else "failed"
    write_json(state_path, state)
    return {"name": cell["name"], "status": state["status"], "error": "" if finished else error,
            "attempts": len(state["attempts"])}
