"""Sweep files: a YAML grid of methods x envs x seeds, expanded into cells.

A sweep file (see ``experiments/*.yaml`` and ``docs/sweeps.md``)::

    name: atari100k                 # default: the file's stem
    description: VaR (anon. 2025) Table 1
    layout: atari100k               # report layout: atari100k dmc ablation capacity image-size generic
    compute: {cells: 520, ...}      # free-form statement of the expected compute
    defaults: {preset: atari100k, steps: 400000, set: {run.eval_episodes: 10}}
    methods:                        # optional; default: grid.backbone x grid.objective
      - {name: tssm+static, label: STORM + static weight, backbone: tssm, objective: var,
         baseline: tssm, set: {var.weight: static}}
    grid: {backbone: [rssm], objective: [none, var], env: [atari100k:Pong], seed: [0, 1]}
    overrides:                      # per-cell settings, applied in order to matching cells
      - {match: {backbone: tssm}, preset: storm}
    resources: {cpus: 1, gpus: 0}   # per cell, for Ray's scheduler
    max_concurrent: 8
    retries: 2

Each cell becomes the run directory ``ROOT/<method>/<env>/seed<k>``. Settings merge as
defaults -> method -> matching overrides (later wins; ``set`` dicts merge key by key).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vawm.sweep.cell import cell_key

LAYOUTS = ("atari100k", "dmc", "ablation", "capacity", "image-size", "generic")
#: layouts whose x axis is each method's ``size:`` (world-model size; image size in pixels)
SIZE_LAYOUTS = {"capacity": "world-model size", "image-size": "image size (pixels)"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_TOP_KEYS = {"name", "description", "layout", "compute", "defaults", "methods", "grid",
             "overrides", "resources", "max_concurrent", "retries"}
_SETTING_KEYS = {"preset", "steps", "set"}
_METHOD_KEYS = {"name", "label", "backbone", "objective", "baseline", "size"} | _SETTING_KEYS
_GRID_KEYS = {"backbone", "objective", "env", "seed"}
_MATCH_KEYS = {"method", "backbone", "objective", "env", "seed"}


class SweepError(ValueError):
    """A bad sweep file or a sweep that cannot start; the message is one line."""


@dataclass(frozen=True)
class Cell:
    """One run of the grid: a method on an env with a seed, and its ``vawm train`` arguments."""
    method: str
    backbone: str
    objective: str
    env: str
    seed: int
    baseline: str | None = None
    label: str | None = None    # display name in reports
    size: str | None = None     # x of a size study: world-model size (``capacity``), image size
    preset: str | None = None
    steps: int | None = None
    sets: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        """Run directory relative to the sweep root, e.g. ``rssm+var/atari100k-Pong/seed0``."""
        return f"{self.method}/{env_slug(self.env)}/seed{self.seed}"

    @property
    def key(self) -> str:
        """A flat file name for the cell's bookkeeping (``name`` with ``/`` -> ``__``)."""
        return cell_key(self.name)

    def train_args(self) -> list[str]:
        """Arguments after ``vawm train`` for a fresh start (without ``--run-dir``)."""
        args = ["--env", self.env, "--backbone", self.backbone, "--objective", self.objective,
                "--seed", str(self.seed)]
        if self.preset is not None:
            args += ["--preset", self.preset]
        if self.steps is not None:
            args += ["--steps", str(self.steps)]
        for k, v in self.sets:
            args += ["--set", f"{k}={v}"]
        return args

    def to_json(self) -> dict:
        return {"name": self.name, "method": self.method, "baseline": self.baseline,
                "label": self.label, "size": self.size,
                "backbone": self.backbone, "objective": self.objective, "env": self.env,
                "seed": self.seed, "preset": self.preset, "steps": self.steps,
                "argv": self.train_args()}


@dataclass
class Sweep:
    """A parsed sweep file."""
    name: str
    cells: list[Cell]
    description: str = ""
    layout: str | None = None
    compute: dict = field(default_factory=dict)
    cpus: float = 1.0
    gpus: float = 0.0
    max_concurrent: int | None = None
    retries: int = 2
    file: str = ""

    def manifest(self) -> dict:
        """What ``vawm report`` reads back: the expected cells and how to lay out their table."""
        return {"name": self.name, "file": self.file, "description": self.description,
                "layout": self.layout, "compute": self.compute,
                "cells": [c.to_json() for c in self.cells]}


def env_slug(env: str) -> str:
    """``atari100k:Pong`` -> ``atari100k-Pong`` (safe as one path component)."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", env)


def method_label(backbone: str, objective: str) -> str:
    """Default method name: ``rssm`` for the baseline, ``rssm+var`` with an objective."""
    return backbone if objective == "none" else f"{backbone}+{objective}"


def format_value(v: Any) -> str:
    """A YAML value as ``--set`` text (the trainer parses it back as YAML)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float, str)):
        return str(v)
    return json.dumps(v)


def _check_keys(d: Any, allowed: set[str], where: str) -> dict:
    if not isinstance(d, dict):
        raise SweepError(f"{where} must be a mapping, got {d!r}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise SweepError(f"unknown key(s) {', '.join(unknown)} in {where}; "
                         f"valid keys: {', '.join(sorted(allowed))}")
    return d


def _as_list(x: Any, where: str) -> list:
    if x is None:
        raise SweepError(f"{where} is missing")
    out = list(x) if isinstance(x, (list, tuple)) else [x]
    if not out:
        raise SweepError(f"{where} is empty")
    return out


def _merge(base: dict, extra: dict, where: str) -> dict:
    """Merge settings (``preset``, ``steps``, ``set``); ``set`` merges key by key."""
    _check_keys(extra, _SETTING_KEYS | {"match"} | _METHOD_KEYS, where)
    out = dict(base)
    for k in ("preset", "steps"):
        if k in extra:
            out[k] = extra[k]
    if "set" in extra:
        s = extra["set"] or {}
        if not isinstance(s, dict):
            raise SweepError(f"{where}.set must be a mapping of config keys to values")
        out["set"] = {**out.get("set", {}), **s}
    return out


def _matches(match: dict, fields: dict) -> bool:
    for k, want in match.items():
        wants = want if isinstance(want, (list, tuple)) else [want]
        if fields[k] not in wants and str(fields[k]) not in [str(w) for w in wants]:
            return False
    return True


def parse_sweep(data: dict, name: str = "sweep", file: str = "") -> Sweep:
    """Validate a sweep mapping and expand it into cells (pure; no file system access)."""
    _check_keys(data, _TOP_KEYS, "the sweep file")
    name = str(data.get("name", name))
    if not _NAME.match(name):
        raise SweepError(f"sweep name {name!r} may only use letters, digits and _.+-")
    layout = data.get("layout")
    if layout is not None and layout not in LAYOUTS:
        raise SweepError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    grid = _check_keys(data.get("grid"), _GRID_KEYS, "grid")
    defaults = _merge({}, _check_keys(data.get("defaults") or {}, _SETTING_KEYS, "defaults"),
                      "defaults")

    methods: list[dict] = []
    if data.get("methods") is not None:
        if "backbone" in grid or "objective" in grid:
            raise SweepError("give either methods: or grid.backbone/grid.objective, not both")
        for i, m in enumerate(_as_list(data["methods"], "methods")):
            _check_keys(m, _METHOD_KEYS, f"methods[{i}]")
            if "backbone" not in m:
                raise SweepError(f"methods[{i}] needs a backbone")
            m = dict(m)
            m.setdefault("objective", "none")
            m.setdefault("name", method_label(m["backbone"], m["objective"]))
            methods.append(m)
    else:
        for b in _as_list(grid.get("backbone"), "grid.backbone"):
            for o in _as_list(grid.get("objective", ["none"]), "grid.objective"):
                methods.append({"name": method_label(b, o), "backbone": b, "objective": o})
    names = [str(m["name"]) for m in methods]
    for n in names:
        if not _NAME.match(n):
            raise SweepError(f"method name {n!r} may only use letters, digits and _.+-")
    if len(set(names)) != len(names):
        raise SweepError(f"method names repeat: {', '.join(names)}")
    for m in methods:
        m.setdefault("baseline", _default_baseline(m, methods))
        if m["baseline"] is not None and m["baseline"] not in names:
            raise SweepError(f"method {m['name']!r}: baseline {m['baseline']!r} is not a method")
    if layout in SIZE_LAYOUTS:
        unsized = [str(m["name"]) for m in methods if m.get("size") is None]
        if unsized:
            raise SweepError(f"layout {layout} needs a size: on every method (the x axis, "
                             f"{SIZE_LAYOUTS[layout]}); missing on {', '.join(unsized)}")

    envs = [str(e) for e in _as_list(grid.get("env"), "grid.env")]
    seeds = _as_list(grid.get("seed"), "grid.seed")
    if any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise SweepError(f"grid.seed must be a list of integers, got {seeds!r}")
    overrides = data.get("overrides") or []
    for i, ov in enumerate(overrides):
        _check_keys(ov, _SETTING_KEYS | {"match"}, f"overrides[{i}]")
        _check_keys(ov.get("match") or {}, _MATCH_KEYS, f"overrides[{i}].match")

    cells = []
    for m, env, seed in itertools.product(methods, envs, seeds):
        fields = {"method": m["name"], "backbone": m["backbone"], "objective": m["objective"],
                  "env": env, "seed": seed}
        s = _merge(defaults, {k: m[k] for k in _SETTING_KEYS if k in m}, f"method {m['name']}")
        for i, ov in enumerate(overrides):
            if _matches(ov.get("match") or {}, fields):
                s = _merge(s, {k: v for k, v in ov.items() if k != "match"}, f"overrides[{i}]")
        steps = s.get("steps")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                                  or steps <= 0):
            raise SweepError(f"steps must be a positive integer, got {steps!r}")
        sets = tuple(sorted((str(k), format_value(v)) for k, v in s.get("set", {}).items()))
        cells.append(Cell(method=m["name"], backbone=str(m["backbone"]),
                          objective=str(m["objective"]), env=env, seed=int(seed),
                          baseline=m["baseline"], label=m.get("label"),
                          size=None if m.get("size") is None else str(m["size"]),
                          preset=s.get("preset"),
                          steps=steps, sets=sets))

    res = _check_keys(data.get("resources") or {}, {"cpus", "gpus"}, "resources")
    max_conc = data.get("max_concurrent")
    if max_conc is not None and (not isinstance(max_conc, int) or max_conc < 1):
        raise SweepError(f"max_concurrent must be a positive integer, got {max_conc!r}")
    retries = data.get("retries", 2)
    if not isinstance(retries, int) or retries < 0:
        raise SweepError(f"retries must be a non-negative integer, got {retries!r}")
    compute = data.get("compute") or {}
    if not isinstance(compute, dict):
        compute = {"note": compute}
    compute = {str(k): v.strip() if isinstance(v, str) else v for k, v in compute.items()}
    return Sweep(name=name, cells=cells, description=str(data.get("description", "")).strip(),
                 layout=layout, compute=compute, cpus=float(res.get("cpus", 1)),
                 gpus=float(res.get("gpus", 0)), max_concurrent=max_conc, retries=retries,
                 file=file)


def _default_baseline(m: dict, methods: list[dict]) -> str | None:
    """A method's baseline: the same backbone with objective ``none``, if the sweep has it."""
    if m["objective"] == "none" and "set" not in m:
        return None
    for other in methods:
        if (other is not m and other["backbone"] == m["backbone"]
                and other.get("objective", "none") == "none" and "set" not in other):
            return str(other["name"])
    return None


def load_sweep(path: str | Path) -> Sweep:
    """Read and expand a sweep YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise SweepError(f"sweep file {str(path)!r} not found") from e
    except yaml.YAMLError as e:
        msg = str(e).replace("\n", " ")
        raise SweepError(f"sweep file {str(path)!r} is not valid YAML: {msg}") from e
    return parse_sweep(data or {}, name=path.stem, file=str(path))


def select(cells: list[Cell], only: list[str]) -> list[Cell]:
    """Keep cells matching every ``key=value`` filter (keys: method, backbone, objective, env,
    seed; a value may be a comma-separated list)."""
    out = cells
    for f in only:
        if "=" not in f:
            raise SweepError(f"--only {f!r} must look like key=value (e.g. env=atari100k:Pong)")
        k, v = f.split("=", 1)
        if k not in _MATCH_KEYS:
            raise SweepError(f"--only key {k!r} is not one of {', '.join(sorted(_MATCH_KEYS))}")
        vals = v.split(",")
        out = [c for c in out if str(getattr(c, k)) in vals]
    return out
