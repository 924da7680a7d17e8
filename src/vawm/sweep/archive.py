"""A sweep's records outside its root: ``vawm sweep FILE --root DIR --archive ARCHIVE``.

A sweep root holds checkpoints and replay chunks (GB) beside the records that make its results
(config, metrics, summary: KB). On a machine whose disk does not outlive the job (a preemptible
node, a CI runner, a scratch volume) the records of every finished cell are worth keeping
apart, e.g. in a git repository or a bucket mount. With ``--archive`` the sweep

* restores, before it starts, every finished cell the archive holds and the root lacks (so a
  sweep continued on a fresh machine skips the cells that already finished elsewhere; an
  unfinished run of such a cell is moved aside to ``ROOT/_sweep/superseded/``, not deleted);
* copies each cell's records into the archive as soon as the cell finishes (and any finished
  cell of the root the archive lacks, at start).

A cell's records are the plain files at the top of its run directory (``config.yaml``,
``metrics.jsonl``, ``summary.json``, ``returns.png``, ...), not its folders (``checkpoints/``,
``replay/``, ``tb/``), plus its bookkeeping ``_sweep/cells/<key>.json`` and the sweep manifest.
``summary.json`` is written last, file by file through a temporary name, so a copy cut short is
never taken for a finished cell. The archive is itself a sweep root: ``vawm report ARCHIVE``
reads it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from vawm.sweep.cell import SWEEP_DIR, cell_key, is_finished, read_json, write_json

SUMMARY = "summary.json"


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def copy_cell(src_root: Path, dst_root: Path, name: str) -> None:
    """Copy cell ``name``'s records from one sweep root to another (``summary.json`` last)."""
    src, dst = src_root / name, dst_root / name
    files = sorted(p for p in src.iterdir() if p.is_file() and not p.name.endswith(".tmp"))
    for p in sorted(files, key=lambda p: p.name == SUMMARY):
        _copy(p, dst / p.name)
    state = src_root / SWEEP_DIR / "cells" / f"{cell_key(name)}.json"
    if state.is_file():
        _copy(state, dst_root / SWEEP_DIR / "cells" / state.name)


def archive_conflicts(cells: list[dict], archive: Path) -> list[str]:
    """Finished cells of the archive recorded with other arguments than this sweep's."""
    out = []
    for c in cells:
        state = read_json(archive / SWEEP_DIR / "cells" / f"{cell_key(c['name'])}.json")
        if state is not None and is_finished(archive / c["name"]) and state.get("argv") != c["argv"]:
            out.append(c["name"])
    return out


def sync(cells: list[dict], root: Path, archive: Path, manifest: dict) -> tuple[int, int]:
    """Restore finished cells the root lacks, archive finished cells the archive lacks; write the
    manifest into the archive. Returns ``(restored, archived)``."""
    restored = archived = 0
    for c in cells:
        run_dir = root / c["name"]
        in_root, in_archive = is_finished(run_dir), is_finished(archive / c["name"])
        if in_archive and not in_root:
            if run_dir.is_dir() and any(run_dir.iterdir()):   # an unfinished run of the cell:
                aside = (root / SWEEP_DIR / "superseded"       # kept, never overwritten
                         / f"{cell_key(c['name'])}.{time.strftime('%Y%m%d-%H%M%S')}")
                aside.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(run_dir), str(aside))
            copy_cell(archive, root, c["name"])
            restored += 1
        elif in_root and not in_archive:
            copy_cell(root, archive, c["name"])
            archived += 1
    write_json(archive / SWEEP_DIR / f"{manifest['name']}.json", manifest)
    return restored, archived
