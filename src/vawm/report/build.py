"""Assemble ``report.md``: one section per experiment in its paper's layout, curves, the cost
table and the Garnet summary. Missing seeds and tasks are listed, never averaged over silently:
a table cell over fewer seeds than expected carries ``†`` and a note says which and why."""

from __future__ import annotations

import csv
import json
import re
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from vawm.report import aggregate, curves, tables
from vawm.report.runs import (
    Cell,
    Experiment,
    Run,
    collect,
    find_files,
    find_run_dirs,
    load_metrics,
    read_json,
    split_env,
)

SUITE_GROUPS = {"dmc-pixels": "Visual", "dmc": "Proprio"}
N_BINS = 40
LAYOUT_ORDER = ("atari100k", "dmc", "ablation", "generic")   # 000 Tables 1, 2, 3, then others


@dataclass
class Gathered:
    """Final scores of an experiment and what is missing from it."""
    scores: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)  # m -> env -> seed
    missing: dict[str, dict[str, list[tuple[int, str]]]] = field(default_factory=dict)
    envs: list[str] = field(default_factory=list)
    runs: dict[tuple[str, str, int], Run] = field(default_factory=dict)
    steps: dict[tuple[str, str], set] = field(default_factory=dict)  # (method, env) -> budgets

    def mean(self, m: str, env: str) -> float | None:
        s = self.scores.get(m, {}).get(env)
        return float(np.mean(list(s.values()))) if s else None

    def flagged(self, m: str, env: str) -> bool:
        return bool(self.missing.get(m, {}).get(env))


def missing_reason(cell: Cell, run: Run | None) -> str:
    """Why an expected cell has no final score, e.g. ``unfinished at 60,000/100,000 env steps``."""
    state = cell.state or {}
    failed = state.get("status") == "failed"
    n = len(state.get("attempts") or [])
    if run is None:
        return f"failed after {n} attempt(s), no run directory" if failed else "not started"
    if run.status == "finished":
        return "finished without eval_return_mean in summary.json"
    at = f"at {run.env_steps:,}" if run.env_steps is not None else "before its first log line"
    budget = run.steps or cell.steps
    of = f"/{budget:,} env steps" if budget and run.env_steps is not None else ""
    return f"{'failed after ' + str(n) + ' attempt(s)' if failed else 'unfinished'} {at}{of}"


def gather(exp: Experiment) -> Gathered:
    """Scores per (method, env, seed) of the finished runs, and the reasons for the others."""
    g = Gathered()
    g.runs = {(r.method, r.env, r.seed): r for r in exp.runs}
    for c in exp.expected:
        if c.env not in g.envs:
            g.envs.append(c.env)
        run = g.runs.get((c.method, c.env, c.seed))
        budget = (run.steps if run else None) or c.steps
        if budget:
            g.steps.setdefault((c.method, c.env), set()).add(int(budget))
        if run is not None and run.status == "finished" and run.score is not None:
            g.scores.setdefault(c.method, {}).setdefault(c.env, {})[c.seed] = run.score
        else:
            g.missing.setdefault(c.method, {}).setdefault(c.env, []).append(
                (c.seed, missing_reason(c, run)))
    return g


def missing_notes(exp: Experiment, g: Gathered) -> list[str]:
    """One line per (method, env) with missing seeds."""
    per = {}
    for c in exp.expected:
        per.setdefault((c.method, c.env), []).append(c.seed)
    lines = []
    for m in exp.methods:
        for env in g.envs:
            miss = g.missing.get(m, {}).get(env)
            if not miss:
                continue
            n_all = len(per.get((m, env), []))
            detail = "; ".join(f"seed {s}: {why}" for s, why in miss)
            lines.append(f"- {exp.labels.get(m, m)} on `{env}`: {n_all - len(miss)}/{n_all} "
                         f"seeds finished ({detail})")
    return lines


# ---------------------------------------------------------------------------- layouts
def _game_map(envs: list[str], refs: dict) -> dict[str, str]:
    return {e: tables.reference_game(split_env(e)[1], refs) or split_env(e)[1] for e in envs}


def _ordered(names: list[str], order: list[str]) -> list[str]:
    pos = {n: i for i, n in enumerate(order)}
    return sorted(dict.fromkeys(names), key=lambda n: (pos.get(n, len(order)), n))


def atari_section(exp: Experiment, g: Gathered, refs_all: dict, reps: int, seed: int,
                  figdir: Path | None) -> tuple[list[str], dict]:
    """``000`` Table 1, the published comparison, and IQM / optimality gap with 95% CIs."""
    refs = refs_all["games"]
    gmap = _game_map(g.envs, refs)
    games = _ordered(list(gmap.values()), list(refs))
    means = {m: {gmap[e]: g.mean(m, e) for e in g.envs if g.mean(m, e) is not None}
             for m in exp.methods}
    flags = {m: {gmap[e]: g.flagged(m, e) for e in g.envs} for m in exp.methods}
    table, agg = tables.atari_table(means, flags, exp.methods, exp.baselines, refs, games,
                                    exp.labels)
    out = [table, ""]
    unref = [x for x in games if x not in refs]
    if unref:
        out.append(f"Games without Random/Human reference scores (left out of the normalised "
                   f"rows): {', '.join(unref)}.")
    n_ref = sum(x in refs for x in games)
    out.append(f"Scores: mean over seeds of the final evaluation return. Normalised rows over "
               f"the {n_ref} game(s) run, of the 26 of Atari 100k; "
               f"{tables.FLAG} = fewer seeds or games than expected (see missing runs).")
    pub = refs_all.get("published", {})
    rows = []
    for m in exp.methods:
        if m in pub and agg[m]["mean"] is not None:
            p = pub[m]
            rows.append([f"{exp.labels.get(m, m)} vs {p['label']}", f"{agg[m]['games']}/26",
                         f"{agg[m]['mean']:.2f} / {p['mean']:.2f}",
                         f"{agg[m]['median']:.2f} / {p['median']:.2f}",
                         f"{agg[m]['superhuman']} / {p['superhuman']}"])
    if rows:
        out += ["", "Against `000` Table 1 (ours / published):", "",
                tables.markdown_table(["Method", "Games", "Mean", "Median", "Superhuman"], rows)]
    out += ["", *iqm_section(exp, g, gmap, refs, reps, seed, figdir)]
    return out, agg


def iqm_section(exp: Experiment, g: Gathered, gmap: dict[str, str], refs: dict, reps: int,
                seed: int, figdir: Path | None) -> list[str]:
    """IQM, optimality gap, mean and median of human-normalised scores with stratified-bootstrap
    95% CIs (rliable), over the games every method finished and each method's complete seeds."""
    out = ["#### Aggregate scores with 95% stratified-bootstrap CIs (rliable)", ""]
    if not aggregate.rliable_available():
        return out + [f"rliable is not installed: {aggregate.INSTALL_HINT}"]
    methods = [m for m in exp.methods if g.scores.get(m)]
    envs = [e for e in g.envs if gmap[e] in refs
            and all(g.scores.get(m, {}).get(e) for m in methods)]
    if not methods or not envs:
        return out + ["No game has a finished run of every method."]
    mats, notes = {}, []
    for m in methods:
        per_task = {}
        for e in envs:
            r = refs[gmap[e]]
            per_task[e] = {s: tables.human_normalized(v, r["random"], r["human"])
                           for s, v in g.scores[m][e].items()}
        mat, seeds = aggregate.rectangular(per_task, envs)
        if not seeds:
            notes.append(f"{exp.labels.get(m, m)}: no seed finished every game, left out")
            continue
        mats[m] = mat
        notes.append(f"{exp.labels.get(m, m)}: seeds {', '.join(map(str, seeds))}")
    est = aggregate.interval_estimates(mats, reps=reps, seed=seed)
    fmt = lambda t: f"{t[0]:.3f} [{t[1]:.3f}, {t[2]:.3f}]"
    rows = [[exp.labels.get(m, m), fmt(e["iqm"]), fmt(e["og"]), fmt(e["mean"]), fmt(e["median"]),
             f"{mats[m].shape[0]} x {mats[m].shape[1]}"] for m, e in est.items()]
    out.append(tables.markdown_table(
        ["Method", "IQM (↑)", "Optimality gap (↓)", "Mean (↑)", "Median (↑)", "seeds x games"],
        rows))
    left = sorted({gmap[e] for e in g.envs} - {gmap[e] for e in envs})
    out += ["", f"Over the {len(envs)} game(s) every method finished"
            + (f" (left out: {', '.join(left)})" if left else "")
            + f"; {reps} bootstrap replications; runs used: " + "; ".join(notes) + "."]
    if figdir is not None and est:
        p = curves.plot_intervals(est, figdir / f"{_slug(exp.name)}_aggregates.png", exp.labels)
        out += ["", _img("Aggregate human-normalised scores, 95% CIs", p, figdir.parent)]
    return out


def dmc_section(exp: Experiment, g: Gathered) -> list[str]:
    """``000`` Table 2: visual and proprio columns per method, task mean and median."""
    ref = json.loads(resources.files("vawm.report").joinpath("data/dmc_reference.json")
                     .read_text())
    order = list(dict.fromkeys(ref["visual"] + ref["proprio"]))
    columns, tasks, means, flags, steps = [], {}, {}, {}, {}
    for suite, grp in SUITE_GROUPS.items():
        envs = [e for e in g.envs if split_env(e)[0] == suite]
        if not envs:
            continue
        task_of = {e: split_env(e)[1] for e in envs}
        tasks[grp] = _ordered(list(task_of.values()), order)
        for m in exp.methods:
            if not any((m, e) in {(c.method, c.env) for c in exp.expected} for e in envs):
                continue
            columns.append((grp, m))
            means[(grp, m)] = {task_of[e]: g.mean(m, e) for e in envs
                               if g.mean(m, e) is not None}
            flags[(grp, m)] = {task_of[e]: g.flagged(m, e) for e in envs}
            budgets = set().union(*(g.steps.get((m, e), set()) for e in envs))
            steps[(grp, m)] = "/".join(tables.fmt_steps(b) for b in sorted(budgets)) or "?"
    out = [tables.dmc_table(columns, means, flags, exp.baselines, tasks, steps, exp.labels), ""]
    out.append(f"Scores: mean over seeds of the final evaluation return; {tables.FLAG} = fewer "
               f"seeds or tasks than expected; - = task not part of that benchmark.")
    for suite, grp in SUITE_GROUPS.items():
        key = "visual" if suite == "dmc-pixels" else "proprio"
        if grp in tasks:
            absent = [t for t in ref[key] if t not in tasks[grp]]
            if absent:
                out.append(f"{grp}: {len(tasks[grp])} task(s) run; not run of `000` Table 2's "
                           f"{len(ref[key])}: {', '.join(absent)}.")
            pub = ref["published"][key]
            items = [f"{v['label']} {v['mean']} / {v['median']}" for v in pub.values()]
            out.append(f"{grp}, published task mean / median (`000` Table 2): "
                       + ", ".join(items) + ".")
    return out


# suites whose tasks all score on one scale (DMC: 0..1000), so a mean over tasks means something
SHARED_SCALE_SUITES = ("dmc", "dmc-pixels")


def ablation_section(exp: Experiment, g: Gathered, refs: dict) -> list[str]:
    """``000`` Table 3: one row per method, one column per task."""
    atari = all(split_env(e)[0] == "atari100k" for e in g.envs)
    name = _game_map(g.envs, refs) if atari else {e: e for e in g.envs}
    tasks = [name[e] for e in g.envs]
    means = {m: {name[e]: g.mean(m, e) for e in g.envs if g.mean(m, e) is not None}
             for m in exp.methods}
    flags = {m: {name[e]: g.flagged(m, e) for e in g.envs} for m in exp.methods}
    return [tables.ablation_table(means, flags, exp.methods, exp.baselines, tasks, exp.labels),
            "", f"Scores: mean over seeds of the final evaluation return; % against the "
                f"baseline row; {tables.FLAG} = fewer seeds than expected.", "",
            "The same runs with their spread over seeds:", "", *generic_section(exp, g)]


def capacity_section(exp: Experiment, g: Gathered, refs: dict, figdir: Path | None
                     ) -> list[str]:
    """``000`` Fig. 2a: the ablation table of every (size, method) cell, then final return
    against world-model size per task, one line per method family (backbone + objective)."""
    out = ablation_section(exp, g, refs)
    sizes = list(dict.fromkeys(exp.sizes[m] for m in exp.methods if m in exp.sizes))
    if figdir is None or not sizes:
        return out
    fam_label: dict[str, str] = {}
    for m in exp.methods:           # a family's name: its first label without the size word
        f = exp.families.get(m, m)
        label = exp.labels.get(m)
        if f not in fam_label:
            fam_label[f] = (label.replace(exp.sizes.get(m, ""), "").strip() if label else f)
    one_suite = len({split_env(e)[0] for e in g.envs}) == 1
    panels: dict[str, dict[str, list]] = {}
    for e in g.envs:
        per: dict[str, list] = {}
        for m in exp.methods:
            s = g.scores.get(m, {}).get(e)
            if not s or m not in exp.sizes:
                continue
            mean, std, n = tables.seed_stats(list(s.values()))
            per.setdefault(exp.families.get(m, m), []).append(
                (sizes.index(exp.sizes[m]), mean, std, n))
        if per:
            panels[split_env(e)[1] if one_suite else e] = per
    if not panels:
        return out
    path = curves.plot_capacity(panels, figdir / f"{_slug(exp.name)}_capacity.png", sizes,
                                fam_label)
    return [*out, "", _img("final return against world-model size (mean ± std over seeds)",
                           path, figdir.parent),
            "", "Final evaluation return against world-model size (`000` Fig. 2a): mean ± std "
                "over the seeds that finished, one line per method family."]


def generic_section(exp: Experiment, g: Gathered) -> list[str]:
    stats = {m: {e: tables.seed_stats(list(v.values())) for e, v in g.scores.get(m, {}).items()}
             for m in exp.methods}
    flags = {m: {e: g.flagged(m, e) for e in g.envs} for m in exp.methods}
    shared = all(split_env(e)[0] in SHARED_SCALE_SUITES for e in g.envs)
    note = "" if shared or len(g.envs) < 2 else (
        " No task mean or median: these tasks' returns are on different scales.")
    return [tables.generic_table(stats, flags, exp.methods, exp.baselines, g.envs, exp.labels,
                                 aggregate=shared),
            "", f"Final evaluation return: mean ± std over seeds (n); % of the mean against "
                f"the baseline; {tables.FLAG} = fewer seeds or tasks than expected.{note}"]


# ---------------------------------------------------------------------------- curves
def _matrix(runs: list[Run], key: str, edges: np.ndarray, metrics: dict) -> np.ndarray:
    rows = []
    for r in runs:
        x, y = curves.series(metrics[r.path], key)
        rows.append(curves.binned(x, y, edges))
    return np.array(rows).reshape(len(rows), len(edges) - 1)


def curve_section(exp: Experiment, g: Gathered, figdir: Path, refs: dict) -> list[str]:
    """Return vs env steps per task and aggregated, and the value-alignment diagnostics."""
    metrics = {r.path: load_metrics(r.path) for r in exp.runs}
    if not any(metrics.values()):
        return ["No metrics.jsonl with data: no curves."]
    n_eval = [sum("eval/return_mean" in row for row in rows) for rows in metrics.values() if rows]
    key = "eval/return_mean" if n_eval and min(n_eval) >= 2 else "train/episode_return"
    want = {}
    for c in exp.expected:
        want.setdefault((c.method, c.env), set()).add(c.seed)
    by = {}
    for r in exp.runs:
        by.setdefault((r.method, r.env), []).append(r)
    out, base = [], figdir.parent
    panels, diag, by_env = {}, {}, {}
    one_suite = len({split_env(e)[0] for e in g.envs}) == 1
    for e in g.envs:
        title = split_env(e)[1] if one_suite else e
        top = max([max((row.get("env_step", 0) for row in metrics[r.path]), default=0)
                   for m in exp.methods for r in by.get((m, e), [])] + [0])
        budget = max([b for m in exp.methods for b in g.steps.get((m, e), set())] + [top])
        if budget <= 0:
            continue
        edges = np.linspace(0, budget, N_BINS + 1)
        x = 0.5 * (edges[1:] + edges[:-1])
        per_m = {m: _matrix(by[(m, e)], key, edges, metrics) for m in exp.methods
                 if by.get((m, e))}
        if per_m:
            by_env[e] = (x, per_m)
            panels[title] = by_env[e]
        dk = {}
        for k, _ in curves.DIAGNOSTICS:
            dm = {m: _matrix(by[(m, e)], k, edges, metrics) for m in exp.methods
                  if by.get((m, e)) and any(k in row for r in by[(m, e)]
                                            for row in metrics[r.path])}
            if dm:
                dk[k] = dm
        if dk:
            diag[title] = (x, dk)
    name = _slug(exp.name)
    if panels:
        nseeds = {m: max((len(want.get((m, e), ())) for e in g.envs), default=0)
                  for m in exp.methods}
        p = curves.plot_grid(panels, figdir / f"{name}_returns.png", key, exp.labels,
                             exp.methods, seeds=nseeds)
        out += [_img(f"{key} vs env steps per task (mean and 95% CI over seeds)", p, base), ""]
    agg = aggregate_curves(exp, by_env, refs)
    if agg:
        ylabel = "human-normalised " + key if exp.layout == "atari100k" else key
        p = curves.plot_grid(agg, figdir / f"{name}_returns_aggregate.png", ylabel, exp.labels,
                             exp.methods, ncols=2)
        out += [_img("Aggregated over tasks (seeds with every task; 95% CI over seeds)", p, base),
                ""]
    caption = "Value-alignment diagnostics over training (`000` Fig. 8, 12)"
    if diag and len(diag) <= 6:      # few tasks: one row per task, L_dyn | L_var | beta_var
        p = curves.plot_diagnostics(diag, figdir / f"{name}_diagnostics.png", exp.labels,
                                    exp.methods)
        out += [_img(f"{caption}: L_dyn, L_var, beta_var per task", p, base), ""]
    elif diag:                       # many tasks: one grid of tasks per diagnostic
        for k, label in curves.DIAGNOSTICS:
            per_task = {t: (x, dk[k]) for t, (x, dk) in diag.items() if k in dk}
            if per_task:
                p = curves.plot_grid(per_task, figdir / f"{name}_{_slug(k)}.png", label,
                                     exp.labels, exp.methods)
                out += [_img(f"{caption}: {label} per task", p, base), ""]
    out.append(f"Curves from `{key}` (returns) and the `wm/loss_dyn`, `var/loss`, `var/beta` "
               f"keys of each run's metrics.jsonl, averaged into {N_BINS} bins of env steps; "
               f"mean and 95% CI over seeds; panels name methods with fewer seeds than expected.")
    return out


def aggregate_curves(exp: Experiment, panels: dict, refs: dict) -> dict:
    """Per-seed mean over tasks of the binned curves (human-normalised for Atari), over the
    seeds that have every task; one panel per input group (Atari: one)."""
    if exp.layout not in ("atari100k", "dmc") or len(panels) < 2:
        return {}
    groups: dict[str, list[str]] = {}
    for e in panels:
        suite = split_env(e)[0]
        groups.setdefault("Atari 100k, human-normalised" if suite == "atari100k"
                          else SUITE_GROUPS.get(suite, suite), []).append(e)
    out = {}
    for title, envs in groups.items():
        x0 = panels[envs[0]][0]
        if not all(np.array_equal(panels[e][0], x0) for e in envs):
            continue   # different env-step budgets: bins would not line up
        per_m = {}
        for m in exp.methods:
            if not all(m in panels[e][1] for e in envs):
                continue
            seeds_by_env = [[r.seed for r in exp.runs if r.method == m and r.env == e]
                            for e in envs]
            common = sorted(set.intersection(*map(set, seeds_by_env)))
            if not common:
                continue
            rows = []
            for s in common:
                vals = []
                for e, seeds in zip(envs, seeds_by_env, strict=True):
                    row = panels[e][1][m][seeds.index(s)]  # rows follow exp.runs order
                    if split_env(e)[0] == "atari100k":
                        ref = refs.get(tables.reference_game(split_env(e)[1], refs) or "")
                        if ref is None:
                            continue
                        row = tables.human_normalized(row, ref["random"], ref["human"])
                    vals.append(row)
                rows.append(np.mean(vals, axis=0))
            per_m[m] = np.array(rows)
        if per_m:
            out[f"{title}: mean over {len(envs)} tasks"] = (x0, per_m)
    return out


# ---------------------------------------------------------------------------- extras
def load_cost_rows(paths: list[Path]) -> tuple[list[dict], list[str]]:
    """Rows of ``*cost*.json`` files: a list of rows, ``{"rows": [...]}`` or one row."""
    rows, bad = [], []
    for p in paths:
        data = read_json(p)
        items = data.get("rows") if isinstance(data, dict) and "rows" in data else data
        items = [items] if isinstance(items, dict) else items
        if not isinstance(items, list) or not all(isinstance(r, dict) and "backbone" in r
                                                  for r in items):
            bad.append(str(p))
            continue
        rows += [dict(r, _file=str(p)) for r in items]
    return rows, bad


def cost_section(rows: list[dict], atari_means: dict[str, float]) -> list[str]:
    """``000`` Table 4 per (env, device), overheads against the same backbone's ``none``."""
    out = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((str(r.get("env", "?")), str(r.get("device", "?"))), []).append(r)
    for (env, device), rs in sorted(groups.items()):
        extra = {"Mean score on Atari 100k (ours)": {m: f"{v:.2f}" for m, v in
                                                     atari_means.items()}} if atari_means else None
        out += [f"**{env} on {device}**", "", tables.cost_table(rs, extra), ""]
    out.append("Overheads in % against the same backbone without an objective. `000` Table 4 "
               "(RTX 3090): Var costs +1.4% GPU memory and +1.1% wall-clock on DreamerV3 "
               "(4560 -> 4626 MB, 15.89 -> 16.06 h), STORM 5806 -> 5864 MB, 5.91 -> 6.04 h.")
    return out


def garnet_summaries(root: Path, exclude: Path) -> list[Path]:
    """``summary.md`` files written by ``vawm garnet --out DIR`` (a CSV beside them), outside
    run directories."""
    runs = {d.resolve() for d in find_run_dirs(root, exclude)}
    return [p for p in find_files(root, "summary.md", exclude)
            if p.parent.resolve() not in runs and any(p.parent.glob("*.csv"))]


def embed_markdown(text: str, src_dir: Path, out_dir: Path) -> str:
    """Nest a markdown file: headings two levels deeper, relative links re-pointed."""
    text = re.sub(r"^(#{1,4}) ", lambda m: "#" * min(6, len(m.group(1)) + 2) + " ", text,
                  flags=re.M)

    def relink(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"^[a-z]+:|^/|^#", target):
            return m.group(0)
        rel = Path(_relpath(src_dir / target, out_dir))
        return f"{m.group(1)}({rel.as_posix()})"

    return re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", relink, text)


def _relpath(p: Path, start: Path) -> str:
    import os
    return os.path.relpath(p.resolve(), start.resolve())


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_") or "exp"


def _img(caption: str, path: Path, base: Path) -> str:
    return f"![{caption}]({_relpath(path, base)})"


def write_scores_csv(path: Path, experiments: list[Experiment]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["experiment", "method", "env", "seed", "status", "score", "env_steps",
                    "path"])
        for exp in experiments:
            for r in sorted(exp.runs, key=lambda r: (r.method, r.env, r.seed)):
                w.writerow([exp.name, r.method, r.env, r.seed, r.status,
                            "" if r.score is None else r.score,
                            "" if r.env_steps is None else r.env_steps, str(r.path)])


# ---------------------------------------------------------------------------- the report
def build_report(root: Path, out: Path, reps: int = 5000, seed: int = 0,
                 figures: bool = True) -> Path:
    """Read every run under ``root`` and write ``out/report.md`` (+ figures, scores.csv)."""
    root, out = root.resolve(), out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    figdir = out / "figures" if figures else None
    if figdir is not None and figdir.is_dir():
        for old in figdir.glob("*.png"):   # figures of an earlier report of other runs
            old.unlink()
    experiments, warns = collect(root, exclude=out)
    experiments.sort(key=lambda e: (LAYOUT_ORDER.index(e.layout)
                                    if e.layout in LAYOUT_ORDER else 9, e.name))
    refs_all = tables.load_atari_reference()
    refs = refs_all["games"]
    n_runs = sum(len(e.runs) for e in experiments)
    n_fin = sum(r.status == "finished" for e in experiments for r in e.runs)
    doc = ["# vawm report", "",
           f"Root `{root}`; {time.strftime('%Y-%m-%d %H:%M')}. {n_runs} run(s), {n_fin} "
           f"finished, in {len(experiments)} experiment(s).", ""]
    if warns:
        doc += ["**Warnings**", "", *[f"- {w}" for w in warns], ""]
    atari_means: dict[str, float] = {}
    for exp in experiments:
        g = gather(exp)
        n_exp = len(exp.expected)
        n_done = sum(len(v) for d in g.scores.values() for v in d.values())
        doc += [f"## {exp.name}", ""]
        if exp.description:
            doc += [exp.description, ""]
        doc.append(f"Layout: {exp.layout}. {n_done}/{n_exp} expected runs finished"
                   + (f" (sweep manifest `{exp.source}`)." if exp.source else
                      " (no sweep manifest: every method is expected on every task and seed "
                      "seen here)."))
        doc.append("")
        if exp.compute:
            doc += ["Expected compute:", "", *[f"- {k}: {v}" for k, v in exp.compute.items()],
                    ""]
        if exp.layout == "atari100k":
            lines, agg = atari_section(exp, g, refs_all, reps, seed, figdir)
            if not atari_means:
                atari_means = {m: a["mean"] for m, a in agg.items() if a["mean"] is not None}
        elif exp.layout == "dmc":
            lines = dmc_section(exp, g)
        elif exp.layout == "ablation":
            lines = ablation_section(exp, g, refs)
        elif exp.layout == "capacity":
            lines = capacity_section(exp, g, refs, figdir)
        else:
            lines = generic_section(exp, g)
        doc += [*lines, ""]
        notes = missing_notes(exp, g)
        doc += ["#### Missing runs", "", *(notes or ["None: every expected run finished."]), ""]
        if figdir is not None:
            doc += ["#### Curves", "", *curve_section(exp, g, figdir, refs), ""]
    cost_rows, bad = load_cost_rows(find_files(root, "*cost*.json", out))
    if cost_rows or bad:
        doc += ["## Compute cost (`000` Table 4)", ""]
        doc += cost_section(cost_rows, atari_means) if cost_rows else []
        doc += [f"Unreadable cost file (expected rows with backbone, objective, env, "
                f"s_per_update, peak_rss_mb, peak_gpu_mb, device): {b}" for b in bad] + [""]
    for p in garnet_summaries(root, out):
        text = p.read_text()
        doc += [f"## Garnet (`{_relpath(p.parent, root)}`)", "",
                embed_markdown(text, p.parent, out), ""]
        for png in sorted(p.parent.glob("*.png")):   # its figures, unless the summary shows them
            if png.name not in text:
                doc += [_img(png.stem.replace("_", " "), png, out), ""]
    write_scores_csv(out / "scores.csv", experiments)
    path = out / "report.md"
    path.write_text("\n".join(doc).rstrip() + "\n")
    return path
