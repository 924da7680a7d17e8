"""Atomic, pickle-free checkpoints, and a run's two most recent ones.

``save`` writes to a temporary file in the same directory, fsyncs it and ``os.replace``s it over
the target, so a kill mid-write leaves the previous checkpoint intact. ``load`` uses
``torch.load(weights_only=True)``: only tensors and plain containers are read, no code runs.

A training run keeps two: ``save(obj, path, keep_previous=True)`` moves the current file to
``previous_path(path)`` only once the new one is completely on disk, and ``load_latest`` falls
back to that previous checkpoint (with a one-line warning) when the latest cannot be read; the
unreadable file is kept beside it as ``*.unreadable``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch


class CheckpointError(RuntimeError):
    pass


def to_safe(obj):
    """Recursively turn numpy arrays/scalars into tensors/Python scalars (loadable weights-only)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: to_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_safe(v) for v in obj)
    return obj


def previous_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".previous" + path.suffix)


def save(obj: dict, path: str | Path, keep_previous: bool = False) -> None:
    obj = to_safe(obj)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupted or foreign file
        raise CheckpointError(f"cannot read checkpoint {path}: {e}".splitlines()[0]) from e


def exists(path: str | Path) -> bool:
    """Whether a run has a checkpoint at ``path`` or its previous one."""
    return Path(path).exists() or previous_path(path).exists()


def load_latest(path: str | Path, repair: bool = False) -> dict:
    """The checkpoint at ``path``, or the previous one if that cannot be read (a one-line warning
    on standard error). ``repair`` (resuming a run): the unreadable file is kept as
    ``*.unreadable`` and the previous checkpoint becomes the latest."""
    import sys
    path = Path(path)
    try:
        return load(path)
    except CheckpointError as e:
        prev = previous_path(path)
        if not prev.exists():
            raise
        sd = load(prev)
        print(f"vawm: warning: {e}; using the previous checkpoint {prev.name}", file=sys.stderr)
        if repair:
            if path.exists():
                os.replace(path, path.with_name(path.name + ".unreadable"))
            os.replace(prev, path)
        return sd
