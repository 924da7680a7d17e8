"""Finding and reading run directories, sweep manifests, metrics and cost files under a root.

A run directory holds ``config.yaml`` and, once finished, ``summary.json`` (status
``finished``). ``vawm sweep`` also writes ``<sweep root>/_sweep/<name>.json``, the list of
cells it expects; runs it lists are grouped into that sweep's experiment, so seeds or tasks that
never finished are reported as missing. Other runs are grouped by suite.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SWEEP_DIR = "_sweep"   # same as vawm.sweep.cell.SWEEP_DIR (kept here so reports need no sweep)


@dataclass
class Run:
    """One run directory, finished or not."""
    path: Path
    env: str
    backbone: str
    objective: str
    method: str
    seed: int
    status: str                 # finished | unfinished
    score: float | None = None  # final eval_return_mean
    preset: str | None = None
    steps: int | None = None    # env-step budget
    env_steps: int | None = None  # reached (summary, else the last metrics line)
    summary: dict = field(default_factory=dict)

    @property
    def suite(self) -> str:
        return split_env(self.env)[0]

    @property
    def task(self) -> str:
        return split_env(self.env)[1]


@dataclass
class Cell:
    """An expected cell: a method on an env with a seed (from a manifest, or inferred)."""
    method: str
    env: str
    seed: int
    path: Path | None = None
    state: dict | None = None   # the sweep's bookkeeping for this cell, if any
    steps: int | None = None    # env-step budget, if the sweep set one


@dataclass
class Experiment:
    """A group of runs rendered as one section of the report."""
    name: str
    layout: str                 # atari100k | dmc | ablation | capacity | image-size | generic
    runs: list[Run]             # finished and unfinished runs that belong here
    expected: list[Cell]        # every cell that should have a finished run
    methods: list[str]          # column order
    baselines: dict[str, str | None]
    labels: dict[str, str] = field(default_factory=dict)   # display names
    sizes: dict[str, str] = field(default_factory=dict)    # method -> x of a size study
    families: dict[str, str] = field(default_factory=dict)  # method -> backbone[+objective]
    description: str = ""
    compute: dict = field(default_factory=dict)
    source: str = ""            # the manifest file, or "" for inferred groups


def split_env(env: str) -> tuple[str, str]:
    """``atari100k:Pong`` -> (``atari100k``, ``Pong``); an id without a suite gets ``gym``."""
    suite, sep, task = env.partition(":")
    return (suite, task) if sep else ("gym", env)


def method_label(backbone: str, objective: str) -> str:
    return backbone if objective in ("none", "", None) else f"{backbone}+{objective}"


def default_layout(suites: set[str]) -> str:
    if suites == {"atari100k"}:
        return "atari100k"
    if suites and suites <= {"dmc", "dmc-pixels"}:
        return "dmc"
    return "generic"


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


def last_env_step(metrics: Path) -> int | None:
    """``env_step`` of the last complete line of ``metrics.jsonl`` (reads only the tail)."""
    try:
        with open(metrics, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return int(json.loads(line)["env_step"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def load_metrics(path: Path) -> list[dict]:
    """All rows of a run's ``metrics.jsonl`` (a torn last line is skipped)."""
    rows = []
    try:
        with open(path / "metrics.jsonl") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    except OSError:
        pass
    return rows


def load_run(path: Path, method: str | None = None) -> Run | None:
    """Read one run directory; ``None`` if it has neither a summary nor a config."""
    summary = read_json(path / "summary.json") or {}
    config: dict = {}
    try:
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        pass
    if not summary and not config:
        return None
    get = lambda k, d=None: summary.get(k, config.get(k, d))
    finished = summary.get("status") == "finished"
    backbone, objective = str(get("backbone", "?")), str(get("objective", "none"))
    score = summary.get("eval_return_mean") if finished else None
    env_steps = summary.get("env_steps") if finished else last_env_step(path / "metrics.jsonl")
    return Run(path=path, env=str(get("env", "?")), backbone=backbone, objective=objective,
               method=method or method_label(backbone, objective), seed=int(get("seed", 0)),
               status="finished" if finished else "unfinished",
               score=None if score is None else float(score), preset=get("preset"),
               steps=config.get("steps", summary.get("env_steps")), env_steps=env_steps,
               summary=summary)


def _skip(part: str) -> bool:
    return part.startswith(".") or part.startswith("_")


def find_run_dirs(root: Path, exclude: Path | None = None) -> list[Path]:
    """Directories under ``root`` holding ``summary.json`` or ``config.yaml`` (not inside
    ``_``/``.`` folders, nor inside ``exclude``)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if not _skip(n)
                             and (exclude is None or (d / n).resolve() != exclude))
        if "summary.json" in filenames or "config.yaml" in filenames:
            out.append(d)
            dirnames[:] = []   # a run directory holds no other runs
    return out


def find_manifests(root: Path) -> list[Path]:
    """Sweep manifests ``<sweep root>/_sweep/<name>.json`` under ``root``."""
    out = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
        if Path(dirpath).name == SWEEP_DIR:
            out += sorted(p for p in Path(dirpath).glob("*.json") if p.is_file())
            dirnames[:] = []
    return out


def find_files(root: Path, pattern: str, exclude: Path | None = None) -> list[Path]:
    """Files matching ``pattern`` under ``root``, outside ``.``-folders and ``exclude``."""
    out = []
    for dirpath, dirnames, _ in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".")
                             and (exclude is None or (d / n).resolve() != exclude))
        out += sorted(p for p in d.glob(pattern) if p.is_file())
    return out


def _cell_state(sweep_root: Path, name: str) -> dict | None:
    return read_json(sweep_root / SWEEP_DIR / "cells" / f"{name.replace('/', '__')}.json")


def collect(root: Path, exclude: Path | None = None) -> tuple[list[Experiment], list[str]]:
    """Group every run under ``root`` into experiments; returns them and warnings."""
    root = root.resolve()
    warnings: list[str] = []
    experiments: list[Experiment] = []
    claimed: set[Path] = set()
    for mpath in find_manifests(root):
        man = read_json(mpath)
        if not man or "cells" not in man:
            warnings.append(f"{mpath}: not a sweep manifest, ignored")
            continue
        sweep_root = mpath.parent.parent
        runs, expected = [], []
        methods: list[str] = []
        baselines: dict[str, str | None] = {}
        labels: dict[str, str] = {}
        sizes: dict[str, str] = {}
        families: dict[str, str] = {}
        for c in man["cells"]:
            path = (sweep_root / c["name"]).resolve()
            if c["method"] not in baselines:
                methods.append(c["method"])
                baselines[c["method"]] = c.get("baseline")
                families[c["method"]] = method_label(c.get("backbone", ""), c.get("objective"))
                if c.get("label"):
                    labels[c["method"]] = c["label"]
                if c.get("size") is not None:
                    sizes[c["method"]] = str(c["size"])
            expected.append(Cell(c["method"], c["env"], int(c["seed"]), path,
                                 _cell_state(sweep_root, c["name"]), c.get("steps")))
            run = load_run(path, method=c["method"]) if path.is_dir() else None
            if run is not None:
                runs.append(run)
                claimed.add(path)
        suites = {split_env(c.env)[0] for c in expected}
        experiments.append(Experiment(
            name=str(man.get("name", mpath.stem)), layout=man.get("layout") or
            default_layout(suites), runs=runs, expected=expected, methods=methods,
            baselines=baselines, labels=labels, sizes=sizes, families=families,
            description=man.get("description", ""),
            compute=man.get("compute") or {}, source=str(mpath)))

    loose: dict[str, list[Run]] = {}
    for d in find_run_dirs(root, exclude):
        if d.resolve() in claimed:
            continue
        run = load_run(d)
        if run is not None:
            loose.setdefault(run.suite, []).append(run)
    for suite, runs in sorted(loose.items()):
        experiments.append(infer_experiment(f"runs ({suite})", runs, warnings))
    return experiments, warnings


def infer_experiment(name: str, runs: list[Run], warnings: list[str]) -> Experiment:
    """An experiment for runs without a manifest: every method is expected on every task and
    seed seen in the group; a (method, env, seed) seen twice keeps the first path, with a
    warning."""
    seen: dict[tuple, Run] = {}
    for r in sorted(runs, key=lambda r: str(r.path)):
        k = (r.method, r.env, r.seed)
        if k in seen:
            warnings.append(f"{name}: {r.method} on {r.env} seed {r.seed} appears twice "
                            f"({seen[k].path} and {r.path}); using the first")
            continue
        seen[k] = r
    runs = list(seen.values())
    methods = sorted({r.method for r in runs}, key=lambda m: (m.split("+")[0], "+" in m, m))
    envs = sorted({r.env for r in runs})
    seeds = sorted({r.seed for r in runs})
    backbone = {r.method: (r.backbone, r.objective) for r in runs}
    baselines = {}
    for m in methods:
        b, o = backbone[m]
        base = method_label(b, "none")
        baselines[m] = base if o != "none" and base in backbone else None
    expected = []
    for m in methods:
        for e in envs:
            for s in seeds:
                r = seen.get((m, e, s))
                expected.append(Cell(m, e, s, r.path if r else None, None,
                                     r.steps if r else None))
    return Experiment(name=name, layout=default_layout({r.suite for r in runs}), runs=runs,
                      expected=expected, methods=methods, baselines=baselines)
