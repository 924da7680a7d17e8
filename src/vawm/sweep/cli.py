"""``vawm sweep FILE.yaml --root DIR``: run a grid of ``vawm train`` cells, resumably."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from pathlib import Path

from vawm.sweep.archive import archive_conflicts, copy_cell, sync
from vawm.sweep.cell import SWEEP_DIR, cell_status, is_running, read_json, write_json
from vawm.sweep.execute import RAY_HINT, Progress, ray_available, run_local, run_ray
from vawm.sweep.spec import Cell, Sweep, SweepError, load_sweep, select


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vawm sweep",
        description="Run every cell (method x env x seed) of a sweep file as its own run "
                    "directory under --root. Finished cells are skipped, unfinished ones resume "
                    "from their checkpoints; re-run the same command to continue a sweep.")
    p.add_argument("file", help="sweep YAML (see experiments/ and docs/sweeps.md)")
    p.add_argument("--root", help="directory for the run directories (default: runs/<name>)")
    p.add_argument("--address", help="an existing Ray cluster (e.g. auto, HEAD_IP:6379, "
                                     "ray://HEAD_IP:10001); default: start Ray on this machine")
    p.add_argument("--no-ray", action="store_true",
                   help="run the cells as subprocesses of this machine, --max-concurrent at a "
                        "time (default one after another), even if Ray is installed")
    p.add_argument("--max-concurrent", type=int,
                   help="most cells running at once (Ray: default the cluster's capacity; "
                        "without Ray: default 1)")
    p.add_argument("--cpus-per-cell", type=float, help="Ray CPUs per cell (resources.cpus)")
    p.add_argument("--gpus-per-cell", type=float, help="Ray GPUs per cell (resources.gpus)")
    p.add_argument("--retries", type=int, help="retries of a failing cell (default: the file's, "
                                               "else 2)")
    p.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                   help="run only matching cells (method, backbone, objective, env, seed; "
                        "comma-separated values); repeatable")
    p.add_argument("--order", choices=("grid", "seed"), default="grid",
                   help="grid: methods x envs x seeds as listed; seed: all cells of seed 0 first, "
                        "then seed 1, ... (a sweep stopped early has every method on every env "
                        "with the same seeds)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and their state, "
                                                          "run nothing")
    p.add_argument("--train-cmd", help="command that replaces 'python -m vawm train' for each "
                                       "cell, e.g. to run it in a container")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.add_argument("--archive", metavar="DIR",
                   help="keep every finished cell's records (config, metrics, summary; no "
                        "checkpoints) in DIR too, as each finishes, and restore from DIR the "
                        "finished cells --root lacks: continue a sweep on a fresh machine")
    return p


def find_conflicts(cells: list[Cell], root: Path) -> list[str]:
    """Cells whose recorded arguments differ from this sweep's (same directory, other run)."""
    out = []
    for c in cells:
        state = read_json(root / SWEEP_DIR / "cells" / f"{c.key}.json")
        if state is not None and state.get("argv") != c.train_args():
            out.append(f"{c.name}: was {shlex.join(state.get('argv') or [])!r}, "
                       f"now {shlex.join(c.train_args())!r}")
    return out


def describe(sweep: Sweep, cells: list[Cell], root: Path) -> str:
    """A dry-run listing: compute statement, then every cell with its state."""
    lines = [f"sweep {sweep.name}: {len(cells)} cells under {root}"]
    if sweep.description:
        lines.append(f"  {sweep.description}")
    for k, v in sweep.compute.items():
        lines.append(f"  compute.{k}: {v}")
    from vawm.report.runs import last_env_step

    counts: dict[str, int] = {}
    for c in cells:
        run_dir = root / c.name
        state = cell_status(run_dir)
        if state != "finished" and is_running(root, c.name):
            state = "running"
        counts[state] = counts.get(state, 0) + 1
        reached = (last_env_step(run_dir / "metrics.jsonl")
                   if state in ("running", "resumable", "partial") else None)
        at = (f"  (at {reached:,}" + (f"/{c.steps:,}" if c.steps else "") + " env steps)"
              if reached is not None else "")
        lines.append(f"  [{state:9s}] {c.name}{at}  vawm train {shlex.join(c.train_args())}")
    order = ("finished", "running", "resumable", "partial", "new")
    lines.append("  " + ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k)))
    return "\n".join(lines)


def _raise_interrupt(signum, frame):  # SIGTERM -> the same clean stop as Ctrl-C
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sweep = load_sweep(args.file)
        cells = select(sweep.cells, args.only)
        if args.order == "seed":                   # stable: grid order within a seed
            cells = sorted(cells, key=lambda c: c.seed)
    except SweepError as e:
        print(f"vawm sweep: {e}", file=sys.stderr)
        return 2
    if args.max_concurrent is not None and args.max_concurrent < 1:
        print(f"vawm sweep: --max-concurrent must be >= 1, got {args.max_concurrent}",
              file=sys.stderr)
        return 2
    root = Path(args.root or Path("runs") / sweep.name).resolve()
    archive = Path(args.archive).resolve() if args.archive else None
    if archive is not None and (archive == root or root in archive.parents
                                or archive in root.parents):
        print(f"vawm sweep: --archive {args.archive} must not be --root {root}, lie inside it "
              f"or contain it; give a directory beside it", file=sys.stderr)
        return 2
    if args.dry_run:
        print(describe(sweep, cells, root))
        if archive is not None:
            n = sum(cell_status(archive / c.name) == "finished"
                    and cell_status(root / c.name) != "finished" for c in cells)
            print(f"  {n} more finished in the archive {archive} (restored when the sweep runs)")
        return 0
    every = [c.to_json() for c in cells]
    clash = archive_conflicts(every, archive) if archive is not None else []
    if clash:
        print(f"vawm sweep: {len(clash)} finished cell(s) in the archive {archive} were run "
              f"with other settings (first: {clash[0]}); use another --archive",
              file=sys.stderr)
        return 2
    conflicts = find_conflicts(cells, root)
    if conflicts:
        print(f"vawm sweep: {len(conflicts)} cell(s) under {root} were started with other "
              f"settings (first: {conflicts[0]}); use another --root or delete those cells",
              file=sys.stderr)
        return 2
    use_ray = not args.no_ray and ray_available()
    if args.address and not use_ray:
        print(f"vawm sweep: --address needs Ray: {RAY_HINT}", file=sys.stderr)
        return 2
    retries = sweep.retries if args.retries is None else args.retries
    max_conc = args.max_concurrent or sweep.max_concurrent
    cpus = sweep.cpus if args.cpus_per_cell is None else args.cpus_per_cell
    gpus = sweep.gpus if args.gpus_per_cell is None else args.gpus_per_cell
    train_cmd = shlex.split(args.train_cmd) if args.train_cmd else None

    write_json(root / SWEEP_DIR / f"{sweep.name}.json", sweep.manifest())
    log = sys.stderr
    if archive is not None:
        restored, archived = sync(every, root, archive, sweep.manifest())
        print(f"vawm sweep {sweep.name}: archive {archive}: {restored} finished cell(s) "
              f"restored, {archived} archived", file=log)
    todo = [c for c in cells if cell_status(root / c.name) != "finished"]
    skipped = len(cells) - len(todo)
    print(f"vawm sweep {sweep.name}: {len(cells)} cells under {root}; {skipped} already "
          f"finished, {len(todo)} to run", file=log)
    if not use_ray and len(todo) > 1 and not args.no_ray and not args.max_concurrent:
        print(f"Ray is not installed: running the cells one after another (--max-concurrent N "
              f"runs N at once here; for a cluster install Ray: {RAY_HINT})", file=log)
    failed: list[dict] = []
    progress = Progress(sweep.name, len(cells), skipped, enabled=not args.no_progress)
    progress.update()

    def on_result(res: dict) -> None:
        if res["status"] == "busy":
            progress.note(f"skipped: {res['name']}: {res['error']}")
        elif res["status"] == "finished":
            if archive is not None:
                copy_cell(root, archive, res["name"])
        else:
            failed.append(res)
            progress.note(f"failed: {res['name']}: {res['error']}")

    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:   # not the main thread: leave SIGTERM alone
        previous = None
    start = time.time()
    payload = [c.to_json() for c in todo]
    try:
        if use_ray and todo:
            run_ray(payload, str(root), retries, train_cmd, progress, on_result,
                    address=args.address, cpus=cpus, gpus=gpus, max_concurrent=max_conc)
        else:
            run_local(payload, str(root), retries, train_cmd, progress, on_result,
                      max_concurrent=args.max_concurrent or 1)
    except KeyboardInterrupt:
        progress.close()
        print(f"\nvawm sweep: interrupted after {time.time() - start:.0f}s; "
              f"{progress.finished}/{len(cells)} cells finished. Run the same command again to "
              f"resume the others.", file=log)
        return 130
    except (RuntimeError, ConnectionError) as e:   # Ray could not start or connect
        progress.close()
        print(f"vawm sweep: {e}".splitlines()[0], file=log)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    progress.close()
    print(f"vawm sweep {sweep.name}: {progress.finished}/{len(cells)} finished, {len(failed)} "
          f"failed in {time.time() - start:.0f}s", file=log)
    for res in failed:
        print(f"  failed: {res['name']}: {res['error']}", file=log)
    return 1 if failed else 0
